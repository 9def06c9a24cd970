"""OpenAI CLIP's tokenizer (Radford et al. 2021), giving the same ids as `clip.tokenize`.

    tokenizer = CLIPTokenizer()
    tokenizer.encode("A photo of a cat.")           # [320, 1125, 539, 320, 2368, 269]
    tokenizer(["a dog", "a cat"])                   # int64 array (2, 77): sot, tokens, eot, zeros

The steps, as in OpenAI's simple_tokenizer.py:
  1. clean: ftfy.fix_text, HTML-unescape twice, strip, collapse whitespace to one space, lower case;
  2. split into pre-tokens with CLIP's regex (contractions, letter runs, single digits, symbol runs);
  3. each pre-token's UTF-8 bytes become ids; the last byte uses its end-of-word id ("</w>");
  4. byte-pair merges from bpe_simple_vocab_16e6.txt.gz, lowest rank first.
Vocabulary (49,408): 256 bytes, 256 bytes + "</w>", 48,894 merges, <|startoftext|> 49406,
<|endoftext|> 49407. OpenAI numbers the bytes in the order of `bytes_to_unicode`, not by value.
"""

import gzip
import html
from pathlib import Path

import ftfy
import numpy as np
import regex

from .bpe import apply_merges, bytes_to_unicode, token_bytes

VOCAB_PATH = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
N_MERGES = 49152 - 256 - 2           # OpenAI reads this many merge lines of the file
START_OF_TEXT, END_OF_TEXT = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"

PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE)


def clean(text):
    """CLIP's text normalisation: fix mojibake, unescape HTML, collapse whitespace, lower case.

    Strips twice, as OpenAI does: str.strip and regex's \\s disagree on U+001C..U+001F.
    """
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


class CLIPTokenizer:
    """Byte-level BPE with OpenAI CLIP's vocabulary; `tokenize` returns (N, context_length) ids.

    bpe_path: the gzipped merges file (default: the copy shipped with minivlm).
    """

    def __init__(self, bpe_path=VOCAB_PATH):
        with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")[1:N_MERGES + 1]        # line 0 is a version header
        if len(lines) != N_MERGES:
            raise ValueError(f"{bpe_path}: expected {N_MERGES} merge lines, found {len(lines)}")
        characters = list(bytes_to_unicode().values())
        tokens = characters + [c + END_OF_WORD for c in characters]
        token_ids = {token: i for i, token in enumerate(tokens)}
        self.merges = {}                                          # (left id, right id) -> id
        for line in lines:
            left, right = line.split()
            self.merges[(token_ids[left], token_ids[right])] = token_ids[left + right] = len(tokens)
            tokens.append(left + right)
        self.special_tokens = {START_OF_TEXT: len(tokens), END_OF_TEXT: len(tokens) + 1}
        tokens += [START_OF_TEXT, END_OF_TEXT]

        byte_of = {c: b for b, c in bytes_to_unicode().items()}
        self.vocab = [bytes(byte_of[c] for c in token) for token in tokens]   # "</w>" spelled out
        self._byte_ids = {b: i for i, b in enumerate(bytes_to_unicode())}     # byte -> id 0..255
        self._cache = {}

    @property
    def vocab_size(self):
        return len(self.vocab)

    @property
    def sot_token_id(self):
        return self.special_tokens[START_OF_TEXT]

    @property
    def eot_token_id(self):
        return self.special_tokens[END_OF_TEXT]

    def __repr__(self):
        return f"CLIPTokenizer(vocab_size={self.vocab_size})"

    def encode(self, text):
        """str -> list of ids, without the start and end tokens (as OpenAI's SimpleTokenizer)."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        ids = []
        for pretoken in PATTERN.findall(clean(text)):
            ids.extend(self._encode_pretoken(pretoken))
        return ids

    def _encode_pretoken(self, pretoken):
        if pretoken in self.special_tokens:
            return [self.special_tokens[pretoken]]
        if pretoken not in self._cache:
            *ids, last = (self._byte_ids[b] for b in pretoken.encode("utf-8"))
            self._cache[pretoken] = apply_merges([*ids, 256 + last], self.merges)
        return self._cache[pretoken]

    def decode(self, ids):
        """list of ids -> str; each end of word becomes a space (as OpenAI's SimpleTokenizer)."""
        text = token_bytes(self.vocab, ids).decode("utf-8", errors="replace")
        return text.replace(END_OF_WORD, " ")

    def tokenize(self, texts, context_length=77, truncate=False):
        """str or list of N str -> int64 array (N, context_length), as `clip.tokenize`.

        Each row is [sot, *encode(text), eot] followed by zeros. A text that does not fit raises
        RuntimeError, or with truncate=True is cut to context_length with eot as its last id.
        """
        if isinstance(texts, str):
            texts = [texts]
        if context_length < 2:
            raise ValueError(f"context_length={context_length} cannot hold the start and end tokens")
        result = np.zeros((len(texts), context_length), dtype=np.int64)
        for row, text in zip(result, texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > context_length:
                if not truncate:
                    raise RuntimeError(f"Input {text!r} is too long for context length {context_length}: "
                                       f"{len(ids)} tokens with start and end (pass truncate=True to cut it)")
                ids = ids[:context_length - 1] + [self.eot_token_id]
            row[:len(ids)] = ids
        return result

    __call__ = tokenize

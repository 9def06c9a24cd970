"""Byte-level byte-pair encoding (BPE) that you train yourself.

    tokenizer = BPETokenizer.train(corpus(), vocab_size=1260)   # 256 bytes + 4 specials + 1000 merges
    ids = tokenizer.encode("the red circle is above the blue square.")
    text = tokenizer.decode(ids)                                 # the same string, exactly
    tokenizer.save("tokenizer.json"); tokenizer = BPETokenizer.load("tokenizer.json")

Token ids:   0 .. 255                  the 256 bytes (id == byte value)
             256 .. 256 + S - 1        the S special tokens, in the order given ("<s>", "</s>", ...)
             256 + S ..                one id per merge, in the order the merges were learned

Text is first cut into pre-tokens by GPT-2's regular expression (a word with the space before
it, a run of digits, a run of punctuation, a run of whitespace); merges never cross a pre-token.
Each pre-token becomes its UTF-8 bytes, and then merges are applied, earliest-learned first.
Because every id stands for a byte string, `decode(encode(text)) == text` for every string.

Training (Sennrich et al. 2016): count every adjacent pair of ids in the corpus's pre-tokens,
merge the most frequent pair into a new id, repeat. The pair counts are updated incrementally:
a merge only touches the pre-tokens that contain the pair.
"""

import heapq
import json
from collections import Counter, defaultdict

import regex

from ..io import atomic_write

# GPT-2's pre-tokenizer (Radford et al. 2019): contractions, letters, digits, other symbols,
# each optionally after one space; runs of whitespace stand alone.
GPT2_PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

DEFAULT_SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<mask>")
_FORMAT = "minivlm.BPETokenizer"


def merge_pair(ids, pair, new_id):
    """Replace each occurrence of `pair` in `ids`, scanning left to right, by `new_id`.

    merge_pair([5, 5, 5, 7], (5, 5), 9) -> [9, 5, 7]
    """
    merged, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


def apply_merges(ids, merges):
    """Byte-pair encode one pre-token: list of ids -> list of ids.

    merges maps a pair of ids to the id of the merged token. Merged ids grow in the order the
    merges were learned, so the pair with the smallest merged id is merged first, until no
    adjacent pair has a merge. (This is also the rule of OpenAI's GPT-2 and CLIP tokenizers.)
    """
    while len(ids) > 1:
        pair = min(zip(ids, ids[1:]), key=lambda p: merges.get(p, float("inf")))
        if pair not in merges:
            break
        ids = merge_pair(ids, pair, merges[pair])
    return ids


def token_bytes(vocab, ids):
    """The bytes that the token ids stand for, joined. vocab: list, id -> bytes."""
    for i in ids:
        if not 0 <= i < len(vocab):
            raise ValueError(f"token id {i} is not in the vocabulary (ids 0..{len(vocab) - 1})")
    return b"".join(vocab[i] for i in ids)


def _special_splitter(special_tokens):
    """A function str -> list of str that cuts a text so that each special token stands alone."""
    if not special_tokens:
        return lambda text: [text]
    alternatives = "|".join(regex.escape(t) for t in sorted(special_tokens, key=len, reverse=True))
    return regex.compile(f"({alternatives})").split


class BPETokenizer:
    """Byte-level BPE tokenizer: `encode(str) -> list[int]`, `decode(list[int]) -> str`.

    merges: list of (left id, right id) pairs; merge k gets id 256 + len(special_tokens) + k.
    special_tokens: strings that get their own ids (256, 257, ...) and are recognised in text.
    Usually made by `BPETokenizer.train(texts, vocab_size)` or `BPETokenizer.load(path)`.
    """

    def __init__(self, merges, special_tokens=DEFAULT_SPECIAL_TOKENS):
        special_tokens = tuple(special_tokens)
        if len(set(special_tokens)) != len(special_tokens) or not all(
                isinstance(t, str) and t for t in special_tokens):
            raise ValueError(f"special_tokens must be distinct non-empty strings, got {special_tokens!r}")
        self.special_tokens = {token: 256 + i for i, token in enumerate(special_tokens)}
        self.vocab = [bytes([b]) for b in range(256)] + [t.encode("utf-8") for t in special_tokens]
        self.merges = {}
        mergeable = set(range(256))                    # bytes and earlier merges, never specials
        for left, right in merges:
            new_id = len(self.vocab)
            if left not in mergeable or right not in mergeable:
                raise ValueError(f"merge ({left!r}, {right!r}) -> {new_id}: both ids must be bytes "
                                 f"(0..255) or earlier merges")
            if (left, right) in self.merges:
                raise ValueError(f"merge ({left!r}, {right!r}) is listed twice")
            self.merges[(left, right)] = new_id
            self.vocab.append(self.vocab[left] + self.vocab[right])
            mergeable.add(new_id)
        self._split_special = _special_splitter(special_tokens)
        self._cache = {}

    @property
    def vocab_size(self):
        """Number of token ids: 256 bytes + special tokens + merges."""
        return len(self.vocab)

    def _special_id(self, token):
        if token not in self.special_tokens:
            raise KeyError(f"this tokenizer has no {token!r} token; its special tokens are "
                           f"{list(self.special_tokens)}")
        return self.special_tokens[token]

    @property
    def bos_id(self):
        return self._special_id("<s>")

    @property
    def eos_id(self):
        return self._special_id("</s>")

    @property
    def pad_id(self):
        return self._special_id("<pad>")

    @property
    def mask_id(self):
        return self._special_id("<mask>")

    def __repr__(self):
        return (f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={list(self.special_tokens)})")

    # ------------------------------------------------------------------ training

    @classmethod
    def train(cls, texts, vocab_size, special_tokens=DEFAULT_SPECIAL_TOKENS):
        """Learn vocab_size - 256 - len(special_tokens) merges from an iterable of strings.

        Ties between equally frequent pairs go to the pair with the smaller ids. Training stops
        early, with a smaller vocabulary, once every pre-token is a single token.
        """
        special_tokens = tuple(special_tokens)
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise ValueError(f"vocab_size={vocab_size} is smaller than the 256 byte tokens plus "
                             f"{len(special_tokens)} special tokens = {256 + len(special_tokens)}")
        words, counts = _count_pretokens(texts, special_tokens)
        return cls(_learn_merges(words, counts, n_merges, first_id=256 + len(special_tokens)),
                   special_tokens)

    # ------------------------------------------------------------------ encoding

    def encode(self, text):
        """str -> list of token ids. Special tokens written in the text map to their ids."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        ids = []
        for chunk in self._split_special(text):
            if chunk in self.special_tokens:
                ids.append(self.special_tokens[chunk])
            else:
                for pretoken in GPT2_PATTERN.findall(chunk):
                    ids.extend(self._encode_pretoken(pretoken))
        return ids

    def _encode_pretoken(self, pretoken):
        if pretoken not in self._cache:
            self._cache[pretoken] = apply_merges(list(pretoken.encode("utf-8")), self.merges)
        return self._cache[pretoken]

    def decode(self, ids):
        """list of token ids -> str. Byte sequences that are not valid UTF-8 (possible only for
        ids not made by `encode`) become U+FFFD, as in GPT-2."""
        return token_bytes(self.vocab, ids).decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ files

    def save(self, path):
        """Write the tokenizer as JSON (to a temporary file, then renamed to `path`)."""
        state = {"format": _FORMAT, "special_tokens": list(self.special_tokens),
                 "merges": [list(pair) for pair in self.merges]}
        with atomic_write(path) as f:
            f.write(json.dumps(state).encode("utf-8"))

    @classmethod
    def load(cls, path):
        """Read a tokenizer written by `save`."""
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        missing = {"format", "special_tokens", "merges"} - set(state)
        if missing or state["format"] != _FORMAT:
            raise ValueError(f"{path} is not a saved BPETokenizer (format {state.get('format')!r}, "
                             f"missing keys {sorted(missing)})")
        return cls([tuple(pair) for pair in state["merges"]], state["special_tokens"])


# ---------------------------------------------------------------------- training helpers

def _count_pretokens(texts, special_tokens):
    """Distinct pre-tokens of the corpus as byte-id lists, and how often each occurs."""
    split_special = _special_splitter(special_tokens)
    frequency = Counter()
    for text in texts:
        for chunk in split_special(text):
            if chunk not in special_tokens:
                frequency.update(GPT2_PATTERN.findall(chunk))
    words = [list(pretoken.encode("utf-8")) for pretoken in frequency]
    return words, list(frequency.values())


def _learn_merges(words, counts, n_merges, first_id):
    """Greedy BPE on word id-lists (modified in place) weighted by counts -> list of merged pairs.

    pair_count[p] is the weighted number of occurrences of pair p; where[p] holds the indices of
    words that contain (or once contained) p. A heap of (-count, pair) finds the most frequent
    pair; its entries go stale as counts change and are skipped when they no longer match.
    """
    pair_count, where = Counter(), defaultdict(set)
    for w, (word, count) in enumerate(zip(words, counts)):
        _add_pairs(pair_count, word, count)
        for pair in zip(word, word[1:]):
            where[pair].add(w)
    heap = [(-count, pair) for pair, count in pair_count.items()]
    heapq.heapify(heap)

    merges = []
    while len(merges) < n_merges and heap:
        negative_count, pair = heapq.heappop(heap)
        if pair_count.get(pair) != -negative_count:
            continue                                   # stale entry
        new_id = first_id + len(merges)
        merges.append(pair)
        changed = Counter()
        for w in where.pop(pair):
            old, new = words[w], merge_pair(words[w], pair, new_id)
            if len(new) == len(old):
                continue                               # the pair left this word earlier
            _add_pairs(changed, old, -counts[w])
            _add_pairs(changed, new, counts[w])
            for p in zip(new, new[1:]):
                where[p].add(w)
            words[w] = new
        for p, delta in changed.items():
            pair_count[p] += delta
            if pair_count[p] == 0:
                del pair_count[p]
            elif delta:
                heapq.heappush(heap, (-pair_count[p], p))
    return merges


def _add_pairs(pair_count, word, weight):
    """Add `weight` to the count of each adjacent pair in `word` (a pair twice in it: twice)."""
    for pair in zip(word, word[1:]):
        pair_count[pair] += weight

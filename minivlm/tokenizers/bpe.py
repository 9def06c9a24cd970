"""Byte-level byte-pair encoding (BPE): train your own, or read a Hugging Face tokenizer.json.

    tokenizer = BPETokenizer.train(corpus(), vocab_size=1260)   # 256 bytes + 4 specials + 1000 merges
    ids = tokenizer.encode("the red circle is above the blue square.")
    text = tokenizer.decode(ids)                                 # the same string, exactly
    tokenizer.save("tokenizer.json"); tokenizer = BPETokenizer.load("tokenizer.json")
    tokenizer = BPETokenizer.load("SmolLM2-135M/tokenizer.json")   # GPT-2's and SmolLM2's kind

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

Files are Hugging Face's tokenizer.json (the `tokenizers` package reads what `save` writes, and
`load` reads the byte-level BPE files of GPT-2 and SmolLM2): a "BPE" model whose vocab spells
each token's bytes with GPT-2's printable characters (bytes_to_unicode), its merges in rank
order, the special tokens as added_tokens, and the ByteLevel pre-tokenizer (GPT-2's regex),
optionally after splitting digits one by one (SmolLM2). There a token's id need not grow with
its merge's rank, so merges are applied by rank (`ranks`). Any other kind of tokenizer.json
(WordPiece, SentencePiece-style Metaspace, a normalizer, ...) is an error naming what it has.
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

DIGITS = regex.compile(r"\p{N}|\P{N}+")    # tokenizers' Digits(individual_digits=True)

DEFAULT_SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<mask>")
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
              "use_regex": True}
SPLIT_DIGITS = {"type": "Digits", "individual_digits": True}


def bytes_to_unicode():
    """GPT-2's table byte -> printable character, so merges can be written as text.

    Printable Latin-1 bytes map to themselves; the other 68 (whitespace, control characters)
    map to chr(256), chr(257), ... Returns a dict whose order is CLIP's byte numbering.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable},
            **{b: chr(256 + n) for n, b in enumerate(others)}}


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


def apply_merges(ids, merges, ranks=None):
    """Byte-pair encode one pre-token: list of ids -> list of ids.

    merges maps a pair of ids to the id of the merged token; the pair learned first (the
    smallest rank) is merged first, until no adjacent pair has a merge. (This is also the rule
    of OpenAI's GPT-2 and CLIP tokenizers.) ranks maps each pair to its rank; without it, the
    merged ids, which grow in the order the merges were learned where ids were given so.
    """
    ranks = merges if ranks is None else ranks
    while len(ids) > 1:
        pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, float("inf")))
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
    Usually made by `BPETokenizer.train(texts, vocab_size)` or `BPETokenizer.load(path)` (which
    also reads a Hugging Face tokenizer.json numbered its own way: see from_hugging_face).
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
        self._prepare_encoding(byte_ids=list(range(256)), ranks=None, split_digits=False)

    def _prepare_encoding(self, byte_ids, ranks, split_digits):
        """byte_ids: byte value -> its token id; ranks: pair -> rank (None: the merged ids are
        in rank order); split_digits: digits become pre-tokens of their own (SmolLM2)."""
        self.byte_ids, self.ranks, self.split_digits = byte_ids, ranks, split_digits
        self._split_special = _special_splitter(self.special_tokens)
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
                continue
            for piece in DIGITS.findall(chunk) if self.split_digits else [chunk]:
                for pretoken in GPT2_PATTERN.findall(piece):
                    ids.extend(self._encode_pretoken(pretoken))
        return ids

    def _encode_pretoken(self, pretoken):
        if pretoken not in self._cache:
            ids = [self.byte_ids[b] for b in pretoken.encode("utf-8")]
            self._cache[pretoken] = apply_merges(ids, self.merges, self.ranks)
        return self._cache[pretoken]

    def decode(self, ids):
        """list of token ids -> str. Byte sequences that are not valid UTF-8 (possible only for
        ids not made by `encode`) become U+FFFD, as in GPT-2."""
        return token_bytes(self.vocab, ids).decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ files

    def save(self, path):
        """Write the tokenizer as a Hugging Face tokenizer.json (to a temporary file, then
        renamed to `path`)."""
        with atomic_write(path) as f:
            f.write(json.dumps(self.to_hugging_face(), ensure_ascii=False).encode("utf-8"))

    @classmethod
    def load(cls, path):
        """Read a tokenizer.json: one `save` wrote, or a Hugging Face byte-level BPE one."""
        with open(path, encoding="utf-8") as f:
            return cls.from_hugging_face(json.load(f), where=path)

    def to_hugging_face(self):
        """The tokenizer.json contents (a dict) of this tokenizer."""
        spelled = bytes_to_unicode()
        text = ["".join(spelled[b] for b in token) for token in self.vocab]
        for token, i in self.special_tokens.items():     # in the vocab too, as written
            text[i] = token
        vocab = {token: i for i, token in enumerate(text)}
        if len(vocab) != len(text):
            raise ValueError("two tokens of this tokenizer spell the same text, which a "
                             "tokenizer.json vocab cannot hold")
        pre_tokenizer = (BYTE_LEVEL if not self.split_digits else
                         {"type": "Sequence", "pretokenizers": [SPLIT_DIGITS, BYTE_LEVEL]})
        return {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": i, "content": token, "single_word": False, "lstrip": False,
                              "rstrip": False, "normalized": False, "special": True}
                             for token, i in self.special_tokens.items()],
            "normalizer": None, "pre_tokenizer": pre_tokenizer, "post_processor": None,
            "decoder": {**BYTE_LEVEL, "add_prefix_space": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": vocab,
                      "merges": [[text[left], text[right]] for left, right in self.merges]}}

    @classmethod
    def from_hugging_face(cls, config, where="tokenizer.json"):
        """The tokenizer of a Hugging Face tokenizer.json's contents (a dict): byte-level BPE
        as GPT-2 and SmolLM2 ship it, with its own ids; anything else is a clear error."""
        split_digits = _check_byte_level_bpe(config, where)
        model = config["model"]
        byte_of = {c: b for b, c in bytes_to_unicode().items()}
        ids = dict(model["vocab"])
        special_tokens = {token["content"]: token["id"] for token in config.get("added_tokens", [])}
        vocab = {i: token.encode("utf-8") for token, i in special_tokens.items()}
        for token, i in ids.items():
            if i not in vocab:
                vocab[i] = bytes(byte_of[c] for c in token)
        missing = sorted(set(range(max(vocab) + 1)) - set(vocab))
        bytes_missing = [b for b, c in bytes_to_unicode().items() if c not in ids]
        if missing or bytes_missing:
            raise ValueError(f"{where}: the vocab lacks ids {missing[:10]} and bytes "
                             f"{bytes_missing[:10]} (a byte-level BPE vocab has every byte)")
        tokenizer = cls.__new__(cls)
        tokenizer.special_tokens = special_tokens
        tokenizer.vocab = [vocab[i] for i in range(len(vocab))]
        pairs = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]
        tokenizer.merges = {(ids[left], ids[right]): ids[left + right] for left, right in pairs}
        ranks = {pair: rank for rank, pair in enumerate(tokenizer.merges)}
        spelled = bytes_to_unicode()
        tokenizer._prepare_encoding([ids[spelled[b]] for b in range(256)], ranks, split_digits)
        return tokenizer


def _check_byte_level_bpe(config, where):
    """Raise a ValueError naming what a tokenizer.json has that is not byte-level BPE; return
    whether its pre-tokenizer splits digits first."""
    def refuse(part, value):
        raise ValueError(f"{where}: {part} {value!r} is not supported: minivlm reads byte-level "
                         f"BPE tokenizers (as GPT-2's and SmolLM2's)")
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        raise ValueError(f"{where} is not a Hugging Face tokenizer.json (it has no 'model')")
    if model.get("type", "BPE") != "BPE":
        refuse("model type", model.get("type"))
    for option, default in (("dropout", None), ("byte_fallback", False), ("ignore_merges", False),
                            ("continuing_subword_prefix", None), ("end_of_word_suffix", None)):
        if model.get(option, default) not in (default, ""):
            refuse(f"model's {option}", model[option])
    if config.get("normalizer") is not None:
        refuse("normalizer", config["normalizer"].get("type"))
    for part in ("decoder", "post_processor"):
        kind = (config.get(part) or {"type": "ByteLevel"}).get("type")
        if kind != "ByteLevel":
            refuse(part, kind)
    for token in config.get("added_tokens", []):
        if token.get("lstrip") or token.get("rstrip") or token.get("single_word"):
            refuse("added token option (lstrip, rstrip or single_word) of", token["content"])
    pre = config.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    steps = [{k: v for k, v in step.items() if k != "trim_offsets"} for step in steps]
    byte_level = {k: v for k, v in BYTE_LEVEL.items() if k != "trim_offsets"}  # offsets only
    if steps not in ([byte_level], [SPLIT_DIGITS, byte_level]):
        refuse("pre_tokenizer", [step.get("type") for step in steps])
    return len(steps) == 2


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

"""Byte-level BPE: training against a naive trainer, encoding against a sequential merger,
pre-tokenization against Hugging Face `tokenizers`, exact round trips, Hugging Face
tokenizer.json files both ways (against the `tokenizers` package), errors, corpus."""

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from minivlm.data.text import corpus
from minivlm.tokenizers import BPETokenizer
from minivlm.tokenizers.bpe import GPT2_PATTERN

SPECIALS = ("<s>", "</s>", "<pad>", "<mask>")
FIRST_MERGE_ID = 256 + len(SPECIALS)


@pytest.fixture(scope="module")
def tokenizer():
    return BPETokenizer.train(corpus(), vocab_size=FIRST_MERGE_ID + 1000)


# ---------------------------------------------------------------------- independent references

def replace_all(ids, pair, new_id):
    """Merge each occurrence of pair, scanning left to right."""
    result, i = [], 0
    while i < len(ids):
        if tuple(ids[i:i + 2]) == pair:
            result.append(new_id)
            i += 2
        else:
            result.append(ids[i])
            i += 1
    return result


def naive_train(texts, n_merges):
    """Textbook BPE: recount every pair from scratch before each merge."""
    words = Counter(p for text in texts for p in GPT2_PATTERN.findall(text))
    sequences = [(list(word.encode("utf-8")), count) for word, count in words.items()]
    merges = []
    for new_id in range(FIRST_MERGE_ID, FIRST_MERGE_ID + n_merges):
        pair_counts = Counter()
        for ids, count in sequences:
            for pair in zip(ids, ids[1:]):
                pair_counts[pair] += count
        if not pair_counts:
            break
        best = min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))
        merges.append(best)
        sequences = [(replace_all(ids, best, new_id), count) for ids, count in sequences]
    return merges


def encode_sequentially(text, merges):
    """Apply each merge in the order learned to every pre-token, each exactly once."""
    ids = []
    for pretoken in GPT2_PATTERN.findall(text):
        word = list(pretoken.encode("utf-8"))
        for k, pair in enumerate(merges):
            word = replace_all(word, pair, FIRST_MERGE_ID + k)
        ids.extend(word)
    return ids


small_words = st.text(alphabet="abcd é", min_size=1, max_size=12)
mixed_text = st.text(alphabet=st.characters(codec="ascii") | st.sampled_from("éßλжあ中😀٣\u00a0\u2003"),
                     max_size=40)


# ---------------------------------------------------------------------- training

def test_hand_worked_example():
    # "aaabdaaabac": (a,a) 4 times -> 260: [260 a b d 260 a b a c]; then (a,b) and (260,a)
    # both twice, the tie goes to the smaller pair (97, 98) -> 261; then (260, 261) -> 262.
    tok = BPETokenizer.train(["aaabdaaabac"], vocab_size=FIRST_MERGE_ID + 3)
    assert list(tok.merges) == [(97, 97), (97, 98), (260, 261)]
    assert tok.encode("aaabdaaabac") == [262, 100, 262, 97, 99]
    assert tok.vocab[262] == b"aaab"


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(small_words, min_size=1, max_size=8), n_merges=st.integers(0, 25))
def test_training_matches_naive_trainer(texts, n_merges):
    tok = BPETokenizer.train(texts, vocab_size=FIRST_MERGE_ID + n_merges)
    expected = naive_train(texts, n_merges)
    assert list(tok.merges) == expected
    assert tok.vocab_size == FIRST_MERGE_ID + len(expected)


def test_training_on_corpus_matches_naive_trainer():
    texts = corpus(n_sentences=300, seed=1)
    assert list(BPETokenizer.train(texts, FIRST_MERGE_ID + 150).merges) == naive_train(texts, 150)


def test_trains_1000_merges_on_the_builtin_corpus(tokenizer):
    assert len(tokenizer.merges) == 1000
    assert tokenizer.vocab_size == 256 + 4 + 1000


def test_special_tokens_in_training_text_are_not_learned():
    tok = BPETokenizer.train(["<mask><mask><mask>"], vocab_size=FIRST_MERGE_ID + 5)
    assert tok.merges == {}


def test_training_stops_when_nothing_is_left_to_merge():
    tok = BPETokenizer.train(["ab ab"], vocab_size=FIRST_MERGE_ID + 50)
    # pre-tokens "ab" and " ab": merge (a, b) -> 260, then (' ', 260) -> 261, then nothing
    assert tok.vocab_size == FIRST_MERGE_ID + 2
    assert tok.encode("ab ab") == [FIRST_MERGE_ID, FIRST_MERGE_ID + 1]


def test_vocab_size_too_small_is_a_clear_error():
    with pytest.raises(ValueError, match=r"vocab_size=259 .*256 byte tokens plus 4 special tokens = 260"):
        BPETokenizer.train(["hello"], vocab_size=259)


# ---------------------------------------------------------------------- encoding and decoding

@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_any_string(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=10) | st.sampled_from(SPECIALS), max_size=6))
def test_special_tokens_in_text_map_to_their_ids(tokenizer, parts):
    text = "".join(parts)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert ids.count(tokenizer.mask_id) == text.count("<mask>")


@settings(max_examples=50, deadline=None)
@given(mixed_text)
def test_encode_matches_sequential_merging(tokenizer, text):
    text = text.replace("<", "[")       # no special tokens here
    assert tokenizer.encode(text) == encode_sequentially(text, list(tokenizer.merges))


@settings(max_examples=100, deadline=None)
@given(mixed_text)
def test_pretokens_match_hugging_face_byte_level(text):
    pre_tokenizers = pytest.importorskip("tokenizers.pre_tokenizers")
    gpt2 = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    expected = [text[start:end] for _, (start, end) in gpt2.pre_tokenize_str(text)]
    assert GPT2_PATTERN.findall(text) == expected


def test_special_ids(tokenizer):
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id, tokenizer.mask_id) == (256, 257, 258, 259)
    assert tokenizer.encode("<s>a cat</s>")[0] == tokenizer.bos_id
    assert tokenizer.decode([tokenizer.pad_id, tokenizer.mask_id]) == "<pad><mask>"


def test_missing_special_token_is_a_clear_error():
    tok = BPETokenizer.train(["x"], vocab_size=257, special_tokens=("<eos>",))
    with pytest.raises(KeyError, match=r"no '<mask>' token; its special tokens are \['<eos>'\]"):
        tok.mask_id


def test_bytes_are_their_own_ids(tokenizer):
    assert tokenizer.decode(list("hi!".encode())) == "hi!"
    assert tokenizer.decode([0xC3, 0xA9]) == "é"


def test_unknown_id_in_decode_is_a_clear_error(tokenizer):
    with pytest.raises(ValueError, match=r"token id 1260 is not in the vocabulary \(ids 0..1259\)"):
        tokenizer.decode([1, 1260])
    with pytest.raises(ValueError, match="token id -1"):
        tokenizer.decode([-1])


def test_frequent_words_become_single_tokens(tokenizer):
    for word in [" the", " is", " circle", " seven"]:
        assert len(tokenizer.encode(word)) == 1, word


# ---------------------------------------------------------------------- files

def test_save_load_round_trip(tokenizer, tmp_path):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]     # no temporary left
    loaded = BPETokenizer.load(path)
    assert loaded.merges == tokenizer.merges and loaded.special_tokens == tokenizer.special_tokens
    text = "the month after may is june. 12 + 7 = 19. <mask>"
    assert loaded.encode(text) == tokenizer.encode(text)


def test_load_rejects_other_json(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"merges": []}))
    with pytest.raises(ValueError, match=r"other.json is not a Hugging Face tokenizer.json "
                                         r"\(it has no 'model'\)"):
        BPETokenizer.load(path)


# ---------------------------------------------------------------------- Hugging Face tokenizer.json

HF_FIXTURE = Path(__file__).with_name("fixtures") / "bpe_tokenizer"


@pytest.fixture(scope="module")
def hf_tokenizer():
    return BPETokenizer.load(HF_FIXTURE / "tokenizer.json")


def test_reads_a_hugging_face_byte_level_bpe_exactly(hf_tokenizer):
    """The committed fixture (SmolLM2's kind: digits one by one, special tokens numbered
    first): the ids and texts the `tokenizers` package gave."""
    expected = json.loads((HF_FIXTURE / "expected.json").read_text(encoding="utf-8"))
    assert hf_tokenizer.special_tokens == {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    assert hf_tokenizer.split_digits
    for text, ids, decoded in zip(expected["texts"], expected["ids"], expected["decoded"]):
        assert hf_tokenizer.encode(text) == ids, text
        assert hf_tokenizer.decode(ids) == decoded == text


def test_merges_go_by_rank_not_by_id(tmp_path):
    """The merges list, not the ids, sets the order of merging: the fixture with the ids of its
    merged tokens reversed encodes each text to the same tokens under their new ids."""
    config = json.loads((HF_FIXTURE / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = config["model"]["vocab"]
    merged = sorted(vocab[left + right] for left, right in config["model"]["merges"])
    new_id = dict(zip(merged, reversed(merged)))
    config["model"]["vocab"] = {token: new_id.get(i, i) for token, i in vocab.items()}
    (tmp_path / "tokenizer.json").write_text(json.dumps(config))
    tokenizer = BPETokenizer.load(tmp_path / "tokenizer.json")
    expected = json.loads((HF_FIXTURE / "expected.json").read_text(encoding="utf-8"))
    for text, ids in zip(expected["texts"], expected["ids"]):
        assert tokenizer.encode(text) == [new_id.get(i, i) for i in ids], text


@settings(max_examples=100, deadline=None)
@given(st.lists(mixed_text | st.sampled_from(["<|im_start|>", "<|im_end|>", " 123", "4.5"]),
                max_size=4))
def test_hugging_face_tokenizer_matches_the_tokenizers_package(hf_tokenizer, parts):
    tokenizers = pytest.importorskip("tokenizers")
    theirs = tokenizers.Tokenizer.from_file(str(HF_FIXTURE / "tokenizer.json"))
    text = "".join(parts)
    ids = theirs.encode(text).ids
    assert hf_tokenizer.encode(text) == ids
    assert hf_tokenizer.decode(ids) == theirs.decode(ids, skip_special_tokens=False)


@settings(max_examples=100, deadline=None)
@given(st.lists(mixed_text | st.sampled_from(SPECIALS), max_size=4))
def test_the_tokenizers_package_reads_what_save_writes(tokenizer, tmp_path_factory, parts):
    tokenizers = pytest.importorskip("tokenizers")
    path = tmp_path_factory.getbasetemp() / "saved-tokenizer.json"
    if not path.exists():
        tokenizer.save(path)
    theirs = tokenizers.Tokenizer.from_file(str(path))
    text = "".join(parts)
    ids = tokenizer.encode(text)
    assert theirs.encode(text).ids == ids
    assert theirs.decode(ids, skip_special_tokens=False) == text


@pytest.mark.parametrize("change, named", [
    (lambda c: c["model"].update(type="WordPiece"), "model type 'WordPiece'"),
    (lambda c: c.update(pre_tokenizer={"type": "Metaspace", "replacement": "▁"}),
     r"pre_tokenizer \['Metaspace'\]"),
    (lambda c: c.update(normalizer={"type": "NFC"}), "normalizer 'NFC'"),
    (lambda c: c.update(decoder={"type": "Metaspace"}), "decoder 'Metaspace'"),
    (lambda c: c["model"].update(byte_fallback=True), "model's byte_fallback True"),
    (lambda c: c.update(post_processor={"type": "TemplateProcessing"}),
     "post_processor 'TemplateProcessing'"),
])
def test_other_tokenizer_kinds_are_a_clear_error_naming_them(tmp_path, change, named):
    config = json.loads((HF_FIXTURE / "tokenizer.json").read_text(encoding="utf-8"))
    change(config)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"{named} is not supported: minivlm reads byte-level"):
        BPETokenizer.load(path)


def test_bad_merges_are_a_clear_error():
    with pytest.raises(ValueError, match=r"merge \(97, 300\) -> 260"):
        BPETokenizer([(97, 300)])
    with pytest.raises(ValueError, match=r"merge \(97, 256\)"):       # 256 is "<s>"
        BPETokenizer([(97, 256)])


# ---------------------------------------------------------------------- the built-in corpus

def test_corpus_is_reproducible_and_seeded():
    assert corpus(200, seed=3) == corpus(200, seed=3)
    assert corpus(200, seed=3) != corpus(200, seed=4)
    assert len(corpus(123)) == 123 and corpus(0) == []


def test_corpus_sentences_are_plain_lowercase_sentences():
    for sentence in corpus(2000):
        assert sentence.isascii() and sentence == sentence.lower() and sentence.endswith(".")


def test_corpus_arithmetic_is_correct():
    checked = 0
    for sentence in corpus(2000):
        if " = " in sentence:
            left, right = sentence.rstrip(".").split(" = ")
            a, op, b = left.split()
            assert int(right) == (int(a) + int(b) if op == "+" else int(a) - int(b)), sentence
            checked += 1
    assert checked > 50

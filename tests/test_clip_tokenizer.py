"""CLIPTokenizer against OpenAI's CLIP tokenizer: the committed fixture (made by
tests/make_tokenizer_fixtures.py from OpenAI's code) always; OpenAI's code live when it can be
loaded (an installed open_clip, or MINIVLM_OPEN_CLIP_WHEEL=path/to/open_clip_torch-*.whl)."""

import importlib.util
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from minivlm.tokenizers import CLIPTokenizer

HERE = Path(__file__).parent
FIXTURE = json.loads((HERE / "fixtures" / "clip_tokenizer.json").read_text())
SOT, EOT = 49406, 49407                         # <|startoftext|>, <|endoftext|> in OpenAI's vocabulary

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=12)
spaces = st.text(alphabet=" \t\n", min_size=1, max_size=3)
letter_texts = st.lists(st.tuples(words, spaces), max_size=8).map(
    lambda pairs: "".join(word + space for word, space in pairs))


@pytest.fixture(scope="module")
def tokenizer():
    return CLIPTokenizer()


# ---------------------------------------------------------------------- the committed fixture

@pytest.mark.parametrize("entry", FIXTURE["encode"], ids=lambda entry: repr(entry["text"])[:40])
def test_encode_matches_openai(tokenizer, entry):
    assert tokenizer.encode(entry["text"]) == entry["ids"]


@pytest.mark.parametrize("entry", [e for e in FIXTURE["encode"] if "decoded" in e],
                         ids=lambda entry: repr(entry["text"])[:40])
def test_decode_matches_openai(tokenizer, entry):
    assert tokenizer.decode(entry["ids"]) == entry["decoded"]


@pytest.mark.parametrize("batch", FIXTURE["tokenize"], ids=lambda batch: f"context_length={batch['context_length']}")
def test_tokenize_matches_openai(tokenizer, batch):
    result = tokenizer(batch["texts"], context_length=batch["context_length"], truncate=True)
    assert result.dtype == np.int64
    np.testing.assert_array_equal(result, batch["ids"])


def test_vocabulary_constants(tokenizer):
    assert (tokenizer.vocab_size, tokenizer.sot_token_id, tokenizer.eot_token_id) == (49408, SOT, EOT)
    assert tokenizer.decode([SOT, EOT]) == "<|startoftext|><|endoftext|>"


# ---------------------------------------------------------------------- properties

@settings(max_examples=100, deadline=None)
@given(letter_texts)
def test_decode_of_encode_is_the_cleaned_lower_case_text(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == "".join(w + " " for w in text.lower().split())


@settings(max_examples=50, deadline=None)
@given(st.lists(letter_texts, min_size=1, max_size=4), st.integers(2, 20))
def test_tokenize_rows_are_sot_ids_eot_then_zeros(tokenizer, texts, context_length):
    result = tokenizer.tokenize(texts, context_length=context_length, truncate=True)
    assert result.shape == (len(texts), context_length) and result.dtype == np.int64
    for row, text in zip(result, texts):
        ids = [SOT, *tokenizer.encode(text), EOT]
        if len(ids) <= context_length:
            expected = ids + [0] * (context_length - len(ids))
            np.testing.assert_array_equal(tokenizer.tokenize(text, context_length), [expected])
        else:
            expected = ids[:context_length - 1] + [EOT]
        assert row.tolist() == expected


@settings(max_examples=25, deadline=None)
@given(st.lists(words, min_size=5, max_size=12))
def test_too_long_text_is_an_error_naming_it(tokenizer, text_words):
    text = " ".join(text_words)
    n_tokens = len(tokenizer.encode(text)) + 2
    message = f"Input '{text}' is too long for context length 4: {n_tokens} tokens"
    with pytest.raises(RuntimeError, match=re.escape(message)):
        tokenizer.tokenize(["ok", text], context_length=4)


def test_single_string_and_empty_batch(tokenizer):
    assert tokenizer("a dog").shape == (1, 77)
    assert tokenizer([]).shape == (0, 77)


def test_bad_arguments_are_clear_errors(tokenizer):
    with pytest.raises(ValueError, match="context_length=1 cannot hold"):
        tokenizer("a", context_length=1)
    with pytest.raises(TypeError, match="encode expects a str, got int"):
        tokenizer.encode(5)
    with pytest.raises(ValueError, match=r"token id 49408 is not in the vocabulary \(ids 0..49407\)"):
        tokenizer.decode([320, 49408])


# ---------------------------------------------------------------------- live against OpenAI's code

@pytest.fixture(scope="module")
def reference():
    wheel = os.environ.get("MINIVLM_OPEN_CLIP_WHEEL")
    if wheel is None and importlib.util.find_spec("open_clip") is None:
        pytest.skip("OpenAI's CLIP tokenizer code not found: install open_clip_torch "
                    "or set MINIVLM_OPEN_CLIP_WHEEL to its wheel")
    pytest.importorskip("torch")     # open_clip's tokenizer.py imports it
    spec = importlib.util.spec_from_file_location("make_tokenizer_fixtures", HERE / "make_tokenizer_fixtures.py")
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    return maker.load_reference_tokenizer(wheel)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_live_against_openai(tokenizer, reference, text):
    cleaned = reference.basic_clean(text).lower()        # open_clip renamed the special tokens
    assume(not any(s in cleaned for s in ("<|", "<start_of_text>", "<end_of_text>")))
    ids = reference._tokenizer.encode(text)
    assert tokenizer.encode(text) == ids
    assert tokenizer.decode(ids) == reference._tokenizer.decode(ids)
    np.testing.assert_array_equal(tokenizer([text, "a"], context_length=12, truncate=True),
                                  reference.tokenize([text, "a"], context_length=12).numpy())

"""One `generate` for every decoder (GPT-2-style CausalLM, LlamaForCausalLM): the KV cache gives
the uncached logits at every step, greedy equals transformers' generate on the fixtures, a
left-padded batch gives each row what it gets alone, sampling is reproducible and top-k / top-p
never emit a token outside the kept set."""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minivlm as mv
from minivlm import nn
from minivlm.models import CausalLM, LlamaConfig, LlamaForCausalLM, LMConfig
from minivlm.models.generation import warped_logits
from minivlm.testing import assert_close
from make_vision_fixtures import randomize_minivlm

FIXTURES = Path(__file__).with_name("fixtures")
VOCAB = 41


def decoder(kind, seed=0, dtype="float64"):
    """A small random decoder of either kind, in eval mode."""
    mv.manual_seed(seed)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=VOCAB, hidden_size=12, intermediate_size=19, num_hidden_layers=2,
            num_attention_heads=6, num_key_value_heads=2, rope_theta=100.0))
    else:
        model = CausalLM(LMConfig("causal", VOCAB, context_length=40, width=12, layers=2, heads=3))
    return randomize_minivlm(model, seed).to(dtype).eval()


def left_padded(lengths, rng, pad_id=0):
    """Prompts of the given lengths, left-padded to the longest: (ids, attention_mask)."""
    width = max(lengths)
    ids = np.full((len(lengths), width), pad_id)
    mask = np.zeros((len(lengths), width), dtype=np.int64)
    for row, length in enumerate(lengths):
        ids[row, width - length:] = rng.integers(1, VOCAB, size=length)
        mask[row, width - length:] = 1
    return ids, mask


KINDS = ["llama", "gpt2"]


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=8, deadline=None)
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=3), steps=st.integers(1, 5),
       first_chunk=st.integers(1, 6), seed=st.integers(0, 1000))
def test_cached_logits_equal_uncached_ones_at_every_step(kind, lengths, steps, first_chunk, seed):
    """The prompt goes in as one or two chunks, then one token a step: at each call the cached
    logits equal those of the whole sequence so far, computed without a cache."""
    model, rng = decoder(kind, seed % 3), np.random.default_rng(seed)
    ids, mask = left_padded(lengths, rng)
    ids = np.concatenate([ids, rng.integers(1, VOCAB, size=(len(lengths), steps))], axis=1)
    mask = np.concatenate([mask, np.ones((len(lengths), steps), dtype=np.int64)], axis=1)
    prompt = ids.shape[1] - steps
    cuts = sorted({min(first_chunk, prompt), prompt, *range(prompt + 1, ids.shape[1] + 1)})
    cache, start = nn.KVCache(), 0
    for end in cuts:
        cached = model(ids[:, start:end], attention_mask=mask[:, :end], past_key_values=cache)
        uncached = model(ids[:, :end], attention_mask=mask[:, :end])
        real = mask[:, start:end].astype(bool)
        assert_close(cached.numpy()[real], uncached.numpy()[:, start:end][real], rtol=1e-12)
        assert cache.get_seq_length() == end
        start = end


@pytest.mark.parametrize("kind", KINDS)
def test_a_left_padded_batch_gives_each_row_its_tokens_alone(kind):
    model, rng = decoder(kind, 1), np.random.default_rng(1)
    ids, mask = left_padded([5, 2, 4], rng)
    batch = model.generate(ids, max_new_tokens=7, attention_mask=mask)
    for row in range(3):
        alone = ids[row][mask[row] == 1][None]
        np.testing.assert_array_equal(batch[row, ids.shape[1]:],
                                      model.generate(alone, max_new_tokens=7)[0, alone.shape[1]:])


@pytest.mark.parametrize("kind", KINDS)
def test_cache_on_and_off_generate_the_same_ids(kind):
    model, rng = decoder(kind, 2, dtype="float32"), np.random.default_rng(2)
    ids, mask = left_padded([4, 6], rng)
    on = model.generate(ids, 9, attention_mask=mask)
    off = model.generate(ids, 9, attention_mask=mask, use_cache=False)
    assert on.shape == (2, 15)
    np.testing.assert_array_equal(on, off)
    mv.manual_seed(5)
    sampled_on = model.generate(ids, 9, do_sample=True, attention_mask=mask)
    mv.manual_seed(5)
    sampled_off = model.generate(ids, 9, do_sample=True, attention_mask=mask, use_cache=False)
    np.testing.assert_array_equal(sampled_on, sampled_off)


@pytest.mark.parametrize("kind", KINDS)
def test_generation_can_start_from_prompt_embeddings(kind):
    """As a VLM does (the image spliced into the embeddings): the new tokens alone come back."""
    model, rng = decoder(kind, 3), np.random.default_rng(3)
    ids, mask = left_padded([3, 5], rng)
    embeds = model.get_input_embeddings()(ids)
    new = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=6)
    np.testing.assert_array_equal(new, model.generate(ids, 6, attention_mask=mask)[:, 5:])


def test_gpt2_fixture_greedy_generate_equals_transformers():
    expected = dict(np.load(FIXTURES / "gpt2_tiny" / "expected.npz"))
    model = mv.load_pretrained(FIXTURES / "gpt2_tiny")
    logits = mv.load_pretrained(FIXTURES / "gpt2_tiny", "float64")(expected["input_ids"][:1])
    assert_close(logits, expected["logits"], rtol=1e-10)
    for use_cache in (True, False):
        ids = model.generate(expected["input_ids"], max_new_tokens=10, eos_token_id=2,
                             attention_mask=expected["attention_mask"], use_cache=use_cache)
        np.testing.assert_array_equal(ids, expected["generated"])


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_generate_equals_transformers_live(kind, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import make_decoder_fixtures as fixtures
    theirs = fixtures.tiny_llama(7) if kind == "llama" else fixtures.tiny_gpt2(7)
    theirs.generation_config.eos_token_id = None           # run the full length
    theirs.save_pretrained(tmp_path)
    ours = mv.load_pretrained(tmp_path)
    ids, mask = left_padded([6, 3, 5], np.random.default_rng(4))
    ids = ids % theirs.config.vocab_size
    with torch.no_grad():
        expected = theirs.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                   max_new_tokens=12, do_sample=False, pad_token_id=0).numpy()
    np.testing.assert_array_equal(ours.generate(ids, 12, attention_mask=mask), expected)


# --- sampling -------------------------------------------------------------------------------------

def test_sampling_with_a_seed_is_reproducible():
    model = decoder("llama", 4, dtype="float32")
    ids = np.random.default_rng(0).integers(1, VOCAB, size=(2, 4))
    runs = []
    for seed in (11, 11, 12):
        mv.manual_seed(seed)
        runs.append(model.generate(ids, 12, do_sample=True, temperature=1.5))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert (runs[0] != runs[2]).any()


def kept_set(logits, top_k=None, top_p=None):
    """The tokens sampling may emit, by sorting: the top_k largest, then of those the most likely
    ones until their probability first reaches top_p."""
    order = np.argsort(-logits, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    if top_p is not None:
        probs = np.exp(logits[order] - logits[order].max())
        probs /= probs.sum()
        order = order[:int(np.searchsorted(np.cumsum(probs), top_p - 1e-12)) + 1]
    return set(order.tolist())


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=6, deadline=None)
@given(top_k=st.none() | st.integers(1, 6), top_p=st.none() | st.floats(0.05, 0.95),
       temperature=st.sampled_from([0.5, 1.0, 2.0]), seed=st.integers(0, 10_000))
def test_top_k_and_top_p_never_emit_a_token_outside_the_kept_set(kind, top_k, top_p,
                                                                  temperature, seed):
    model = decoder(kind, seed % 2, dtype="float32")
    ids = np.random.default_rng(seed).integers(1, VOCAB, size=(3, 3))
    mv.manual_seed(seed)
    out = model.generate(ids, 8, do_sample=True, temperature=temperature, top_k=top_k,
                         top_p=top_p)
    for t in range(3, out.shape[1]):
        logits = model(out[:, :t]).numpy()[:, -1] / temperature
        for row in range(3):
            assert out[row, t] in kept_set(logits[row], top_k, top_p), (row, t)


def test_top_p_keeps_the_fewest_likeliest_tokens_reaching_p():
    logits = np.log(np.array([[0.05, 0.5, 0.15, 0.3]]))
    for top_p, kept in ((0.5, {1}), (0.79, {1, 3}), (0.81, {1, 2, 3}), (1.0, {0, 1, 2, 3})):
        warped = warped_logits(logits, top_p=top_p)[0]
        assert set(np.flatnonzero(np.isfinite(warped))) == kept, top_p
    warped = warped_logits(logits, temperature=2.0, top_k=2)[0]
    np.testing.assert_allclose(warped[[1, 3]], logits[0, [1, 3]] / 2)
    assert np.isinf(warped[[0, 2]]).all()


# --- stopping and arguments -----------------------------------------------------------------------

def test_finished_rows_are_padded_and_generation_stops_when_all_are():
    model = decoder("llama", 5, dtype="float32")
    ids = np.random.default_rng(5).integers(1, VOCAB, size=(3, 4))
    free = model.generate(ids, 10)[:, 4:]
    eos = int(free[0, 2])                       # row 0 produces it at its third new token
    out = model.generate(ids, 10, eos_token_id=eos, pad_token_id=0)[:, 4:]
    for row in range(3):
        hits = np.flatnonzero(free[row] == eos)
        end = hits[0] + 1 if len(hits) else out.shape[1]
        np.testing.assert_array_equal(out[row, :end], free[row, :end])
        assert (out[row, end:] == 0).all()
    finished_all = [np.flatnonzero(free[row] == eos) for row in range(3)]
    if all(len(h) for h in finished_all):
        assert out.shape[1] == max(h[0] for h in finished_all) + 1
    else:
        assert out.shape[1] == 10


def test_generate_checks_its_arguments():
    model = decoder("llama", 0, dtype="float32")
    ids = np.ones((1, 3), dtype=np.int64)
    for kwargs, message in ((dict(max_new_tokens=-1), "max_new_tokens must be >= 0"),
                            (dict(top_k=0), "top_k must be >= 1"),
                            (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
                            (dict(attention_mask=np.ones((1, 4))),
                             r"attention_mask must be .* \(1, 3\), got shape \(1, 4\)")):
        with pytest.raises(ValueError, match=message):
            model.generate(ids, **{"max_new_tokens": 2, **kwargs})
    with pytest.raises(ValueError, match="exactly one of input_ids"):
        model.generate(max_new_tokens=2)
    assert model.generate(ids, 0).shape == (1, 3)


def test_gpt2_past_its_positions_is_a_clear_error():
    model = decoder("gpt2", 0, dtype="float32")                 # context_length 40
    with pytest.raises(ValueError, match="position 40 is past the 40 positions"):
        model.generate(np.ones((1, 35), dtype=np.int64), 10)

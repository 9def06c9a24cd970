"""The language models: against Hugging Face GPT-2 and RoBERTa, gradients, backends, causality,
BERT masking statistics, sampling, checkpoints, training and the `train-lm` command."""
import functools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minivlm as mv
from minivlm import backend as backends
from minivlm.__main__ import main
from minivlm.data.text import corpus
from minivlm.models.lm import (IGNORE_INDEX, CausalLM, LMConfig, MaskedLM,
                               SentenceClassificationHead, TokenClassificationHead, build_model,
                               fill_mask, lm_loss, mask_tokens)
from minivlm.recipes.common import METRICS_FILE, STATE_FILE, read_metrics
from minivlm.recipes import lm as lm_recipe
from minivlm.recipes.lm import (consecutive_windows, evaluate, held_out_sentences,
                                inputs_and_targets, random_windows, token_stream, train,
                                window_length)
from minivlm.testing import assert_close, gradcheck
from minivlm.tokenizers import BPETokenizer

OBJECTIVES = ["causal", "mlm"]


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = BPETokenizer.train(corpus(300, seed=0), vocab_size=300)
    assert tokenizer.vocab_size == 300          # the vocabulary of tiny_model
    return tokenizer


def tiny_model(objective, vocab_size=300, seed=0, **overrides):
    mv.manual_seed(seed)
    config = dict(context_length=12, width=16, layers=2, heads=2) | overrides
    return build_model(LMConfig(objective, vocab_size, **config))


def ordinary_ids(tokenizer, shape, seed=0):
    """Random ids (shape) that are no special token."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, tokenizer.vocab_size - 4, size=shape)
    return np.where(ids >= 256, ids + 4, ids)    # skip the four specials at 256..259


def scramble(model, std=0.3, seed=1):
    """Redraw every parameter (layer norms and biases too), so that a comparison sees them all."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.array[...] = p.array + std * rng.standard_normal(p.shape)
    return model


# --- against the real implementations ------------------------------------------------------------

def _copy_weights(theirs, weights):
    """Set every parameter of the torch module `theirs` from `weights` {name: array}, checking
    that each is given exactly once."""
    torch = pytest.importorskip("torch")
    params = dict(theirs.named_parameters())
    assert set(weights) == set(params), (set(params) ^ set(weights))
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(torch.tensor(np.ascontiguousarray(value)))
    return theirs


def test_causal_lm_matches_hugging_face_gpt2(tokenizer):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ours = scramble(tiny_model("causal").double())
    c = ours.config
    theirs = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.context_length, n_embd=c.width, n_layer=c.layers,
        n_head=c.heads, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)).double().eval()
    sd = {name: t.numpy() for name, t in ours.state_dict().items()}
    weights = {"transformer.wte.weight": sd["token_embedding.weight"],
               "transformer.wpe.weight": sd["position_embedding.weight"],
               "transformer.ln_f.weight": sd["norm.weight"],
               "transformer.ln_f.bias": sd["norm.bias"]}
    for i in range(c.layers):
        ours_, theirs_ = f"blocks.{i}.", f"transformer.h.{i}."
        pairs = {"ln_1": "norm1", "ln_2": "norm2", "attn.c_proj": "self_attn.out_proj",
                 "mlp.c_fc": "linear1", "mlp.c_proj": "linear2"}
        for their_name, our_name in pairs.items():
            transpose = not their_name.startswith("ln_")     # GPT-2's Conv1D weights: (in, out)
            weight = sd[ours_ + our_name + ".weight"]
            weights[theirs_ + their_name + ".weight"] = weight.T if transpose else weight
            weights[theirs_ + their_name + ".bias"] = sd[ours_ + our_name + ".bias"]
        weights[theirs_ + "attn.c_attn.weight"] = sd[ours_ + "self_attn.in_proj_weight"].T
        weights[theirs_ + "attn.c_attn.bias"] = sd[ours_ + "self_attn.in_proj_bias"]
    _copy_weights(theirs, weights)   # lm_head.weight is tied to wte in both

    ids = ordinary_ids(tokenizer, (2, c.context_length))
    with torch.no_grad():
        expected = theirs(torch.tensor(ids)).logits.numpy()
    assert_close(ours(ids).numpy(), expected, rtol=1e-10)


def test_masked_lm_matches_hugging_face_roberta(tokenizer):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ours = scramble(tiny_model("mlm").double())
    c = ours.config
    first_position = tokenizer.pad_id + 1   # RoBERTa counts positions from padding_idx + 1
    theirs = transformers.RobertaForMaskedLM(transformers.RobertaConfig(
        vocab_size=c.vocab_size, hidden_size=c.width, num_hidden_layers=c.layers,
        num_attention_heads=c.heads, intermediate_size=4 * c.width, hidden_act="gelu",
        hidden_dropout_prob=0, attention_probs_dropout_prob=0, type_vocab_size=1,
        max_position_embeddings=first_position + c.context_length, layer_norm_eps=1e-5,
        pad_token_id=tokenizer.pad_id)).double().eval()
    sd = {name: t.numpy() for name, t in ours.state_dict().items()}
    positions = np.zeros((first_position + c.context_length, c.width))
    positions[first_position:] = sd["position_embedding.weight"]
    weights = {"roberta.embeddings.word_embeddings.weight": sd["token_embedding.weight"],
               "roberta.embeddings.position_embeddings.weight": positions,
               "roberta.embeddings.token_type_embeddings.weight": np.zeros((1, c.width)),
               "roberta.embeddings.LayerNorm.weight": sd["embedding_norm.weight"],
               "roberta.embeddings.LayerNorm.bias": sd["embedding_norm.bias"],
               **{f"lm_head.{name}": sd[f"lm_head.{name}"] for name in
                  ("bias", "dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias")}}
    for i in range(c.layers):
        ours_, theirs_ = f"blocks.{i}.", f"roberta.encoder.layer.{i}."
        for name, w, b in zip(("query", "key", "value"),
                              np.split(sd[ours_ + "self_attn.in_proj_weight"], 3),
                              np.split(sd[ours_ + "self_attn.in_proj_bias"], 3)):
            weights[theirs_ + f"attention.self.{name}.weight"] = w
            weights[theirs_ + f"attention.self.{name}.bias"] = b
        pairs = {"attention.output.dense": "self_attn.out_proj",
                 "attention.output.LayerNorm": "norm1", "intermediate.dense": "linear1",
                 "output.dense": "linear2", "output.LayerNorm": "norm2"}
        for their_name, our_name in pairs.items():
            for kind in ("weight", "bias"):
                weights[f"{theirs_}{their_name}.{kind}"] = sd[f"{ours_}{our_name}.{kind}"]
    _copy_weights(theirs, weights)   # the decoder is tied to the word embeddings in both

    ids = ordinary_ids(tokenizer, (2, c.context_length))
    with torch.no_grad():
        expected = theirs(torch.tensor(ids)).logits.numpy()
    assert_close(ours(ids).numpy(), expected, rtol=1e-10)


# --- gradients and backends ----------------------------------------------------------------------

@pytest.mark.parametrize("objective", OBJECTIVES)
def test_loss_gradient_matches_finite_differences(objective, tokenizer):
    model = scramble(tiny_model(objective, layers=1).double())
    windows = ordinary_ids(tokenizer, (2, window_length(model.config)))
    inputs, targets = inputs_and_targets(windows, objective, tokenizer, np.random.default_rng(0))
    checked = [model.token_embedding.weight, model.position_embedding.weight,
               model.blocks[0].self_attn.in_proj_weight, model.blocks[0].norm1.weight,
               model.blocks[0].linear2.bias]
    checked += [model.lm_head.dense.weight, model.lm_head.bias] if objective == "mlm" else [
        model.norm.bias]
    gradcheck(lambda *params: lm_loss(model(inputs), targets), checked)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_float32_logits_match_float64(objective, backend, tokenizer):
    model = scramble(tiny_model(objective))
    ids = ordinary_ids(tokenizer, (3, model.config.context_length))
    expected = model.double()(ids).numpy()
    model.float().to(backend)
    actual = model(backends.to_backend(ids, backend))
    assert actual.dtype == np.float32
    assert_close(backends.to_numpy(actual.array), expected, rtol=1e-3)


# --- what each position sees ---------------------------------------------------------------------

def _positions_changed(model, ids, position, new_token):
    """Which positions' logits change when ids[:, position] becomes new_token: (T,) bool."""
    changed = ids.copy()
    changed[:, position] = new_token
    before, after = model(ids).numpy(), model(changed).numpy()
    return np.abs(after - before).max(axis=(0, 2)) > 1e-9


@settings(max_examples=10, deadline=None)
@given(position=st.integers(0, 11), seed=st.integers(0, 100))
def test_causal_lm_does_not_look_ahead(position, seed, tokenizer):
    ids = ordinary_ids(tokenizer, (2, 12), seed)
    changed = _positions_changed(tiny_model("causal", seed=seed).double(), ids, position,
                                 new_token=(ids[0, position] + 1) % 256)
    assert not changed[:position].any(), f"changing token {position} changed earlier logits"
    assert changed[position:].all()


def test_masked_lm_looks_both_ways(tokenizer):
    """The same probe as above sees the masked LM's bidirectional attention (so it can fail)."""
    ids = ordinary_ids(tokenizer, (2, 12))
    assert _positions_changed(tiny_model("mlm").double(), ids, 6, (ids[0, 6] + 1) % 256).all()


# --- BERT masking --------------------------------------------------------------------------------

@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), p=st.sampled_from([0.15, 0.3]))
def test_mask_tokens_chooses_p_then_80_10_10(seed, p, tokenizer):
    ids = ordinary_ids(tokenizer, (200, 500), seed)             # 100 000 ordinary tokens
    inputs, targets = mask_tokens(ids, tokenizer, np.random.default_rng(seed), p=p)
    chosen = targets != IGNORE_INDEX
    n = chosen.sum()
    # 6 standard deviations of a binomial proportion: a false alarm about once in 10⁹ runs
    assert abs(n / ids.size - p) < 6 * math.sqrt(p * (1 - p) / ids.size)
    assert (targets[chosen] == ids[chosen]).all()
    assert (inputs[~chosen] == ids[~chosen]).all()
    masked = inputs[chosen] == tokenizer.mask_id
    kept = inputs[chosen] == ids[chosen]
    replaced = ~masked & ~kept
    hit_itself = 0.1 / (tokenizer.vocab_size - 4)   # a random token equal to the original
    for fraction, expected in ((masked.mean(), 0.8), (kept.mean(), 0.1 + hit_itself),
                               (replaced.mean(), 0.1 - hit_itself)):
        assert abs(fraction - expected) < 6 * math.sqrt(expected * (1 - expected) / n)
    special = list(tokenizer.special_tokens.values())
    assert not np.isin(inputs[chosen][replaced], special).any()


def test_mask_tokens_never_chooses_special_tokens_or_padding(tokenizer):
    stream = token_stream(corpus(200, seed=3), tokenizer)
    ids = np.concatenate([consecutive_windows(stream, 24),
                          np.full((4, 24), tokenizer.pad_id)])          # rows of padding too
    inputs, targets = mask_tokens(ids, tokenizer, np.random.default_rng(0), p=0.9)
    special = np.isin(ids, list(tokenizer.special_tokens.values()))
    assert special.sum() > 100 and (~special).sum() > 100
    assert (targets[special] == IGNORE_INDEX).all() and (inputs[special] == ids[special]).all()
    assert (targets[~special] != IGNORE_INDEX).mean() > 0.8    # p=0.9 reached the others


def test_mask_tokens_works_on_each_backend(backend, tokenizer):
    xp = backends.module(backend)
    ids = xp.asarray(ordinary_ids(tokenizer, (50, 40)))
    ids[:, 0] = tokenizer.bos_id
    inputs, targets = mask_tokens(ids, tokenizer, xp.random.default_rng(0))
    inputs, targets, ids = (backends.to_numpy(a) for a in (inputs, targets, ids))
    chosen = targets != IGNORE_INDEX
    assert 0.1 < chosen.mean() < 0.2 and not chosen[:, 0].any()
    assert (targets[chosen] == ids[chosen]).all() and (inputs[~chosen] == ids[~chosen]).all()
    assert 0.7 < (inputs[chosen] == tokenizer.mask_id).mean() < 0.9


def test_mask_tokens_is_reproducible_from_its_generator(tokenizer):
    ids = ordinary_ids(tokenizer, (4, 30))
    first, second = (mask_tokens(ids, tokenizer, np.random.default_rng(7)) for _ in range(2))
    assert all((a == b).all() for a, b in zip(first, second))


def test_lm_loss_counts_only_the_chosen_positions():
    torch = pytest.importorskip("torch")
    logits = np.random.default_rng(0).standard_normal((2, 5, 7))
    targets = np.array([[1, IGNORE_INDEX, 3, IGNORE_INDEX, 6], [IGNORE_INDEX, 0, 0, 2, 5]])
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits[targets != IGNORE_INDEX]),
                                                 torch.tensor(targets[targets != IGNORE_INDEX]))
    assert lm_loss(mv.tensor(logits), targets).item() == pytest.approx(expected.item(), rel=1e-12)
    with pytest.raises(ValueError, match=r"logits of shape \(2, 5, 7\).*\(2, 5\).*\(2, 4\)"):
        lm_loss(mv.tensor(logits), targets[:, :4])


# --- sampling and filling in ---------------------------------------------------------------------

def _softmax(logits):
    e = np.exp(logits - logits.max())
    return e / e.sum()


def test_generate_samples_from_the_softmax_with_temperature():
    """One step for 20 000 copies of a prompt: the token frequencies follow softmax(logits / T)."""
    model = scramble(tiny_model("causal", vocab_size=12, width=8), std=0.5)
    prompt = np.tile([[3, 5, 7]], (20000, 1))
    logits = model(prompt[:1]).numpy()[0, -1]
    expected = _softmax(logits / 0.7)
    tolerance = 6 * np.sqrt(expected * (1 - expected) / len(prompt))    # 6 standard deviations
    assert (np.abs(_softmax(logits) - expected) > 3 * tolerance).any()   # so T = 1 would fail
    mv.manual_seed(0)
    sampled = model.generate(prompt, max_new_tokens=1, do_sample=True, temperature=0.7)[:, -1]
    frequency = np.bincount(sampled, minlength=12) / len(sampled)
    assert (np.abs(frequency - expected) < tolerance).all(), (frequency, expected)


@settings(max_examples=5, deadline=None)
@given(top_k=st.integers(1, 4), seed=st.integers(0, 100))
def test_generate_samples_among_the_top_k_of_its_context(top_k, seed, tokenizer):
    model = scramble(tiny_model("causal", seed=seed), std=1.0)      # context_length 12
    mv.manual_seed(seed)
    ids = model.generate(ordinary_ids(tokenizer, (3, 4), seed), max_new_tokens=8, do_sample=True,
                         top_k=top_k)
    assert ids.shape == (3, 12)
    for t in range(4, 12):                       # token t was drawn after the tokens before it
        logits = model(ids[:, :t]).numpy()[:, -1]
        top = np.argsort(logits, axis=-1)[:, -top_k:]
        assert (top == ids[:, t, None]).any(axis=1).all(), f"token {t} is not in the top {top_k}"


def test_generate_stops_at_eos_and_checks_its_arguments(tokenizer):
    model = tiny_model("causal")
    model.token_embedding.weight.array[tokenizer.eos_id] = 1.0
    model.norm.weight.array[...] = 0.0
    model.norm.bias.array[...] = 1.0            # every position's logits: E · 1, largest for </s>
    ids = model.generate(ordinary_ids(tokenizer, (2, 3)), max_new_tokens=10, do_sample=True,
                         eos_token_id=tokenizer.eos_id)
    assert ids.shape == (2, 4) and (ids[:, -1] == tokenizer.eos_id).all()
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        model.generate(ids, 3, do_sample=True, temperature=0)
    with pytest.raises(ValueError, match=r"input_ids must be \(B, T\).*\(3,\)"):
        model.generate(ids[0, :3], 3)


def test_fill_mask_puts_the_likeliest_ordinary_token_in_each_mask(tokenizer):
    model = tiny_model("mlm", context_length=32)
    cat = tokenizer.encode(" cat")[-1]
    model.lm_head.bias.array[cat] = 100.0                     # the likeliest ordinary token
    model.lm_head.bias.array[tokenizer.mask_id] = 1000.0      # a special token: never a filling
    filled = fill_mask(model, tokenizer, "the dog sees <mask> and <mask>.")
    word = tokenizer.decode([cat])
    assert filled == f"the dog sees{word} and{word}."
    with pytest.raises(ValueError, match="no <mask> to fill"):
        fill_mask(model, tokenizer, "the cat sees a dog.")


# --- heads ---------------------------------------------------------------------------------------

def test_sentence_head_reads_the_first_token_and_ignores_padding(tokenizer):
    model = tiny_model("mlm").double()
    head = SentenceClassificationHead(16, num_classes=3).double().eval()
    ids = ordinary_ids(tokenizer, (2, 7))
    ids[:, 0] = tokenizer.bos_id
    padded = np.concatenate([ids, np.full((2, 5), tokenizer.pad_id)], axis=1)
    padding = padded == tokenizer.pad_id
    expected = head(model.encode(ids)).numpy()
    assert expected.shape == (2, 3)
    assert_close(head(model.encode(padded, padding)).numpy(), expected, rtol=1e-12)
    unmasked = head(model.encode(padded)).numpy()          # attending to the padding changes it
    assert np.abs(unmasked - expected).max() > 1e-6
    hidden = model.encode(ids).numpy()
    hidden[:, 1:] += 1.0                                   # only <s> feeds the head
    assert_close(head(mv.tensor(hidden)).numpy(), expected, rtol=1e-12)


def test_token_head_labels_each_position_from_its_own_hidden_state():
    head = TokenClassificationHead(16, num_classes=5).double().eval()
    hidden = np.random.default_rng(0).standard_normal((2, 7, 16))
    logits = head(mv.tensor(hidden)).numpy()
    assert logits.shape == (2, 7, 5)
    assert_close(logits[:, 3], head(mv.tensor(hidden[:, 3:4])).numpy()[:, 0], rtol=1e-12)


# --- checkpoints, configuration ------------------------------------------------------------------

@pytest.mark.parametrize("objective", OBJECTIVES)
def test_model_directory_round_trip_gives_identical_logits(objective, tokenizer, tmp_path):
    model = scramble(tiny_model(objective, vocab_size=tokenizer.vocab_size))
    mv.save_pretrained(model, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "config.json", "model.safetensors"]
    loaded = mv.load_pretrained(tmp_path / "run")
    assert type(loaded) is type(model) and loaded.config == model.config
    ids = ordinary_ids(tokenizer, (2, 12))
    np.testing.assert_array_equal(loaded(ids).numpy(), model(ids).numpy())


def test_transformers_reads_the_causal_lm_directory_as_gpt2(tokenizer, tmp_path):
    """The causal LM's directory is a Hugging Face GPT-2 one: GPT2LMHeadModel.from_pretrained
    reads it and gives the same logits; and a directory transformers wrote loads back."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = scramble(tiny_model("causal").double())
    mv.save_pretrained(model.float(), tmp_path / "ours")
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
    ids = ordinary_ids(tokenizer, (2, model.config.context_length))
    with torch.no_grad():
        expected = theirs(torch.tensor(ids)).logits.numpy()
    assert_close(model(ids).numpy(), expected, rtol=1e-5)
    theirs.save_pretrained(tmp_path / "theirs")
    assert_close(mv.load_pretrained(tmp_path / "theirs")(ids).numpy(), expected, rtol=1e-5)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match=r"objective must be one of .*'mlm'\), got 'gpt'"):
        LMConfig("gpt", 100)
    with pytest.raises(ValueError, match="width=30 is not divisible by heads=4"):
        LMConfig("mlm", 100, width=30, heads=4)
    with pytest.raises(ValueError, match=r"\(\.\.\., L, 16\) with L <= 12"):
        tiny_model("causal")(np.zeros((1, 13), dtype=np.int64))


# --- training ------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("objective, bound", [
    ("causal", 2.8),    # measured 2.408 (perplexity 11.1), from 6.262 untrained
    ("mlm", 5.1),       # measured 4.977, from 6.248 untrained
])
def test_training_brings_held_out_loss_under_a_bound(objective, bound):
    """300 steps of a 2-layer, 32-wide model (about 7 s of one core each). Predicting every token
    by its frequency in the training stream would score 5.17 on the held-out tokens: both bounds
    lie below it, so the models must have learnt more than the unigram statistics."""
    sentences = corpus(3000, seed=0)
    tokenizer = BPETokenizer.train(sentences, vocab_size=512)
    model = tiny_model(objective, vocab_size=tokenizer.vocab_size, context_length=24, width=32)
    held_out = consecutive_windows(token_stream(held_out_sentences(sentences, seed=0), tokenizer),
                                   window_length(model.config))
    before = evaluate(model, held_out, tokenizer)
    train(model, tokenizer, token_stream(sentences, tokenizer), steps=300, batch_size=16,
          lr=3e-3)
    after = evaluate(model, held_out, tokenizer)
    print(f"{objective}: held-out loss {before:.3f} -> {after:.3f}")
    assert after < bound < before


# --- the command ---------------------------------------------------------------------------------

@pytest.mark.parametrize("objective", OBJECTIVES)
def test_train_lm_command_trains_saves_and_reuses_the_tokenizer(objective, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train-lm", "--objective", objective, "--steps", "2", "--batch-size", "2",
            "--seq-len", "8", "--width", "16", "--layers", "1", "--heads", "2",
            "--vocab-size", "300", "--sentences", "200"]
    assert main(argv + ["--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "tokenizer: trained on 200 sentences" in printed.out
    assert "train-lm 2/2 100%" in printed.err and "tok/s" in printed.err and "loss" in printed.err
    assert "held-out" in printed.out and "perplexity" in printed.out
    assert ("samples" if objective == "causal" else "fill-mask") in printed.out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "model.safetensors", "tokenizer.json", STATE_FILE, METRICS_FILE,
         "results.json", "loss.png"])
    config_json = json.loads((out / "config.json").read_text())
    assert config_json["model_type"] == ("gpt2" if objective == "causal" else "minivlm_masked_lm")
    assert len(read_metrics(out)) == 2
    model = mv.load_pretrained(out)
    assert isinstance(model, CausalLM if objective == "causal" else MaskedLM)
    if objective == "causal":                       # a directory `minivlm generate` reads
        assert (config_json["bos_token_id"], config_json["eos_token_id"]) == (256, 257)
        capsys.readouterr()
        assert main(["generate", "--model", str(out), "<s>the red", "--max-new-tokens", "4"]) == 0
        assert capsys.readouterr().out.startswith("<s>the red")

    assert main(argv + ["--out", str(out)]) == 2
    assert "holds a run already: continue it with --resume" in capsys.readouterr().err
    assert main(argv + ["--tokenizer", str(out / "tokenizer.json"),
                        "--out", str(tmp_path / "again")]) == 0
    assert f"tokenizer: loaded {out / 'tokenizer.json'}" in capsys.readouterr().out
    np.testing.assert_array_equal(mv.load_pretrained(tmp_path / "again")(np.ones((1, 8), int))
                                  .numpy(), model(np.ones((1, 8), int)).numpy())


def test_an_interrupted_train_lm_resumes_exactly(tmp_path, capsys, monkeypatch):
    argv = ["train-lm", "--objective", "mlm", "--steps", "4", "--batch-size", "2",
            "--seq-len", "8", "--width", "16", "--layers", "1", "--heads", "2",
            "--vocab-size", "300", "--sentences", "200", "--out"]
    assert main(argv + [str(tmp_path / "straight")]) == 0
    calls = []

    def interrupted_in_the_third_step(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return random_windows(*args)

    monkeypatch.setattr(lm_recipe, "random_windows", interrupted_in_the_third_step)
    monkeypatch.setattr(lm_recipe, "fit", functools.partial(lm_recipe.fit, save_every=2))
    assert main(argv + [str(tmp_path / "resumed")]) == 130
    monkeypatch.undo()
    assert [m["step"] for m in read_metrics(tmp_path / "resumed")] == [1, 2]
    assert main(["train-lm", "--resume", str(tmp_path / "resumed")]) == 0
    assert "interrupted" in capsys.readouterr().err
    straight, resumed = (mv.load_pretrained(tmp_path / d) for d in ("straight", "resumed"))
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name].numpy(), value.numpy(), name)
    assert ([m["loss"] for m in read_metrics(tmp_path / "resumed")]
            == [m["loss"] for m in read_metrics(tmp_path / "straight")])

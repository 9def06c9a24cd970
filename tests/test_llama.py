"""The Llama-style causal LM: against transformers' LlamaForCausalLM on the committed fixture and
live, Hugging Face directories both ways (F32, F16, BF16), the loss with labels, gradients,
float32 on each backend, RMSNorm's float32 computation, and the config errors."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minivlm as mv
import minivlm.functional as F
from minivlm import io
from minivlm.models import LlamaConfig, LlamaForCausalLM
from minivlm.testing import assert_close, gradcheck
from make_vision_fixtures import randomize_minivlm

FIXTURE = Path(__file__).with_name("fixtures") / "llama_tiny"
# transformers computes the RoPE angles in float32 even in a float64 model (minivlm: in the
# model's dtype), which leaves ~1e-7 relative differences in float64
ROPE_RTOL = 1e-6


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(FIXTURE / "expected.npz"))


def tiny_llama(seed=0, dtype="float64", **overrides):
    mv.manual_seed(seed)
    config = dict(vocab_size=37, hidden_size=12, intermediate_size=19, num_hidden_layers=2,
                  num_attention_heads=6, num_key_value_heads=3, rope_theta=300.0,
                  rms_norm_eps=1e-5) | overrides
    return randomize_minivlm(LlamaForCausalLM(LlamaConfig(**config)), seed).to(dtype).eval()


# --- the committed fixture (transformers' outputs, no torch needed) -------------------------------

def test_fixture_logits_equal_transformers(expected):
    model = mv.load_pretrained(FIXTURE, dtype="float64")
    assert model.config.num_key_value_heads == 2 and model.config.rope_theta == 500.0
    assert model.config.head_dim == 4 and model.lm_head is not None
    assert_close(model(expected["input_ids"][:1]), expected["logits"], rtol=ROPE_RTOL)


def test_fixture_left_padded_logits_equal_transformers_at_the_real_tokens(expected):
    model = mv.load_pretrained(FIXTURE, dtype="float64")
    logits = model(expected["input_ids"], attention_mask=expected["attention_mask"]).numpy()
    real = expected["attention_mask"].astype(bool)
    assert_close(logits[real], expected["padded_logits"][real], rtol=ROPE_RTOL)


def test_fixture_shifted_cross_entropy_equals_transformers_loss_with_labels(expected):
    model = mv.load_pretrained(FIXTURE, dtype="float64")
    logits = model(expected["input_ids"])
    labels = expected["labels"]
    vocab = logits.shape[-1]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1),
                           ignore_index=-100)
    assert loss.item() == pytest.approx(float(expected["loss"]), rel=ROPE_RTOL)


@pytest.mark.parametrize("use_cache", [True, False])
def test_fixture_greedy_generate_equals_transformers(expected, use_cache):
    model = mv.load_pretrained(FIXTURE)     # float32, as transformers generated
    ids = model.generate(expected["input_ids"], max_new_tokens=10,
                         attention_mask=expected["attention_mask"],
                         eos_token_id=model.config.eos_token_id, use_cache=use_cache)
    np.testing.assert_array_equal(ids, expected["generated"])


@pytest.mark.parametrize("dtype", ["F16", "BF16"])
def test_half_precision_checkpoints_load_widened_exactly(tmp_path, dtype):
    shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    weights = io.load_safetensors(FIXTURE / "model.safetensors")
    if dtype == "F16":
        stored = {name: array.astype(np.float16) for name, array in weights.items()}
        io.save_safetensors(stored, tmp_path / "model.safetensors")
        widened = {name: array.astype(np.float32) for name, array in stored.items()}
    else:
        io.save_safetensors(weights, tmp_path / "model.safetensors", bfloat16=list(weights))
        widened = {name: io.bfloat16_to_float32(io.float32_to_bfloat16(array))
                   for name, array in weights.items()}
    model = mv.load_pretrained(tmp_path)
    for name, tensor in model.state_dict().items():
        np.testing.assert_array_equal(tensor.numpy(), widened[name], err_msg=name)
    assert any((widened[name] != weights[name]).any() for name in weights)  # it was rounded


# --- live against transformers --------------------------------------------------------------------

def transformers_twin(model):
    """transformers' LlamaForCausalLM with `model`'s config and weights, in float64."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    c = model.config
    theirs = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, head_dim=c.head_dim,
        rope_theta=c.rope_theta, rms_norm_eps=c.rms_norm_eps,
        tie_word_embeddings=c.tie_word_embeddings, attention_bias=c.attention_bias,
        mlp_bias=c.mlp_bias)).double().eval()
    state = {name: torch.from_numpy(t.numpy()) for name, t in model.state_dict().items()}
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    return theirs


@settings(max_examples=6, deadline=None)
@given(kv_heads=st.sampled_from([1, 2, 3, 6]), tied=st.booleans(), bias=st.booleans(),
       theta=st.sampled_from([10000.0, 37.0]), seed=st.integers(0, 100))
def test_logits_and_gradients_equal_transformers(kv_heads, tied, bias, theta, seed):
    torch = pytest.importorskip("torch")
    ours = tiny_llama(seed, num_key_value_heads=kv_heads, tie_word_embeddings=tied,
                      attention_bias=bias, mlp_bias=bias, rope_theta=theta)
    theirs = transformers_twin(ours)
    ids = np.random.default_rng(seed).integers(0, 37, size=(2, 7))
    labels = np.where(np.random.default_rng(seed + 1).random((2, 7)) < 0.3, -100, ids)
    labels[:, 1] = ids[:, 1]                                  # at least one label counts
    out = theirs(torch.from_numpy(ids), labels=torch.from_numpy(labels))
    out.loss.backward()
    logits = ours(ids)
    assert_close(logits, out.logits.detach().numpy(), rtol=ROPE_RTOL)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, 37), labels[:, 1:].reshape(-1))
    loss.backward()
    assert loss.item() == pytest.approx(out.loss.item(), rel=ROPE_RTOL)
    their_grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, their_grads[name].grad.numpy(), rtol=1e-4, atol=1e-10)


def test_transformers_reads_the_saved_directory(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ours = tiny_llama(3, dtype="float32", tie_word_embeddings=True)
    mv.save_pretrained(ours, tmp_path)
    theirs = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    ids = np.random.default_rng(0).integers(0, 37, size=(2, 6))
    with torch.no_grad():
        expected = theirs(torch.from_numpy(ids)).logits.numpy()
    assert_close(ours(ids), expected, rtol=1e-5)
    reloaded = mv.load_pretrained(tmp_path)
    np.testing.assert_array_equal(reloaded(ids).numpy(), ours(ids).numpy())


# --- the model on its own -------------------------------------------------------------------------

def test_gradients_match_finite_differences():
    model = tiny_llama(4, num_hidden_layers=1, hidden_size=8, num_attention_heads=2,
                       num_key_value_heads=1, intermediate_size=5)
    ids = np.array([[3, 1, 4, 1, 5]])
    params = dict(model.named_parameters())
    picked = {name: params[name] for name in ("model.layers.0.self_attn.k_proj.weight",
                                              "model.layers.0.input_layernorm.weight",
                                              "model.layers.0.mlp.gate_proj.weight")}

    def loss(**_):
        return F.cross_entropy(model(ids)[0, :-1], ids[0, 1:])
    gradcheck(loss, picked)


def test_float32_on_backend_matches_float64(backend):
    reference = tiny_llama(5)
    model = tiny_llama(5, dtype="float32").to(backend)
    ids = np.random.default_rng(1).integers(0, 37, size=(2, 8))
    logits = model(mv.tensor(ids, device=backend))
    assert logits.dtype == np.float32 and logits.device == backend
    assert_close(logits, reference(ids), rtol=1e-3)


def test_rms_norm_of_half_precision_is_computed_in_float32():
    """transformers' LlamaRMSNorm: x.float(), normalised, cast back, then times the weight."""
    x = (np.random.default_rng(0).standard_normal((3, 8)) * 300).astype(np.float16)
    weight = np.linspace(0.5, 2, 8).astype(np.float16)
    wide = x.astype(np.float32)
    normalised = (wide / np.sqrt((wide * wide).mean(-1, keepdims=True) + 1e-6)).astype(np.float16)
    y = F.rms_norm(mv.tensor(x), 8, mv.tensor(weight), eps=1e-6)
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y.numpy(), weight * normalised)


def test_config_errors_name_what_is_unsupported(tmp_path):
    config = json.loads((FIXTURE / "config.json").read_text())
    shutil.copy(FIXTURE / "model.safetensors", tmp_path / "model.safetensors")
    for change, message in (({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
                             "only the default RoPE.*llama3"),
                            ({"hidden_act": "gelu"}, "hidden_act='gelu' is not supported")):
        (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(ValueError, match=message):
            mv.load_pretrained(tmp_path)
    with pytest.raises(ValueError, match="num_attention_heads=6 is not a multiple of "
                                         "num_key_value_heads=4"):
        LlamaConfig(hidden_size=12, num_attention_heads=6, num_key_value_heads=4)
    with pytest.raises(ValueError, match="head_dim=3 must be even"):
        LlamaConfig(hidden_size=12, num_attention_heads=4)


def test_a_checkpoint_of_other_sizes_is_one_clear_error(tmp_path):
    config = json.loads((FIXTURE / "config.json").read_text())
    shutil.copy(FIXTURE / "model.safetensors", tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_key_value_heads": 3}))
    with pytest.raises(io.CheckpointError, match=r"model.layers.0.self_attn.k_proj.weight has "
                                                 r"shape \(8, 30\) in the checkpoint but "
                                                 r"\(12, 30\)"):
        mv.load_pretrained(tmp_path)

"""Attention layers: the slides' layers against reference/attention.py, MultiheadAttention against
torch.nn.MultiheadAttention and the reference (tier 3), finite-difference gradients (tier 1), and
float32 on every backend against float64 NumPy (tier 2)."""
import copy

import numpy as np
import pytest
from hypothesis import example, given, strategies as st

import minivlm as mv
from minivlm.nn.attention import (Attention, MaskedSelfAttention, MultiheadAttention,
                                  SelfAttention, attention_memory)
from minivlm.testing import assert_close, gradcheck
from reference import attention as ref


def _rng(seed=0):
    return np.random.default_rng(seed)


def _randomize(module, seed=0, std=0.5):
    """Random values in every parameter (biases too, so a dropped or swapped term shows)."""
    rng = _rng(seed)
    for p in module.parameters():
        p.array[...] = std * rng.standard_normal(p.shape)
    return module


# --- the lecture's memory figure ------------------------------------------------------------------

def test_attention_memory_reproduces_the_slides():
    # 128×128 pixels = 2^14 tokens, 2^28 entries per matrix, × 48 layers × 16 heads × 4 bytes
    assert attention_memory(128 * 128, layers=48, heads=16) == 768 * 2 ** 30  # "768GB" = 768 GiB
    assert attention_memory(128 * 128, 48, 16, bytes_per_el=2) == 384 * 2 ** 30
    # a 56×56 grid of patch tokens: one matrix of 56^4 = 9,834,496 ≈ 9.8 M entries
    entries = attention_memory(56 * 56, layers=1, heads=1, bytes_per_el=1)
    assert entries == 9_834_496 and round(entries / 1e6, 1) == 9.8


# --- the slides' layers ---------------------------------------------------------------------------

dims = st.integers(1, 4)
batch_shapes = st.sampled_from([(), (2,), (2, 1)])


@given(batch=batch_shapes, N_Q=dims, N_X=dims, D_X=dims, D_Q=dims, D_V=dims,
       seed=st.integers(0, 99))
def test_attention_layers_match_reference(batch, N_Q, N_X, D_X, D_Q, D_V, seed):
    rng = _rng(seed)
    Q = rng.standard_normal(batch + (N_Q, D_Q))
    X = rng.standard_normal(batch + (N_X, D_X))
    layer = _randomize(SelfAttention(D_X, D_Q, D_V).double(), seed, std=1.0)
    W = {name: p.numpy() for name, p in layer.named_parameters()}

    cross = Attention(D_X, D_Q, D_V).double()
    cross.load_state_dict({"W_K": W["W_K"], "W_V": W["W_V"]})
    assert_close(cross(mv.tensor(Q), mv.tensor(X)), ref.attention(Q, X, W["W_K"], W["W_V"]),
                 rtol=1e-10)
    assert_close(layer(mv.tensor(X)), ref.self_attention(X, W["W_Q"], W["W_K"], W["W_V"]),
                 rtol=1e-10)

    masked = MaskedSelfAttention(D_X, D_Q, D_V).double()
    masked.load_state_dict(W)
    ours = masked(mv.tensor(X)).numpy().reshape(-1, N_X, D_V)
    for ours_one, X_one in zip(ours, X.reshape(-1, N_X, D_X)):
        assert_close(ours_one, ref.masked_self_attention(X_one, W["W_Q"], W["W_K"], W["W_V"]),
                     rtol=1e-10)


def test_masked_self_attention_does_not_look_ahead():
    layer = MaskedSelfAttention(3, 2, 4).double()
    X = _rng().standard_normal((5, 3))
    changed = X.copy()
    changed[3:] += 1.0  # only the last two positions change
    before, after = layer(mv.tensor(X)).numpy(), layer(mv.tensor(changed)).numpy()
    np.testing.assert_array_equal(before[:3], after[:3])
    assert np.abs(before[3:] - after[3:]).min() > 0


def test_slide_layer_parameters_have_the_slides_shapes():
    layer = SelfAttention(D_X=5, D_Q=3, D_V=2)
    assert {n: p.shape for n, p in layer.named_parameters()} == {
        "W_K": (5, 3), "W_V": (5, 2), "W_Q": (5, 3)}


@pytest.mark.parametrize("layer_type", [SelfAttention, MaskedSelfAttention])
def test_slide_layer_gradients(layer_type):
    layer = layer_type(3, 2, 4).double()
    X = mv.tensor(_rng().standard_normal((2, 4, 3)), requires_grad=True)
    gradcheck(lambda X, **weights: layer(X), {"X": X, **dict(layer.named_parameters())})


def test_attention_gradients_with_a_float_mask():
    layer = Attention(3, 2, 4).double()
    rng = _rng(1)
    inputs = {"Q": mv.tensor(rng.standard_normal((2, 3, 2)), requires_grad=True),
              "X": mv.tensor(rng.standard_normal((2, 4, 3)), requires_grad=True),
              "mask": mv.tensor(rng.standard_normal((3, 4)), requires_grad=True)}
    gradcheck(lambda Q, X, mask, **weights: layer(Q, X, mask),
              {**inputs, **dict(layer.named_parameters())})


def test_slide_layers_name_the_wrong_shape():
    with pytest.raises(ValueError, match=r"inputs X of shape \(\.\.\., N, 3\), got shape \(4, 2\)"):
        SelfAttention(3, 2)(mv.randn(4, 2))
    with pytest.raises(ValueError, match=r"queries Q .*\(\.\.\., N, 2\), got shape \(4, 5\)"):
        Attention(3, 2)(mv.randn(4, 5), mv.randn(4, 3))


# --- MultiheadAttention against torch -------------------------------------------------------------

@st.composite
def mha_cases(draw):
    """A MultiheadAttention configuration and a call: self or cross attention, batched or not,
    every kind of mask, weights averaged, per head, or not asked for."""
    heads, head_dim = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    cross = draw(st.booleans())
    case = dict(
        embed_dim=heads * head_dim, num_heads=heads, cross=cross,
        kdim=draw(st.sampled_from([None, 2, 5])) if cross else None,
        vdim=draw(st.sampled_from([None, 3])) if cross else None,
        bias=draw(st.booleans()), batch_first=draw(st.booleans()), batched=draw(st.booleans()),
        N=draw(st.integers(1, 3)), L=draw(st.integers(1, 4)),
        need_weights=draw(st.booleans()), average_attn_weights=draw(st.booleans()),
        is_causal=draw(st.booleans()),
        key_padding_mask=draw(st.sampled_from([None, "bool", "float"])),
        seed=draw(st.integers(0, 2 ** 16)))
    case["S"] = draw(st.integers(1, 4)) if cross else case["L"]
    case["attn_mask"] = None if case["is_causal"] else draw(
        st.sampled_from([None, "bool", "float", "bool3d", "float3d"]))
    return case


def _case(**changes):
    """A case of mha_cases spelled out: cross-attention, batch first, no mask, unless changed."""
    case = dict(embed_dim=6, num_heads=3, cross=True, kdim=None, vdim=None, bias=True,
                batch_first=True, batched=True, N=2, L=3, S=4, need_weights=False,
                average_attn_weights=True, is_causal=False, key_padding_mask=None,
                attn_mask=None, seed=0)
    return {**case, **changes}


def _masks(case, rng):
    """NumPy masks for the case (bool True = not allowed); key 0 always stays visible, so no row
    of the attention matrix is wholly masked."""
    N, L, S, heads = case["N"], case["L"], case["S"], case["num_heads"]
    masks = {}
    if case["attn_mask"]:
        shape = (N * heads if case["batched"] else heads, L, S) if "3d" in case["attn_mask"] \
            else (L, S)
        if case["attn_mask"].startswith("bool"):
            masks["attn_mask"] = rng.random(shape) < 0.4
            masks["attn_mask"][..., 0] = False
        else:
            masks["attn_mask"] = rng.standard_normal(shape)
    if case["key_padding_mask"]:
        shape = (N, S) if case["batched"] else (S,)
        masks["key_padding_mask"] = (rng.random(shape) < 0.4 if case["key_padding_mask"] == "bool"
                                     else rng.standard_normal(shape))
        masks["key_padding_mask"][..., 0] = 0
    return masks


def _sequences(case, rng):
    """query, key, value arrays in the layout the case asks for (the same array thrice for
    self-attention)."""
    def layout(length, width):
        if not case["batched"]:
            return (length, width)
        return (case["N"], length, width) if case["batch_first"] else (length, case["N"], width)

    query = rng.standard_normal(layout(case["L"], case["embed_dim"]))
    if not case["cross"]:
        return query, query, query
    return (query, rng.standard_normal(layout(case["S"], case["kdim"] or case["embed_dim"])),
            rng.standard_normal(layout(case["S"], case["vdim"] or case["embed_dim"])))


def _mha_pair(case, dropout=0.0):
    """Our layer and torch's, float64, torch's random weights loaded into ours as is."""
    torch = pytest.importorskip("torch")
    args = dict(embed_dim=case["embed_dim"], num_heads=case["num_heads"], dropout=dropout,
                bias=case["bias"], kdim=case["kdim"], vdim=case["vdim"],
                batch_first=case["batch_first"])
    torch.manual_seed(case["seed"])
    theirs = torch.nn.MultiheadAttention(**args, dtype=torch.float64)
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.5)
    ours = MultiheadAttention(**args).double()
    ours.load_state_dict({name: t.numpy() for name, t in theirs.state_dict().items()})
    return ours, theirs


# With a single key the softmax is constant, so the keys' gradients (and those of the key
# projection) are zero; both libraries then return rounding noise (~1e-16), compared absolutely.
ZERO_FLOOR = 1e-12


def _assert_same_parameter_gradients(ours, theirs, rtol=1e-6):
    their_grads = {name: p.grad for name, p in theirs.named_parameters()}
    assert sorted(their_grads) == sorted(name for name, _ in ours.named_parameters())
    for name, p in ours.named_parameters():
        try:
            assert_close(p.grad, their_grads[name].numpy(), rtol=rtol, atol=ZERO_FLOOR)
        except AssertionError as e:
            raise AssertionError(f"the gradient of {name}: {e}") from None


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask and attn_mask")
@given(case=mha_cases())
@example(case=_case(cross=False, S=3, batch_first=False, attn_mask="bool", need_weights=True))
@example(case=_case(attn_mask="float", key_padding_mask="bool", need_weights=True,
                    average_attn_weights=False))
@example(case=_case(kdim=5, vdim=2, attn_mask="float3d", key_padding_mask="float"))
@example(case=_case(kdim=5, attn_mask="bool3d", need_weights=True, batch_first=False))
@example(case=_case(batched=False, key_padding_mask="bool", attn_mask="float3d",
                    need_weights=True, average_attn_weights=False))
@example(case=_case(cross=False, S=3, is_causal=True, key_padding_mask="bool", bias=False))
@example(case=_case(cross=False, S=3, is_causal=True, need_weights=True))
@example(case=_case(num_heads=2, vdim=3, bias=False, batched=False, N=1, L=1, S=1))  # one key
def test_multihead_attention_matches_torch(case):
    torch = pytest.importorskip("torch")
    ours, theirs = _mha_pair(case)
    rng = _rng(case["seed"])
    arrays, masks = _sequences(case, rng), _masks(case, rng)
    options = dict(need_weights=case["need_weights"],
                   average_attn_weights=case["average_attn_weights"])

    our_inputs = {id(a): mv.tensor(a, requires_grad=True) for a in arrays}
    their_inputs = {id(a): torch.tensor(a, requires_grad=True) for a in arrays}
    our_y, our_w = ours(*(our_inputs[id(a)] for a in arrays), **masks, **options,
                        is_causal=case["is_causal"])
    their_masks = {name: torch.from_numpy(m) for name, m in masks.items()}
    if case["is_causal"]:  # torch wants the causal mask itself beside the is_causal hint
        their_masks["attn_mask"] = torch.ones(case["L"], case["S"], dtype=torch.bool).triu(1)
    their_y, their_w = theirs(*(their_inputs[id(a)] for a in arrays), **their_masks, **options,
                              is_causal=case["is_causal"])

    assert_close(our_y, their_y.detach().numpy(), rtol=1e-6)
    if case["need_weights"]:
        assert_close(our_w, their_w.detach().numpy(), rtol=1e-6)
    else:
        assert our_w is None and their_w is None
    grad = rng.standard_normal(our_y.shape)
    our_y.backward(grad)
    their_y.backward(torch.from_numpy(grad))
    for key in our_inputs:
        assert_close(our_inputs[key].grad, their_inputs[key].grad.numpy(), rtol=1e-6,
                     atol=ZERO_FLOOR)
    _assert_same_parameter_gradients(ours, theirs)


@pytest.mark.parametrize("kdim, vdim, bias", [(None, None, True), (5, 3, True), (None, 2, False)])
def test_multihead_attention_parameters_and_init_are_torchs(kdim, vdim, bias):
    torch = pytest.importorskip("torch")
    ours = MultiheadAttention(6, 2, bias=bias, kdim=kdim, vdim=vdim)
    theirs = torch.nn.MultiheadAttention(6, 2, bias=bias, kdim=kdim, vdim=vdim)
    assert ({name: p.shape for name, p in ours.named_parameters()}
            == {name: tuple(p.shape) for name, p in theirs.named_parameters()})
    if bias:
        assert not ours.in_proj_bias.numpy().any() and not ours.out_proj.bias.numpy().any()
    for name, p in ours.named_parameters():
        if name.endswith("proj_weight"):  # Xavier uniform: U(±√(6 / (fan_in + fan_out)))
            bound = np.sqrt(6 / sum(p.shape))
            assert np.abs(p.numpy()).max() <= bound and np.abs(p.numpy()).max() > 0.5 * bound


def test_multihead_attention_matches_reference():
    case = _case(attn_mask="float", key_padding_mask="bool", seed=3)
    ours, _ = _mha_pair(case)
    rng = _rng(3)
    query, key, value = _sequences(case, rng)
    masks = _masks(case, rng)
    weights = {name: t.numpy() for name, t in ours.state_dict().items()}
    expected_y, expected_A = ref.multihead_attention(query, key, value, weights, 3, **masks)
    y, A = ours(mv.tensor(query), mv.tensor(key), mv.tensor(value), **masks,
                average_attn_weights=False)
    assert_close(y, expected_y, rtol=1e-10)
    assert_close(A, expected_A, rtol=1e-10)


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_gradients(need_weights):
    layer = _randomize(MultiheadAttention(4, 2, kdim=3, batch_first=True).double())
    rng = _rng(2)
    inputs = {"query": mv.tensor(rng.standard_normal((2, 3, 4)), requires_grad=True),
              "key": mv.tensor(rng.standard_normal((2, 2, 3)), requires_grad=True),
              "value": mv.tensor(rng.standard_normal((2, 2, 4)), requires_grad=True),
              "attn_mask": mv.tensor(rng.standard_normal((3, 2)), requires_grad=True)}

    def output(query, key, value, attn_mask, **weights):
        return layer(query, key, value, attn_mask=attn_mask, need_weights=need_weights)[0]
    gradcheck(output, {**inputs, **dict(layer.named_parameters())})


def test_attention_dropout_zeroes_weights_and_scales_the_rest():
    layer = MultiheadAttention(4, 2, dropout=0.5, batch_first=True).double()
    x = mv.tensor(_rng().standard_normal((2, 5, 4)))
    mv.manual_seed(0)
    dropped = layer(x, x, x, average_attn_weights=False)[1].numpy()
    kept = layer.eval()(x, x, x, average_attn_weights=False)[1].numpy()
    assert np.all((dropped == 0) | np.isclose(dropped, 2 * kept, rtol=1e-12))
    assert 0.2 < (dropped == 0).mean() < 0.8


@pytest.mark.parametrize("call, message", [
    (lambda m, x: m(x[:, :, :3], x, x), r"query of shape \(2, 5, 3\) should have last dimension 4"),
    (lambda m, x: m(x, x[:, :2], x), r"key of shape \(2, 2, 4\) and value of shape \(2, 5, 4\)"),
    (lambda m, x: m(x, x, x, attn_mask=np.zeros((5, 4), bool)),
     r"attn_mask has shape \(5, 4\), but should be \(L, S\) = \(5, 5\)"),
    (lambda m, x: m(x, x, x, key_padding_mask=np.zeros((2, 4), bool)),
     r"key_padding_mask has shape \(2, 4\), but should be \(N, S\) = \(2, 5\)"),
    (lambda m, x: m(x, x[:1], x[:1]), r"different batch sizes"),
])
def test_multihead_attention_names_what_is_wrong(call, message):
    layer = MultiheadAttention(4, 2, batch_first=True)
    with pytest.raises(ValueError, match=message):
        call(layer, mv.randn(2, 5, 4))
    with pytest.raises(ValueError, match="embed_dim=5 is not divisible by num_heads=2"):
        MultiheadAttention(5, 2)


# --- backends: float32 on each backend against float64 NumPy --------------------------------------

def _float32_copy(module, backend):
    return copy.deepcopy(module).to(backend).float()


@given(need_weights=st.booleans(), seed=st.integers(0, 99))
def test_multihead_attention_float32_on_backend(backend, need_weights, seed):
    rng = _rng(seed)
    exact = _randomize(MultiheadAttention(8, 2, batch_first=True).double(), seed)
    fast = _float32_copy(exact, backend)
    x = rng.standard_normal((2, 5, 8))
    mask = rng.random((5, 5)) < 0.3
    mask[:, 0] = False
    grad = rng.standard_normal((2, 5, 8))
    results = []
    for layer, dtype, device in ((exact, "float64", "numpy"), (fast, "float32", backend)):
        inputs = mv.tensor(x, dtype=dtype, device=device, requires_grad=True)
        y = layer(inputs, inputs, inputs, attn_mask=mask, need_weights=need_weights)[0]
        assert y.dtype == dtype and y.device == device
        y.backward(mv.tensor(grad, dtype=dtype, device=device))
        results.append([y, inputs.grad] + [p.grad for p in layer.parameters()])
    for ours, expected in zip(*reversed(results)):
        assert_close(ours, expected, rtol=1e-4)


@pytest.mark.parametrize("layer_type", [SelfAttention, MaskedSelfAttention])
def test_slide_layers_float32_on_backend(backend, layer_type):
    exact = layer_type(4, 3, 2).double()
    fast = _float32_copy(exact, backend)
    x = _rng().standard_normal((2, 5, 4))
    ys = [exact(mv.tensor(x)), fast(mv.tensor(x, dtype="float32", device=backend))]
    for y in ys:
        y.sum().backward()
    assert_close(ys[1], ys[0], rtol=1e-4)
    for p32, p64 in zip(fast.parameters(), exact.parameters()):
        assert_close(p32.grad, p64.grad, rtol=1e-4)

"""Extreme and empty inputs against torch: infinite logits, overflowing attention scores,
constant rows under layer norm, float16 overflow, tensors with a dimension of size 0."""
import numpy as np
import pytest

import minivlm as mv
import minivlm.functional as F
from minivlm.models import ViT, ViTConfig
from minivlm.testing import assert_close

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def both(values, dtype="float32"):
    """The same values as a minivlm tensor and a torch tensor, both requiring gradients."""
    values = np.asarray(values, dtype=dtype)
    return mv.tensor(values, requires_grad=True), torch.tensor(values, requires_grad=True)


def assert_same(ours, theirs, rtol=1e-6):
    """Values (infinities in the same places) and dtype as torch's."""
    expected = theirs.detach().numpy()
    assert ours.dtype == expected.dtype and ours.shape == expected.shape
    assert_close(ours, expected, rtol=rtol)


# --- cross-entropy -------------------------------------------------------------------------

@pytest.mark.parametrize("logits, target, kwargs", [
    ([[1.0, -np.inf, 2.0]], [0], {}),                                  # torch: 1.3133
    ([[1.0, -np.inf, 2.0]], [1], {}),                                  # the target impossible: inf
    ([[1.0, -np.inf, 2.0]], [0], {"label_smoothing": 0.1}),            # inf, as torch
    ([[3e38, -3e38]], [0], {}),                                        # 0 (x − max overflows)
    ([[3e38, -3e38]], [1], {}),                                        # inf
    ([[-np.inf, 1.0, 2.0], [1.0, 2.0, 3.0]], [-100, 0], {}),           # an ignored row's inf
    ([[-np.inf, 1.0, 2.0], [1.0, 2.0, 3.0]], [-100, 2], {"reduction": "sum"}),
    ([[-np.inf, 1.0, 2.0], [1.0, 2.0, 3.0]], [-100, 1], {"reduction": "none"}),
])
def test_cross_entropy_of_infinite_logits_matches_torch(logits, target, kwargs):
    ours, theirs = both(logits)
    loss = F.cross_entropy(ours, mv.tensor(target), **kwargs)
    expected = TF.cross_entropy(theirs, torch.tensor(target), **kwargs)
    assert_same(loss, expected)
    upstream = np.ones(tuple(expected.shape), dtype=np.float32)
    loss.backward(mv.tensor(upstream))
    expected.backward(torch.from_numpy(upstream))
    assert_same(ours.grad, theirs.grad)


def test_cross_entropy_fully_smoothed_against_an_impossible_class_is_inf():
    """torch gives NaN here (0 · inf for the target's own term); the loss against the uniform
    distribution over classes, one of which has probability 0, is inf."""
    loss = F.cross_entropy(mv.tensor([[1.0, -np.inf, 2.0]]), mv.tensor([1]), label_smoothing=1.0)
    assert loss.item() == np.inf


@pytest.mark.parametrize("smoothing", [-0.1, 1.5, np.nan])
def test_label_smoothing_outside_zero_one_is_refused(smoothing):
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got"):
        F.cross_entropy(mv.tensor([[1.0, 2.0]]), mv.tensor([0]), label_smoothing=smoothing)


def test_cross_entropy_names_a_target_that_is_not_class_indices():
    with pytest.raises(TypeError, match="target must hold class indices.*float32"):
        F.cross_entropy(mv.tensor([[1.0, 2.0]]), mv.tensor([0.0]))


# --- attention whose scores overflow ---------------------------------------------------------

def test_attention_scores_overflowing_float32_give_the_float64_result():
    """q·k of 1e40 is +inf in float32. Where a row has one such score it wins, as in float64
    (torch's float32 sdpa gives NaN there), and the scores' gradient is 0, as in float64."""
    q = np.array([[[1e20, 0.0], [0.0, 1e20], [-1e20, 1.0]]])
    k = np.array([[[1e20, 0.0], [0.0, 1e20], [1.0, -2.0]]])
    v = np.random.default_rng(0).standard_normal((1, 3, 5))
    assert np.isinf(q.astype(np.float32) @ k.swapaxes(-1, -2).astype(np.float32)).sum() == 3
    ours = [mv.tensor(a.astype(np.float32), requires_grad=True) for a in (q, k, v)]
    theirs = [torch.tensor(a.astype(np.float32).astype(np.float64), requires_grad=True)
              for a in (q, k, v)]
    out = F.scaled_dot_product_attention(*ours)
    expected = TF.scaled_dot_product_attention(*theirs)
    upstream = np.random.default_rng(1).standard_normal(out.shape)
    out.backward(mv.tensor(upstream.astype(np.float32)))
    expected.backward(torch.from_numpy(upstream))
    assert_close(out, expected.detach().numpy(), rtol=1e-6)
    for t, e in zip(ours, theirs):
        assert_close(t.grad, e.grad.numpy(), rtol=1e-6)


def test_attention_shares_evenly_among_tied_infinite_scores():
    q = mv.tensor(np.array([[1e20, 0.0]], dtype=np.float32), requires_grad=True)
    k = mv.tensor(np.array([[1e20, 0.0], [1e20, 0.0], [-1e20, 0.0]], dtype=np.float32),
                  requires_grad=True)
    v = mv.tensor(np.array([[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]], dtype=np.float32),
                  requires_grad=True)
    out = F.scaled_dot_product_attention(q, k, v)
    np.testing.assert_array_equal(out.numpy(), [[2.0, 4.0]])   # the mean of the two tied keys
    out.backward(mv.ones(1, 2))
    np.testing.assert_array_equal(v.grad.numpy(), [[0.5, 0.5], [0.5, 0.5], [0.0, 0.0]])
    assert not q.grad.numpy().any() and not k.grad.numpy().any()


def test_attention_overflow_and_fully_masked_rows_side_by_side():
    """One row overflows, one has every key masked (zeros, as before), one is ordinary."""
    q = mv.tensor(np.array([[1e20, 0.0], [1.0, 0.0], [0.0, 0.5]], dtype=np.float32))
    k = mv.tensor(np.array([[1e20, 0.0], [0.0, 1.0]], dtype=np.float32))
    v = mv.tensor(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32))
    mask = np.array([[True, True], [False, False], [True, True]])
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).numpy()
    scores = np.array([0.0, 0.5]) / np.sqrt(2)
    p = np.exp(scores) / np.exp(scores).sum()
    np.testing.assert_allclose(out, [[1.0, 2.0], [0.0, 0.0], p @ v.numpy()], rtol=1e-6)


# --- layer norm ----------------------------------------------------------------------------

def test_layer_norm_of_a_constant_float32_row_is_zero_as_torch():
    ours, theirs = both(np.full((2, 768), 10000.1))
    out = F.layer_norm(ours, (768,))
    expected = TF.layer_norm(theirs, (768,))
    np.testing.assert_array_equal(out.numpy(), expected.detach().numpy())
    assert not out.numpy().any()


def test_layer_norm_float16_does_not_overflow_its_variance():
    ours, theirs = both([[300.0, -300.0], [60000.0, -60000.0]], dtype="float16")
    weight = mv.tensor(np.array([1.0, 2.0], dtype=np.float16), requires_grad=True)
    torch_weight = torch.tensor([1.0, 2.0], dtype=torch.float16, requires_grad=True)
    out = F.layer_norm(ours, (2,), weight)
    expected = TF.layer_norm(theirs, (2,), torch_weight)
    assert_same(out, expected)
    np.testing.assert_array_equal(out.numpy(), [[1, -2], [1, -2]])
    out.backward(mv.ones(2, 2, dtype="float16"))
    expected.backward(torch.ones(2, 2, dtype=torch.float16))
    assert_same(weight.grad, torch_weight.grad, rtol=1e-3)


# --- dtypes the issue met --------------------------------------------------------------------

def test_gelu_of_float16_is_float16():
    assert F.gelu(mv.tensor(np.ones(3, dtype=np.float16))).dtype == np.float16


@pytest.mark.parametrize("a, b, expected", [
    (np.ones(2, np.int64), np.ones(2, np.float32), np.float32),        # NumPy: float64
    (np.ones(2, np.float32), np.float64(1.0), np.float32),             # a 0-d float64
    (np.ones(2, np.int64), 2.5, np.float32),                           # a Python float
    (np.ones(2, np.float16), np.ones(2, np.int64), np.float16),
])
def test_mixed_operands_take_torch_dtype(a, b, expected):
    assert (mv.tensor(a) + mv.tensor(b) if not isinstance(b, float) else mv.tensor(a) + b).dtype \
        == expected


def test_matmul_of_two_dtypes_names_both():
    with pytest.raises(TypeError, match="matmul: expected one dtype, got a int64, b float32"):
        mv.tensor(np.ones((2, 2), np.int64)) @ mv.tensor(np.ones((2, 2), np.float32))


def test_a_float32_model_refuses_float64_images():
    model = ViT(ViTConfig(image_size=8, patch_size=4, hidden_size=8, num_hidden_layers=1,
                          num_attention_heads=2, intermediate_size=16, num_classes=2))
    with pytest.raises(TypeError, match="expected one dtype, got input float64, weight float32"):
        model(mv.tensor(np.zeros((1, 3, 8, 8))))


# --- tensors with a dimension of size 0 --------------------------------------------------------

@pytest.mark.parametrize("shape, dim", [((2, 0), -1), ((2, 0), 0), ((0, 3), -1), ((0, 3), 0)])
def test_softmax_family_over_empty_dims_matches_torch(shape, dim):
    ours, theirs = both(np.ones(shape))
    for op in ("softmax", "log_softmax"):
        out, expected = getattr(F, op)(ours, dim), getattr(torch, op)(theirs, dim)
        assert_same(out, expected)
        out.backward(mv.ones(*shape))
    assert_same(F.logsumexp(ours, dim), torch.logsumexp(theirs, dim))   # −inf over nothing
    assert ours.grad.shape == shape


@pytest.mark.parametrize("queries, keys", [(3, 0), (0, 3), (0, 0)])
def test_attention_with_no_keys_or_no_queries_matches_torch(queries, keys):
    rng = np.random.default_rng(1)
    values = [rng.standard_normal((2, queries, 4)), rng.standard_normal((2, keys, 4)),
              rng.standard_normal((2, keys, 5))]
    ours = [mv.tensor(a, requires_grad=True) for a in values]
    theirs = [torch.tensor(a, requires_grad=True) for a in values]
    out = F.scaled_dot_product_attention(*ours)
    expected = TF.scaled_dot_product_attention(*theirs)
    assert_same(out, expected)
    upstream = rng.standard_normal(out.shape)
    out.backward(mv.tensor(upstream))
    expected.backward(torch.from_numpy(upstream))
    for t, e in zip(ours, theirs):
        assert_same(t.grad, e.grad)


@pytest.mark.parametrize("shape", [(0, 4), (3, 0), (2, 0, 4)])
def test_elementwise_and_norm_ops_on_empty_tensors(shape):
    ours, theirs = both(np.ones(shape))
    assert_same(F.gelu(ours), TF.gelu(theirs))
    assert_same(F.quick_gelu(ours), theirs * torch.sigmoid(1.702 * theirs))
    if shape[-1]:
        assert_same(F.layer_norm(ours, shape[-1:]), TF.layer_norm(theirs, shape[-1:]))


# --- the power at zero -------------------------------------------------------------------------

def test_power_gradients_at_zero_match_torch():
    """x⁰ is flat in x, and 0^b (b ≥ 0) is flat in b: 0, where the formulas give 0·inf."""
    a, torch_a = both([0.0, 0.0, 2.0, 0.0], dtype="float64")
    b, torch_b = both([0.0, 2.0, 0.0, -1.0], dtype="float64")
    out, expected = a ** b, torch_a ** torch_b
    assert_same(out, expected)
    out.backward(mv.ones(4, dtype="float64"))
    expected.backward(torch.ones(4, dtype=torch.float64))
    assert_same(a.grad, torch_a.grad)
    assert_same(b.grad, torch_b.grad)

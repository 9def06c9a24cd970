"""Tier 2: every op on each available backend in float32, against NumPy in float64.

Inputs are drawn on the host, rounded to float32 once, and given to both runs, so the only
difference left is the arithmetic: float32 on the backend under test against float64 NumPy,
relative error ≲ 1e-4. Every output and every gradient must stay float32 (no silent upcast).
"""
import contextlib

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minivlm as mv
import minivlm.functional as F
from minivlm import autograd
from minivlm.testing import assert_close
from strategies import arrays, finite_floats, shapes
from op_cases import CASES, ours_params

RTOL = 1e-4
ATOL = 1e-5  # float32 rounding of a sum of terms of size ~10 that cancel to ~0
# Each element within ELEMENT_ATOL + RTOL·|expected|. Measured: at most 6.5e-6 beyond
# RTOL·|expected| (attention's query gradient), over 300 drawn examples of every op and 1,000
# more of the eight ops with the largest errors.
ELEMENT_ATOL = 2e-5


def assert_float32_close(actual, expected):
    """Within RTOL of the expected norm, and every element within ELEMENT_ATOL + RTOL·|expected|:
    the norm alone lets a few wrong elements of a big tensor pass."""
    assert_close(actual, expected, rtol=RTOL, atol=ATOL)
    assert_close(actual, expected, rtol=RTOL, atol=ELEMENT_ATOL, elementwise=True)


@contextlib.contextmanager
def gradient_dtypes_reaching_leaves():
    """Record the dtype of every gradient as it reaches a leaf, before Tensor._accumulate casts
    it to the leaf's dtype: that cast would hide an op whose backward computes in float64."""
    seen, accumulate = [], autograd.Tensor._accumulate

    def spy(tensor, grad):
        seen.append(grad.dtype)
        accumulate(tensor, grad)

    autograd.Tensor._accumulate = spy
    try:
        yield seen
    finally:
        autograd.Tensor._accumulate = accumulate


def forward_backward(case, inputs, params, device, dtype):
    """The op's output and its inputs' gradients for a fixed upstream gradient."""
    tensors = {name: mv.tensor(values, dtype=dtype, device=device, requires_grad=True)
               for name, values in inputs.items()}
    out = case.ours(**tensors, **ours_params(params, device))
    upstream = np.random.default_rng(0).standard_normal(out.shape).astype(np.float32)
    out.backward(mv.tensor(upstream, dtype=dtype, device=device))
    return out, {name: t.grad for name, t in tensors.items()}


@pytest.mark.parametrize("case", CASES, ids=str)
@given(data=st.data())
def test_float32_on_backend_matches_float64_numpy(backend, case, data):
    inputs, params = data.draw(case.inputs, label="inputs, params")
    inputs = {name: values.astype(np.float32) for name, values in inputs.items()}
    with gradient_dtypes_reaching_leaves() as seen:
        out, grads = forward_backward(case, inputs, params, backend, "float32")
    expected_out, expected_grads = forward_backward(case, inputs, params, "numpy", "float64")

    assert (out.dtype, out.device) == (np.float32, backend)
    assert set(seen) <= {np.dtype(np.float32)}, f"a gradient was computed in {set(seen)}"
    assert_float32_close(out, expected_out)
    for name, grad in grads.items():
        assert (grad.dtype, grad.device) == (np.float32, backend), name
        assert_float32_close(grad, expected_grads[name])


# --- the ops whose randomness differs between backends, and masked attention ----------------------

@given(arrays(shapes(1, 2, max_side=8), elements=finite_floats(min_magnitude=0.1)),
       st.sampled_from([0.1, 0.5]), st.integers(0, 2**32 - 1))
def test_dropout_in_float32_on_backend(backend, values, p, seed):
    x = mv.tensor(values, dtype="float32", device=backend, requires_grad=True)
    mv.manual_seed(seed)
    y = F.dropout(x, p)
    y.backward(mv.ones(*values.shape, device=backend))
    kept = y.numpy() != 0
    assert y.dtype == x.grad.dtype == np.float32
    assert_close(y, np.where(kept, values.astype(np.float32) / (1 - p), 0.0), rtol=1e-6)
    assert_close(x.grad, kept / (1 - p), rtol=1e-6)


def test_attention_with_a_fully_masked_row_in_float32_on_backend(backend):
    rng = np.random.default_rng(0)
    q, k, v = (mv.tensor(rng.standard_normal(shape), dtype="float32", device=backend,
                         requires_grad=True) for shape in [(2, 3, 4), (2, 5, 4), (2, 5, 4)])
    allowed = np.tril(np.ones((3, 5), dtype=bool), k=-1)  # query 0 may attend to nothing
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mv.tensor(allowed, device=backend))
    out.sum().backward()
    for t in (out, q.grad, k.grad, v.grad):
        assert t.dtype == np.float32 and np.isfinite(t.numpy()).all()
    np.testing.assert_array_equal(out.numpy()[:, 0], 0.0)


def test_the_elementwise_rule_catches_a_few_wrong_elements_that_the_norm_hides():
    """A float32 layer norm of a million elements with three of them off by 0.01: within RTOL
    of the norm (‖error‖ 0.017 against RTOL·‖expected‖ 0.1), far outside the elementwise rule."""
    x = np.random.default_rng(0).standard_normal((1000, 1000))
    expected = F.layer_norm(mv.tensor(x), (1000,)).numpy()
    actual = F.layer_norm(mv.tensor(x, dtype="float32"), (1000,)).numpy()
    actual[[3, 500, 999], [7, 0, 999]] += 0.01
    assert_close(actual, expected, rtol=RTOL, atol=ATOL)
    with pytest.raises(AssertionError, match=r"3 of 1000000 elements differ .* worst at \("):
        assert_float32_close(actual, expected)

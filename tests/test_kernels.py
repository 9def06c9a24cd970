"""The fused CuPy kernels of minivlm/functional/kernels.py against the array functions of the
family modules that they stand in for on the GPU (run on the host with NumPy in float64).

These tests need CuPy and a GPU; without one they are skipped, not passed.
"""
import inspect

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minivlm import backend
from minivlm.functional import attention, elementwise, layers
from minivlm.testing import assert_close

gpu = pytest.mark.skipif(not backend.cupy_available(), reason="needs CuPy and a GPU")


def _rows(draw, dtype, min_width=1):
    shape = (draw(st.integers(1, 40)), draw(st.integers(min_width, 70)))
    values = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(shape) * 3
    return values.astype(dtype)


def _fused():
    from minivlm.functional import kernels  # imports CuPy
    return kernels.FUSED


@gpu
def test_every_kernel_takes_the_arguments_of_the_function_it_stands_in_for():
    assert _fused()
    for compute, kernel in _fused().items():
        assert list(inspect.signature(kernel).parameters) == \
            list(inspect.signature(compute).parameters), compute.__name__


def _compare(compute, arrays, shared=(), dtype="float64"):
    """The kernel on the GPU against the function it stands in for on the host in float64."""
    cupy = backend.module("cupy")
    expected = compute(*(a.astype(np.float64) for a in arrays), *shared)
    on_gpu = [cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in shared]
    actual = _fused()[compute](*(cupy.asarray(a) for a in arrays), *on_gpu)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    for a, e in zip(actual, expected):
        a = backend.to_numpy(a)
        assert a.dtype == dtype
        finite = np.isfinite(e)  # the log-sum-exp of a fully masked row is +inf
        assert np.array_equal(np.isfinite(a), finite) and np.array_equal(a[~finite], e[~finite])
        assert_close(a[finite], e[finite], rtol=rtol, atol=rtol)


DTYPES = st.sampled_from(["float32", "float64"])


@gpu
@pytest.mark.parametrize("compute", [elementwise.gelu_rows, elementwise.quick_gelu_rows],
                         ids=lambda f: f.__name__)
@given(data=st.data(), dtype=DTYPES)
def test_activation_kernel(compute, data, dtype):
    _compare(compute, [_rows(data.draw, dtype)], dtype=dtype)


@gpu
@pytest.mark.parametrize("compute", [elementwise.gelu_grad_rows, elementwise.quick_gelu_grad_rows],
                         ids=lambda f: f.__name__)
@given(data=st.data(), dtype=DTYPES)
def test_activation_gradient_kernel(compute, data, dtype):
    x = _rows(data.draw, dtype)
    _compare(compute, [x, np.random.default_rng(1).standard_normal(x.shape).astype(dtype)],
             dtype=dtype)


@gpu
@given(data=st.data(), dtype=DTYPES)
def test_softmax_kernels(data, dtype):
    x = _rows(data.draw, dtype)
    _compare(layers.softmax_along, [x], (-1,), dtype)
    y = layers.softmax_along(x, -1)[0]
    g = np.random.default_rng(2).standard_normal(x.shape).astype(dtype)
    _compare(layers.softmax_grad_along, [g, y], (-1,), dtype)


@gpu
@given(data=st.data(), dtype=DTYPES)
def test_attention_softmax_kernel_with_masked_scores_and_rows(data, dtype):
    scores = _rows(data.draw, dtype)
    masked = np.random.default_rng(3).random(scores.shape) < 0.3
    masked[0] = True  # a row whose every key is masked: zeros, log-sum-exp +inf
    _compare(attention.attention_softmax, [np.where(masked, -np.inf, scores).astype(dtype)],
             dtype=dtype)


@gpu
@given(data=st.data(), dtype=DTYPES, affine=st.booleans())
def test_layer_norm_kernels(data, dtype, affine):
    x = _rows(data.draw, dtype, min_width=2)
    rng = np.random.default_rng(4)
    weight, bias = (tuple(rng.standard_normal(x.shape[-1]).astype(dtype) for _ in range(2))
                    if affine else (None, None))
    _compare(layers.layer_norm_rows, [x], (1e-5, weight, bias), dtype)
    _, mean, rstd = layers.layer_norm_rows(x, 1e-5, weight, bias)
    g = rng.standard_normal(x.shape).astype(dtype)
    _compare(layers.layer_norm_grad_rows, [g, x, mean, rstd], (weight,), dtype)

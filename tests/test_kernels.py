"""The fused CuPy kernels of minivlm/kernels.py against the functions of functional.py they stand in
for on the GPU (run on the host with NumPy in float64).

The kernel tests need CuPy and a GPU; without one they are skipped, not passed. The first test
runs everywhere: it checks that every kernel still names a function of functional.py (a renamed
function would otherwise silently lose its kernel).
"""
import ast
import inspect
import pathlib

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minivlm.functional as F
from minivlm import backend
from minivlm.testing import assert_close

KERNELS_SOURCE = pathlib.Path(F.__file__).with_name("kernels.py")


def fused_kernels():
    """kernels.FUSED as {name in functional: the kernel function's parameter names}, read from
    the source (importing kernels.py needs CuPy)."""
    tree = ast.parse(KERNELS_SOURCE.read_text(encoding="utf-8"))
    parameters = {node.name: [a.arg for a in node.args.args]
                  for node in tree.body if isinstance(node, ast.FunctionDef)}
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["FUSED"]:
            return {key.value: parameters[value.id]
                    for key, value in zip(node.value.keys, node.value.values)}
    raise AssertionError("kernels.py defines no FUSED")


def test_every_kernel_stands_in_for_a_function_of_functional_with_its_arguments():
    kernels = fused_kernels()
    assert kernels
    for name, parameters in kernels.items():
        assert callable(getattr(F, name, None)), f"functional has no {name}"
        assert list(inspect.signature(getattr(F, name)).parameters) == parameters, name


gpu = pytest.mark.skipif(not backend.cupy_available(), reason="needs CuPy and a GPU")


def _rows(draw, dtype, min_width=1):
    shape = (draw(st.integers(1, 40)), draw(st.integers(min_width, 70)))
    values = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(shape) * 3
    return values.astype(dtype)


def _compare(name, arrays, shared=(), dtype="float64"):
    """The kernel on the GPU against functional's function on the host in float64."""
    from minivlm import kernels
    cupy = backend.module("cupy")
    expected = getattr(F, name)(*(a.astype(np.float64) for a in arrays), *shared)
    on_gpu = [cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in shared]
    actual = kernels.FUSED[name](*(cupy.asarray(a) for a in arrays), *on_gpu)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    for a, e in zip(actual, expected):
        a = backend.to_numpy(a)
        assert a.dtype == dtype
        finite = np.isfinite(e)  # the log-sum-exp of a fully masked row is +inf
        assert np.array_equal(np.isfinite(a), finite) and np.array_equal(a[~finite], e[~finite])
        assert_close(a[finite], e[finite], rtol=rtol, atol=rtol)


DTYPES = st.sampled_from(["float32", "float64"])


@gpu
@pytest.mark.parametrize("name", ["_gelu", "_quick_gelu"])
@given(data=st.data(), dtype=DTYPES)
def test_activation_kernel(name, data, dtype):
    _compare(name, [_rows(data.draw, dtype)], dtype=dtype)


@gpu
@pytest.mark.parametrize("name", ["_gelu_grad", "_quick_gelu_grad"])
@given(data=st.data(), dtype=DTYPES)
def test_activation_gradient_kernel(name, data, dtype):
    x = _rows(data.draw, dtype)
    _compare(name, [x, np.random.default_rng(1).standard_normal(x.shape).astype(dtype)],
             dtype=dtype)


@gpu
@given(data=st.data(), dtype=DTYPES)
def test_softmax_kernels(data, dtype):
    x = _rows(data.draw, dtype)
    _compare("_softmax", [x], (-1,), dtype)
    y = F._softmax(x, -1)[0]
    _compare("_softmax_grad", [np.random.default_rng(2).standard_normal(x.shape).astype(dtype), y],
             (-1,), dtype)


@gpu
@given(data=st.data(), dtype=DTYPES)
def test_attention_softmax_kernel_with_masked_scores_and_rows(data, dtype):
    scores = _rows(data.draw, dtype)
    masked = np.random.default_rng(3).random(scores.shape) < 0.3
    masked[0] = True  # a row whose every key is masked: zeros, log-sum-exp +inf
    _compare("_attention_softmax", [np.where(masked, -np.inf, scores).astype(dtype)], dtype=dtype)


@gpu
@given(data=st.data(), dtype=DTYPES, affine=st.booleans())
def test_layer_norm_kernels(data, dtype, affine):
    x = _rows(data.draw, dtype, min_width=2)
    rng = np.random.default_rng(4)
    weight, bias = (tuple(rng.standard_normal(x.shape[-1]).astype(dtype) for _ in range(2))
                    if affine else (None, None))
    _compare("_layer_norm", [x], (1e-5, weight, bias), dtype)
    _, mean, rstd = F._layer_norm(x, 1e-5, weight, bias)
    g = rng.standard_normal(x.shape).astype(dtype)
    _compare("_layer_norm_grad", [g, x, mean, rstd], (weight,), dtype)

"""Fused CuPy kernels: on the GPU they stand in for the elementwise chains and row reductions that
the family modules write with array operations, where fusing them saves whole passes over memory
and kernel launches (GELU: one kernel instead of eight; layer norm backward: five passes instead
of thirteen).

FUSED maps each array function of the family modules (arrays in, a tuple of arrays out; rows of
a 2-d array for most) to the kernel function here that takes and returns the same, so that an op
swaps one for the other without a second code path: cpu.kernel_for, which imports this module
only for CuPy arrays (MINIVLM_FUSED_KERNELS=0 turns the kernels off, to measure what they gain).
FUSED is keyed by the function objects, so renaming one fails here, loudly.
tests/test_kernels.py checks each kernel against the array-operation version, and that both
take the same arguments.
"""
from .. import backend
from . import attention, elementwise, layers

cupy = backend.module("cupy")

_SQRT_HALF = "T(0.70710678118654752)"
_INV_SQRT_2PI = "T(0.39894228040143268)"

_gelu = cupy.ElementwiseKernel(
    "T x", "T y", f"y = x * (T(0.5) + T(0.5) * erf(x * {_SQRT_HALF}))", "minivlm_gelu")

_gelu_grad = cupy.ElementwiseKernel(
    "T x, T g", "T dx",
    f"""T cdf = T(0.5) + T(0.5) * erf(x * {_SQRT_HALF});
    dx = g * (cdf + x * exp(T(-0.5) * x * x) * {_INV_SQRT_2PI})""",
    "minivlm_gelu_grad")

_quick_gelu = cupy.ElementwiseKernel(
    "T x", "T y", "y = x / (T(1) + exp(T(-1.702) * x))", "minivlm_quick_gelu")

_quick_gelu_grad = cupy.ElementwiseKernel(
    "T x, T g", "T dx",
    """T s = T(1) / (T(1) + exp(T(-1.702) * x));
    dx = g * s * (T(1) + T(1.702) * x * (T(1) - s))""",
    "minivlm_quick_gelu_grad")

# Σ exp(x − m) along an axis, m broadcast (the row maxima)
_sum_exp = cupy.ReductionKernel(
    "T x, T m", "T total", "exp(x - m)", "a + b", "total = a", "0", "minivlm_sum_exp")

# exp(x − m) / s, and 0 where s is 0 (a row whose every score is −inf)
_normalise_exp = cupy.ElementwiseKernel(
    "T x, T m, T s", "T y", "y = s > T(0) ? exp(x - m) / s : T(0)", "minivlm_normalise_exp")

_sum_product = cupy.ReductionKernel(
    "T a, T b", "T total", "a * b", "a + b", "total = a", "0", "minivlm_sum_product")

_softmax_grad = cupy.ElementwiseKernel(
    "T g, T y, T s", "T dx", "dx = y * (g - s)", "minivlm_softmax_grad")

_sum_deviation = cupy.ReductionKernel(
    "T x, T m", "T total", "x - m", "a + b", "total = a", "0", "minivlm_sum_deviation")

_sum_square_deviation = cupy.ReductionKernel(
    "T x, T m", "T total", "(x - m) * (x - m)", "a + b", "total = a", "0",
    "minivlm_sum_square_deviation")

_layer_norm = cupy.ElementwiseKernel(
    "T x, T m, T r, T w, T b", "T y", "y = (x - m) * r * w + b", "minivlm_layer_norm")

# Σ ĝ·x̂ with ĝ = γ·g and x̂ = (x − m)·r, along an axis
_sum_g_xhat = cupy.ReductionKernel(
    "T g, T w, T x, T m, T r", "T total", "g * w * (x - m) * r", "a + b", "total = a", "0",
    "minivlm_sum_g_xhat")

_layer_norm_grad = cupy.ElementwiseKernel(
    "T g, T w, T x, T m, T r, T mean_g, T mean_g_xhat", "T dx",
    "dx = (g * w - mean_g - (x - m) * r * mean_g_xhat) * r", "minivlm_layer_norm_grad")


def gelu(x):
    return (_gelu(x),)


def gelu_grad(x, g):
    return (_gelu_grad(x, g),)


def quick_gelu(x):
    return (_quick_gelu(x),)


def quick_gelu_grad(x, g):
    return (_quick_gelu_grad(x, g),)


def softmax(x, axis):
    row_max = layers.row_max(x, axis)
    return (_normalise_exp(x, row_max, _sum_exp(x, row_max, axis=axis, keepdims=True)),)


def softmax_grad(g, y, axis):
    return (_softmax_grad(g, y, _sum_product(g, y, axis=axis, keepdims=True)),)


def attention_softmax(e):
    """As attention.attention_softmax: (probabilities, log-sum-exp per row, +inf for rows
    whose every score is −inf or whose largest scores are +inf, shared evenly among those)."""
    row_max = layers.row_max(e, -1)
    top = attention.overflowed(e, row_max)
    row_max = cupy.where(cupy.isfinite(row_max), row_max, 0).astype(e.dtype)
    total = _sum_exp(e, row_max, axis=-1, keepdims=True)
    some = total > 0
    lse = cupy.where(some, row_max + cupy.log(cupy.where(some, total, 1)), cupy.inf)
    return attention.even_share(_normalise_exp(e, row_max, total), top), lse.astype(e.dtype)


def layer_norm(x, eps, weight, bias):
    """Rows x (r, D) -> y, and the mean and 1/std (r, 1) of each row."""
    n = x.shape[-1]
    mean = x.mean(axis=-1, keepdims=True)
    mean += _sum_deviation(x, mean, axis=-1, keepdims=True) / n   # as layers.layer_norm_rows
    variance = _sum_square_deviation(x, mean, axis=-1, keepdims=True) / n
    rstd = (1 / cupy.sqrt(variance + eps)).astype(x.dtype)
    weight, bias = _affine(weight, bias, n, x.dtype)
    return _layer_norm(x, mean, rstd, weight, bias), mean, rstd


def layer_norm_grad(g, x, mean, rstd, weight):
    """As layers.layer_norm_grad_rows: the gradient for x, and Σ g·x̂ and Σ g over the rows."""
    n = x.shape[-1]
    weight, ones = _affine(weight, None, n, x.dtype)[0], cupy.ones(n, dtype=x.dtype)
    mean_g = _sum_product(g, weight, axis=-1, keepdims=True) / n
    mean_g_xhat = _sum_g_xhat(g, weight, x, mean, rstd, axis=-1, keepdims=True) / n
    grad = _layer_norm_grad(g, weight, x, mean, rstd, mean_g, mean_g_xhat)
    g_xhat = _sum_g_xhat(g, ones, x, mean, rstd, axis=0, keepdims=True)
    return grad, g_xhat, g.sum(axis=0, keepdims=True)


def _affine(weight, bias, n, dtype):
    """γ and β, ones and zeros where there are none."""
    return (cupy.ones(n, dtype=dtype) if weight is None else weight,
            cupy.zeros(n, dtype=dtype) if bias is None else bias)


FUSED = {
    elementwise.gelu_rows: gelu, elementwise.gelu_grad_rows: gelu_grad,
    elementwise.quick_gelu_rows: quick_gelu, elementwise.quick_gelu_grad_rows: quick_gelu_grad,
    layers.softmax_along: softmax, layers.softmax_grad_along: softmax_grad,
    attention.attention_softmax: attention_softmax,
    layers.layer_norm_rows: layer_norm, layers.layer_norm_grad_rows: layer_norm_grad,
}

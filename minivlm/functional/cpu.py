"""The CPU speed helpers, and the one place that hands CuPy arrays to the fused GPU kernels.

On the CPU a chain of elementwise NumPy passes is bound by memory bandwidth: each pass reads
and writes the whole array. Run over blocks that fit in the L2 cache (with their temporaries),
the same passes go several times faster, which is how the coarse ops (GELU, layer norm,
softmax, attention) come close to fused kernels. On the GPU the arrays go whole, to the fused CuPy
kernel of kernels.py that stands in for the computation where there is one (`kernel_for`).

Also here, for GELU and QuickGELU: Φ(x) with a float32 erf polynomial, and a sigmoid that cannot
overflow, both computed in place.
"""
import math
import os

from .. import backend
from ..backend import xp_of

BLOCK = 1 << 16  # elements per block: 256 KiB of float32
FEW_ROWS = 16    # a linear layer of at most this many rows multiplies as (W xᵀ)ᵀ (layers.Linear)


def as_rows(a):
    """a as a 2-d array of rows along its last dim (a 0-d array as one row of one)."""
    return a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)


def by_blocks(compute, arrays, *shared):
    """compute(*blocks, *shared) -> tuple of arrays, run on consecutive blocks of rows of the 2-d
    `arrays` (all with the same number of rows). Each result is either rows of the block, gathered
    into one array with a row per input row, or a per-block partial result of one row (a partial
    sum), gathered into one array with a row per block."""
    first = arrays[0]
    step = max(1, BLOCK // first.shape[-1])
    if backend.is_cupy_array(first) or len(first) <= step:
        return kernel_for(compute, first)(*arrays, *shared)
    starts = range(0, len(first), step)
    gathered = None
    for i, start in enumerate(starts):
        results = compute(*(a[start:start + step] for a in arrays), *shared)
        if gathered is None:
            per_row = [len(r) == step for r in results]
            gathered = [xp_of(first).empty(((len(first) if rows else len(starts)),) + r.shape[1:],
                                           dtype=r.dtype) for rows, r in zip(per_row, results)]
        for out, rows, r in zip(gathered, per_row, results):
            if rows:
                out[start:start + len(r)] = r
            else:
                out[i] = r[0]
    return tuple(gathered)


def kernel_for(compute, array):
    """compute, or for a CuPy array the fused kernel of kernels.py that stands in for it, where
    there is one and MINIVLM_FUSED_KERNELS is not 0 (which turns them off, to measure what they
    gain)."""
    if not backend.is_cupy_array(array) or os.environ.get("MINIVLM_FUSED_KERNELS", "1") == "0":
        return compute
    from . import kernels  # imports CuPy: only ever asked for with CuPy arrays
    return kernels.FUSED.get(compute, compute)


def along(compute, dim, *arrays):
    """compute(*arrays, axis)[0] for an op along `dim` whose output has the shape of its inputs:
    in blocks of rows when dim is the last axis."""
    shape = arrays[0].shape
    if dim % len(shape) != len(shape) - 1:
        return kernel_for(compute, arrays[0])(*arrays, dim)[0]
    return by_blocks(compute, [as_rows(a) for a in arrays], -1)[0].reshape(shape)


def scaled_sigmoid(x, scale=1.0):
    """σ(scale·x) = ½(tanh(scale·x/2) + 1), overflow-free in both directions, in a new array."""
    xp = xp_of(x)
    y = xp.multiply(x, 0.5 * scale, out=xp.empty_like(x))
    xp.tanh(y, out=y)
    y += 1
    y *= 0.5
    return y


_SQRT_HALF = math.sqrt(0.5)
_ERF_P, _ERF_A = 0.3275911, (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def gaussian(x):
    """exp(−x²/2), in a new array."""
    xp = xp_of(x)
    gauss = xp.multiply(x, x, out=xp.empty_like(x))
    gauss *= -0.5
    return xp.exp(gauss, out=gauss)


def normal_cdf(x, gauss):
    """Φ(x) = ½(1 + erf(x/√2)), given gauss = exp(−x²/2), in a new array. For float32 NumPy
    arrays erf is Abramowitz & Stegun 7.1.26, erf(z) = 1 − t·P(t)·exp(−z²) with
    t = 1/(1 + p·z) for z ≥ 0 (|error| < 1.5e-7, below float32's resolution; PyTorch's
    vectorised CPU erf): several times faster than SciPy's erf, which evaluates each float32
    element in double. Otherwise the backend's erf."""
    xp = xp_of(x)
    if x.dtype != "float32" or backend.is_cupy_array(x):
        cdf = backend.erf(x * _SQRT_HALF)
        cdf += 1
        cdf *= 0.5
        return cdf
    t = xp.abs(x, out=xp.empty_like(x))  # (out= keeps 0-d arrays arrays, for the in-place ops)
    t *= _ERF_P * _SQRT_HALF
    t += 1
    xp.reciprocal(t, out=t)
    # ½(1 − erf(|x|/√2)) = ½·t·P(t)·exp(−x²/2), P by Horner's rule in place
    tail = xp.multiply(t, 0.5 * _ERF_A[-1], out=xp.empty_like(x))
    for a in reversed(_ERF_A[:-1]):
        tail += 0.5 * a
        tail *= t
    tail *= gauss
    xp.subtract(0.5, tail, out=tail)  # ½·erf(|x|/√2), then signed and shifted: Φ(x)
    xp.copysign(tail, x, out=tail)
    tail += 0.5
    return tail

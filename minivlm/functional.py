"""Differentiable ops with torch.nn.functional's names, each a Function on raw arrays.

Imported as `F`. Every op works on NumPy and CuPy arrays alike (the array module comes from the
inputs via `xp_of`) and in float32 and float64; Python scalars take the tensor's dtype.
Coarse ops (softmax, layer_norm, cross_entropy, attention, linear, embedding) have hand-written
backward passes that keep only what backward needs.
"""
import builtins
import collections
import itertools
import math
import numbers

from . import backend
from .autograd import Function, Tensor, shape_arg, unbroadcast
from .backend import xp_of


def _lift(x, like):
    """A non-Tensor operand (Python number or array) as a constant Tensor of `like`'s kind."""
    if isinstance(x, Tensor):
        return x
    xp = xp_of(like.data)
    if isinstance(x, numbers.Number) and like.dtype.kind == "f":
        return Tensor(xp.asarray(x, dtype=like.dtype))
    return Tensor(xp.asarray(x))


def _pair(a, b):
    if not isinstance(a, Tensor):
        a = _lift(a, b)
    return a, _lift(b, a)


def _check_broadcast(a, b, op):
    try:
        return xp_of(a).broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {tuple(a.shape)} and {tuple(b.shape)} do not broadcast") from None


# On the CPU a chain of elementwise NumPy passes is bound by memory bandwidth: each pass reads
# and writes the whole array. Run over blocks that fit in the L2 cache (with their temporaries),
# the same passes go several times faster, which is how the coarse ops below (GELU, layer norm,
# softmax, attention) come close to fused kernels. On the GPU the arrays go whole, to the fused CuPy kernel
# of minivlm/kernels.py that stands in for the computation where there is one.
_BLOCK = 1 << 16  # elements per block: 256 KiB of float32


def _rows(a):
    """a as a 2-d array of rows along its last dim (a 0-d array as one row of one)."""
    return a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)


def _by_blocks(compute, arrays, *shared):
    """compute(*blocks, *shared) -> tuple of arrays, run on consecutive blocks of rows of the 2-d
    `arrays` (all with the same number of rows). Each result is either rows of the block, gathered
    into one array with a row per input row, or a per-block partial result of one row (a partial
    sum), gathered into one array with a row per block."""
    first = arrays[0]
    step = builtins.max(1, _BLOCK // first.shape[-1])
    if backend.is_cupy_array(first) or len(first) <= step:
        return _fused(compute, first)(*arrays, *shared)
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


def _fused(compute, array):
    """compute, or for a CuPy array the fused kernel that stands in for it, where there is one."""
    if backend.is_cupy_array(array):
        return backend.fused_kernel(compute.__name__) or compute
    return compute


# --- elementwise arithmetic -------------------------------------------------------------------------

class Add(Function):
    def forward(self, a, b):
        _check_broadcast(a, b, "add")
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, g):
        return tuple(unbroadcast(g, s) if need else None
                     for s, need in zip(self.shapes, self.needs_input_grad))


class Sub(Function):
    def forward(self, a, b):
        _check_broadcast(a, b, "sub")
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, g):
        ga, gb = self.needs_input_grad
        return (unbroadcast(g, self.shapes[0]) if ga else None,
                unbroadcast(-g, self.shapes[1]) if gb else None)


class Mul(Function):
    def forward(self, a, b):
        _check_broadcast(a, b, "mul")
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        ga, gb = self.needs_input_grad
        return (unbroadcast(g * self.b, self.a.shape) if ga else None,
                unbroadcast(g * self.a, self.b.shape) if gb else None)


class Div(Function):
    def forward(self, a, b):
        _check_broadcast(a, b, "div")
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        ga, gb = self.needs_input_grad
        g_over_b = g / self.b
        return (unbroadcast(g_over_b, self.a.shape) if ga else None,
                unbroadcast(-g_over_b * self.a / self.b, self.b.shape) if gb else None)


class Pow(Function):
    def forward(self, a, b):
        _check_broadcast(a, b, "pow")
        self.a, self.b = a, b
        self.out = a ** b
        return self.out

    def backward(self, g):
        ga, gb = self.needs_input_grad
        a, b = self.a, self.b
        return (unbroadcast(g * b * a ** (b - 1), a.shape) if ga else None,
                unbroadcast(g * self.out * xp_of(a).log(a), b.shape) if gb else None)


def add(a, b): return Add.apply(*_pair(a, b))
def sub(a, b): return Sub.apply(*_pair(a, b))
def mul(a, b): return Mul.apply(*_pair(a, b))
def div(a, b): return Div.apply(*_pair(a, b))
def pow(a, b): return Pow.apply(*_pair(a, b))


class Neg(Function):
    def forward(self, x): return -x
    def backward(self, g): return -g


class Exp(Function):
    def forward(self, x):
        self.y = xp_of(x).exp(x)
        return self.y

    def backward(self, g): return g * self.y


class Log(Function):
    def forward(self, x):
        self.x = x
        return xp_of(x).log(x)

    def backward(self, g): return g / self.x


class Sqrt(Function):
    def forward(self, x):
        self.y = xp_of(x).sqrt(x)
        return self.y

    def backward(self, g): return g / (2 * self.y)


class Abs(Function):
    def forward(self, x):
        self.x = x
        return xp_of(x).abs(x)

    def backward(self, g): return g * xp_of(self.x).sign(self.x)


class Tanh(Function):
    def forward(self, x):
        self.y = xp_of(x).tanh(x)
        return self.y

    def backward(self, g): return g * (1 - self.y * self.y)


def _sigmoid(x, scale=1.0):
    """σ(scale·x) = ½(tanh(scale·x/2) + 1), overflow-free in both directions, in a new array."""
    xp = xp_of(x)
    y = xp.multiply(x, 0.5 * scale, out=xp.empty_like(x))
    xp.tanh(y, out=y)
    y += 1
    y *= 0.5
    return y


class Sigmoid(Function):
    def forward(self, x):
        self.y = _sigmoid(x)
        return self.y

    def backward(self, g): return g * self.y * (1 - self.y)


class ReLU(Function):
    def forward(self, x):
        self.positive = x > 0
        return x * self.positive

    def backward(self, g): return g * self.positive


class Clamp(Function):
    def forward(self, x, min=None, max=None):
        self.inside = xp_of(x).ones(x.shape, dtype=bool)
        if min is not None:
            self.inside &= x >= min
        if max is not None:
            self.inside &= x <= max
        return xp_of(x).clip(x, min, max)

    def backward(self, g): return g * self.inside


class GELU(Function):
    """x·Φ(x) exactly (erf), or with the tanh approximation. Keeps only x: backward recomputes
    Φ(x), block by block."""

    def forward(self, x, approximate="none"):
        self.x, self.approximate = x, approximate
        if approximate == "tanh":
            self.t = xp_of(x).tanh(_GELU_C * (x + 0.044715 * x * x * x))
            return 0.5 * x * (1 + self.t)
        if approximate != "none":
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}")
        return _by_blocks(_gelu, [_rows(x)])[0].reshape(x.shape)

    def backward(self, g):
        x = self.x
        if self.approximate == "tanh":
            dt = (1 - self.t * self.t) * _GELU_C * (1 + 3 * 0.044715 * x * x)
            return g * (0.5 * (1 + self.t) + 0.5 * x * dt)
        return _by_blocks(_gelu_grad, [_rows(x), _rows(g)])[0].reshape(x.shape)


def _gelu(x):
    y = _normal_cdf(x, _gaussian(x))
    y *= x
    return (y,)


def _gelu_grad(x, g):
    """g · (Φ(x) + x·φ(x)), φ(x) = exp(−x²/2) / √(2π)."""
    gauss = _gaussian(x)
    grad = _normal_cdf(x, gauss)
    gauss *= x
    gauss *= _INV_SQRT_2PI
    grad += gauss
    grad *= g
    return (grad,)


_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_GELU_C = math.sqrt(2 / math.pi)
_ERF_P, _ERF_A = 0.3275911, (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _gaussian(x):
    """exp(−x²/2), in a new array."""
    xp = xp_of(x)
    gauss = xp.multiply(x, x, out=xp.empty_like(x))
    gauss *= -0.5
    return xp.exp(gauss, out=gauss)


def _normal_cdf(x, gauss):
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


class QuickGELU(Function):
    """x·σ(1.702x), OpenAI CLIP's approximation of GELU. Keeps only x, block by block."""

    def forward(self, x):
        self.x = x
        return _by_blocks(_quick_gelu, [_rows(x)])[0].reshape(x.shape)

    def backward(self, g):
        return _by_blocks(_quick_gelu_grad, [_rows(self.x), _rows(g)])[0].reshape(self.x.shape)


def _quick_gelu(x):
    y = _sigmoid(x, 1.702)
    y *= x
    return (y,)


def _quick_gelu_grad(x, g):
    """g · σ(1.702x) · (1 + 1.702x·(1 − σ(1.702x)))."""
    s = _sigmoid(x, 1.702)
    grad = 1 - s
    grad *= x
    grad *= 1.702
    grad += 1
    grad *= s
    grad *= g
    return (grad,)


def neg(x): return Neg.apply(x)
def exp(x): return Exp.apply(x)
def log(x): return Log.apply(x)
def sqrt(x): return Sqrt.apply(x)
def abs(x): return Abs.apply(x)
def tanh(x): return Tanh.apply(x)
def sigmoid(x): return Sigmoid.apply(x)
def relu(x): return ReLU.apply(x)
def gelu(x, approximate="none"): return GELU.apply(x, approximate=approximate)
def quick_gelu(x): return QuickGELU.apply(x)
def clamp(x, min=None, max=None): return Clamp.apply(x, min=min, max=max)


# --- matrix products -----------------------------------------------------------------------------

class MatMul(Function):
    """a @ b with NumPy's rules: batched, broadcasting, 1-d operands promoted and squeezed."""

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0 or a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} do not line up "
                             f"(the last dim of the first must equal the "
                             f"{'second-to-last' if b.ndim > 1 else 'only'} dim of the second)")
        self.a, self.b = a, b
        return a @ b

    def backward(self, g):
        a, b = self.a, self.b
        a2 = a[None, :] if a.ndim == 1 else a  # promote 1-d operands as matmul does
        b2 = b[:, None] if b.ndim == 1 else b
        batch = xp_of(g).broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
        g2 = g.reshape(batch + (a2.shape[-2], b2.shape[-1]))
        ga, gb = self.needs_input_grad
        return (unbroadcast(g2 @ b2.swapaxes(-1, -2), a2.shape).reshape(a.shape) if ga else None,
                unbroadcast(a2.swapaxes(-1, -2) @ g2, b2.shape).reshape(b.shape) if gb else None)


def matmul(a, b): return MatMul.apply(*_pair(a, b))


class Linear(Function):
    """y = x Wᵀ + b over the last dim of x (..., in) with W (out, in): one 2-d GEMM each way."""

    def forward(self, x, weight, bias=None):
        if x.shape[-1] != weight.shape[1]:
            raise ValueError(f"linear: input of shape {tuple(x.shape)} has {x.shape[-1]} features "
                             f"but the weight of shape {tuple(weight.shape)} expects {weight.shape[1]}")
        self.x, self.weight, self.has_bias = x, weight, bias is not None
        y = x.reshape(-1, x.shape[-1]) @ weight.T
        if bias is not None:
            y += bias
        return y.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(self, g):
        g2 = g.reshape(-1, g.shape[-1])
        needs = self.needs_input_grad
        gx = (g2 @ self.weight).reshape(self.x.shape) if needs[0] else None
        gw = g2.T @ self.x.reshape(-1, self.x.shape[-1]) if needs[1] else None
        gb = g2.sum(axis=0) if self.has_bias and needs[2] else None
        return (gx, gw, gb) if self.has_bias else (gx, gw)


def linear(x, weight, bias=None):
    """x (..., in) @ weight (out, in)ᵀ + bias (out,) -> (..., out)."""
    return Linear.apply(x, weight) if bias is None else Linear.apply(x, weight, bias)


# --- reductions ------------------------------------------------------------------------------------

def _axes(dim, ndim):
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(d % ndim if ndim else 0 for d in dims)


def _expand_reduced(g, shape, axes, keepdim):
    """Reshape a reduced gradient so it broadcasts against the input of `shape`."""
    if not keepdim:
        g = g.reshape([1 if i in axes else n for i, n in enumerate(shape)])
    return g


class Sum(Function):
    def forward(self, x, dim=None, keepdim=False):
        self.shape, self.axes, self.keepdim = x.shape, _axes(dim, x.ndim), keepdim
        return x.sum(axis=self.axes, keepdims=keepdim)

    def backward(self, g):
        g = _expand_reduced(g, self.shape, self.axes, self.keepdim)
        return xp_of(g).broadcast_to(g, self.shape)


class Mean(Function):
    def forward(self, x, dim=None, keepdim=False):
        self.shape, self.axes, self.keepdim = x.shape, _axes(dim, x.ndim), keepdim
        self.count = math.prod(x.shape[a] for a in self.axes)
        return x.mean(axis=self.axes, keepdims=keepdim)

    def backward(self, g):
        g = _expand_reduced(g, self.shape, self.axes, self.keepdim) / self.count
        return xp_of(g).broadcast_to(g, self.shape)


class Var(Function):
    def forward(self, x, dim=None, correction=1, keepdim=False):
        self.axes, self.keepdim = _axes(dim, x.ndim), keepdim
        self.centred = x - x.mean(axis=self.axes, keepdims=True)
        self.dof = math.prod(x.shape[a] for a in self.axes) - correction
        return (self.centred ** 2).sum(axis=self.axes, keepdims=keepdim) / self.dof

    def backward(self, g):
        g = _expand_reduced(g, self.centred.shape, self.axes, self.keepdim)
        return g * self.centred * (2 / self.dof)


class MaxMin(Function):
    """max or min over `dim`; the gradient goes to the selected elements (ties share it)."""

    def forward(self, x, dim=None, keepdim=False, largest=True):
        self.axes, self.keepdim = _axes(dim, x.ndim), keepdim
        y = (x.max if largest else x.min)(axis=self.axes, keepdims=True)
        self.hit = x == y
        return y if keepdim else y.reshape([n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, g):
        g = _expand_reduced(g, self.hit.shape, self.axes, self.keepdim)
        return g * self.hit / self.hit.sum(axis=self.axes, keepdims=True, dtype=g.dtype)


def sum(x, dim=None, keepdim=False): return Sum.apply(x, dim=dim, keepdim=keepdim)
def mean(x, dim=None, keepdim=False): return Mean.apply(x, dim=dim, keepdim=keepdim)


def var(x, dim=None, unbiased=True, keepdim=False, correction=None):
    """Variance with Bessel's correction by default, as torch.var."""
    correction = (1 if unbiased else 0) if correction is None else correction
    return Var.apply(x, dim=dim, correction=correction, keepdim=keepdim)


MaxResult = collections.namedtuple("MaxResult", ["values", "indices"])


def _max_min(x, dim, keepdim, largest):
    values = MaxMin.apply(x, dim=dim, keepdim=keepdim, largest=largest)
    if dim is None:
        return values
    arg = x.data.argmax if largest else x.data.argmin
    indices = arg(axis=dim, keepdims=keepdim) if keepdim else arg(axis=dim)
    return MaxResult(values, Tensor(indices))


def max(x, dim=None, keepdim=False):
    """The largest value; with `dim`, (values, indices) as torch.max."""
    return _max_min(x, dim, keepdim, largest=True)


def min(x, dim=None, keepdim=False):
    """The smallest value; with `dim`, (values, indices) as torch.min."""
    return _max_min(x, dim, keepdim, largest=False)


def argmax(x, dim=None, keepdim=False):
    return Tensor(x.data.argmax(axis=dim, keepdims=keepdim) if dim is not None else x.data.argmax())


def argmin(x, dim=None, keepdim=False):
    return Tensor(x.data.argmin(axis=dim, keepdims=keepdim) if dim is not None else x.data.argmin())


# --- shapes ------------------------------------------------------------------------------------------

class Reshape(Function):
    def forward(self, x, shape):
        self.shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot view shape {tuple(x.shape)} ({x.size} elements) "
                             f"as {tuple(shape)}") from None

    def backward(self, g): return g.reshape(self.shape)


class Permute(Function):
    def forward(self, x, dims):
        self.dims = dims
        return x.transpose(dims)

    def backward(self, g):
        inverse = [0] * len(self.dims)
        for i, d in enumerate(self.dims):
            inverse[d] = i
        return g.transpose(inverse)


class Expand(Function):
    def forward(self, x, shape):
        self.shape = x.shape
        return xp_of(x).broadcast_to(x, shape)

    def backward(self, g): return unbroadcast(g, self.shape)


def reshape(x, *shape): return Reshape.apply(x, shape=shape_arg(shape))


view = reshape


def permute(x, *dims):
    dims = tuple(d % x.ndim for d in shape_arg(dims))
    return Permute.apply(x, dims=dims)


def transpose(x, dim0, dim1):
    dims = list(range(x.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return Permute.apply(x, dims=tuple(dims))


def expand(x, *shape):
    shape = shape_arg(shape)
    shape = tuple(x.shape[i - len(shape) + x.ndim] if n == -1 else n for i, n in enumerate(shape))
    return Expand.apply(x, shape=shape)


def expand_as(x, other): return expand(x, other.shape)


def squeeze(x, dim=None):
    if dim is None:
        return reshape(x, tuple(n for n in x.shape if n != 1))
    dim = dim % x.ndim
    return x if x.shape[dim] != 1 else reshape(x, x.shape[:dim] + x.shape[dim + 1:])


def unsqueeze(x, dim):
    dim = dim % (x.ndim + 1)
    return reshape(x, x.shape[:dim] + (1,) + x.shape[dim:])


def flatten(x, start_dim=0, end_dim=-1):
    start, end = start_dim % x.ndim, end_dim % x.ndim
    return reshape(x, x.shape[:start] + (-1,) + x.shape[end + 1:])


def contiguous(x):
    return x


class Cast(Function):
    def forward(self, x, dtype):
        self.dtype = x.dtype
        return x.astype(dtype)

    def backward(self, g): return g.astype(self.dtype)


class ToBackend(Function):
    def forward(self, x, name):
        self.source = backend.name_of(x)
        return backend.to_backend(x, name)

    def backward(self, g): return backend.to_backend(g, self.source)


def cast(x, dtype): return Cast.apply(x, dtype=dtype)
def to_backend(x, name): return ToBackend.apply(x, name=name)


# --- indexing, joining, splitting ---------------------------------------------------------------------

def _raw_index(index):
    if isinstance(index, tuple):
        return tuple(_raw_index(i) for i in index)
    return index.data if isinstance(index, Tensor) else index


def _is_advanced(index):
    parts = index if isinstance(index, tuple) else (index,)
    return any(hasattr(p, "shape") and p.dtype.kind in "iu" or isinstance(p, list) for p in parts)


class GetItem(Function):
    """x[index] for slices, integers, integer arrays and boolean masks."""

    def forward(self, x, index):
        self.shape, self.dtype, self.index = x.shape, x.dtype, index
        return x[index]

    def backward(self, g):
        full = xp_of(g).zeros(self.shape, dtype=self.dtype)
        if _is_advanced(self.index):
            backend.scatter_add(full, self.index, g)  # repeated indices accumulate
        else:
            full[self.index] = g
        return full


def getitem(x, index): return GetItem.apply(x, index=_raw_index(index))


class Cat(Function):
    def forward(self, *arrays, dim=0):
        first = arrays[0]
        for a in arrays[1:]:
            if a.ndim != first.ndim or any(m != n for i, (m, n) in enumerate(zip(a.shape, first.shape))
                                           if i != dim % first.ndim):
                raise ValueError(f"cat: shapes {tuple(first.shape)} and {tuple(a.shape)} differ "
                                 f"outside dim {dim}")
        self.dim = dim
        self.ends = list(itertools.accumulate(a.shape[dim] for a in arrays))
        return xp_of(*arrays).concatenate(arrays, axis=dim)

    def backward(self, g):
        return tuple(xp_of(g).split(g, self.ends[:-1], axis=self.dim))


def cat(tensors, dim=0): return Cat.apply(*tensors, dim=dim)


concatenate = cat


def stack(tensors, dim=0):
    dim = dim % (tensors[0].ndim + 1)
    return cat([unsqueeze(t, dim) for t in tensors], dim=dim)


def split(x, split_size_or_sections, dim=0):
    """Pieces of `split_size` along dim (the last may be smaller), or of the given sizes."""
    n = x.shape[dim]
    if isinstance(split_size_or_sections, int):
        sizes = [split_size_or_sections] * (n // split_size_or_sections)
        sizes += [n % split_size_or_sections] if n % split_size_or_sections else []
    else:
        sizes = list(split_size_or_sections)
        if builtins.sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not add up to dim {dim} of size {n}")
    before = (slice(None),) * (dim % x.ndim)
    starts = [0, *itertools.accumulate(sizes)]
    return tuple(getitem(x, before + (slice(a, b),)) for a, b in zip(starts, starts[1:]))


def chunk(x, chunks, dim=0):
    return split(x, -(-x.shape[dim] // chunks), dim)


class Roll(Function):
    def forward(self, x, shifts, dims):
        self.shifts, self.dims = shifts, dims
        return xp_of(x).roll(x, shifts, axis=dims)

    def backward(self, g):
        negated = tuple(-s for s in self.shifts) if isinstance(self.shifts, tuple) else -self.shifts
        return xp_of(g).roll(g, negated, axis=self.dims)


def roll(x, shifts, dims=None):
    if isinstance(shifts, list):
        shifts = tuple(shifts)
    if isinstance(dims, list):
        dims = tuple(dims)
    return Roll.apply(x, shifts=shifts, dims=dims)


class Pad(Function):
    """Constant padding; `pad` lists (before, after) pairs from the last dim backwards, as torch."""

    def forward(self, x, pad, value=0.0):
        if len(pad) % 2 or len(pad) // 2 > x.ndim:
            raise ValueError(f"pad: {pad} must hold (before, after) pairs for at most {x.ndim} dims")
        widths = [(0, 0)] * x.ndim
        for i in range(len(pad) // 2):
            widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
        self.crop = tuple(slice(b, n + b) for (b, _), n in zip(widths, x.shape))
        return xp_of(x).pad(x, widths, constant_values=value)

    def backward(self, g): return g[self.crop]


def pad(x, pad, mode="constant", value=0.0):
    if mode != "constant":
        raise ValueError(f"pad: only mode='constant' is implemented, not {mode!r}")
    return Pad.apply(x, pad=tuple(pad), value=value)


class Where(Function):
    def forward(self, a, b, condition):
        self.condition, self.shapes = condition, (a.shape, b.shape)
        return xp_of(a, b).where(condition, a, b)

    def backward(self, g):
        ga, gb = self.needs_input_grad
        zero = g.dtype.type(0)
        return (unbroadcast(xp_of(g).where(self.condition, g, zero), self.shapes[0]) if ga else None,
                unbroadcast(xp_of(g).where(self.condition, zero, g), self.shapes[1]) if gb else None)


def where(condition, a, b):
    """a where condition else b (condition: a bool Tensor or array; no gradient)."""
    a, b = _pair(a, b)
    condition = condition.data if isinstance(condition, Tensor) else condition
    return Where.apply(a, b, condition=condition)


def masked_fill(x, mask, value):
    """x with `value` wherever the boolean mask (broadcast to x) is True."""
    return where(mask, _lift(value, x), x)


# --- softmax and friends -----------------------------------------------------------------------

class Softmax(Function):
    def forward(self, x, dim):
        self.dim = dim
        self.y = _along(_softmax, dim, x)
        return self.y

    def backward(self, g):
        return _along(_softmax_grad, self.dim, g, self.y)


def _along(compute, dim, *arrays):
    """compute(*arrays, axis)[0] for an op along `dim` whose output has the shape of its inputs:
    in blocks of rows when dim is the last axis."""
    shape = arrays[0].shape
    if dim % len(shape) != len(shape) - 1:
        return _fused(compute, arrays[0])(*arrays, dim)[0]
    return _by_blocks(compute, [_rows(a) for a in arrays], -1)[0].reshape(shape)


def _softmax(x, axis):
    y = x - x.max(axis=axis, keepdims=True)
    xp_of(x).exp(y, out=y)
    y /= y.sum(axis=axis, keepdims=True)
    return (y,)


def _softmax_grad(g, y, axis):
    """y · (g − Σ g·y): the gradient of softmax given its output y."""
    grad = g * y
    grad -= y * grad.sum(axis=axis, keepdims=True)
    return (grad,)


class LogSoftmax(Function):
    def forward(self, x, dim):
        self.dim = dim
        shifted = x - x.max(axis=dim, keepdims=True)
        self.y = shifted - xp_of(x).log(xp_of(x).exp(shifted).sum(axis=dim, keepdims=True))
        return self.y

    def backward(self, g):
        return g - xp_of(g).exp(self.y) * g.sum(axis=self.dim, keepdims=True)


class LogSumExp(Function):
    def forward(self, x, dim, keepdim):
        self.dim, self.keepdim, self.x = dim, keepdim, x
        m = x.max(axis=dim, keepdims=True)
        self.lse = m + xp_of(x).log(xp_of(x).exp(x - m).sum(axis=dim, keepdims=True))
        return self.lse if keepdim else self.lse.squeeze(dim)

    def backward(self, g):
        g = g if self.keepdim else xp_of(g).expand_dims(g, self.dim)
        return g * xp_of(g).exp(self.x - self.lse)


def softmax(x, dim=-1): return Softmax.apply(x, dim=dim)
def log_softmax(x, dim=-1): return LogSoftmax.apply(x, dim=dim)
def logsumexp(x, dim, keepdim=False): return LogSumExp.apply(x, dim=dim, keepdim=keepdim)


# --- normalisation ---------------------------------------------------------------------------------

class LayerNorm(Function):
    """(x − mean) / sqrt(var + eps) over the trailing `n_dims` dims, then γ·x̂ + β, on rows (one
    per normalised slice) block by block. Keeps x and each row's mean and 1/std; backward
    recomputes x̂ from them."""

    def forward(self, x, *affine, n_dims=1, eps=1e-5, has_weight=True):
        self.shape, self.normalized_shape = x.shape, x.shape[x.ndim - n_dims:]
        self.x = x.reshape(-1, math.prod(self.normalized_shape))
        self.weight = affine[0].reshape(-1) if has_weight else None
        bias = affine[-1].reshape(-1) if len(affine) > has_weight else None
        y, self.mean, self.rstd = _by_blocks(_layer_norm, [self.x], eps, self.weight, bias)
        return y.reshape(x.shape)

    def backward(self, g):
        needs = self.needs_input_grad
        gx, g_xhat, g_sum = _by_blocks(_layer_norm_grad,
                                       [g.reshape(self.x.shape), self.x, self.mean, self.rstd],
                                       self.weight)
        grads = [gx.reshape(self.shape) if needs[0] else None]
        if self.weight is not None:
            grads.append(g_xhat.sum(axis=0).reshape(self.normalized_shape) if needs[1] else None)
        if len(needs) > len(grads):  # the bias
            grads.append(g_sum.sum(axis=0).reshape(self.normalized_shape) if needs[-1] else None)
        return tuple(grads)


def _layer_norm(x, eps, weight, bias):
    """Rows x (r, D) -> y, and the mean and 1/std (r, 1) of each row."""
    xp, n = xp_of(x), x.shape[-1]
    mean = x.sum(axis=-1, keepdims=True) / n
    y = x - mean
    rstd = 1 / xp.sqrt(xp.einsum("ij,ij->i", y, y)[:, None] / n + eps)
    y *= rstd
    if weight is not None:
        y *= weight
    if bias is not None:
        y += bias
    return y, mean, rstd


def _layer_norm_grad(g, x, mean, rstd, weight):
    """Rows -> the gradient for x, and Σ g·x̂ and Σ g over the rows (1, D) for γ and β:
    dx = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) / std with ĝ = γ·g."""
    xp, n = xp_of(x), x.shape[-1]
    xhat = x - mean
    xhat *= rstd
    g_xhat, g_sum = xp.einsum("ij,ij->j", g, xhat)[None], g.sum(axis=0, keepdims=True)
    g_hat = g * weight if weight is not None else g
    grad = g_hat - g_hat.sum(axis=-1, keepdims=True) / n
    xhat *= xp.einsum("ij,ij->i", g_hat, xhat)[:, None] / n
    grad -= xhat
    grad *= rstd
    return grad, g_xhat, g_sum


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer norm of x (..., *normalized_shape) over its trailing dims `normalized_shape`."""
    expected = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(x.shape[x.ndim - len(expected):]) != expected:
        raise ValueError(f"layer_norm: input of shape {tuple(x.shape)} does not end in "
                         f"normalized_shape {expected}")
    affine = [t for t in (weight, bias) if t is not None]
    return LayerNorm.apply(x, *affine, n_dims=len(expected), eps=eps, has_weight=weight is not None)


def normalize(x, p=2.0, dim=1, eps=1e-12):
    """x / max(‖x‖_p, eps) along `dim` (L2 by default), as F.normalize."""
    powered = sum(pow(abs(x) if p % 2 else x, p), dim=dim, keepdim=True)
    # max(‖x‖, eps) clamped before the root, so a zero vector gets a finite gradient (as torch)
    return div(x, pow(clamp(powered, min=eps ** p), 1.0 / p))


# --- losses ------------------------------------------------------------------------------------------

class CrossEntropy(Function):
    """Mean (or summed) −log softmax(logits)[target], with ignore_index and label smoothing."""

    def forward(self, logits, target, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
        xp = xp_of(logits)
        n, c = logits.shape
        self.keep = target != ignore_index
        safe_target = xp.where(self.keep, target, 0)
        if (safe_target < 0).any() or (safe_target >= c).any():
            bad = target[self.keep & ((target < 0) | (target >= c))]
            raise IndexError(f"cross_entropy: target {int(bad[0])} is out of range for {c} classes")
        self.logp = LogSoftmax().forward(logits, dim=1)
        smooth = label_smoothing
        picked = self.logp[xp.arange(n), safe_target]
        loss = -(1 - smooth) * picked - smooth * self.logp.mean(axis=1)
        loss = loss * self.keep
        self.target, self.smooth, self.reduction = safe_target, smooth, reduction
        self.count = self.keep.sum(dtype=logits.dtype) if reduction == "mean" else None
        if reduction == "none":
            return loss
        total = loss.sum()
        return total / self.count if reduction == "mean" else total

    def backward(self, g):
        xp = xp_of(g)
        n, c = self.logp.shape
        grad = xp.exp(self.logp)
        grad[xp.arange(n), self.target] -= 1 - self.smooth
        grad -= self.smooth / c
        weight = self.keep.astype(grad.dtype)
        if self.reduction == "none":
            weight = weight * g
        else:
            weight = weight * (g / self.count if self.reduction == "mean" else g)
        return grad * weight[:, None]


def cross_entropy(logits, target, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """logits (N, C) or (N, C, d1, ...) with class indices target (N,) or (N, d1, ...)."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
    target_data = target.data if isinstance(target, Tensor) else target
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    if tuple(target_data.shape) != expected:
        raise ValueError(f"cross_entropy: logits of shape {tuple(logits.shape)} need a target of "
                         f"shape {expected}, got {tuple(target_data.shape)}")
    if logits.ndim > 2:  # classes last, then one row per position
        logits = reshape(permute(logits, 0, *range(2, logits.ndim), 1), -1, logits.shape[1])
    loss = CrossEntropy.apply(logits, target=target_data.reshape(-1), ignore_index=ignore_index,
                              label_smoothing=label_smoothing, reduction=reduction)
    return reshape(loss, expected) if reduction == "none" else loss


# --- embedding and dropout ---------------------------------------------------------------------

class Embedding(Function):
    def forward(self, weight, ids, padding_idx=None):
        if ids.size and (ids.min() < 0 or ids.max() >= weight.shape[0]):
            raise IndexError(f"embedding: ids must lie in [0, {weight.shape[0]}), got values in "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        self.ids, self.shape, self.padding_idx = ids, weight.shape, padding_idx
        return weight[ids]

    def backward(self, g):
        gw = xp_of(g).zeros(self.shape, dtype=g.dtype)
        backend.scatter_add(gw, self.ids.reshape(-1), g.reshape(-1, self.shape[1]))
        if self.padding_idx is not None:
            gw[self.padding_idx] = 0
        return gw


def embedding(ids, weight, padding_idx=None):
    """Rows of weight (V, D) for integer ids (...) -> (..., D)."""
    ids = ids.data if isinstance(ids, Tensor) else ids
    return Embedding.apply(weight, ids=ids, padding_idx=padding_idx)


class Dropout(Function):
    def forward(self, x, p):
        keep = backend.rng(xp_of(x)).random(x.shape, dtype=x.dtype) >= p
        self.scale = keep * x.dtype.type(1 / (1 - p))
        return x * self.scale

    def backward(self, g): return g * self.scale


def dropout(x, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p) (training only)."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0:
        return x
    if p == 1:
        return mul(x, 0.0)
    return Dropout.apply(x, p=p)


# --- attention -----------------------------------------------------------------------------------

class ScaledDotProductAttention(Function):
    """softmax(q kᵀ · scale + mask) v, computed in blocks over the batch dims so that each
    block's scores stay in cache. Keeps q, k, v, the mask, each query's log-sum-exp (and the
    dropout mask): backward recomputes the attention probabilities block by block, as
    FlashAttention does, rather than keeping the (..., L, S) matrix. Rows whose every key is
    masked give zeros."""

    def forward(self, q, k, v, attn_mask=None, is_causal=False, scale=None, dropout_p=0.0):
        xp = xp_of(q)
        self.scale = q.dtype.type(1 / math.sqrt(q.shape[-1]) if scale is None else scale)
        self.q, self.k, self.v, self.mask, self.is_causal = q, k, v, attn_mask, is_causal
        batch = xp.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2],
                                    () if attn_mask is None else attn_mask.shape[:-2])
        L, S = q.shape[-2], k.shape[-2]
        self.batch, self.scores_shape = batch, batch + (L, S)
        self.drop = None
        if dropout_p > 0:
            self.drop = (backend.rng(xp).random(self.scores_shape, dtype=q.dtype) >= dropout_p) \
                * q.dtype.type(1 / (1 - dropout_p))
        y = xp.empty(batch + (L, v.shape[-1]), dtype=q.dtype)
        self.lse = xp.empty(batch + (L, 1), dtype=q.dtype)
        for block in self._blocks():
            scores = self._scores(block)
            p, self.lse[block] = _fused(_attention_softmax, scores)(scores)
            if self.drop is not None:
                p *= self.drop[block]
            y[block] = p @ self._part(v, block)
        return y

    def backward(self, g):
        with_mask = len(self.needs_input_grad) == 4  # a float mask (a learned bias) gets dE
        inputs = (self.q, self.k, self.v) + ((self.mask,) if with_mask else ())
        grads = [xp_of(g).zeros(a.shape, dtype=g.dtype) for a in inputs]
        for block in self._blocks():
            p = self._scores(block)  # exp(scores − log-sum-exp) = the probabilities again
            p -= self.lse[block]
            xp_of(p).exp(p, out=p)
            p_used = p if self.drop is None else p * self.drop[block]
            gv = p_used.swapaxes(-1, -2) @ g[block]
            gp = g[block] @ self._part(self.v, block).swapaxes(-1, -2)
            if self.drop is not None:
                gp *= self.drop[block]
            ge = _fused(_softmax_grad, gp)(gp, p, -1)[0]  # of the scores (and of a float mask)
            gq = ge @ self._part(self.k, block)
            gq *= self.scale
            gk = ge.swapaxes(-1, -2) @ self._part(self.q, block)
            gk *= self.scale
            for a, grad, part in zip(inputs, grads, (gq, gk, gv, ge)):
                index = self._index(a, block)  # several blocks add up where `a` broadcasts
                grad[index] += unbroadcast(part, grad[index].shape)
        return tuple(grads)

    def _blocks(self):
        """Indices of the leading batch dims, each block about _BLOCK scores: single items of the
        outer dims and runs of the first dim whose items are small enough; [...] for one block."""
        if not self.batch or backend.is_cupy_array(self.q):
            return [Ellipsis]
        for d in range(len(self.batch)):  # the first dim whose items fit in a block (or the last)
            item = math.prod(self.scores_shape[d + 1:])
            if item <= _BLOCK or d == len(self.batch) - 1:
                break
        step = builtins.max(1, _BLOCK // item)
        outer = itertools.product(*(range(n) for n in self.batch[:d]))
        return [tuple(slice(i, i + 1) for i in index) + (slice(start, start + step),)
                for index in outer for start in range(0, self.batch[d], step)]

    def _index(self, a, block):
        """The index of `block` into a, whose batch dims align with the right of self.batch
        (all of a along the dims where it broadcasts)."""
        if block is Ellipsis:
            return Ellipsis
        missing = len(self.batch) - (a.ndim - 2)
        return tuple(slice(None) if a.shape[dim - missing] == 1 else index
                     for dim, index in enumerate(block) if dim >= missing)

    def _part(self, a, block):
        return a[self._index(a, block)]

    def _scores(self, block):
        """q kᵀ · scale + mask for the batch rows of `block`, −inf where attention is masked."""
        xp = xp_of(self.q)
        e = (self._part(self.q, block) * self.scale) @ self._part(self.k, block).swapaxes(-1, -2)
        if self.mask is not None:
            mask = self._part(self.mask, block)
            e = xp.where(mask, e, -xp.inf) if mask.dtype == bool else e + mask
        if self.is_causal:
            e = xp.where(xp.tril(xp.ones(e.shape[-2:], dtype=bool)), e, -xp.inf)
        return e


def _attention_softmax(e):
    """Softmax of scores e over the last axis, in place, and its log-sum-exp per row. A row
    whose every score is −inf (all keys masked) gives zeros, and a log-sum-exp of +inf."""
    xp = xp_of(e)
    row_max = e.max(axis=-1, keepdims=True)
    row_max = xp.where(xp.isfinite(row_max), row_max, 0)
    e -= row_max
    xp.exp(e, out=e)
    total = e.sum(axis=-1, keepdims=True)
    some = total > 0
    e /= xp.where(some, total, 1)
    return e, xp.where(some, row_max + xp.log(xp.where(some, total, 1)), xp.inf)


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None):
    """Attention as torch's F.scaled_dot_product_attention.

    q (..., L, E), k (..., S, E), v (..., S, Ev) -> (..., L, Ev). A boolean attn_mask marks with
    True the pairs that may attend (as torch); a float mask is added to the scores and receives a
    gradient. dropout_p applies to the probabilities (pass 0 in eval)."""
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: q {tuple(q.shape)}, k {tuple(k.shape)} and "
                         f"v {tuple(v.shape)} must agree as (..., L, E), (..., S, E), (..., S, Ev)")
    kwargs = dict(is_causal=is_causal, scale=scale, dropout_p=dropout_p)
    if attn_mask is None:
        return ScaledDotProductAttention.apply(q, k, v, **kwargs)
    mask = attn_mask if isinstance(attn_mask, Tensor) else Tensor(attn_mask)
    if mask.dtype == bool:
        return ScaledDotProductAttention.apply(q, k, v, attn_mask=mask.data, **kwargs)
    return ScaledDotProductAttention.apply(q, k, v, mask, **kwargs)


# --- convolution and pooling ---------------------------------------------------------------------
# Images are (N, C, H, W) as in torch. Each op views its (padded) input as overlapping windows
# (N, C, H', W', kh, kw) without copying; backward `_fold`s per-window gradients back onto the
# input, adding where windows overlap.

def _pair_arg(value, name):
    """An int or an (h, w) pair as an (h, w) tuple."""
    pair = (value, value) if isinstance(value, numbers.Integral) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")
    return pair


def _pad_hw(x, padding, value=0.0):
    """x (..., H, W) padded by (ph, pw) on both sides of H and W."""
    if padding == (0, 0):
        return x
    (ph, pw), lead = padding, [(0, 0)] * (x.ndim - 2)
    return xp_of(x).pad(x, lead + [(ph, ph), (pw, pw)], constant_values=value)


def _padded_shape(shape, padding):
    return shape[:-2] + (shape[-2] + 2 * padding[0], shape[-1] + 2 * padding[1])


def _unpad(x, padding):
    """x (..., H, W) without `padding` rows and columns on each side."""
    (ph, pw), (h, w) = padding, x.shape[-2:]
    return x[..., ph:h - ph, pw:w - pw]


def _windows(x, kernel, stride):
    """x (..., H, W) -> a read-only view (..., H', W', kh, kw) of every window a kernel of size
    `kernel` visits with `stride`; H' = (H − kh) // sh + 1."""
    views = backend.sliding_window_view(x, kernel, axis=(-2, -1))
    return views[..., ::stride[0], ::stride[1], :, :]


def _fold(window_grads, out, stride):
    """The adjoint of `_windows`: add the gradients of every window (..., H', W', kh, kw) into
    `out` (..., H, W), overlapping windows accumulating; one strided add per tap."""
    *_, out_h, out_w, kh, kw = window_grads.shape
    sh, sw = stride
    for i in range(kh):
        for j in range(kw):
            out[..., i:i + sh * out_h:sh, j:j + sw * out_w:sw] += window_grads[..., i, j]
    return out


def _check_image(x, op):
    if x.ndim != 4:
        raise ValueError(f"{op}: expected a batch of images (N, C, H, W), got shape "
                         f"{tuple(x.shape)}")


def _check_windows_fit(x, kernel, padding, op):
    """An error naming the shapes when the kernel is larger than the padded image."""
    if any(n + 2 * p < k for n, p, k in zip(x.shape[-2:], padding, kernel)):
        raise ValueError(f"{op}: kernel {kernel} is larger than the input of shape "
                         f"{tuple(x.shape)} padded by {padding}")


def _im2col(x, kernel, stride, padding, groups):
    """x (N, C, H, W) -> columns (groups, N, H', W', kh·kw·C/groups): one row per window, in the
    order (kh, kw, channel) so that the copy reads and writes long contiguous runs."""
    n, c = x.shape[:2]
    windows = _windows(_pad_hw(x, padding), kernel, stride)        # (N, C, H', W', kh, kw)
    windows = windows.reshape(n, groups, c // groups, *windows.shape[2:])
    rows = windows.transpose(1, 0, 3, 4, 5, 6, 2)                  # (g, N, H', W', kh, kw, C/g)
    return rows.reshape(rows.shape[:4] + (-1,))


class Conv2d(Function):
    """Cross-correlation as one matrix product per group over the unfolded patches (im2col).

    The output keeps the product's channels-last memory order behind its (N, O, H', W') shape.
    backward: grad weight is one product with the columns (unfolded again from the saved input
    rather than kept, as they are kh·kw times its size); grad input is the product of grad output
    with the weight, folded back onto the image (col2im)."""

    def forward(self, x, weight, bias=None, stride=(1, 1), padding=(0, 0), groups=1):
        self.x, self.weight, self.has_bias = x, weight, bias is not None
        self.kernel, self.stride, self.padding = weight.shape[2:], stride, padding
        self.groups = groups
        columns = _im2col(x, self.kernel, stride, padding, groups)
        n, out_h, out_w = columns.shape[1:4]
        self.out_hw = out_h, out_w
        y = columns.reshape(groups, n * out_h * out_w, -1) @ self._weight_matrix()
        if bias is not None:
            y += bias.reshape(groups, 1, -1)
        y = y.reshape(groups, n, out_h, out_w, -1).transpose(1, 0, 4, 2, 3)  # (N, g, O/g, H', W')
        return y.reshape(n, weight.shape[0], out_h, out_w)

    def _weight_matrix(self):
        """The weight (O, C/g, kh, kw) as (groups, kh·kw·C/g, O/g), rows in the columns' order."""
        out_channels, c_per_group = self.weight.shape[:2]
        w = self.weight.reshape(self.groups, out_channels // self.groups, c_per_group, *self.kernel)
        return w.transpose(0, 3, 4, 2, 1).reshape(self.groups, -1, out_channels // self.groups)

    def backward(self, g):
        n, c, h, w = self.x.shape
        groups, (out_h, out_w) = self.groups, self.out_hw
        gy = g.reshape(n, groups, -1, out_h, out_w).transpose(1, 0, 3, 4, 2)
        gy = gy.reshape(groups, n * out_h * out_w, -1)             # (g, N·H'·W', O/g)
        needs = self.needs_input_grad
        gx = gw = gb = None
        if needs[0]:
            g_columns = gy @ self._weight_matrix().transpose(0, 2, 1)
            g_windows = g_columns.reshape(groups, n, out_h, out_w, *self.kernel, c // groups)
            g_windows = g_windows.transpose(1, 0, 6, 2, 3, 4, 5)   # (N, g, C/g, H', W', kh, kw)
            height, width = _padded_shape((h, w), self.padding)
            xp = xp_of(g)  # accumulate channels last, the memory order of g_windows
            gx = xp.zeros((n, height, width, groups, c // groups), dtype=g.dtype)
            gx = _fold(g_windows, gx.transpose(0, 3, 4, 1, 2), self.stride)
            gx = _unpad(gx.reshape(n, c, height, width), self.padding)
        if needs[1]:
            columns = _im2col(self.x, self.kernel, self.stride, self.padding, groups)
            gw = columns.reshape(groups, n * out_h * out_w, -1).transpose(0, 2, 1) @ gy
            gw = gw.reshape(groups, *self.kernel, c // groups, -1)  # (g, kh, kw, C/g, O/g)
            gw = gw.transpose(0, 4, 3, 1, 2).reshape(self.weight.shape)
        if self.has_bias and needs[2]:
            gb = gy.sum(axis=1).reshape(-1)
        return (gx, gw, gb) if self.has_bias else (gx, gw)


def conv2d(x, weight, bias=None, stride=1, padding=0, groups=1):
    """2-d convolution (cross-correlation) as torch's F.conv2d.

    x (N, C, H, W), weight (O, C/groups, kh, kw), bias (O,) -> (N, O, H', W') with
    H' = (H + 2·ph − kh) // sh + 1. stride and padding are ints or (h, w) pairs."""
    _check_image(x, "conv2d")
    stride, padding = _pair_arg(stride, "conv2d stride"), _pair_arg(padding, "conv2d padding")
    if weight.ndim != 4 or weight.shape[0] % groups:
        raise ValueError(f"conv2d: the weight must be (out_channels, in_channels/groups, kh, kw) "
                         f"with out_channels divisible by groups={groups}, got shape "
                         f"{tuple(weight.shape)}")
    if x.shape[1] != weight.shape[1] * groups:
        raise ValueError(f"conv2d: input of shape {tuple(x.shape)} has {x.shape[1]} channels but "
                         f"the weight of shape {tuple(weight.shape)} with groups={groups} expects "
                         f"{weight.shape[1] * groups}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"conv2d: bias of shape {tuple(bias.shape)} does not match the weight of "
                         f"shape {tuple(weight.shape)} ({weight.shape[0]} output channels)")
    _check_windows_fit(x, weight.shape[2:], padding, "conv2d")
    tensors = (x, weight) if bias is None else (x, weight, bias)
    return Conv2d.apply(*tensors, stride=stride, padding=padding, groups=groups)


def _pool_args(x, kernel_size, stride, padding, op):
    """(kernel, stride, padding) pairs; stride defaults to the kernel size, as in torch."""
    _check_image(x, op)
    kernel = _pair_arg(kernel_size, f"{op} kernel_size")
    stride = kernel if stride is None else _pair_arg(stride, f"{op} stride")
    padding = _pair_arg(padding, f"{op} padding")
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise ValueError(f"{op}: padding {padding} must be at most half the kernel size {kernel}")
    _check_windows_fit(x, kernel, padding, op)
    return kernel, stride, padding


class AvgPool2d(Function):
    """The mean of each window; padding counts as zeros in the mean (count_include_pad=True)."""

    def forward(self, x, kernel, stride, padding):
        self.shape, self.kernel, self.stride, self.padding = x.shape, kernel, stride, padding
        return _windows(_pad_hw(x, padding), kernel, stride).mean(axis=(-2, -1))

    def backward(self, g):
        xp = xp_of(g)
        share = g / g.dtype.type(math.prod(self.kernel))
        g_windows = xp.broadcast_to(share[..., None, None], share.shape + self.kernel)
        gx = xp.zeros(_padded_shape(self.shape, self.padding), dtype=g.dtype)
        return _unpad(_fold(g_windows, gx, self.stride), self.padding)


class MaxPool2d(Function):
    """The maximum of each window (padding is −inf, so it never wins); the gradient goes to the
    first maximum of each window, as in torch."""

    def forward(self, x, kernel, stride, padding):
        self.shape, self.kernel, self.stride, self.padding = x.shape, kernel, stride, padding
        windows = _windows(_pad_hw(x, padding, value=-math.inf), kernel, stride)
        flat = windows.reshape(windows.shape[:4] + (-1,))       # copies: (N, C, H', W', kh·kw)
        self.argmax = flat.argmax(axis=-1)
        return flat.max(axis=-1)

    def backward(self, g):
        xp = xp_of(g)
        hit = xp.arange(math.prod(self.kernel)) == self.argmax[..., None]
        g_windows = (hit * g[..., None]).reshape(g.shape + self.kernel)
        gx = xp.zeros(_padded_shape(self.shape, self.padding), dtype=g.dtype)
        return _unpad(_fold(g_windows, gx, self.stride), self.padding)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """x (N, C, H, W) -> (N, C, H', W'), the mean of each kernel_size window (torch's defaults:
    stride = kernel_size, padding counted in the mean, windows that would overhang dropped)."""
    kernel, stride, padding = _pool_args(x, kernel_size, stride, padding, "avg_pool2d")
    return AvgPool2d.apply(x, kernel=kernel, stride=stride, padding=padding)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """x (N, C, H, W) -> (N, C, H', W'), the maximum of each kernel_size window."""
    kernel, stride, padding = _pool_args(x, kernel_size, stride, padding, "max_pool2d")
    return MaxPool2d.apply(x, kernel=kernel, stride=stride, padding=padding)


def _adaptive_pool_matrix(size_in, size_out, xp, dtype):
    """(size_out, size_in): row i averages the inputs [⌊i·n/m⌋, ⌈(i+1)·n/m⌉), torch's bins."""
    i = xp.arange(size_out)
    start, end = (i * size_in) // size_out, -((-(i + 1) * size_in) // size_out)
    j = xp.arange(size_in)
    inside = (j >= start[:, None]) & (j < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


class AdaptiveAvgPool2d(Function):
    """Average pooling into a fixed output size: y = P_h x P_wᵀ with averaging matrices P."""

    def forward(self, x, output_size):
        xp = xp_of(x)
        self.pool_h = _adaptive_pool_matrix(x.shape[-2], output_size[0], xp, x.dtype)
        self.pool_w = _adaptive_pool_matrix(x.shape[-1], output_size[1], xp, x.dtype)
        return self.pool_h @ x @ self.pool_w.T

    def backward(self, g):
        return self.pool_h.T @ g @ self.pool_w


def adaptive_avg_pool2d(x, output_size):
    """x (N, C, H, W) -> (N, C, *output_size); an int means a square output, None keeps that
    dimension of the input, as in torch."""
    _check_image(x, "adaptive_avg_pool2d")
    size = (None, None) if output_size is None else \
        _pair_arg(output_size, "adaptive_avg_pool2d output_size")
    size = tuple(n if s is None else s for s, n in zip(size, x.shape[-2:]))
    if any(s < 1 for s in size):
        raise ValueError(f"adaptive_avg_pool2d: output_size must be positive, got {output_size!r}")
    return AdaptiveAvgPool2d.apply(x, output_size=size)


class BatchNorm(Function):
    """Per channel (dim 1), (x − mean) / √(var + eps) · weight + bias. In training the mean and
    (biased) variance are the batch's, and the running statistics move towards them in place
    (with the unbiased variance, as torch); otherwise the running statistics are used."""

    def forward(self, x, weight, bias, running_mean=None, running_var=None, training=False,
                momentum=0.1, eps=1e-5):
        self.axes = (0,) + tuple(range(2, x.ndim))
        self.training = training
        broadcast = (1, -1) + (1,) * (x.ndim - 2)
        if training:
            mean = x.mean(axis=self.axes)
            var = x.var(axis=self.axes)
            if running_mean is not None:
                count = x.size // x.shape[1]
                running_mean *= 1 - momentum
                running_mean += momentum * mean
                running_var *= 1 - momentum
                running_var += momentum * var * (count / (count - 1))
        else:
            mean, var = running_mean.astype(x.dtype), running_var.astype(x.dtype)
        self.rstd = (1 / xp_of(x).sqrt(var + eps)).reshape(broadcast)
        self.xhat = (x - mean.reshape(broadcast)) * self.rstd
        self.weight = weight.reshape(broadcast)
        return self.xhat * self.weight + bias.reshape(broadcast)

    def backward(self, g):
        needs = self.needs_input_grad
        gx = None
        if needs[0]:
            gxhat = g * self.weight
            if self.training:  # the batch statistics depend on x too
                gxhat = (gxhat - gxhat.mean(axis=self.axes, keepdims=True)
                         - self.xhat * (gxhat * self.xhat).mean(axis=self.axes, keepdims=True))
            gx = gxhat * self.rstd
        gw = (g * self.xhat).sum(axis=self.axes) if needs[1] else None
        gb = g.sum(axis=self.axes) if needs[2] else None
        return gx, gw, gb


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation of x (N, C, ...) over every dim but the channels, as torch's
    F.batch_norm. running_mean and running_var (C,) Tensors (or None when training without
    running statistics) are updated in place when training; weight and bias (C,) are optional."""
    if x.ndim < 2:
        raise ValueError(f"batch_norm: expected an input (N, C, ...), got shape {tuple(x.shape)}")
    c = x.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (c,):
            raise ValueError(f"batch_norm: input of shape {tuple(x.shape)} has {c} channels but "
                             f"{name} has shape {tuple(t.shape)}")
    if training and x.numel() // c < 2:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got "
                         f"input of shape {tuple(x.shape)}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: evaluation (training=False) needs running_mean and "
                         "running_var")
    xp = xp_of(x.data)
    weight = weight if weight is not None else Tensor(xp.ones(c, dtype=x.dtype))
    bias = bias if bias is not None else Tensor(xp.zeros(c, dtype=x.dtype))
    return BatchNorm.apply(x, weight, bias, training=training, momentum=momentum, eps=eps,
                           running_mean=None if running_mean is None else running_mean.data,
                           running_var=None if running_var is None else running_var.data)

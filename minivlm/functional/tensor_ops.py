"""The tensor ops that are not elementwise: the matrix product, reductions, shapes, dtype and
backend casts, indexing, joining and splitting, padding, and where / masked_fill.

Reductions take torch's `dim` and `keepdim`; max and min over one dim return (values, indices).
"""
import builtins
import collections
import itertools
import math

from .. import backend
from ..autograd import Function, Tensor, shape_arg, unbroadcast
from ..backend import xp_of
from .elementwise import as_operands, lift
from .indexing import getitem


# --- the matrix product --------------------------------------------------------------------------

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


def matmul(a, b): return MatMul.apply(*as_operands(a, b))


class Einsum(Function):
    """numpy.einsum with its gradient: an operand's gradient is the einsum of the output's
    gradient with the other operands, back to the operand's own letters (those it alone sums
    over broadcast back, size-1 dims that broadcast summed)."""

    def forward(self, *operands, subscripts, output):
        self.operands, self.subscripts, self.output = operands, subscripts, output
        return xp_of(*operands).einsum(f"{','.join(subscripts)}->{output}", *operands)

    def backward(self, g):
        sizes = {}
        for letters, operand in zip(self.subscripts, self.operands):
            sizes.update({c: builtins.max(n, sizes.get(c, 1))
                          for c, n in zip(letters, operand.shape)})
        return tuple(self._gradient(g, i, sizes) if need else None
                     for i, need in enumerate(self.needs_input_grad))

    def _gradient(self, g, i, sizes):
        letters, xp = self.subscripts[i], xp_of(g)
        if len(set(letters)) != len(letters):
            raise NotImplementedError(f"einsum: the gradient of an operand with a repeated index "
                                      f"({letters!r}: a trace or diagonal) is not implemented")
        others = [(s, op) for j, (s, op) in enumerate(zip(self.subscripts, self.operands))
                  if j != i]
        produced = set(self.output).union(*(s for s, _ in others))
        kept = "".join(c for c in letters if c in produced)
        grad = xp.einsum(",".join([self.output] + [s for s, _ in others]) + "->" + kept,
                         g, *(op for _, op in others))
        grad = grad.reshape([sizes[c] if c in kept else 1 for c in letters])
        grad = xp.broadcast_to(grad, [sizes[c] for c in letters])
        return unbroadcast(grad, self.operands[i].shape)


def einsum(equation, *operands):
    """torch.einsum / numpy.einsum over Tensors ("bhid,bjd->bhij"; spaces and "..." allowed;
    without "->" the output is the letters used once, in alphabetical order)."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    subscripts, output = _einsum_letters(equation, [op.ndim for op in operands])
    return Einsum.apply(*operands, subscripts=subscripts, output=output)


def _einsum_letters(equation, ndims):
    """(letters of each operand, letters of the output), '...' spelled out in upper case."""
    equation = equation.replace(" ", "")
    left, arrow, output = equation.partition("->")
    inputs = left.split(",")
    if len(inputs) != len(ndims):
        raise ValueError(f"einsum: {equation!r} names {len(inputs)} operands, got {len(ndims)}")
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in equation]
    widest = builtins.max(ndim - len(s.replace("...", "")) for s, ndim in zip(inputs, ndims))
    inputs = [s.replace("...", "".join(spare[widest - (ndim - len(s) + 3):widest]))
              if "..." in s else s for s, ndim in zip(inputs, ndims)]
    if not arrow:   # NumPy's implicit output: the ellipsis, then the letters used once
        once = sorted(c for c in set(left) if c.isalpha() and left.count(c) == 1)
        output = "..." * ("..." in left) + "".join(once)
    output = output.replace("...", "".join(spare[:widest]))
    for s, ndim in zip(inputs, ndims):
        if len(s) != ndim:
            raise ValueError(f"einsum: {equation!r} gives an operand of {ndim} dims the "
                             f"subscripts {s!r}")
    return inputs, output


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
def amax(x, dim=None, keepdim=False): return MaxMin.apply(x, dim=dim, keepdim=keepdim)
def amin(x, dim=None, keepdim=False):
    return MaxMin.apply(x, dim=dim, keepdim=keepdim, largest=False)
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
    arg = x.array.argmax if largest else x.array.argmin
    indices = arg(axis=dim, keepdims=keepdim) if keepdim else arg(axis=dim)
    return MaxResult(values, Tensor(indices))


def max(x, dim=None, keepdim=False):
    """The largest value; with `dim`, (values, indices) as torch.max."""
    return _max_min(x, dim, keepdim, largest=True)


def min(x, dim=None, keepdim=False):
    """The smallest value; with `dim`, (values, indices) as torch.min."""
    return _max_min(x, dim, keepdim, largest=False)


class Norm(Function):
    """The 2-norm (Frobenius) over `dim`; its gradient x / ‖x‖ is 0 where the norm is 0."""

    def forward(self, x, dim=None, keepdim=False):
        self.x, self.axes, self.keepdim = x, _axes(dim, x.ndim), keepdim
        self.norm = xp_of(x).sqrt((x * x).sum(axis=self.axes, keepdims=True))
        return self.norm if keepdim else self.norm.reshape(
            [n for i, n in enumerate(x.shape) if i not in self.axes])

    def backward(self, g):
        g = _expand_reduced(g, self.x.shape, self.axes, self.keepdim)
        safe = xp_of(g).where(self.norm > 0, self.norm, 1)
        return g * self.x / safe * (self.norm > 0)


def norm(x, p="fro", dim=None, keepdim=False):
    """torch.norm: the 2-norm ("fro", 2) of x or along `dim`, or any p-norm (p = inf: max |x|)."""
    if p in ("fro", 2):
        return Norm.apply(x, dim=dim, keepdim=keepdim)
    from .elementwise import abs, pow
    if p == math.inf:
        return amax(abs(x), dim, keepdim)
    return pow(sum(pow(abs(x), p), dim, keepdim), 1.0 / p)


def argmax(x, dim=None, keepdim=False):
    return Tensor(x.array.argmax(axis=dim, keepdims=keepdim) if dim is not None else x.array.argmax())


def argmin(x, dim=None, keepdim=False):
    return Tensor(x.array.argmin(axis=dim, keepdims=keepdim) if dim is not None else x.array.argmin())


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


class Repeat(Function):
    """x tiled `repeats` times along each dim (torch's Tensor.repeat, NumPy's tile)."""

    def forward(self, x, repeats):
        self.source, self.repeats = x.shape, repeats
        self.shape = (1,) * (len(repeats) - x.ndim) + x.shape   # x with the dims tile prepends
        return xp_of(x).tile(x, repeats)

    def backward(self, g):
        """g (r0·n0, r1·n1, ...) viewed as (r0, n0, r1, n1, ...), summed over the r's."""
        split = [n for r, s in zip(self.repeats, self.shape) for n in (r, s)]
        return g.reshape(split).sum(axis=tuple(range(0, len(split), 2))).reshape(self.source)


def repeat(x, *sizes):
    """x repeated sizes[i] times along dim i (more sizes than dims prepend dims), as torch."""
    sizes = shape_arg(sizes)
    if len(sizes) < x.ndim:
        raise ValueError(f"repeat: {len(sizes)} sizes for a tensor of {x.ndim} dims; give at "
                         f"least one per dim")
    return Repeat.apply(x, repeats=tuple(sizes))


class Clone(Function):
    def forward(self, x): return x.copy()
    def backward(self, g): return g


def clone(x): return Clone.apply(x)


def meshgrid(*tensors, indexing="ij"):
    """Coordinate grids from 1-d tensors, as torch.meshgrid: indexing "ij" (matrix) or "xy"."""
    tensors = tuple(tensors[0]) if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)) \
        else tensors
    if indexing not in ("ij", "xy"):
        raise ValueError(f"meshgrid: indexing must be 'ij' or 'xy', not {indexing!r}")
    if indexing == "xy" and len(tensors) >= 2:
        tensors = (tensors[1], tensors[0]) + tensors[2:]
    shape = tuple(t.shape[0] for t in tensors)
    grids = [expand(reshape(t, [-1 if i == d else 1 for i in range(len(shape))]), *shape)
             for d, t in enumerate(tensors)]
    if indexing == "xy" and len(grids) >= 2:   # "ij" of (y, x, ...), the first two swapped back
        grids = [grids[1], grids[0], *grids[2:]]
    return tuple(grids)


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


def unbind(x, dim=0):
    """The slices of x along `dim`, that dim removed: a tuple of x.shape[dim] tensors."""
    before = (slice(None),) * (dim % x.ndim)
    return tuple(getitem(x, before + (i,)) for i in range(x.shape[dim]))


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
    a, b = as_operands(a, b)
    condition = condition.array if isinstance(condition, Tensor) else condition
    return Where.apply(a, b, condition=condition)


def masked_fill(x, mask, value):
    """x with `value` wherever the boolean mask (broadcast to x) is True."""
    return where(mask, lift(value, x), x)

"""Indexing ops: reading (getitem, gather), writing (setitem), ordering (sort, argsort, topk),
triangles (tril, triu) and sampling (multinomial).

getitem and setitem take what NumPy indexing takes (ints, slices, None, Ellipsis, integer and
boolean arrays or Tensors). setitem is out of place: it returns a new tensor, and Tensor's
`x[index] = value` rebinds x to it, so gradients reach both the old x and the value, as torch's
CopySlices does.
"""
import collections

from .. import backend
from ..autograd import Function, Tensor, unbroadcast
from ..backend import xp_of
from .elementwise import lift


def raw_index(index):
    """An index with its Tensors replaced by their arrays."""
    if isinstance(index, tuple):
        return tuple(raw_index(i) for i in index)
    return index.array if isinstance(index, Tensor) else index


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


def getitem(x, index): return GetItem.apply(x, index=raw_index(index))


class SetItem(Function):
    """A copy of x with x[index] = value (value broadcast to the indexed shape)."""

    def forward(self, x, value, index):
        self.index, self.value_shape = index, value.shape
        out = x.copy()
        out[index] = value
        return out

    def backward(self, g):
        gx = gv = None
        if self.needs_input_grad[0]:
            gx = g.copy()
            gx[self.index] = 0
        if self.needs_input_grad[1]:
            gv = unbroadcast(g[self.index], self.value_shape)
        return gx, gv


def setitem(x, index, value):
    """x with x[index] = value, as a new tensor (see the module docstring)."""
    return SetItem.apply(x, lift(value, x), index=raw_index(index))


class Gather(Function):
    """out[..., i, ...] = x[..., index[..., i, ...], ...] along `dim`, as torch.gather."""

    def forward(self, x, index, dim):
        self.shape, self.dim = x.shape, dim
        self.positions = _positions(index, dim)
        return x[self.positions]

    def backward(self, g):
        grad = xp_of(g).zeros(self.shape, dtype=g.dtype)
        backend.scatter_add(grad, self.positions, g)   # an index used twice gets both
        return grad


def _positions(index, dim):
    """The full integer index into x of every element of `index` along `dim`: a tuple of arrays
    of index's shape (the other dims at their own coordinates)."""
    xp, ndim = xp_of(index), index.ndim
    return tuple(index if d == dim else xp.arange(n).reshape([-1 if i == d else 1
                                                              for i in range(ndim)])
                 for d, n in enumerate(index.shape))


def gather(x, dim, index):
    """x (..., n, ...) and integer `index` of the same number of dims -> x's values at `index`
    along `dim`, of index's shape (index.shape[d] <= x.shape[d] for d != dim)."""
    index = index.array if isinstance(index, Tensor) else index
    dim = dim % x.ndim
    if index.ndim != x.ndim or any(i > n for d, (i, n) in enumerate(zip(index.shape, x.shape))
                                   if d != dim):
        raise ValueError(f"gather: index of shape {tuple(index.shape)} does not fit input of "
                         f"shape {tuple(x.shape)} along dim {dim}")
    if index.size and (index.min() < -x.shape[dim] or index.max() >= x.shape[dim]):
        raise IndexError(f"gather: index values must lie in [0, {x.shape[dim]}), got "
                         f"[{int(index.min())}, {int(index.max())}]")
    return Gather.apply(x, index=index % x.shape[dim], dim=dim)


SortResult = collections.namedtuple("SortResult", ["values", "indices"])
TopKResult = collections.namedtuple("TopKResult", ["values", "indices"])


def argsort(x, dim=-1, descending=False, stable=True):
    """The indices that sort x along `dim` (ties keep their order)."""
    data = x.array if isinstance(x, Tensor) else x
    keys = -data if descending and data.dtype.kind in "fi" else data
    order = xp_of(data).argsort(keys, axis=dim, kind="stable")
    if descending and data.dtype.kind not in "fi":
        order = xp_of(data).flip(order, axis=dim)
    return Tensor(order)


def sort(x, dim=-1, descending=False, stable=True):
    """(values, indices) of x sorted along `dim`; values carry the gradient."""
    indices = argsort(x, dim, descending)
    return SortResult(gather(x, dim, indices), indices)


def topk(x, k, dim=-1, largest=True, sorted=True):
    """(values, indices) of the k largest (or smallest) elements along `dim`, largest first."""
    if not 0 <= k <= x.shape[dim]:
        raise ValueError(f"topk: k={k} is out of range for dim {dim} of size {x.shape[dim]}")
    order = argsort(x, dim, descending=largest).array
    indices = Tensor(xp_of(order).take(order, xp_of(order).arange(k), axis=dim))
    return TopKResult(gather(x, dim, indices), indices)


class Triangle(Function):
    """The lower (tril) or upper (triu) triangle of the last two dims, zeros elsewhere."""

    def forward(self, x, diagonal, upper):
        self.diagonal, self.upper = diagonal, upper
        return self._keep(x)

    def _keep(self, a):
        xp = xp_of(a)
        return xp.triu(a, self.diagonal) if self.upper else xp.tril(a, self.diagonal)

    def backward(self, g): return self._keep(g)


def tril(x, diagonal=0): return Triangle.apply(x, diagonal=diagonal, upper=False)
def triu(x, diagonal=0): return Triangle.apply(x, diagonal=diagonal, upper=True)


def multinomial(probs, num_samples, replacement=False, generator=None):
    """num_samples category indices drawn from each row of probs (..., n) (non-negative weights,
    not necessarily normalised) -> int64 (..., num_samples). Without replacement a category is
    drawn at most once (Gumbel top-k). Randomness: the backend's generator, or `generator`."""
    p = probs.array if isinstance(probs, Tensor) else probs
    xp = xp_of(p)
    if p.ndim not in (1, 2) or (p < 0).any() or not (p.sum(axis=-1) > 0).all():
        raise ValueError(f"multinomial: probs must be 1-d or 2-d non-negative weights with a "
                         f"positive sum per row, got shape {tuple(p.shape)}")
    if not replacement and num_samples > int((p > 0).sum(axis=-1).min()):
        raise ValueError(f"multinomial: cannot draw {num_samples} samples without replacement "
                         f"from rows with fewer non-zero weights")
    rng = generator.rng(xp) if generator is not None else backend.rng(xp)
    if replacement:
        cdf = xp.cumsum(p / p.sum(axis=-1, keepdims=True), axis=-1)
        u = rng.random(p.shape[:-1] + (num_samples,))
        picks = (u[..., :, None] >= cdf[..., None, :]).sum(axis=-1)
        return Tensor(xp.minimum(picks, p.shape[-1] - 1).astype("int64"))
    with backend.numpy.errstate(divide="ignore"):
        keys = xp.log(p) - xp.log(-xp.log(rng.random(p.shape)))   # log p + Gumbel noise
    return Tensor(xp.argsort(-keys, axis=-1)[..., :num_samples].astype("int64"))

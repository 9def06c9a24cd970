"""Scaled dot-product attention, as FlashAttention computes it on the CPU: in blocks over the
batch dims, keeping only each query's log-sum-exp for backward (see ScaledDotProductAttention);
grouped-query attention (key/value heads shared by groups of query heads) through it; and rotary
position embeddings (RoPE, Su et al. 2021, in the rotate_half form of transformers' Llama).
"""
import itertools
import math

from .. import backend
from ..autograd import Function, Tensor, unbroadcast
from ..backend import xp_of
from . import cpu
from .layers import softmax_grad_along


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
            p, self.lse[block] = cpu.kernel_for(attention_softmax, scores)(scores)
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
            # the gradient of the scores (and of a float mask)
            ge = cpu.kernel_for(softmax_grad_along, gp)(gp, p, -1)[0]
            gq = ge @ self._part(self.k, block)
            gq *= self.scale
            gk = ge.swapaxes(-1, -2) @ self._part(self.q, block)
            gk *= self.scale
            for a, grad, part in zip(inputs, grads, (gq, gk, gv, ge)):
                index = self._index(a, block)  # several blocks add up where `a` broadcasts
                grad[index] += unbroadcast(part, grad[index].shape)
        return tuple(grads)

    def _blocks(self):
        """Indices of the leading batch dims, each block about cpu.BLOCK scores: single items of the
        outer dims and runs of the first dim whose items are small enough; [...] for one block."""
        if not self.batch or backend.is_cupy_array(self.q):
            return [Ellipsis]
        for d in range(len(self.batch)):  # the first dim whose items fit in a block (or the last)
            item = math.prod(self.scores_shape[d + 1:])
            if item <= cpu.BLOCK or d == len(self.batch) - 1:
                break
        step = max(1, cpu.BLOCK // item)
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


def attention_softmax(e):
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
                                 scale=None, enable_gqa=False):
    """Attention as torch's F.scaled_dot_product_attention.

    q (..., L, E), k (..., S, E), v (..., S, Ev) -> (..., L, Ev). A boolean attn_mask marks with
    True the pairs that may attend (as torch); a float mask is added to the scores and receives a
    gradient. dropout_p applies to the probabilities (pass 0 in eval). enable_gqa: q may have
    more heads (dim -3) than k and v, a multiple of theirs (grouped-query attention)."""
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: q {tuple(q.shape)}, k {tuple(k.shape)} and "
                         f"v {tuple(v.shape)} must agree as (..., L, E), (..., S, E), (..., S, Ev)")
    kwargs = dict(is_causal=is_causal, scale=scale, dropout_p=dropout_p)
    if enable_gqa and q.ndim >= 3 and q.shape[-3] != k.shape[-3]:
        return grouped_query_attention(q, k, v, attn_mask, **kwargs)
    if attn_mask is None:
        return ScaledDotProductAttention.apply(q, k, v, **kwargs)
    mask = attn_mask if isinstance(attn_mask, Tensor) else Tensor(attn_mask)
    if mask.dtype == bool:
        return ScaledDotProductAttention.apply(q, k, v, attn_mask=mask.array, **kwargs)
    return ScaledDotProductAttention.apply(q, k, v, mask, **kwargs)


def grouped_query_attention(q, k, v, attn_mask=None, **kwargs):
    """Attention of q (..., H, L, E) over k, v (..., H_kv, S, E) whose heads are each shared by a
    group of G = H / H_kv query heads: query head h reads key/value head h // G (transformers'
    repeat_kv). The groups become a broadcast dim, so k and v are never copied G times."""
    *batch, heads, L, _ = q.shape
    kv_heads = k.shape[-3]
    if v.shape[-3] != kv_heads or heads % kv_heads:
        raise ValueError(f"scaled_dot_product_attention: with enable_gqa the {heads} query heads "
                         f"of q {tuple(q.shape)} must be a multiple of the key/value heads of "
                         f"k {tuple(k.shape)} and v {tuple(v.shape)}")
    group = heads // kv_heads
    q = q.reshape(*batch, kv_heads, group, L, q.shape[-1])
    if attn_mask is not None:
        mask = attn_mask if isinstance(attn_mask, Tensor) else Tensor(attn_mask)
        attn_mask = (mask.reshape(*mask.shape[:-3], kv_heads, group, *mask.shape[-2:])
                     if mask.ndim >= 3 and mask.shape[-3] == heads else
                     mask.unsqueeze(-3) if mask.ndim >= 3 else mask)
    y = scaled_dot_product_attention(q, k.unsqueeze(-3), v.unsqueeze(-3), attn_mask, **kwargs)
    return y.reshape(*batch, heads, L, v.shape[-1])


# --- rotary position embeddings ----------------------------------------------------------------

def rotate_half(x):
    """(x1, x2) -> (−x2, x1), the halves of the last dim: each pair (x_i, x_{i+D/2}) turned by
    90°."""
    half = x.shape[-1] // 2
    return backend.xp_of(x).concatenate([-x[..., half:], x[..., :half]], axis=-1)


class RotaryEmbedding(Function):
    """x·cos + rotate_half(x)·sin: each pair (x_i, x_{i+D/2}) turned by its angle. cos and sin
    (constants) broadcast to x."""

    def forward(self, x, cos, sin):
        self.shape, self.cos, self.sin = x.shape, cos, sin
        return x * cos + rotate_half(x) * sin

    def backward(self, g):
        # rotate_half is a rotation by 90°; its transpose, the rotation back, is −rotate_half
        return unbroadcast(g * self.cos - rotate_half(g * self.sin), self.shape)


def rotary_cos_sin(position_ids, dim, theta=10000.0, dtype="float32"):
    """cos and sin of the RoPE angles, (..., T, dim) Tensors for integer position_ids (..., T):
    position p turns pair i (of dim/2) by p·θ^(−2i/dim), and the angles repeat for the second
    half of the dim (the rotate_half layout). Computed in float32, as transformers does, or in
    float64 for float64."""
    ids = position_ids.array if isinstance(position_ids, Tensor) else position_ids
    xp = backend.xp_of(ids)
    wide = xp.dtype("float64" if xp.dtype(dtype) == xp.float64 else "float32")
    inverse_frequency = 1 / wide.type(theta) ** (xp.arange(0, dim, 2).astype(wide) / wide.type(dim))
    angles = ids[..., None].astype(wide) * inverse_frequency
    angles = xp.concatenate([angles, angles], axis=-1)
    return Tensor(xp.cos(angles).astype(dtype)), Tensor(xp.sin(angles).astype(dtype))


def apply_rotary_pos_emb(x, cos, sin):
    """x (..., T, D) with each position's pairs turned by its angles (cos, sin from
    rotary_cos_sin, broadcastable to x) -> the shape of x."""
    if x.shape[-1] % 2 or cos.shape[-1] != x.shape[-1] or sin.shape != cos.shape:
        raise ValueError(f"apply_rotary_pos_emb: x {tuple(x.shape)} needs an even last dim, "
                         f"and cos {tuple(cos.shape)} and sin {tuple(sin.shape)} of that width")
    return RotaryEmbedding.apply(x, cos=cos.array, sin=sin.array)

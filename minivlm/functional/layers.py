"""The ops of the layers: linear, softmax and friends, layer norm, RMS norm and normalize,
cross-entropy, embedding and dropout.

Each coarse op has a hand-written backward that keeps only what it needs; softmax and layer norm
run their array chains block by block on the CPU (cpu.by_blocks), through the functions
`softmax_along` and `layer_norm_rows` (and their gradients) that a fused kernel replaces on the GPU.
"""
import math

from .. import backend
from ..autograd import Function, Tensor
from ..backend import xp_of
from . import cpu
from .cpu import along, by_blocks
from .elementwise import abs, clamp, div, mul, pow
from .tensor_ops import permute, reshape, sum


# --- linear --------------------------------------------------------------------------------------

class Linear(Function):
    """y = x Wᵀ + b over the last dim of x (..., in) with W (out, in): one 2-d GEMM each way.
    A few rows (generating token by token) go as (W xᵀ)ᵀ, which OpenBLAS runs about twice as fast
    as x Wᵀ for 2–16 rows (benchmarks/NOTES.md)."""

    def forward(self, x, weight, bias=None):
        if x.shape[-1] != weight.shape[1]:
            raise ValueError(f"linear: input of shape {tuple(x.shape)} has {x.shape[-1]} features "
                             f"but the weight of shape {tuple(weight.shape)} expects {weight.shape[1]}")
        self.x, self.weight, self.has_bias = x, weight, bias is not None
        rows = x.reshape(-1, x.shape[-1])
        y = (weight @ rows.T).T if len(rows) <= cpu.FEW_ROWS and not backend.is_cupy_array(x) \
            else rows @ weight.T
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


# --- softmax and friends -----------------------------------------------------------------------

class Softmax(Function):
    def forward(self, x, dim):
        self.dim = dim
        self.y = along(softmax_along, dim, x)
        return self.y

    def backward(self, g):
        return along(softmax_grad_along, self.dim, g, self.y)


def softmax_along(x, axis):
    """softmax(x) along `axis`."""
    y = x - x.max(axis=axis, keepdims=True)
    xp_of(x).exp(y, out=y)
    y /= y.sum(axis=axis, keepdims=True)
    return (y,)


def softmax_grad_along(g, y, axis):
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


def softmax(x, dim=-1, dtype=None):
    """softmax along `dim` (computed in `dtype` when given, as torch)."""
    return Softmax.apply(x if dtype is None else x.to(dtype), dim=dim)


def log_softmax(x, dim=-1, dtype=None):
    return LogSoftmax.apply(x if dtype is None else x.to(dtype), dim=dim)
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
        y, self.mean, self.rstd = by_blocks(layer_norm_rows, [self.x], eps, self.weight, bias)
        return y.reshape(x.shape)

    def backward(self, g):
        needs = self.needs_input_grad
        gx, g_xhat, g_sum = by_blocks(layer_norm_grad_rows,
                                      [g.reshape(self.x.shape), self.x, self.mean, self.rstd],
                                      self.weight)
        grads = [gx.reshape(self.shape) if needs[0] else None]
        if self.weight is not None:
            grads.append(g_xhat.sum(axis=0).reshape(self.normalized_shape) if needs[1] else None)
        if len(needs) > len(grads):  # the bias
            grads.append(g_sum.sum(axis=0).reshape(self.normalized_shape) if needs[-1] else None)
        return tuple(grads)


def layer_norm_rows(x, eps, weight, bias):
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


def layer_norm_grad_rows(g, x, mean, rstd, weight):
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


class RMSNorm(Function):
    """x / sqrt(mean(x²) + eps) over the trailing `n_dims` dims, then weight·x̂ (Zhang & Sennrich
    2019; Llama's norm): no mean is taken out and there is no bias. Computed in float32 at
    least (as transformers' LlamaRMSNorm), the result cast back to x's dtype before the weight.
    Keeps x and each row's 1/rms."""

    def forward(self, x, *weight, n_dims=1, eps=1e-6):
        self.shape, self.normalized_shape = x.shape, x.shape[x.ndim - n_dims:]
        self.x = x.reshape(-1, math.prod(self.normalized_shape))
        self.weight = weight[0].reshape(-1) if weight else None
        y, self.rstd = by_blocks(rms_norm_rows, [self.x], eps, self.weight)
        return y.reshape(x.shape)

    def backward(self, g):
        gx, g_xhat = by_blocks(rms_norm_grad_rows, [g.reshape(self.x.shape), self.x, self.rstd],
                               self.weight)
        if self.weight is None:
            return gx.reshape(self.shape)
        return (gx.reshape(self.shape) if self.needs_input_grad[0] else None,
                g_xhat.sum(axis=0).reshape(self.normalized_shape))


def _at_least_float32(x):
    return x if x.dtype.itemsize >= 4 else x.astype("float32")


def rms_norm_rows(x, eps, weight):
    """Rows x (r, D) -> y, and the 1/rms (r, 1) of each row (in float32 at least)."""
    xp, wide = xp_of(x), _at_least_float32(x)
    rstd = 1 / xp.sqrt(xp.einsum("ij,ij->i", wide, wide)[:, None] / x.shape[-1] + eps)
    y = (wide * rstd).astype(x.dtype, copy=False)
    if weight is not None:
        y *= weight
    return y, rstd


def rms_norm_grad_rows(g, x, rstd, weight):
    """Rows -> the gradient for x, and Σ g·x̂ over the rows (1, D) for the weight:
    dx = (ĝ − x̂·mean(ĝ·x̂)) / rms with ĝ = weight·g."""
    xp = xp_of(x)
    xhat = _at_least_float32(x) * rstd
    g_xhat = xp.einsum("ij,ij->j", g, xhat)[None].astype(g.dtype, copy=False)
    g_hat = g * weight if weight is not None else g
    grad = xhat * (xp.einsum("ij,ij->i", g_hat, xhat)[:, None] / x.shape[-1])
    xp.subtract(g_hat, grad, out=grad)
    grad *= rstd
    return grad.astype(g.dtype, copy=False), g_xhat


def rms_norm(x, normalized_shape, weight=None, eps=None):
    """RMS norm of x (..., *normalized_shape) over its trailing dims, as torch's F.rms_norm
    (eps None: the machine epsilon of x's dtype)."""
    expected = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if tuple(x.shape[x.ndim - len(expected):]) != expected:
        raise ValueError(f"rms_norm: input of shape {tuple(x.shape)} does not end in "
                         f"normalized_shape {expected}")
    eps = float(xp_of(x.array).finfo(x.dtype).eps) if eps is None else eps
    weight = () if weight is None else (weight,)
    return RMSNorm.apply(x, *weight, n_dims=len(expected), eps=eps)


def normalize(x, p=2.0, dim=1, eps=1e-12):
    """x / max(‖x‖_p, eps) along `dim` (L2 by default), as F.normalize."""
    powered = sum(pow(abs(x) if p % 2 else x, p), dim=dim, keepdim=True)
    # max(‖x‖, eps) clamped before the root, so a zero vector gets a finite gradient (as torch)
    return div(x, pow(clamp(powered, min=eps ** p), 1.0 / p))


# --- losses ------------------------------------------------------------------------------------------

class CrossEntropy(Function):
    """Mean (or summed) −w[y]·log softmax(logits)[y], with class weights w (None: all 1),
    ignore_index and label smoothing ε, as torch: each row's loss is
    (1 − ε)·(−w[y]·log p[y]) + ε·(−Σ_c w_c·log p_c / C), the mean divides by Σ w[y]."""

    def forward(self, logits, target, weight=None, ignore_index=-100, label_smoothing=0.0,
                reduction="mean"):
        xp = xp_of(logits)
        n, c = logits.shape
        self.keep = target != ignore_index
        safe_target = xp.where(self.keep, target, 0)
        if (safe_target < 0).any() or (safe_target >= c).any():
            bad = target[self.keep & ((target < 0) | (target >= c))]
            raise IndexError(f"cross_entropy: target {int(bad[0])} is out of range for {c} classes")
        self.logp = LogSoftmax().forward(logits, dim=1)
        self.weight = weight = None if weight is None else xp.asarray(weight, dtype=logits.dtype)
        self.row_weight = self.keep.astype(logits.dtype)   # w[y] where counted, 0 where ignored
        if weight is not None:
            self.row_weight *= weight[safe_target]
        smooth = label_smoothing
        loss = -(1 - smooth) * self.row_weight * self.logp[xp.arange(n), safe_target]
        if smooth:
            w = 1 if weight is None else weight
            loss -= smooth * self.keep * (w * self.logp).mean(axis=1)
        self.target, self.smooth, self.reduction = safe_target, smooth, reduction
        self.count = self.row_weight.sum() if reduction == "mean" else None
        if reduction == "none":
            return loss
        total = loss.sum()
        return total / self.count if reduction == "mean" else total

    def backward(self, g):
        """(1 − ε)·w[y]·(p − onehot(y)) + ε·(mean(w)·p − w/C) per counted row, times g."""
        xp = xp_of(g)
        n, c = self.logp.shape
        p = xp.exp(self.logp)
        grad = (1 - self.smooth) * self.row_weight[:, None] * p
        grad[xp.arange(n), self.target] -= (1 - self.smooth) * self.row_weight
        if self.smooth:
            w = xp.ones(c, dtype=g.dtype) if self.weight is None else self.weight
            grad += self.smooth * self.keep[:, None] * (w.mean() * p - w / c)
        scale = g if self.reduction != "mean" else g / self.count
        return grad * (scale[:, None] if self.reduction == "none" else scale)


def cross_entropy(logits, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """logits (N, C) or (N, C, d1, ...) with class indices target (N,) or (N, d1, ...), as
    torch's F.cross_entropy: class weights `weight` (C,), ignore_index, label_smoothing."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
    target_data = target.array if isinstance(target, Tensor) else target
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    if tuple(target_data.shape) != expected:
        raise ValueError(f"cross_entropy: logits of shape {tuple(logits.shape)} need a target of "
                         f"shape {expected}, got {tuple(target_data.shape)}")
    weight_data = weight.array if isinstance(weight, Tensor) else weight
    if weight_data is not None and tuple(weight_data.shape) != (logits.shape[1],):
        raise ValueError(f"cross_entropy: weight of shape {tuple(weight_data.shape)} does not "
                         f"match the {logits.shape[1]} classes of logits {tuple(logits.shape)}")
    if logits.ndim > 2:  # classes last, then one row per position
        logits = reshape(permute(logits, 0, *range(2, logits.ndim), 1), -1, logits.shape[1])
    loss = CrossEntropy.apply(logits, target=target_data.reshape(-1), weight=weight_data,
                              ignore_index=ignore_index, label_smoothing=label_smoothing,
                              reduction=reduction)
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
    ids = ids.array if isinstance(ids, Tensor) else ids
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


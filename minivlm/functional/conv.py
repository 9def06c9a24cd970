"""Convolution, pooling and batch norm over images (N, C, H, W), as in torch.

Each op views its (padded) input as overlapping windows (N, C, H', W', kh, kw) without copying;
backward `_fold`s per-window gradients back onto the input, adding where windows overlap.
"""
import math
import numbers

from .. import backend
from ..autograd import Function, Tensor
from ..backend import xp_of
from .tensor_ops import squeeze, unsqueeze


def as_pair(value, name):
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
    stride, padding = as_pair(stride, "conv2d stride"), as_pair(padding, "conv2d padding")
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


def conv1d(x, weight, bias=None, stride=1, padding=0, groups=1):
    """1-d convolution as torch's F.conv1d: x (N, C, L), weight (O, C/groups, k), bias (O,)
    -> (N, O, L') with L' = (L + 2·padding − k) // stride + 1; conv2d over a height of 1."""
    if x.ndim != 3 or weight.ndim != 3:
        raise ValueError(f"conv1d: expected x (N, C, L) and weight (O, C/groups, k), got shapes "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    y = conv2d(unsqueeze(x, 2), unsqueeze(weight, 2), bias, stride=(1, _single(stride, "stride")),
               padding=(0, _single(padding, "padding")), groups=groups)
    return squeeze(y, 2)


def _single(value, name):
    """An int, or a 1-tuple of one (torch's conv1d spelling), as an int."""
    value = value[0] if isinstance(value, (tuple, list)) and len(value) == 1 else value
    if not isinstance(value, numbers.Integral):
        raise ValueError(f"conv1d {name} must be an int, got {value!r}")
    return value


def _pool_args(x, kernel_size, stride, padding, op):
    """(kernel, stride, padding) pairs; stride defaults to the kernel size, as in torch."""
    _check_image(x, op)
    kernel = as_pair(kernel_size, f"{op} kernel_size")
    stride = kernel if stride is None else as_pair(stride, f"{op} stride")
    padding = as_pair(padding, f"{op} padding")
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
        as_pair(output_size, "adaptive_avg_pool2d output_size")
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
    xp = xp_of(x.array)
    weight = weight if weight is not None else Tensor(xp.ones(c, dtype=x.dtype))
    bias = bias if bias is not None else Tensor(xp.zeros(c, dtype=x.dtype))
    return BatchNorm.apply(x, weight, bias, training=training, momentum=momentum, eps=eps,
                           running_mean=None if running_mean is None else running_mean.array,
                           running_var=None if running_var is None else running_var.array)

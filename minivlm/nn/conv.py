"""The layers of a convolutional network: Conv2d, BatchNorm2d and the 2-d poolings.

Each holds its parameters (and, for batch norm, running statistics) and calls one function of
`minivlm.functional`; names, defaults and initialisation follow torch.nn, so that torchvision and
OpenAI CLIP checkpoints load and give the same outputs. Images are (N, C, H, W).
"""
import math

from .. import autograd
from .. import functional as F
from ..functional.conv import as_pair
from . import init
from .layers import empty_parameter
from .module import Module


class _Conv(Module):
    """What Conv1d and Conv2d share: weight (out_channels, in_channels/groups, *kernel_size) and
    bias (out_channels,), initialised as torch: uniform in ±1/√fan_in with
    fan_in = in_channels/groups · prod(kernel_size)."""
    dims = 2

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, dtype=None, device=None):
        super().__init__()
        name = type(self).__name__
        if dilation not in (1, (1,) * self.dims):
            raise ValueError(f"{name}: dilation={dilation} is not supported (only 1)")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: in_channels={in_channels} and out_channels={out_channels} "
                             f"must both be divisible by groups={groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding = (
            self._sizes(value, f"{name} {what}") for value, what in
            ((kernel_size, "kernel_size"), (stride, "stride"), (padding, "padding")))
        self.weight = empty_parameter(out_channels, in_channels // groups, *self.kernel_size,
                                      dtype=dtype, device=device)
        self.bias = empty_parameter(out_channels, dtype=dtype, device=device) if bias else None
        self.reset_parameters()

    def _sizes(self, value, name):
        return as_pair(value, name)

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # = U(±1/√fan_in)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_channels // self.groups * math.prod(self.kernel_size))
            init.uniform_(self.bias, -bound, bound)

    def extra_repr(self):
        groups = f", groups={self.groups}" if self.groups != 1 else ""
        bias = ", bias=False" if self.bias is None else ""
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}{groups}{bias}")


class Conv2d(_Conv):
    """(N, in_channels, H, W) -> (N, out_channels, H', W'), H' = (H + 2·ph − kh) // sh + 1."""

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.groups)


class Conv1d(_Conv):
    """(N, in_channels, L) -> (N, out_channels, L'), L' = (L + 2·padding − k) // stride + 1: the
    slide "Three Ways of Processing Sequences"'s 1D convolution."""
    dims = 1

    def _sizes(self, value, name):
        value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        if len(value) != 1:
            raise ValueError(f"{name} must be an int or a 1-tuple, got {value!r}")
        return value

    def forward(self, x):
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.groups)


class BatchNorm2d(Module):
    """Per-channel normalisation of (N, C, H, W) over N, H and W, then weight·x̂ + bias.

    In training mode it normalises with the batch's statistics and moves the buffers running_mean
    and running_var towards them by `momentum` (momentum=None: a cumulative average over the
    num_batches_tracked batches seen), as torch; in eval mode it uses the running statistics."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=None, device=None):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = self.bias = None
        if affine:
            self.weight = init.ones_(empty_parameter(num_features, dtype=dtype, device=device))
            self.bias = init.zeros_(empty_parameter(num_features, dtype=dtype, device=device))
        statistics = (None, None, None)
        if track_running_stats:
            statistics = (autograd.zeros(num_features, dtype=dtype or "float32", device=device),
                          autograd.ones(num_features, dtype=dtype or "float32", device=device),
                          autograd.tensor(0, dtype="int64", device=device))
        for name, buffer in zip(("running_mean", "running_var", "num_batches_tracked"), statistics):
            self.register_buffer(name, buffer)

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"{self!r}: expected a 4-d input (N, C, H, W), got shape "
                             f"{tuple(x.shape)}")
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.array += 1
            if momentum is None:
                momentum = 1 / self.num_batches_tracked.item()
        use_batch_statistics = self.training or self.running_mean is None
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=use_batch_statistics, momentum=momentum, eps=self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class _Pool2d(Module):
    """What the fixed-window poolings share: kernel_size, stride (default kernel_size), padding."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride or kernel_size, padding

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(_Pool2d):
    """The mean of each kernel_size window; zero padding counts in the mean, as torch."""

    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class MaxPool2d(_Pool2d):
    """The maximum of each kernel_size window."""

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output_size (an int, or (h, w) where None keeps that dim)."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"

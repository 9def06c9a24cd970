"""einops on minivlm tensors: an einops backend (rearrange, repeat, reduce and einsum work on
Tensors, with gradients) and the layers Rearrange and Reduce, importable as
`einops.layers.minivlm` — the port of `einops.layers.torch`. minivlm registers both when it is
imported and einops is installed."""
import sys

import einops.layers
from einops._backends import AbstractBackend
from einops.layers import RearrangeMixin, ReduceMixin

from . import functional as F
from .autograd import Tensor, arange, tensor
from .nn import Module

REDUCTIONS = {"sum": F.sum, "mean": F.mean, "max": F.amax, "min": F.amin}


class MinivlmBackend(AbstractBackend):
    """What einops asks of a framework, in minivlm's differentiable ops."""
    framework_name = "minivlm"

    def is_appropriate_type(self, x): return isinstance(x, Tensor)
    def from_numpy(self, x): return tensor(x)
    def to_numpy(self, x): return x.numpy()
    def arange(self, start, stop): return arange(start, stop)
    def reshape(self, x, shape): return F.reshape(x, tuple(shape))
    def transpose(self, x, axes): return F.permute(x, tuple(axes))
    def stack_on_zeroth_dimension(self, tensors): return F.stack(list(tensors))
    def add_axis(self, x, new_position): return F.unsqueeze(x, new_position)
    def tile(self, x, repeats): return F.repeat(x, *repeats)
    def concat(self, tensors, axis): return F.cat(list(tensors), dim=axis)
    def is_float_type(self, x): return x.dtype.kind == "f"
    def einsum(self, pattern, *x): return F.einsum(pattern, *x)

    def reduce(self, x, operation, axes):
        if operation not in REDUCTIONS:
            raise NotImplementedError(f"einops reduction {operation!r} on minivlm tensors; "
                                      f"supported: {', '.join(REDUCTIONS)}")
        return REDUCTIONS[operation](x, tuple(axes))

    def add_axes(self, x, n_axes, pos2len):
        """New axes of the given lengths, by broadcasting (no copy), as einops' torch backend."""
        shape = [-1] * n_axes
        for position, length in pos2len.items():
            x = F.unsqueeze(x, position)
            shape[position] = length
        return F.expand(x, *shape)

    def layers(self):
        return sys.modules[__name__]


class Rearrange(RearrangeMixin, Module):
    """einops.rearrange as a layer: Rearrange("b c (h p1) (w p2) -> b (h w) (p1 p2 c)", ...)."""

    def forward(self, x):
        return self._apply_recipe(x)


class Reduce(ReduceMixin, Module):
    """einops.reduce as a layer: Reduce("b n d -> b d", "mean")."""

    def forward(self, x):
        return self._apply_recipe(x)


sys.modules["einops.layers.minivlm"] = sys.modules[__name__]
einops.layers.minivlm = sys.modules[__name__]

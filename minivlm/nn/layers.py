"""The basic layers: Linear, LayerNorm, RMSNorm, Embedding, Dropout, the activations, and the MLP.

Each holds its parameters and calls one function of `minivlm.functional`; shapes, defaults and
initialisation follow torch.nn so that a torch checkpoint loads and gives the same outputs.
"""
import math

from .. import autograd
from .. import functional as F
from ..autograd import Parameter
from . import init
from .module import Module


def empty_parameter(*shape, dtype=None, device=None):
    """An uninitialised Parameter (float32 unless `dtype` says otherwise)."""
    return Parameter(autograd.empty(*shape, dtype=dtype or "float32", device=device))


class Linear(Module):
    """y = x Wᵀ + b: (..., in_features) -> (..., out_features), W of shape (out, in).

    Initialised as torch: W and b uniform in ±1/√in_features."""

    def __init__(self, in_features, out_features, bias=True, dtype=None, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = empty_parameter(out_features, in_features, dtype=dtype, device=device)
        self.bias = empty_parameter(out_features, dtype=dtype, device=device) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # = U(±1/√in_features)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"{self!r}: expected an input whose last dimension is in_features="
                             f"{self.in_features}, got an input of shape {tuple(x.shape)}")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class LayerNorm(Module):
    """(x − mean) / √(var + eps) · weight + bias over the trailing `normalized_shape` dims."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 dtype=None, device=None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
        self.normalized_shape, self.eps = tuple(shape), eps
        self.elementwise_affine = elementwise_affine
        self.weight = self.bias = None
        if elementwise_affine:
            self.weight = init.ones_(empty_parameter(*self.normalized_shape, dtype=dtype,
                                                    device=device))
            if bias:
                self.bias = init.zeros_(empty_parameter(*self.normalized_shape, dtype=dtype,
                                                       device=device))

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class RMSNorm(Module):
    """x / √(mean(x²) + eps) · weight over the trailing `normalized_shape` dims (torch.nn.RMSNorm;
    Llama's norm, computed in float32 at least). eps None: the machine epsilon of x's dtype."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, dtype=None,
                 device=None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
        self.normalized_shape, self.eps = tuple(shape), eps
        self.elementwise_affine = elementwise_affine
        self.weight = None
        if elementwise_affine:
            self.weight = init.ones_(empty_parameter(*self.normalized_shape, dtype=dtype,
                                                    device=device))

    def forward(self, x):
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class Embedding(Module):
    """A lookup table: integer ids (...) -> rows of weight (..., embedding_dim), weight ~ N(0, 1).

    The row at `padding_idx` starts at zero and receives no gradient."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=None, device=None):
        super().__init__()
        if padding_idx is not None and not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(f"Embedding: padding_idx={padding_idx} is outside the table of "
                             f"{num_embeddings} rows")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = None if padding_idx is None else padding_idx % num_embeddings
        self.weight = empty_parameter(num_embeddings, embedding_dim, dtype=dtype, device=device)
        self.reset_parameters()

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.array[self.padding_idx] = 0

    def forward(self, ids):
        return F.embedding(ids, self.weight, padding_idx=self.padding_idx)

    def extra_repr(self):
        padding = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{padding}"


class Dropout(Module):
    """Zeroes each element with probability p and scales the rest by 1/(1−p), in training only.
    (inplace is accepted for torch's signature; the result is computed out of place.)"""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be a probability in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class GELU(Module):
    """x·Φ(x); approximate='tanh' uses the tanh approximation (GPT-2)."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class QuickGELU(Module):
    """x·σ(1.702·x), the GELU approximation of OpenAI's CLIP."""

    def forward(self, x):
        return F.quick_gelu(x)


class ReLU(Module):
    """max(x, 0). (inplace is accepted for torch's signature; computed out of place.)"""

    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, x):
        return F.relu(x)


class SiLU(Module):
    """x·σ(x), the swish of Llama's gated MLP (SwiGLU)."""

    def __init__(self, inplace=False):
        super().__init__()

    def forward(self, x):
        return F.silu(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Softmax(Module):
    """softmax along `dim` (torch.nn.Softmax)."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, x):
        return F.softmax(x, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    def forward(self, x):
        return F.log_softmax(x, self.dim)


class Flatten(Module):
    """x (N, ...) -> (N, product of the rest): dims start_dim ... end_dim flattened into one."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class MLP(Module):
    """The Transformer's position-wise feed-forward network: fc2(drop(act(fc1(x)))), then drop.

    Submodules (their names are the checkpoint keys): fc1 Linear(in, hidden), act (an instance of
    `activation`), drop Dropout(dropout), fc2 Linear(hidden, out); out_features defaults to in."""

    def __init__(self, in_features, hidden_features, out_features=None, activation=GELU,
                 dropout=0.0):
        super().__init__()
        self.fc1 = Linear(in_features, hidden_features)
        self.act = activation()
        self.drop = Dropout(dropout)
        self.fc2 = Linear(hidden_features, out_features or in_features)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))

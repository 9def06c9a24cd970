"""Positional encodings: self-attention sees a set, so where each token sits is added to it.

Sinusoidal (the 2017 Transformer, the lecture's "sin/cos, added to input embedding") or learned
(one trained D-dim vector per position, as ViT, CLIP and GPT-2). Both take x (..., L, D),
positions along the second-to-last dimension: (N, L, D) batch first, or (L, D). Rotary (RoPE,
Llama) is not added: it turns each query and key by an angle proportional to its position, so
that q·k depends on the positions only through their difference; RotaryEmbedding gives the
angles' cos and sin, F.apply_rotary_pos_emb turns.
"""
from .. import autograd, backend
from .. import functional as F
from ..autograd import Parameter, Tensor
from . import init
from .layers import Dropout
from .module import Module


def sinusoidal_table(num_positions, dim, dtype="float32", device=None):
    """(num_positions, dim) table: PE[pos, 2i] = sin(pos / 10000^(2i/dim)),
    PE[pos, 2i+1] = cos(pos / 10000^(2i/dim)). Values lie in [-1, 1]; the wavelengths run
    geometrically from 2π to 10000·2π, so nearby positions get similar vectors."""
    xp = backend.module(device) if device is not None else backend.default_xp()
    position = xp.arange(num_positions, dtype="float64")[:, None]
    frequency = 10000.0 ** (-xp.arange(0, dim, 2, dtype="float64") / dim)  # 1 / 10000^(2i/dim)
    angle = position * frequency  # (num_positions, ⌈dim/2⌉)
    table = xp.empty((num_positions, dim), dtype="float64")
    table[:, 0::2] = xp.sin(angle)
    table[:, 1::2] = xp.cos(angle[:, :dim // 2])
    return Tensor(table.astype(dtype))


def _check_input(x, dim, layer, max_len=None):
    if x.ndim < 2 or x.shape[-1] != dim or (max_len is not None and x.shape[-2] > max_len):
        limit = "" if max_len is None else f" with L <= {max_len}"
        raise ValueError(f"{layer}: expected an input of shape (..., L, {dim}){limit}, "
                         f"got shape {tuple(x.shape)}")


class SinusoidalPositionalEncoding(Module):
    """x + PE[:L], then dropout (the 2017 paper applies dropout 0.1 to this sum). Nothing is
    learned: the table is computed for the input's length, dtype and backend."""

    def __init__(self, d_model, dropout=0.0):
        super().__init__()
        self.d_model = d_model
        self.dropout = Dropout(dropout)

    def forward(self, x):
        _check_input(x, self.d_model, type(self).__name__)
        return self.dropout(x + sinusoidal_table(x.shape[-2], self.d_model, x.dtype, x.device))

    def extra_repr(self):
        return f"d_model={self.d_model}"


class LearnedPositionalEmbedding(Module):
    """x + weight[:L]: one learned vector per position, weight (num_positions, embedding_dim)
    drawn from N(0, 0.02²) (BERT, ViT)."""

    def __init__(self, num_positions, embedding_dim, std=0.02):
        super().__init__()
        self.num_positions, self.embedding_dim = num_positions, embedding_dim
        self.weight = init.normal_(Parameter(autograd.empty(num_positions, embedding_dim)), std=std)

    def forward(self, x, position_ids=None):
        """position_ids (N, L) or (L,) integer: where each vector sits (default 0 .. L-1)."""
        if position_ids is None:
            _check_input(x, self.embedding_dim, type(self).__name__, self.num_positions)
            return x + self.weight[:x.shape[-2]]
        _check_input(x, self.embedding_dim, type(self).__name__)
        ids = position_ids.array if isinstance(position_ids, Tensor) else position_ids
        if ids.size and int(ids.max()) >= self.num_positions:
            raise ValueError(f"{type(self).__name__}: position {int(ids.max())} is past the "
                             f"{self.num_positions} positions it has embeddings for")
        return x + F.embedding(ids, self.weight)

    def extra_repr(self):
        return f"{self.num_positions}, {self.embedding_dim}"


class RotaryEmbedding(Module):
    """The cos and sin of the rotary angles (transformers' LlamaRotaryEmbedding): position p turns
    the pair i of each head's dim (of dim/2 pairs) by p·base^(−2i/dim). Nothing is learned."""

    def __init__(self, dim, base=10000.0):
        super().__init__()
        self.dim, self.base = dim, base

    def forward(self, x, position_ids):
        """position_ids (N, L) integer -> cos, sin (N, L, dim) in x's dtype."""
        return F.rotary_cos_sin(position_ids, self.dim, self.base, x.dtype)

    def extra_repr(self):
        return f"dim={self.dim}, base={self.base}"

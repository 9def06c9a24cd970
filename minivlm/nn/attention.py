"""Attention, as on the slides "Attention Layer" ... "Multihead Self-Attention Layer", and
torch.nn.MultiheadAttention.

The slide layers (Attention, SelfAttention, MaskedSelfAttention) keep the slides' names and
shapes: weights W_Q, W_K, W_V of shape (D_X, D_Q) used as X W. MultiheadAttention keeps torch's
names and (out, in) layout, so a torch state dict loads as is.

Masks follow nn.MultiheadAttention: a bool mask is True where attention is NOT allowed, a float
mask is added to the similarities E. (F.scaled_dot_product_attention, like torch's, reads a bool
mask the other way round: True = allowed.)
"""
import math

from .. import autograd, backend
from .. import functional as F
from ..autograd import Parameter, Tensor
from . import init
from .layers import Linear
from .module import Module


def attention_memory(tokens, layers, heads, bytes_per_el=4):
    """Bytes held by all attention matrices of one example: tokens² entries per matrix, one matrix
    per head in every layer.

    The lecture's "Transformer on pixels": a 128×128 image is 128² = 16,384 tokens, so each matrix
    has R⁴ = 128⁴ = 2²⁸ entries; 48 layers × 16 heads × 4-byte floats makes
    2²⁸ · 768 · 4 = 3·2³⁸ bytes = 768 GiB (8.2·10¹¹ bytes). The slide's "768GB" is 768 GiB
    of float32. Patches instead: a 56×56 grid of 4×4 patches is 3,136 tokens and one matrix has
    56⁴ = 9,834,496 ≈ 9.8 M entries (attention_memory(56 * 56, 1, 1, bytes_per_el=1)).
    """
    return tokens ** 2 * layers * heads * bytes_per_el


def causal_mask(N_Q, N_X=None, device=None):
    """(N_Q, N_X) bool Tensor, True above the diagonal: query i may not look ahead at j > i."""
    xp = backend.module(device) if device is not None else backend.default_xp()
    N_X = N_Q if N_X is None else N_X
    return Tensor(xp.triu(xp.ones((N_Q, N_X), dtype=bool), k=1))


def attention_weights(Q, K, mask=None):
    """E = Q Kᵀ / √D_Q (+ mask), A = softmax(E, dim=-1): for each query, weights over inputs.

    Q (..., N_Q, D_Q), K (..., N_X, D_Q), mask broadcastable to (..., N_Q, N_X)
    -> A (..., N_Q, N_X).
    """
    if Q.shape[-1] != K.shape[-1]:
        raise ValueError(f"attention: queries of shape {tuple(Q.shape)} and keys of shape "
                         f"{tuple(K.shape)} must have the same last dimension D_Q")
    E = (Q @ K.transpose(-1, -2)) * (1 / math.sqrt(Q.shape[-1]))  # E_ij = Q_i · K_j / √D_Q
    if mask is not None:
        E = E + F.additive_mask(mask, like=E)
    return F.softmax(E, dim=-1)  # the slide's dim=1: over the N_X inputs of each query


def _slide_weight(rows, cols):
    """A (rows, cols) weight used as X W, initialised as torch's attention (Xavier uniform)."""
    return init.xavier_uniform_(Parameter(autograd.empty(rows, cols)))


def _check_features(x, expected, what, layer):
    if x.ndim < 2 or x.shape[-1] != expected:
        raise ValueError(f"{layer}: expected {what} of shape (..., N, {expected}), got shape "
                         f"{tuple(x.shape)}")


class Attention(Module):
    """The slide "Attention Layer": queries Q look up the inputs X.

    K = X W_K, V = X W_V, E = Q Kᵀ / √D_Q, A = softmax(E, dim=1), Y = A V.
    Q (..., N_Q, D_Q), X (..., N_X, D_X) -> Y (..., N_Q, D_V); W_K (D_X, D_Q), W_V (D_X, D_V).
    """

    def __init__(self, D_X, D_Q, D_V=None):
        super().__init__()
        self.W_K = _slide_weight(D_X, D_Q)
        self.W_V = _slide_weight(D_X, D_V or D_Q)

    def forward(self, Q, X, mask=None):
        """mask (N_Q, N_X), broadcast over leading dims: bool True = not allowed, or float added."""
        _check_features(X, self.W_K.shape[0], "inputs X", type(self).__name__)
        _check_features(Q, self.W_K.shape[1], "queries Q", type(self).__name__)
        K = X @ self.W_K  # (N_X, D_Q)
        V = X @ self.W_V  # (N_X, D_V)
        A = attention_weights(Q, K, mask)  # (N_Q, N_X)
        Y = A @ V  # (N_Q, D_V): Y_i = Σ_j A_ij V_j
        return Y

    def extra_repr(self):
        (D_X, D_Q), D_V = self.W_K.shape, self.W_V.shape[1]
        return f"D_X={D_X}, D_Q={D_Q}, D_V={D_V}"


class SelfAttention(Attention):
    """The slide "Self-Attention Layer": one query per input vector, Q = X W_Q.

    X (..., N_X, D_X) -> Y (..., N_X, D_V); W_Q, W_K (D_X, D_Q), W_V (D_X, D_V).
    """

    def __init__(self, D_X, D_Q, D_V=None):
        super().__init__(D_X, D_Q, D_V)
        self.W_Q = _slide_weight(D_X, D_Q)

    def forward(self, X, mask=None):
        _check_features(X, self.W_Q.shape[0], "inputs X", type(self).__name__)
        Q = X @ self.W_Q  # (N_X, D_Q)
        return super().forward(Q, X, mask)


class MaskedSelfAttention(SelfAttention):
    """The slide "Masked Self-Attention Layer": self-attention in which no vector looks ahead in
    the sequence (E_ij = -inf for j > i), as language modeling needs."""

    def forward(self, X):
        return super().forward(X, mask=causal_mask(X.shape[-2], device=X.device))


class MultiheadAttention(Module):
    """torch.nn.MultiheadAttention: `num_heads` attention heads side by side, each of width
    head_dim = embed_dim / num_heads (the slide "Multihead Self-Attention Layer").

    Parameters (torch's names): in_proj_weight (3·E, E) stacking the rows of W_q, W_k, W_v, or
    q_proj_weight (E, E), k_proj_weight (E, kdim), v_proj_weight (E, vdim) when kdim or vdim
    differ from E; in_proj_bias (3·E,); out_proj, a Linear(E, E). Initialised as torch: Xavier
    uniform projections, zero biases.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim={embed_dim} is not divisible by "
                             f"num_heads={num_heads}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self.dropout, self.batch_first = dropout, batch_first
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        E = embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(autograd.empty(3 * E, E))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.register_parameter("in_proj_weight", None)
            self.q_proj_weight = Parameter(autograd.empty(E, E))
            self.k_proj_weight = Parameter(autograd.empty(E, self.kdim))
            self.v_proj_weight = Parameter(autograd.empty(E, self.vdim))
        self.register_parameter("in_proj_bias", Parameter(autograd.empty(3 * E)) if bias else None)
        self.out_proj = Linear(E, E, bias=bias)
        for name in ("bias_k", "bias_v"):   # a learned extra key and value (add_bias_kv)
            self.register_parameter(name, Parameter(autograd.empty(1, 1, E)) if add_bias_kv
                                    else None)
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self):
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for weight in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(weight)
        if self.in_proj_bias is not None:
            init.zeros_(self.in_proj_bias)
            init.zeros_(self.out_proj.bias)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
            init.xavier_normal_(self.bias_v)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False, cache=None):
        """query (L, N, E), key (S, N, kdim), value (S, N, vdim) — (N, L, E) ... with batch_first,
        or (L, E), (S, kdim), (S, vdim) unbatched — -> (output like query, weights or None).

        key_padding_mask (N, S) or (S,); attn_mask (L, S) or (N·num_heads, L, S): bool True = not
        allowed, float = added to E. is_causal=True also forbids looking ahead (torch passes it
        as a hint beside attn_mask = that causal mask; here the mask may be left out).
        weights: (N, L, S) averaged over the heads, or (N, num_heads, L, S), without N unbatched.
        need_weights=False runs the fused F.scaled_dot_product_attention instead.
        cache (minivlm's, for self-attention in a decoder): a nn.cache.LayerCache; this call's
        keys and values are appended to it and the queries attend to all of them (S counts the
        cached positions too, in the masks).
        """
        self._check_inputs(query, key, value)
        if self.batch_first and query.ndim == 3:   # the functional form is sequence first
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        output, weights = F.multi_head_attention_forward(
            query, key, value, self.embed_dim, self.num_heads, self.in_proj_weight,
            self.in_proj_bias, self.bias_k, self.bias_v, self.add_zero_attn, self.dropout,
            self.out_proj.weight, self.out_proj.bias, training=self.training,
            key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
            use_separate_proj_weight=not self._qkv_same_embed_dim,
            q_proj_weight=self.q_proj_weight, k_proj_weight=self.k_proj_weight,
            v_proj_weight=self.v_proj_weight, average_attn_weights=average_attn_weights,
            is_causal=is_causal, cache=cache)
        if self.batch_first and query.ndim == 3:
            output = output.transpose(0, 1)
        return output, weights

    def _check_inputs(self, query, key, value):
        """Raise a clear error unless the shapes fit."""
        name = type(self).__name__
        if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
            raise ValueError(f"{name}: query, key and value must all be 3-d (batched) or all 2-d "
                             f"(unbatched), got shapes {tuple(query.shape)}, {tuple(key.shape)}, "
                             f"{tuple(value.shape)}")
        for x, what, width in ((query, "query", self.embed_dim), (key, "key", self.kdim),
                               (value, "value", self.vdim)):
            if x.shape[-1] != width:
                raise ValueError(f"{name}: {what} of shape {tuple(x.shape)} should have last "
                                 f"dimension {width}")
        if key.shape[:-1] != value.shape[:-1]:
            raise ValueError(f"{name}: key of shape {tuple(key.shape)} and value of shape "
                             f"{tuple(value.shape)} must agree in all but the last dimension")
        batch_dim = 0 if self.batch_first else 1
        if query.ndim == 3 and query.shape[batch_dim] != key.shape[batch_dim]:
            raise ValueError(f"{name}: query of shape {tuple(query.shape)} and key of shape "
                             f"{tuple(key.shape)} have different batch sizes "
                             f"(batch_first={self.batch_first})")

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
                f"batch_first={self.batch_first}")

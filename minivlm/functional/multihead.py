"""Multi-head attention as one function of its weights, torch's F.multi_head_attention_forward
(nn.MultiheadAttention holds the weights and calls it; the slide "Multihead Self-Attention
Layer").

Masks follow nn.MultiheadAttention: a bool mask is True where attention is NOT allowed, a float
mask is added to the similarities E. (scaled_dot_product_attention, like torch's, reads a bool
mask the other way round: True = allowed.)
"""
import math

from .. import backend
from ..autograd import Tensor
from .elementwise import mul
from .layers import dropout, linear, softmax
from .tensor_ops import cat, matmul, mean, repeat, reshape, split, transpose
from .attention import scaled_dot_product_attention


def additive_mask(mask, like):
    """A mask as a Tensor to add to the similarities E (on `like`'s backend, in its dtype):
    bool True (not allowed) -> -inf, False -> 0; a float mask as it is (it may carry a gradient)."""
    if isinstance(mask, Tensor) and mask.dtype != bool:
        return mask if mask.dtype == like.dtype else mask.to(like.dtype)
    data = backend.to_backend(mask.array if isinstance(mask, Tensor) else mask, like.device)
    if data.dtype != bool:
        return Tensor(data.astype(like.dtype))
    xp = backend.xp_of(data)
    return Tensor(xp.where(data, -xp.inf, 0).astype(like.dtype))


def multi_head_attention_forward(query, key, value, embed_dim_to_check, num_heads,
                                 in_proj_weight, in_proj_bias, bias_k, bias_v, add_zero_attn,
                                 dropout_p, out_proj_weight, out_proj_bias, training=True,
                                 key_padding_mask=None, need_weights=True, attn_mask=None,
                                 use_separate_proj_weight=False, q_proj_weight=None,
                                 k_proj_weight=None, v_proj_weight=None, static_k=None,
                                 static_v=None, average_attn_weights=True, is_causal=False,
                                 cache=None):
    """torch's F.multi_head_attention_forward, sequence first.

    query (L, N, E), key (S, N, kdim), value (S, N, vdim), or (L, E), (S, kdim), (S, vdim)
    unbatched -> (output like query, weights or None). in_proj_weight (3E, E) stacks W_q, W_k,
    W_v (or q/k/v_proj_weight with use_separate_proj_weight); bias_k, bias_v (1, 1, E) add one
    learned key and value; add_zero_attn one zero key and value. key_padding_mask (N, S),
    attn_mask (L, S) or (N·heads, L, S): bool True = not allowed, float = added to E;
    is_causal forbids looking ahead. weights (N, L, S) averaged over the heads, or
    (N, heads, L, S); need_weights=False runs the fused scaled_dot_product_attention.
    cache (minivlm's, for self-attention in a decoder): an nn.cache.LayerCache that this call's
    keys and values extend and that lends the earlier ones (S counts them in the masks)."""
    if static_k is not None or static_v is not None:
        raise NotImplementedError("multi_head_attention_forward: static_k / static_v are not "
                                  "supported")
    batched = query.ndim == 3
    if not batched:                 # one sequence: a batch of one
        query, key, value = (x.unsqueeze(1) for x in (query, key, value))
        if key_padding_mask is not None:
            key_padding_mask = reshape(Tensor(_data(key_padding_mask)), 1, -1)
    L, N, E = query.shape
    if E != embed_dim_to_check:
        raise ValueError(f"multi_head_attention_forward: query of shape {tuple(query.shape)} "
                         f"has embedding dim {E}, expected {embed_dim_to_check}")
    head_dim = E // num_heads
    weights = ((q_proj_weight, k_proj_weight, v_proj_weight) if use_separate_proj_weight
               else split(in_proj_weight, E, dim=0))
    biases = split(in_proj_bias, E) if in_proj_bias is not None else (None,) * 3
    q, k, v = (_split_heads(linear(x, w, b), N, num_heads, head_dim)
               for x, w, b in zip((query, key, value), weights, biases))
    if cache is not None:
        k, v = cache.update(k, v)
    masks = _masks(attn_mask, key_padding_mask, is_causal, N, num_heads, L, k.shape[2], q)
    if bias_k is not None and bias_v is not None:   # one more key and value, never masked
        k, v = (cat([x, repeat(_split_heads(b, 1, num_heads, head_dim), N, 1, 1, 1)], dim=2)
                for x, b in ((k, bias_k), (v, bias_v)))
        masks = [_pad_key(m) for m in masks]
    if add_zero_attn:
        zeros = Tensor(backend.xp_of(k.array).zeros((N, num_heads, 1, head_dim), dtype=k.dtype))
        k, v = cat([k, zeros], dim=2), cat([v, zeros], dim=2)
        masks = [_pad_key(m) for m in masks]
    mask = _sum(masks)
    p = dropout_p if training else 0.0
    if need_weights:
        scores = matmul(mul(q, 1 / math.sqrt(head_dim)), transpose(k, -1, -2))
        A = dropout(softmax(scores if mask is None else scores + mask, dim=-1), p)  # as torch
        y = matmul(A, v)
    else:
        A, y = None, scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    y = transpose(reshape(transpose(y, 1, 2), N, L, E), 0, 1)       # (L, N, E)
    output = linear(y, out_proj_weight, out_proj_bias)
    if A is not None and average_attn_weights:
        A = mean(A, dim=1)
    if not batched:
        return output.squeeze(1), None if A is None else A.squeeze(0)
    return output, A


def _data(t):
    return t.array if isinstance(t, Tensor) else t


def _split_heads(x, N, heads, head_dim):
    """(S, N, E) -> (N, heads, S, head_dim)."""
    return transpose(reshape(transpose(x, 0, 1), N, -1, heads, head_dim), 1, 2)


def _masks(attn_mask, key_padding_mask, is_causal, N, heads, L, S, like):
    """The additive masks that broadcast to (N, heads, L, S)."""
    masks = []
    if attn_mask is not None:
        if tuple(attn_mask.shape) not in ((L, S), (N * heads, L, S)):
            raise ValueError(f"MultiheadAttention: attn_mask has shape "
                             f"{tuple(attn_mask.shape)}, but should be (L, S) = ({L}, {S}) "
                             f"or (N·num_heads, L, S) = ({N * heads}, {L}, {S})")
        mask = additive_mask(attn_mask, like)
        masks.append(reshape(mask, -1, heads, L, S) if mask.ndim == 3 else mask)
    if key_padding_mask is not None:
        if tuple(key_padding_mask.shape) != (N, S):
            raise ValueError(f"MultiheadAttention: key_padding_mask has shape "
                             f"{tuple(key_padding_mask.shape)}, but should be (N, S) = "
                             f"({N}, {S})")
        masks.append(reshape(additive_mask(key_padding_mask, like), N, 1, 1, S))
    if is_causal:
        xp = backend.xp_of(like.array)
        masks.append(Tensor(xp.triu(xp.full((L, S), -xp.inf, dtype=like.dtype), k=1)))
    return masks


def _pad_key(mask):
    """A mask with one more key (allowed) on the right."""
    xp = backend.xp_of(mask.array)
    column = Tensor(xp.zeros(mask.shape[:-1] + (1,), dtype=mask.dtype))
    return cat([mask, column], dim=-1)


def _sum(masks):
    total = None
    for mask in masks:
        total = mask if total is None else total + mask
    return total

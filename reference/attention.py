"""Attention, as on the slides "Attention Layer" ... "Multihead Self-Attention Layer".

The slides write weights as (in, out) matrices used as X W. The functions that take PyTorch state
dicts (multihead_attention and below) use PyTorch's nn.Linear layout (out, in), used as x Wᵀ + b.

Masks follow nn.MultiheadAttention: a bool mask is True where attention is NOT allowed, a float mask
is added to the similarities E. (scaled_dot_product_attention alone keeps torch's opposite bool
convention, see there.)
"""
import numpy as np


def softmax(E, axis=-1):
    """exp(E) / Σ exp(E) along `axis`, with the row maximum subtracted first so exp cannot overflow."""
    E = E - E.max(axis=axis, keepdims=True)
    exp_E = np.exp(E)
    return exp_E / exp_E.sum(axis=axis, keepdims=True)


def additive_mask(mask):
    """A mask as a number to add to E: bool True (not allowed) -> -inf, False -> 0; a float mask as is."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return np.where(mask, -np.inf, 0.0)
    return mask


def causal_mask(N_Q, N_X=None):
    """(N_Q, N_X) bool, True above the diagonal: query i may not look ahead at an input j > i."""
    return np.triu(np.ones((N_Q, N_Q if N_X is None else N_X), dtype=bool), k=1)


def attention_weights(Q, K, mask=None, scale=None):
    """E = Q Kᵀ / √D_Q (+ mask), A = softmax(E, dim=1): for each query, weights over the inputs.

    Q (..., N_Q, D_Q), K (..., N_X, D_Q), mask broadcastable to (..., N_Q, N_X) -> A (..., N_Q, N_X).
    `scale` replaces 1/√D_Q when given (as in torch's scaled_dot_product_attention).
    """
    if Q.shape[-1] != K.shape[-1]:
        raise ValueError(f"queries {Q.shape} and keys {K.shape} must have the same last dimension D_Q")
    scale = 1.0 / np.sqrt(Q.shape[-1]) if scale is None else scale
    E = Q @ np.swapaxes(K, -1, -2) * scale  # E_ij = Q_i · K_j / √D_Q
    if mask is not None:
        E = E + additive_mask(mask)
    return softmax(E, axis=-1)  # the slide's dim=1: over the N_X inputs of each query


def attention(Q, X, W_K, W_V, mask=None):
    """The slide "Attention Layer".

    Q (N_Q, D_Q), X (N_X, D_X), W_K (D_X, D_Q), W_V (D_X, D_V) -> Y (N_Q, D_V).
    """
    K = X @ W_K  # (N_X, D_Q)
    V = X @ W_V  # (N_X, D_V)
    A = attention_weights(Q, K, mask)  # (N_Q, N_X)
    Y = A @ V  # Y_i = Σ_j A_ij V_j
    return Y


def self_attention(X, W_Q, W_K, W_V, mask=None):
    """The slide "Self-Attention Layer": one query per input vector, Q = X W_Q. -> Y (N_X, D_V)."""
    Q = X @ W_Q
    return attention(Q, X, W_K, W_V, mask)


def masked_self_attention(X, W_Q, W_K, W_V):
    """The slide "Masked Self-Attention Layer": no vector looks ahead in the sequence (language modeling)."""
    return self_attention(X, W_Q, W_K, W_V, mask=causal_mask(len(X)))


def multihead_self_attention(X, W_Q, W_K, W_V, W_O, mask=None):
    """The slide "Multihead Self-Attention Layer": H independent heads in parallel.

    W_Q, W_K, W_V: lists of H matrices (D_X, D_Q) / (D_X, D_V), one per head; the heads' outputs are
    concatenated and mixed by W_O (H·D_V, D_out). With W_Q[h] = in_proj_weight[q rows of head h].T and
    W_O = out_proj.weight.T this is nn.MultiheadAttention(bias=False).
    """
    heads = [self_attention(X, W_Q[h], W_K[h], W_V[h], mask) for h in range(len(W_Q))]
    return np.concatenate(heads, axis=-1) @ W_O


def scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False, scale=None):
    """torch.nn.functional.scaled_dot_product_attention, batch dimensions in front.

    query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev).
    Careful: here, as in torch's function, a bool attn_mask is True where attention IS allowed.
    """
    if is_causal:
        if attn_mask is not None:
            raise ValueError("pass attn_mask or is_causal, not both (as torch does)")
        attn_mask = ~causal_mask(query.shape[-2], key.shape[-2])
    if attn_mask is not None and np.asarray(attn_mask).dtype == bool:
        attn_mask = ~np.asarray(attn_mask)  # to this file's convention: True = not allowed
    A = attention_weights(query, key, attn_mask, scale)
    return A @ value


def linear(x, weight, bias=None):
    """nn.Linear: x (..., in) -> x weightᵀ + bias, weight (out, in), bias (out,) or None."""
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input {x.shape} does not fit weight {weight.shape} (out, in)")
    y = x @ weight.T
    return y if bias is None else y + bias


def weights_under(weights, prefix):
    """The entries of a state dict whose names start with `prefix`, with the prefix removed."""
    found = {name[len(prefix):]: w for name, w in weights.items() if name.startswith(prefix)}
    if not found:
        raise KeyError(f"no weights named {prefix!r}... (have e.g. {sorted(weights)[:5]})")
    return found


def packed_attention_weights(weights, q, k, v, out):
    """Separate query/key/value/output linears (names q, k, v, out in `weights`) as the state dict of
    nn.MultiheadAttention: in_proj_weight stacks the q, k, v rows, out_proj is the output linear."""
    packed = {
        "in_proj_weight": np.concatenate([weights[f"{name}.weight"] for name in (q, k, v)]),
        "out_proj.weight": weights[f"{out}.weight"],
    }
    if f"{q}.bias" in weights:
        packed["in_proj_bias"] = np.concatenate([weights[f"{name}.bias"] for name in (q, k, v)])
    if f"{out}.bias" in weights:
        packed["out_proj.bias"] = weights[f"{out}.bias"]
    return packed


def multihead_attention(query, key, value, weights, num_heads, key_padding_mask=None, attn_mask=None):
    """nn.MultiheadAttention(E, num_heads, batch_first=True) in eval mode, one head at a time.

    query (N, L, E), key and value (N, S, E). weights: nn.MultiheadAttention's state dict,
    in_proj_weight (3E, E) with the rows of q, k, v; in_proj_bias (3E,); out_proj.weight (E_out, E);
    out_proj.bias (E_out,) (the biases may be absent). key_padding_mask (N, S); attn_mask (L, S) or
    (N·num_heads, L, S): bool True = not allowed, float = added to E.
    Returns Y (N, L, E_out) and the attention weights of every head A (N, num_heads, L, S).
    """
    if query.ndim != 3 or key.ndim != 3 or value.ndim != 3:
        raise ValueError(f"expected (N, L, E) query and (N, S, E) key/value, "
                         f"got {query.shape}, {key.shape}, {value.shape}")
    N, L, E = query.shape
    S = key.shape[1]
    if E % num_heads:
        raise ValueError(f"embed dim {E} is not divisible by num_heads={num_heads}")
    W_q, W_k, W_v = np.split(weights["in_proj_weight"], 3)
    b_q, b_k, b_v = np.split(weights["in_proj_bias"], 3) if "in_proj_bias" in weights else (None, None, None)
    Q, K, V = linear(query, W_q, b_q), linear(key, W_k, b_k), linear(value, W_v, b_v)

    mask = np.zeros((N, num_heads, L, S))
    if attn_mask is not None:
        attn_mask = additive_mask(attn_mask)
        if attn_mask.shape not in ((L, S), (N * num_heads, L, S)):
            raise ValueError(f"attn_mask {attn_mask.shape} should be (L, S) = {(L, S)} "
                             f"or (N·num_heads, L, S) = {(N * num_heads, L, S)}")
        mask = mask + (attn_mask.reshape(N, num_heads, L, S) if attn_mask.ndim == 3 else attn_mask)
    if key_padding_mask is not None:
        mask = mask + additive_mask(key_padding_mask)[:, None, None, :]

    D_head = E // num_heads
    heads, A = [], []
    for h in range(num_heads):
        cols = slice(h * D_head, (h + 1) * D_head)
        A_h = attention_weights(Q[..., cols], K[..., cols], mask[:, h])
        heads.append(A_h @ V[..., cols])
        A.append(A_h)
    Y = linear(np.concatenate(heads, axis=-1), weights["out_proj.weight"], weights.get("out_proj.bias"))
    return Y, np.stack(A, axis=1)


def attention_memory(tokens, layers, heads, bytes_per_el=4):
    """Bytes held by all attention matrices of one example: tokens² entries per matrix, one matrix per
    head per layer. The slide's pixels of a 128×128 image (R⁴ entries per matrix), 48 layers, 16 heads,
    4-byte floats: attention_memory(128**2, 48, 16) = 3·2³⁸ bytes = exactly 768 GiB, the slide's "768GB".
    """
    return tokens**2 * layers * heads * bytes_per_el

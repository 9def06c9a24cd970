"""The Llama decoder block, the language model a VLM connects its vision model to: RMSNorm,
rotary position embeddings (RoPE), grouped-query attention (GQA) and the SwiGLU MLP.

Weights use transformers' LlamaForCausalLM names (model.layers.{i}.self_attn.q_proj.weight,
..., in nn.Linear's (out, in) layout), so a checkpoint's arrays (as float64) plug in directly.
Inputs are batch-first: (N, L, D). Loops where they make the idea plainer.
"""
import numpy as np

from reference.attention import linear, softmax


def rms_norm(h, gamma, eps=1e-6):
    """RMSNorm (Zhang & Sennrich, 2019) of each vector h_i over its last axis D: layer norm
    without the mean, y_i = γ h_i / rms(h_i), rms(h_i) = ((1/D) Σ_j h_ij² + eps)^½. No β."""
    rms = np.sqrt((h ** 2).mean(axis=-1, keepdims=True) + eps)
    return gamma * h / rms


def rope_angles(positions, dim, theta=10000.0):
    """The rotation angles (..., L, dim/2): position p turns pair i by p · θ^(−2i/dim). Pair 0
    turns fastest (1 radian a position), the last slowest (about 1/θ)."""
    frequencies = theta ** (-np.arange(0, dim, 2) / dim)
    return np.asarray(positions, dtype=np.float64)[..., None] * frequencies


def rope(x, positions, theta=10000.0):
    """Rotary position embedding (Su et al., 2021) of x (..., L, dim), pairs as in Llama's
    rotate_half layout: feature i and feature i + dim/2 form pair i, turned by its angle.
    Then q_m · k_n depends on the positions m, n only through m − n."""
    half = x.shape[-1] // 2
    angle = rope_angles(positions, x.shape[-1], theta)
    first, second = x[..., :half], x[..., half:]
    cos, sin = np.cos(angle), np.sin(angle)
    return np.concatenate([first * cos - second * sin, first * sin + second * cos], axis=-1)


def grouped_query_attention(Q, K, V, mask=None):
    """GQA (Ainslie et al., 2023): Q (N, H, L, d) has H heads, K and V (N, H_kv, S, d) fewer; each
    key/value head serves a group of H / H_kv query heads (query head h reads h // group).
    mask (L, S) or (N, 1, L, S): True where attention is NOT allowed. -> (N, H, L, d)."""
    heads, kv_heads = Q.shape[1], K.shape[1]
    group = heads // kv_heads
    Y = np.empty(Q.shape[:3] + V.shape[-1:])
    for h in range(heads):
        E = Q[:, h] @ K[:, h // group].swapaxes(-1, -2) / np.sqrt(Q.shape[-1])
        if mask is not None:
            E = np.where(np.broadcast_to(mask, E.shape[:1] + mask.shape[-2:]), -np.inf, E)
        Y[:, h] = softmax(E, axis=-1) @ V[:, h // group]
    return Y


def silu(x):
    """x σ(x), the swish."""
    return x / (1 + np.exp(-x))


def swiglu_mlp(x, W_gate, W_up, W_down):
    """The gated MLP of Llama (Shazeer, 2020): W_down (silu(W_gate x) ⊙ W_up x)."""
    return linear(silu(linear(x, W_gate)) * linear(x, W_up), W_down)


def llama_block(x, weights, prefix, config, positions, mask):
    """One pre-norm decoder layer: x + GQA(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)).

    weights: {name: array} under transformers' names below `prefix` ("model.layers.0.");
    config: heads, kv_heads, head_dim, rope_theta, eps; positions (N, L); mask as above."""
    W = {name[len(prefix):]: w for name, w in weights.items() if name.startswith(prefix)}
    N, L, _ = x.shape

    def heads(y, count):  # (N, L, count·d) -> (N, count, L, d)
        return y.reshape(N, L, count, config["head_dim"]).transpose(0, 2, 1, 3)

    def attention(h):
        Q = heads(linear(h, W["self_attn.q_proj.weight"]), config["heads"])
        K = heads(linear(h, W["self_attn.k_proj.weight"]), config["kv_heads"])
        V = heads(linear(h, W["self_attn.v_proj.weight"]), config["kv_heads"])
        angles_at = positions[:, None]                      # the same angles for every head
        Q, K = rope(Q, angles_at, config["rope_theta"]), rope(K, angles_at, config["rope_theta"])
        Y = grouped_query_attention(Q, K, V, mask).transpose(0, 2, 1, 3).reshape(N, L, -1)
        return linear(Y, W["self_attn.o_proj.weight"])

    x = x + attention(rms_norm(x, W["input_layernorm.weight"], config["eps"]))
    h = rms_norm(x, W["post_attention_layernorm.weight"], config["eps"])
    return x + swiglu_mlp(h, W["mlp.gate_proj.weight"], W["mlp.up_proj.weight"],
                          W["mlp.down_proj.weight"])


def llama_logits(ids, weights, config):
    """The whole causal LM: token ids (N, L) -> next-token logits (N, L, vocab), each position
    seeing itself and the positions before it; the output layer is lm_head, or the embedding
    when the checkpoint has none (tied)."""
    L = ids.shape[1]
    x = weights["model.embed_tokens.weight"][ids]
    positions = np.broadcast_to(np.arange(L), ids.shape)
    causal = np.triu(np.ones((L, L), dtype=bool), k=1)
    for i in range(config["layers"]):
        x = llama_block(x, weights, f"model.layers.{i}.", config, positions, causal)
    x = rms_norm(x, weights["model.norm.weight"], config["eps"])
    return linear(x, weights.get("lm_head.weight", weights["model.embed_tokens.weight"]))

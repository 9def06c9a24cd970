"""The Transformer, as on the slides: layer norm, MLP, residual connection, the block, positional
encoding, and the encoder–decoder.

The encoder–decoder takes the state dict of torch.nn.Transformer (and its layers' names,
self_attn.in_proj_weight, linear1.weight, norm1.weight, ...) and a config with nn.Transformer's
keyword names, so a torch model's weights (as float64 NumPy arrays) plug in directly. Inputs are
batch-first: (N, L, d_model).
"""
import numpy as np
from scipy.special import erf

from reference.attention import linear, multihead_attention, weights_under


def layer_norm(h, gamma, beta, eps=1e-5):
    """Layer normalization (Ba et al., 2016) of each vector h_i over its last axis D.

    μ_i = (1/D) Σ_j h_ij,  σ_i = ((1/D) Σ_j (h_ij − μ_i)² + eps)^½,
    z_i = (h_i − μ_i) / σ_i,  y_i = γ z_i + β.
    The slide's σ_i omits the 1/D; we follow the paper and torch.nn.LayerNorm (biased variance, eps inside).
    """
    mu = h.mean(axis=-1, keepdims=True)
    sigma = np.sqrt(((h - mu) ** 2).mean(axis=-1, keepdims=True) + eps)
    z = (h - mu) / sigma
    return gamma * z + beta


def relu(x):
    return np.maximum(x, 0.0)


def gelu(x):
    """The exact GELU, x Φ(x) (torch's default approximate='none')."""
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


ACTIVATIONS = {"relu": relu, "gelu": gelu}


def activation_fn(name):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def mlp(x, W1, b1, W2, b2, activation="relu"):
    """The MLP applied independently to each vector (weights shared): W2 act(W1 x + b1) + b2.

    x (..., D), W1 (D_hidden, D), W2 (D, D_hidden) in nn.Linear's (out, in) layout.
    """
    return linear(activation_fn(activation)(linear(x, W1, b1)), W2, b2)


def residual(x, sublayer):
    """The residual connection: x + sublayer(x)."""
    return x + sublayer(x)


def post_norm(x, sublayer, norm):
    """x = LN(x + sublayer(x)): the 2017 paper and the slides."""
    return norm(residual(x, sublayer))


def pre_norm(x, sublayer, norm):
    """x = x + sublayer(LN(x)): ViT, CLIP, GPT-2."""
    return residual(x, lambda x: sublayer(norm(x)))


def transformer_block(x, self_attn, feed_forward, norm1, norm2, norm_first=False):
    """The Transformer block: self-attention (the only interaction between vectors), then the MLP,
    each inside a residual connection with a layer norm — after the sum (post-norm, the slides'
    block) or, when norm_first, before the sub-layer (pre-norm).

    x (N, L, D); self_attn, feed_forward, norm1, norm2: functions of (N, L, D) arrays.
    """
    add_and_norm = pre_norm if norm_first else post_norm
    x = add_and_norm(x, self_attn, norm1)
    x = add_and_norm(x, feed_forward, norm2)
    return x


def sinusoidal_positional_encoding(n_positions, d):
    """(n_positions, d): PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d))."""
    pos = np.arange(n_positions)[:, None]
    two_i = np.arange(0, d, 2)
    angle = pos / 10000.0 ** (two_i / d)  # (n_positions, ceil(d/2))
    PE = np.zeros((n_positions, d))
    PE[:, 0::2] = np.sin(angle)
    PE[:, 1::2] = np.cos(angle[:, : d // 2])
    return PE


# nn.Transformer's keyword defaults, for the keys a config leaves out.
TORCH_TRANSFORMER_DEFAULTS = {
    "nhead": 8,
    "num_encoder_layers": 6,
    "num_decoder_layers": 6,
    "activation": "relu",
    "layer_norm_eps": 1e-5,
    "norm_first": False,
}


def _norm(weights, name, config):
    return lambda x: layer_norm(x, weights[f"{name}.weight"], weights[f"{name}.bias"], config["layer_norm_eps"])


def _feed_forward(weights, config):
    return lambda x: mlp(x, weights["linear1.weight"], weights["linear1.bias"],
                         weights["linear2.weight"], weights["linear2.bias"], config["activation"])


def encoder_layer(x, weights, config, src_mask=None, src_key_padding_mask=None):
    """nn.TransformerEncoderLayer(batch_first=True) in eval mode. x (N, L, d_model) -> (N, L, d_model).

    weights: the layer's state dict (self_attn.*, linear1.*, linear2.*, norm1.*, norm2.*).
    """
    config = {**TORCH_TRANSFORMER_DEFAULTS, **config}
    self_attn_weights = weights_under(weights, "self_attn.")

    def self_attn(x):
        return multihead_attention(x, x, x, self_attn_weights, config["nhead"], src_key_padding_mask, src_mask)[0]

    return transformer_block(x, self_attn, _feed_forward(weights, config),
                             _norm(weights, "norm1", config), _norm(weights, "norm2", config), config["norm_first"])


def decoder_layer(x, memory, weights, config, tgt_mask=None, memory_mask=None,
                  tgt_key_padding_mask=None, memory_key_padding_mask=None):
    """nn.TransformerDecoderLayer(batch_first=True) in eval mode: masked self-attention, cross-attention
    to the encoder output `memory`, MLP. x (N, T, d_model), memory (N, S, d_model) -> (N, T, d_model).

    weights: the layer's state dict (self_attn.*, multihead_attn.*, linear1.*, linear2.*, norm1..3.*).
    tgt_mask is what keeps the decoder from looking ahead (e.g. causal_mask(T)).
    """
    config = {**TORCH_TRANSFORMER_DEFAULTS, **config}
    self_attn_weights = weights_under(weights, "self_attn.")
    cross_attn_weights = weights_under(weights, "multihead_attn.")

    def self_attn(x):
        return multihead_attention(x, x, x, self_attn_weights, config["nhead"], tgt_key_padding_mask, tgt_mask)[0]

    def cross_attn(x):
        return multihead_attention(x, memory, memory, cross_attn_weights, config["nhead"],
                                   memory_key_padding_mask, memory_mask)[0]

    add_and_norm = pre_norm if config["norm_first"] else post_norm
    x = add_and_norm(x, self_attn, _norm(weights, "norm1", config))
    x = add_and_norm(x, cross_attn, _norm(weights, "norm2", config))
    x = add_and_norm(x, _feed_forward(weights, config), _norm(weights, "norm3", config))
    return x


def transformer(src, tgt, weights, config, src_mask=None, tgt_mask=None, memory_mask=None,
                src_key_padding_mask=None, tgt_key_padding_mask=None, memory_key_padding_mask=None):
    """nn.Transformer(batch_first=True) in eval mode: the encoder stack reads src, the decoder stack
    reads tgt and attends to the encoder's output. src (N, S, d_model), tgt (N, T, d_model) -> (N, T, d_model).

    weights: nn.Transformer's state dict (encoder.layers.{i}.*, encoder.norm.*, decoder.layers.{i}.*,
    decoder.norm.*); config: nn.Transformer's keywords (nhead, num_encoder_layers, ...).
    """
    config = {**TORCH_TRANSFORMER_DEFAULTS, **config}
    memory = src
    for i in range(config["num_encoder_layers"]):
        memory = encoder_layer(memory, weights_under(weights, f"encoder.layers.{i}."), config,
                               src_mask, src_key_padding_mask)
    memory = _norm(weights, "encoder.norm", config)(memory)

    y = tgt
    for i in range(config["num_decoder_layers"]):
        y = decoder_layer(y, memory, weights_under(weights, f"decoder.layers.{i}."), config,
                          tgt_mask, memory_mask, tgt_key_padding_mask, memory_key_padding_mask)
    return _norm(weights, "decoder.norm", config)(y)

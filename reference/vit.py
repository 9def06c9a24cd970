"""The Vision Transformer, as on the slides "Idea #4: Standard Transformer on Patches".

N input patches, each of shape C×P×P; a linear projection to a D-dimensional vector; a learned class
token; a learned D-dim positional embedding per position; pre-norm Transformer blocks; a final layer
norm; a linear head on the class token.

Weights are named as in the checkpoint files of Hugging Face's ViTModel (embeddings.cls_token,
encoder.layer.{i}.attention.attention.query.weight, ..., layernorm.weight); the config is a dict with
ViTConfig's names (num_hidden_layers, num_attention_heads, hidden_act, layer_norm_eps).
"""
import numpy as np

from reference.attention import linear, multihead_attention, packed_attention_weights, weights_under
from reference.transformer import layer_norm, mlp, transformer_block


def image_to_patches(pixels, P):
    """(B, C, H, W) -> (B, N, C·P·P): N = (H/P)·(W/P) patches in row-major order, each flattened
    channel-major (c, i, j) — the order of a Conv2d weight (D, C, P, P), so the projection below is
    exactly a convolution with kernel = stride = P."""
    B, C, H, W = pixels.shape
    if H % P or W % P:
        raise ValueError(f"image {H}×{W} is not divisible into {P}×{P} patches")
    x = pixels.reshape(B, C, H // P, P, W // P, P)
    x = x.transpose(0, 2, 4, 1, 3, 5)  # (B, rows, cols, C, P, P)
    return x.reshape(B, (H // P) * (W // P), C * P * P)


def patch_embedding(pixels, weight, bias):
    """Linear projection of each patch to a D-dim vector. weight (D, C, P, P), bias (D,) -> (B, N, D)."""
    D, C, P, _ = weight.shape
    return linear(image_to_patches(pixels, P), weight.reshape(D, C * P * P), bias)


def vit_embeddings(pixels, weights):
    """Patch embeddings, the class token in front, plus the learned positional embedding. -> (B, N+1, D)."""
    x = patch_embedding(pixels, weights["embeddings.patch_embeddings.projection.weight"],
                        weights["embeddings.patch_embeddings.projection.bias"])
    B, N, D = x.shape
    cls_token = np.broadcast_to(weights["embeddings.cls_token"], (B, 1, D))
    x = np.concatenate([cls_token, x], axis=1)
    position_embeddings = weights["embeddings.position_embeddings"]  # (1, N+1, D)
    if position_embeddings.shape[1] != N + 1:
        raise ValueError(f"position_embeddings {position_embeddings.shape} do not fit {N} patches + class token")
    return x + position_embeddings


def vit_layer(x, weights, config):
    """One pre-norm block of ViTModel; weights are those under encoder.layer.{i}. x (B, N+1, D)."""
    attention_weights = packed_attention_weights(
        weights, "attention.attention.query", "attention.attention.key", "attention.attention.value",
        "attention.output.dense")
    eps = config["layer_norm_eps"]

    def self_attn(x):
        return multihead_attention(x, x, x, attention_weights, config["num_attention_heads"])[0]

    def feed_forward(x):
        return mlp(x, weights["intermediate.dense.weight"], weights["intermediate.dense.bias"],
                   weights["output.dense.weight"], weights["output.dense.bias"], config["hidden_act"])

    def norm1(x):
        return layer_norm(x, weights["layernorm_before.weight"], weights["layernorm_before.bias"], eps)

    def norm2(x):
        return layer_norm(x, weights["layernorm_after.weight"], weights["layernorm_after.bias"], eps)

    return transformer_block(x, self_attn, feed_forward, norm1, norm2, norm_first=True)


def vit_last_hidden_state(pixels, weights, config):
    """What ViTModel(pixels).last_hidden_state returns: pixels (B, C, H, W) -> (B, N+1, D),
    the class token first."""
    x = vit_embeddings(pixels, weights)
    for i in range(config["num_hidden_layers"]):
        x = vit_layer(x, weights_under(weights, f"encoder.layer.{i}."), config)
    return layer_norm(x, weights["layernorm.weight"], weights["layernorm.bias"], config["layer_norm_eps"])


def classification_head(last_hidden_state, weight, bias):
    """The head on the class token (ViTForImageClassification's classifier): (B, N+1, D) -> (B, classes)."""
    return linear(last_hidden_state[:, 0], weight, bias)

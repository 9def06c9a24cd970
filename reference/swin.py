"""The Swin Transformer, as on the slides "Hierarchical ViT: Swin Transformer" ... "Shifted Window Attention".

Attention only within M×M windows of tokens; windows shifted by ⌊M/2⌋ in every second block so that
neighbouring windows talk; a relative position bias instead of ViT's absolute positions; patch
merging (2×2 neighbours concatenated, 4C -> 2C) between stages.

Weights are named as in the checkpoint files of Hugging Face's SwinModel
(embeddings.patch_embeddings.projection.weight, encoder.layers.{i}.blocks.{j}.attention.self.query.weight,
..., encoder.layers.{i}.downsample.reduction.weight, layernorm.weight); the config is a dict with
SwinConfig's names (depths, num_heads, window_size, hidden_act, layer_norm_eps). Details that follow
Hugging Face (and the original code): feature maps are padded with zeros at the bottom/right to a
multiple of the window, and a stage whose feature map is no bigger than the window uses one window
of that size, unshifted.

Swin-V2 (the slide "Other Hierarchical Vision Transformers"; Liu et al., "Swin Transformer V2:
Scaling up Capacity and Resolution", CVPR 2022) keeps the windows and changes three things, each
a function below beside the V1 one it replaces:
  - scaled cosine attention: Sim(q_i, k_j) = cos(q_i, k_j) / τ + B_ij, with a learned τ ≥ 0.01 per
    head (the checkpoint holds logit_scale = log(1/τ)), instead of q·k / √d (cosine_attention);
  - log-spaced continuous position bias: B = 16·σ(MLP(Δ̂)) of the log-spaced offsets
    Δ̂ = sign(Δ)·log2(1 + |Δ|), instead of a learned table (continuous_position_bias);
  - residual post-norm: x + LN(attention(x)), x + LN(MLP(x)) (swinv2_block),
and its patch merging normalises after the reduction (patch_merging_v2). Checkpoint names are
those of Hugging Face's Swinv2Model; a config with pretrained_window_sizes is a Swin-V2 config.
"""
import math

import numpy as np

from reference.attention import linear, multihead_attention, packed_attention_weights, softmax, weights_under
from reference.transformer import layer_norm, mlp, relu, residual, transformer_block
from reference.vit import patch_embedding

# nn.LayerNorm's default eps, which Swin's embeddings.norm and downsample.norm keep (not config's).
DEFAULT_LAYER_NORM_EPS = 1e-5


def global_attention_entries(H, W):
    """Entries of one attention matrix over an H×W grid of tokens: (HW)² = H²W², quadratic in image size.
    A 224×224 image in 4×4 patches is a 56×56 grid: 56⁴ = 9,834,496 ≈ 9.8M."""
    return (H * W) ** 2


def window_attention_entries(H, W, M):
    """Entries of all window attention matrices: M⁴ per window times (H/M)(W/M) windows = M²HW,
    linear in image size for fixed M."""
    return M**4 * (H // M) * (W // M)


def window_partition(x, M):
    """(B, H, W, C) -> (B·(H/M)·(W/M), M, M, C): the M×M windows, batch-major, then row-major."""
    B, H, W, C = x.shape
    x = x.reshape(B, H // M, M, W // M, M, C)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, M, M, C)


def window_reverse(windows, M, H, W):
    """The inverse of window_partition: (B·(H/M)·(W/M), M, M, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    x = windows.reshape(-1, H // M, W // M, M, M, C)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)


def relative_position_index(M):
    """(M², M²) indices into a (2M−1)² table: entry (i, j) encodes the offset of token i from token j
    of the same window, (Δrow, Δcol) = coords_i − coords_j each in [−(M−1), M−1], flattened
    row-major (as the Swin paper's code and Hugging Face)."""
    rows, cols = np.meshgrid(np.arange(M), np.arange(M), indexing="ij")
    coords = np.stack([rows.ravel(), cols.ravel()])  # (2, M²): each token's (row, col)
    delta = coords[:, :, None] - coords[:, None, :]  # (2, M², M²)
    return (delta[0] + M - 1) * (2 * M - 1) + (delta[1] + M - 1)


def shift_mask(H, W, M, shift):
    """(windows, M², M²): 0 for two tokens of a window that were neighbours before the cyclic shift,
    −100 for tokens that only meet because the shift wrapped the image around.

    After rolling by −shift, each axis has three regions, [0, H−M), [H−M, H−shift), [H−shift, H);
    tokens from different regions (of the 3×3) must not attend to each other.
    """
    region = np.zeros((H, W))
    bands = (slice(0, -M), slice(-M, -shift), slice(-shift, None))
    for i, rows in enumerate(bands):
        for j, cols in enumerate(bands):
            region[rows, cols] = 3 * i + j
    region_windows = window_partition(region[None, :, :, None], M).reshape(-1, M * M)
    different = region_windows[:, :, None] != region_windows[:, None, :]
    return np.where(different, -100.0, 0.0)


def window_and_shift(resolution, window_size, block_index):
    """Swin's window M and shift (⌊M/2⌋ in odd blocks). A feature map no bigger than the window is a
    single window of its own size, not shifted."""
    if min(resolution) <= window_size:
        return min(resolution), 0
    return window_size, window_size // 2 if block_index % 2 else 0


def in_shifted_windows(x, resolution, M, shift, bias, attend):
    """Pad to whole windows, roll by −shift, attend within each M×M window, then undo all three.

    x (B, H·W, C) -> same. bias (heads, M², M²): the position bias, to which the shift mask is
    added; attend(windows (B·windows, M², C), mask (B·windows, heads, M², M²)) -> the windows.
    """
    B, _, C = x.shape
    H, W = resolution
    x = x.reshape(B, H, W, C)
    pad_H, pad_W = -H % M, -W % M
    x = np.pad(x, ((0, 0), (0, pad_H), (0, pad_W), (0, 0)))
    H_pad, W_pad = H + pad_H, W + pad_W
    x = np.roll(x, (-shift, -shift), axis=(1, 2))
    windows = window_partition(x, M).reshape(-1, M * M, C)  # (B·windows, M², C)

    mask = bias[None]  # (1, heads, M², M²)
    if shift:
        mask = mask + shift_mask(H_pad, W_pad, M, shift)[:, None]  # (windows, heads, M², M²)
    mask = np.broadcast_to(mask[None], (B, len(windows) // B, *bias.shape))
    y = attend(windows, mask.reshape(len(windows), *bias.shape))

    y = window_reverse(y.reshape(-1, M, M, C), M, H_pad, W_pad)
    y = np.roll(y, (shift, shift), axis=(1, 2))[:, :H, :W]
    return y.reshape(B, H * W, C)


def window_attention(x, resolution, weights, num_heads, M, shift):
    """(Shifted-)window multi-head self-attention with relative position bias. x (B, H·W, C) -> same.

    weights: the block's weights under attention. (self.query/key/value, self.relative_position_bias_table,
    output.dense).
    """
    table = weights["self.relative_position_bias_table"]  # ((2M−1)², heads)
    if table.shape[0] != (2 * M - 1) ** 2:
        raise ValueError(f"relative_position_bias_table {table.shape} does not fit window {M}: "
                         f"expected {(2 * M - 1) ** 2} rows")
    bias = table[relative_position_index(M)].transpose(2, 0, 1)  # (heads, M², M²)
    attention = packed_attention_weights(weights, "self.query", "self.key", "self.value", "output.dense")

    def attend(windows, mask):
        y, _ = multihead_attention(windows, windows, windows, attention, num_heads,
                                   attn_mask=mask.reshape(-1, M * M, M * M))
        return y

    return in_shifted_windows(x, resolution, M, shift, bias, attend)


def log_spaced_coordinates(M, pretrained_M=0):
    """((2M−1)², 2): every offset (Δrow, Δcol) of two tokens of an M×M window, in the order of the
    V1 table's rows, scaled to [−8, 8] (by the pre-training window when it is given, so that a
    larger window at fine-tuning reaches further out) and log-spaced: Δ̂ = sign(Δ)·log2(1 + |Δ|)/log2(8).
    Computed in float32, as the paper's code and Hugging Face do (whatever the model's dtype)."""
    offsets = np.arange(-(M - 1), M, dtype=np.float32)
    rows, cols = np.meshgrid(offsets, offsets, indexing="ij")
    delta = np.stack([rows.ravel(), cols.ravel()], axis=1)
    span = pretrained_M - 1 if pretrained_M > 0 else max(M - 1, 1)
    delta = delta / np.float32(span) * np.float32(8)
    return (np.sign(delta) * np.log2(np.abs(delta) + 1) / np.float32(math.log2(8))).astype(np.float64)


def continuous_position_bias(weights, M, pretrained_M=0):
    """Swin-V2's B: (heads, M², M²) = 16·σ(MLP(Δ̂)) for the offset of each pair of tokens, the MLP
    being linear 2 -> 512, ReLU, linear 512 -> heads (no bias), under self.continuous_position_bias_mlp."""
    hidden = relu(linear(log_spaced_coordinates(M, pretrained_M),
                         weights["self.continuous_position_bias_mlp.0.weight"],
                         weights["self.continuous_position_bias_mlp.0.bias"]))
    table = linear(hidden, weights["self.continuous_position_bias_mlp.2.weight"])  # ((2M−1)², heads)
    sigmoid = 1 / (1 + np.exp(-table))
    return 16 * sigmoid[relative_position_index(M)].transpose(2, 0, 1)


def cosine_attention(windows, weights, num_heads, mask):
    """Swin-V2's scaled cosine attention over each window: A = softmax(cos(q_i, k_j)/τ + mask) per
    head, 1/τ = exp(logit_scale) clamped at 100 (τ ≥ 0.01). The key projection has no bias.
    windows (N, L, C), mask (N, heads, L, L) -> (N, L, C)."""
    N, L, C = windows.shape

    def heads(t):  # (N, L, C) -> (N, heads, L, C/heads), each row scaled to length 1
        t = t.reshape(N, L, num_heads, C // num_heads).transpose(0, 2, 1, 3)
        return t / np.maximum(np.linalg.norm(t, axis=-1, keepdims=True), 1e-12)

    q = heads(linear(windows, weights["self.query.weight"], weights.get("self.query.bias")))
    k = heads(linear(windows, weights["self.key.weight"]))
    v = linear(windows, weights["self.value.weight"], weights.get("self.value.bias"))
    v = v.reshape(N, L, num_heads, C // num_heads).transpose(0, 2, 1, 3)
    inverse_tau = np.exp(np.minimum(weights["self.logit_scale"], math.log(1 / 0.01)))  # (heads, 1, 1)
    A = softmax(q @ k.transpose(0, 1, 3, 2) * inverse_tau + mask)
    y = (A @ v).transpose(0, 2, 1, 3).reshape(N, L, C)
    return linear(y, weights["output.dense.weight"], weights["output.dense.bias"])


def window_attention_v2(x, resolution, weights, num_heads, M, shift, pretrained_M=0):
    """Swin-V2's (shifted-)window attention: cosine attention plus the continuous position bias."""
    bias = continuous_position_bias(weights, M, pretrained_M)
    return in_shifted_windows(x, resolution, M, shift, bias,
                              lambda windows, mask: cosine_attention(windows, weights, num_heads, mask))


def swin_block(x, resolution, weights, num_heads, M, shift, config):
    """One pre-norm Swin block (SwinLayer); weights are those under encoder.layers.{i}.blocks.{j}."""
    eps = config["layer_norm_eps"]
    attention_weights = weights_under(weights, "attention.")

    def self_attn(x):
        return window_attention(x, resolution, attention_weights, num_heads, M, shift)

    def feed_forward(x):
        return mlp(x, weights["intermediate.dense.weight"], weights["intermediate.dense.bias"],
                   weights["output.dense.weight"], weights["output.dense.bias"], config["hidden_act"])

    def norm1(x):
        return layer_norm(x, weights["layernorm_before.weight"], weights["layernorm_before.bias"], eps)

    def norm2(x):
        return layer_norm(x, weights["layernorm_after.weight"], weights["layernorm_after.bias"], eps)

    return transformer_block(x, self_attn, feed_forward, norm1, norm2, norm_first=True)


def swinv2_block(x, resolution, weights, num_heads, M, shift, config, pretrained_M=0):
    """One Swin-V2 block (Swinv2Layer): residual post-norm, x + LN(attention(x)), then x + LN(MLP(x)).
    (Hugging Face keeps V1's names: layernorm_before is the norm after the attention.)"""
    eps = config["layer_norm_eps"]
    attention_weights = weights_under(weights, "attention.")
    x = residual(x, lambda x: layer_norm(
        window_attention_v2(x, resolution, attention_weights, num_heads, M, shift, pretrained_M),
        weights["layernorm_before.weight"], weights["layernorm_before.bias"], eps))
    return residual(x, lambda x: layer_norm(
        mlp(x, weights["intermediate.dense.weight"], weights["intermediate.dense.bias"],
            weights["output.dense.weight"], weights["output.dense.bias"], config["hidden_act"]),
        weights["layernorm_after.weight"], weights["layernorm_after.bias"], eps))


def merge_neighbours(x, resolution):
    """Concatenate each 2×2 group of neighbours, in the order (0,0), (1,0), (0,1), (1,1):
    x (B, H·W, C) -> (B, ⌈H/2⌉·⌈W/2⌉, 4C). An odd side is padded with zeros first."""
    B, _, C = x.shape
    H, W = resolution
    x = x.reshape(B, H, W, C)
    x = np.pad(x, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)))
    x = np.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
    return x.reshape(B, -1, 4 * C)


def patch_merging(x, resolution, weights):
    """merge_neighbours, layer-norm over the 4C channels, and project 4C -> 2C with a bias-free
    linear. x (B, H·W, C) -> (B, ⌈H/2⌉·⌈W/2⌉, 2C)."""
    x = layer_norm(merge_neighbours(x, resolution), weights["norm.weight"], weights["norm.bias"],
                   DEFAULT_LAYER_NORM_EPS)
    return linear(x, weights["reduction.weight"])


def patch_merging_v2(x, resolution, weights):
    """Swin-V2's patch merging: merge_neighbours, project 4C -> 2C, then layer-norm the 2C channels."""
    x = linear(merge_neighbours(x, resolution), weights["reduction.weight"])
    return layer_norm(x, weights["norm.weight"], weights["norm.bias"], DEFAULT_LAYER_NORM_EPS)


def swin_embeddings(pixels, weights):
    """Patch embedding (the image padded at the bottom/right to a multiple of the patch size), layer
    norm, and the absolute position embedding when the model has one. -> (B, H·W, C), (H, W)."""
    projection = weights["embeddings.patch_embeddings.projection.weight"]
    P = projection.shape[-1]
    height, width = pixels.shape[-2:]
    pixels = np.pad(pixels, ((0, 0), (0, 0), (0, -height % P), (0, -width % P)))
    x = patch_embedding(pixels, projection, weights["embeddings.patch_embeddings.projection.bias"])
    x = layer_norm(x, weights["embeddings.norm.weight"], weights["embeddings.norm.bias"], DEFAULT_LAYER_NORM_EPS)
    if "embeddings.position_embeddings" in weights:
        x = x + weights["embeddings.position_embeddings"]
    return x, (pixels.shape[-2] // P, pixels.shape[-1] // P)


def swin_last_hidden_state(pixels, weights, config):
    """What SwinModel(pixels).last_hidden_state returns (Swinv2Model's for a config with
    pretrained_window_sizes): pixels (B, C, H, W) -> (B, tokens of the last stage, channels of the
    last stage)."""
    v2 = "pretrained_window_sizes" in config
    x, resolution = swin_embeddings(pixels, weights)
    for i, (depth, num_heads) in enumerate(zip(config["depths"], config["num_heads"])):
        stage = weights_under(weights, f"encoder.layers.{i}.")
        for j in range(depth):
            M, shift = window_and_shift(resolution, config["window_size"], j)
            block = weights_under(stage, f"blocks.{j}.")
            if v2:
                x = swinv2_block(x, resolution, block, num_heads, M, shift, config,
                                 config["pretrained_window_sizes"][i])
            else:
                x = swin_block(x, resolution, block, num_heads, M, shift, config)
        if "downsample.reduction.weight" in stage:
            merge = patch_merging_v2 if v2 else patch_merging
            x = merge(x, resolution, weights_under(stage, "downsample."))
            resolution = ((resolution[0] + 1) // 2, (resolution[1] + 1) // 2)
    return layer_norm(x, weights["layernorm.weight"], weights["layernorm.bias"], config["layer_norm_eps"])

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
"""
import numpy as np

from reference.attention import linear, multihead_attention, packed_attention_weights, weights_under
from reference.transformer import layer_norm, mlp, transformer_block
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


def window_attention(x, resolution, weights, num_heads, M, shift):
    """(Shifted-)window multi-head self-attention with relative position bias. x (B, H·W, C) -> same.

    weights: the block's weights under attention. (self.query/key/value, self.relative_position_bias_table,
    output.dense).
    """
    B, _, C = x.shape
    H, W = resolution
    table = weights["self.relative_position_bias_table"]  # ((2M−1)², heads)
    if table.shape[0] != (2 * M - 1) ** 2:
        raise ValueError(f"relative_position_bias_table {table.shape} does not fit window {M}: "
                         f"expected {(2 * M - 1) ** 2} rows")

    x = x.reshape(B, H, W, C)
    pad_H, pad_W = -H % M, -W % M
    x = np.pad(x, ((0, 0), (0, pad_H), (0, pad_W), (0, 0)))
    H_pad, W_pad = H + pad_H, W + pad_W
    x = np.roll(x, (-shift, -shift), axis=(1, 2))
    windows = window_partition(x, M).reshape(-1, M * M, C)  # (B·windows, M², C)

    bias = table[relative_position_index(M)].transpose(2, 0, 1)  # (heads, M², M²)
    mask = bias[None]  # (1, heads, M², M²)
    if shift:
        mask = mask + shift_mask(H_pad, W_pad, M, shift)[:, None]  # (windows, heads, M², M²)
    mask = np.broadcast_to(mask[None], (B, len(windows) // B, num_heads, M * M, M * M))

    attention = packed_attention_weights(weights, "self.query", "self.key", "self.value", "output.dense")
    y, _ = multihead_attention(windows, windows, windows, attention, num_heads,
                               attn_mask=mask.reshape(-1, M * M, M * M))

    y = window_reverse(y.reshape(-1, M, M, C), M, H_pad, W_pad)
    y = np.roll(y, (shift, shift), axis=(1, 2))[:, :H, :W]
    return y.reshape(B, H * W, C)


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


def patch_merging(x, resolution, weights):
    """Concatenate each 2×2 group of neighbours, in the order (0,0), (1,0), (0,1), (1,1), layer-norm
    over the 4C channels, and project 4C -> 2C with a bias-free linear. x (B, H·W, C) -> (B, ⌈H/2⌉·⌈W/2⌉, 2C).
    An odd side is padded with zeros first."""
    B, _, C = x.shape
    H, W = resolution
    x = x.reshape(B, H, W, C)
    x = np.pad(x, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)))
    x = np.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
    x = x.reshape(B, -1, 4 * C)
    x = layer_norm(x, weights["norm.weight"], weights["norm.bias"], DEFAULT_LAYER_NORM_EPS)
    return linear(x, weights["reduction.weight"])


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
    """What SwinModel(pixels).last_hidden_state returns: pixels (B, C, H, W) -> (B, tokens of the last
    stage, channels of the last stage)."""
    x, resolution = swin_embeddings(pixels, weights)
    for i, (depth, num_heads) in enumerate(zip(config["depths"], config["num_heads"])):
        stage = weights_under(weights, f"encoder.layers.{i}.")
        for j in range(depth):
            M, shift = window_and_shift(resolution, config["window_size"], j)
            x = swin_block(x, resolution, weights_under(stage, f"blocks.{j}."), num_heads, M, shift, config)
        if "downsample.reduction.weight" in stage:
            x = patch_merging(x, resolution, weights_under(stage, "downsample."))
            resolution = ((resolution[0] + 1) // 2, (resolution[1] + 1) // 2)
    return layer_norm(x, weights["layernorm.weight"], weights["layernorm.bias"], config["layer_norm_eps"])

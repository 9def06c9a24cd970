"""The Swin Transformer (Liu et al., 2021): a hierarchical ViT with shifted-window attention.

As on the slides "Hierarchical ViT: Swin Transformer": 4×4 patches embedded to C channels; stages of
blocks whose attention stays inside M×M windows (linear, not quadratic, in image size), the windows
cyclically shifted by ⌊M/2⌋ in every second block so that neighbouring windows exchange
information, a learned relative position bias instead of absolute positions; patch merging
(2×2 neighbours concatenated, 4C -> 2C) between stages; a head on the mean token.

    model = SwinTransformer(swin_t())
    features = model.forward_features(pixels)   # (B, tokens, 8C) = HF SwinModel's last_hidden_state
    logits = model(pixels)                      # (B, num_classes)

Details follow Hugging Face's SwinModel (and the original code): the image and the feature maps
are padded with zeros at the bottom/right to a multiple of the patch, the window and 2; the
padded tokens are not masked. A feature map no bigger than the window (side ≤ M) is one window of
its own size, unshifted. The relative position bias is looked up by (Δrow, Δcol) in the
(2M−1)² table, so a smaller window uses the table's centre (HF fails there; the original code
builds a smaller table).
"""
import dataclasses

from .. import functional as F
from .. import nn
from ..autograd import Parameter, Tensor, empty
from ..backend import xp_of
from .vit import PatchEmbedding, ViTAttention, activation, init_linear_layers

# nn.LayerNorm's default eps, which the patch-embedding and patch-merging norms keep whatever the
# config says (as in Hugging Face's SwinModel).
DEFAULT_LAYER_NORM_EPS = 1e-5
SHIFT_MASK_VALUE = -100.0  # added to the scores of token pairs the cyclic shift made neighbours


@dataclasses.dataclass
class SwinConfig:
    """Hyperparameters, with Hugging Face SwinConfig's names; the defaults are Swin-T at 224."""
    image_size: int = 224
    patch_size: int = 4
    num_channels: int = 3
    embed_dim: int = 96
    depths: tuple = (2, 2, 6, 2)
    num_heads: tuple = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    num_classes: int = 1000  # 0: no head, model(pixels) returns the mean token

    def __post_init__(self):
        self.depths, self.num_heads = tuple(self.depths), tuple(self.num_heads)
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"SwinConfig: depths {self.depths} and num_heads {self.num_heads} "
                             f"must have one entry per stage")
        activation(self.hidden_act)

    def stage_dim(self, stage):
        """Channels in stage `stage` (0-based): C, 2C, 4C, ..."""
        return self.embed_dim * 2 ** stage


def swin_t(**overrides):
    """Swin-T: C = 96, depths 2-2-6-2, heads 3-6-12-24, window 7; 28,288,354 parameters with a
    1000-class head."""
    return SwinConfig(**overrides)


def window_and_shift(resolution, window_size, block_index):
    """The window side and the shift of block `block_index` on a (H, W) feature map: ⌊M/2⌋ in
    odd blocks; a map no bigger than the window is one unshifted window of its own size."""
    if min(resolution) <= window_size:
        return min(resolution), 0
    return window_size, window_size // 2 if block_index % 2 else 0


def window_partition(x, window):
    """(B, H, W, C) -> (B, windows, window², C), the windows in row-major order."""
    B, H, W, C = x.shape
    x = x.reshape(B, H // window, window, W // window, window, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, (H // window) * (W // window), window * window, C)


def window_merge(windows, window, H, W):
    """The inverse of window_partition: (B, windows, window², C) -> (B, H, W, C)."""
    B, C = windows.shape[0], windows.shape[-1]
    x = windows.reshape(B, H // window, W // window, window, window, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, C)


def relative_position_index(window, table_window, xp):
    """(window², window²) rows of the ((2·table_window − 1)², heads) bias table: entry (i, j) is
    the row of (Δrow, Δcol) = position of token i − position of token j, each in
    [−(window−1), window−1], row-major in a (2·table_window − 1)² grid."""
    rows, cols = xp.meshgrid(xp.arange(window), xp.arange(window), indexing="ij")
    coords = xp.stack([rows.reshape(-1), cols.reshape(-1)])  # (2, window²)
    delta = coords[:, :, None] - coords[:, None, :] + (table_window - 1)  # shifted to >= 0
    return delta[0] * (2 * table_window - 1) + delta[1]


def shift_mask(H, W, window, shift, xp, dtype):
    """(windows, window², window²): 0 for token pairs that were neighbours before the cyclic shift
    by −shift, −100 for pairs the shift brought together from opposite edges.

    After the roll each axis has three regions, [0, H−window), [H−window, H−shift), [H−shift, H);
    a token's region label is 3·row_region + col_region, and different labels must not attend."""
    def regions(n):
        index = xp.arange(n)
        return (index >= n - window).astype("int64") + (index >= n - shift).astype("int64")

    labels = (3 * regions(H)[:, None] + regions(W)[None, :]).reshape(1, H, W, 1)
    labels = window_partition(Tensor(labels), window).array.reshape(-1, window * window)
    different = labels[:, :, None] != labels[:, None, :]
    return xp.where(different, dtype.type(SHIFT_MASK_VALUE), dtype.type(0))


class WindowAttention(ViTAttention):
    """Multi-head self-attention inside each window, plus a learned bias per head for each relative
    offset (Δrow, Δcol) of two tokens, from a ((2M−1)², heads) table.
    (B, windows, window², C) -> same."""

    def __init__(self, dim, num_heads, window_size, qkv_bias=True):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias)
        self.window_size = window_size
        self.relative_position_bias_table = Parameter(empty((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self, window):
        """(heads, window², window²): the table's row for each pair of tokens of a window."""
        table = self.relative_position_bias_table
        index = relative_position_index(window, self.window_size, xp_of(table.array))
        return table[index].permute(2, 0, 1)

    def forward(self, windows, window, mask=None):
        """windows (B, windows, window², C); mask: None or (windows, window², window²), added to
        every head's scores."""
        bias = self.relative_position_bias(window)
        if mask is not None:
            bias = bias + Tensor(mask[:, None])  # (windows, heads, window², window²)
        return super().forward(windows, attn_mask=bias)


class SwinBlock(nn.Module):
    """A pre-norm block whose attention is (shifted-)window attention. (B, H·W, C) -> same."""

    def __init__(self, config, dim, num_heads, block_index):
        super().__init__()
        self.window_size, self.block_index = config.window_size, block_index
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attn = WindowAttention(dim, num_heads, config.window_size, qkv_bias=config.qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = nn.MLP(dim, int(config.mlp_ratio * dim),
                          activation=activation(config.hidden_act))

    def window_attention(self, x, resolution):
        """Pad to whole windows, roll by −shift, attend within windows, then undo all three."""
        B, _, C = x.shape
        H, W = resolution
        window, shift = window_and_shift(resolution, self.window_size, self.block_index)
        pad_H, pad_W = -H % window, -W % window
        x = F.pad(x.reshape(B, H, W, C), (0, 0, 0, pad_W, 0, pad_H))
        mask = None
        if shift:
            x = F.roll(x, (-shift, -shift), dims=(1, 2))
            mask = shift_mask(H + pad_H, W + pad_W, window, shift, xp_of(x.array), x.dtype)
        windows = self.attn(window_partition(x, window), window, mask)
        x = window_merge(windows, window, H + pad_H, W + pad_W)
        if shift:
            x = F.roll(x, (shift, shift), dims=(1, 2))
        return x[:, :H, :W].reshape(B, H * W, C)

    def forward(self, x, resolution):
        x = x + self.window_attention(self.norm1(x), resolution)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """Concatenate each 2×2 group of neighbours in the order (0,0), (1,0), (0,1), (1,1) (row, col),
    layer-norm the 4C channels and project them to 2C without bias.
    (B, H·W, C) -> (B, ⌈H/2⌉·⌈W/2⌉, 2C); an odd side is padded with zeros first."""

    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=DEFAULT_LAYER_NORM_EPS)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x, resolution):
        B, _, C = x.shape
        H, W = resolution
        x = F.pad(x.reshape(B, H, W, C), (0, 0, 0, W % 2, 0, H % 2))
        h, w = (H + 1) // 2, (W + 1) // 2
        x = x.reshape(B, h, 2, w, 2, C).permute(0, 1, 3, 4, 2, 5)  # (B, h, w, col, row, C)
        return self.reduction(self.norm(x.reshape(B, h * w, 4 * C)))


class SwinStage(nn.Module):
    """`depth` Swin blocks (shifted in every second one), then patch merging unless last."""

    def __init__(self, config, stage):
        super().__init__()
        dim, heads = config.stage_dim(stage), config.num_heads[stage]
        self.blocks = nn.ModuleList(SwinBlock(config, dim, heads, block_index=j)
                                    for j in range(config.depths[stage]))
        last = stage == len(config.depths) - 1
        self.downsample = None if last else PatchMerging(dim)

    def forward(self, x, resolution):
        """(B, H·W, C), (H, W) -> the next stage's input and resolution."""
        for block in self.blocks:
            x = block(x, resolution)
        if self.downsample is None:
            return x, resolution
        return self.downsample(x, resolution), ((resolution[0] + 1) // 2, (resolution[1] + 1) // 2)


class SwinTransformer(nn.Module):
    """pixels (B, C, H, W) -> logits (B, num_classes) (or the mean token if num_classes=0)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbedding(config.num_channels, config.embed_dim, config.patch_size)
        self.patch_norm = nn.LayerNorm(config.embed_dim, eps=DEFAULT_LAYER_NORM_EPS)
        self.stages = nn.ModuleList(SwinStage(config, i) for i in range(len(config.depths)))
        final_dim = config.stage_dim(len(config.depths) - 1)
        self.norm = nn.LayerNorm(final_dim, eps=config.layer_norm_eps)
        self.head = nn.Linear(final_dim, config.num_classes) if config.num_classes \
            else nn.Identity()
        init_linear_layers(self)

    def forward_features(self, pixels):
        """(B, C, H, W) -> (B, tokens, channels) of the last stage after the final layer norm
        (HF SwinModel's last_hidden_state). H and W need not be multiples of the patch size."""
        P = self.config.patch_size
        pixels = F.pad(pixels, (0, -pixels.shape[3] % P, 0, -pixels.shape[2] % P))
        x = self.patch_norm(self.patch_embed(pixels))
        resolution = (pixels.shape[2] // P, pixels.shape[3] // P)
        for stage in self.stages:
            x, resolution = stage(x, resolution)
        return self.norm(x)

    def forward(self, pixels):
        return self.head(self.forward_features(pixels).mean(dim=1))

"""The Vision Transformer (Dosovitskiy et al., 2021): a standard Transformer on image patches.

As on the slides "Idea #4": cut the image into N patches of C×P×P, project each linearly to a
D-dim vector, put a learned class token in front, add a learned D-dim positional embedding per
position, run pre-norm Transformer blocks, layer-norm, and classify from the class token.

    model = ViT(vit_b16(num_classes=10))
    features = model.forward_features(pixels)   # (B, 1 + N, D) = HF ViTModel's last_hidden_state
    logits = model(pixels)                      # (B, num_classes)

`PatchEmbedding`, `ViTAttention`, `activation` and `init_linear_layers` are shared with the Swin
Transformer (swin.py).
"""
import dataclasses
import functools

from .. import functional as F
from .. import nn
from ..autograd import Parameter, Tensor, empty
from ..backend import scatter_add, xp_of

ACTIVATIONS = {  # Hugging Face's hidden_act names
    "gelu": nn.GELU,
    "gelu_new": functools.partial(nn.GELU, approximate="tanh"),
    "gelu_pytorch_tanh": functools.partial(nn.GELU, approximate="tanh"),
    "quick_gelu": nn.QuickGELU,
    "relu": nn.ReLU,
}


def activation(name):
    """The activation Module class for a Hugging Face `hidden_act` name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown hidden_act {name!r}; supported: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


@dataclasses.dataclass
class ViTConfig:
    """Hyperparameters, with Hugging Face ViTConfig's names; the defaults are ViT-B/16 at 224."""
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    qkv_bias: bool = True
    num_classes: int = 1000  # 0: no head, model(pixels) returns the final class token

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"ViTConfig: image_size {self.image_size} is not a multiple of "
                             f"patch_size {self.patch_size}")
        activation(self.hidden_act)


def vit_b16(**overrides):
    """ViT-Base/16: 12 layers of width 768; 86,567,656 parameters with a 1000-class head."""
    return ViTConfig(**overrides)


def vit_b32(**overrides):
    """ViT-Base/32: as B/16 with 32×32 patches; 88,224,232 parameters with a 1000-class head."""
    return ViTConfig(**{"patch_size": 32, **overrides})


def vit_l16(**overrides):
    """ViT-Large/16: 24 layers of width 1024, 16 heads, MLP 4096; 304,326,632 parameters with a
    1000-class head."""
    return ViTConfig(**{"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                        "intermediate_size": 4096, **overrides})


def init_linear_layers(module, std=0.02):
    """Weights of the Linear layers ~ truncated N(0, std²), biases 0 (as HF ViT and timm)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.trunc_normal_(layer.weight, std=std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class PatchEmbedding(nn.Module):
    """Cut (B, C, H, W) into non-overlapping P×P patches, row-major, and project each to D:
    -> (B, (H/P)·(W/P), D).

    The weight has Conv2d's shape (D, C, P, P): a convolution with kernel = stride = P is exactly
    this reshape followed by one linear map of the C·P·P patch values."""

    def __init__(self, in_channels, dim, patch_size):
        super().__init__()
        self.in_channels, self.dim, self.patch_size = in_channels, dim, patch_size
        self.weight = Parameter(empty(dim, in_channels, patch_size, patch_size))
        self.bias = Parameter(empty(dim))
        nn.init.trunc_normal_(self.weight, std=0.02)
        nn.init.zeros_(self.bias)

    def forward(self, pixels):
        B, C, H, W = pixels.shape
        P = self.patch_size
        if C != self.in_channels or H % P or W % P:
            raise ValueError(f"{self!r}: expected images (B, {self.in_channels}, H, W) with H "
                             f"and W multiples of {P}, got shape {tuple(pixels.shape)}")
        patches = pixels.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(B, (H // P) * (W // P), C * P * P)  # each patch (c, i, j)-major
        return F.linear(patches, self.weight.reshape(self.dim, C * P * P), self.bias)

    def extra_repr(self):
        return f"{self.in_channels}, {self.dim}, patch_size={self.patch_size}"


class ViTAttention(nn.Module):
    """Multi-head self-attention over the tokens of x (..., N, D) -> (..., N, D).

    q, k, v project to D = heads × head_dim; each head attends with softmax(q kᵀ/√head_dim + mask);
    proj mixes the concatenated heads. Leading dims are batch dims (Swin passes windows there)."""

    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"ViTAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, attn_mask=None):
        """attn_mask: a float mask broadcastable to (..., heads, N, N), added to the scores."""
        *batch, N, D = x.shape

        def split_heads(t):  # (..., N, D) -> (..., heads, N, head_dim)
            return t.reshape(*batch, N, self.num_heads, self.head_dim).transpose(-3, -2)

        y = F.scaled_dot_product_attention(split_heads(self.q(x)), split_heads(self.k(x)),
                                           split_heads(self.v(x)), attn_mask=attn_mask)
        return self.proj(y.transpose(-3, -2).reshape(*batch, N, D))


class Block(nn.Module):
    """The pre-norm Transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)). (B, N, D)."""

    def __init__(self, config):
        super().__init__()
        D, eps = config.hidden_size, config.layer_norm_eps
        self.norm1 = nn.LayerNorm(D, eps=eps)
        self.attn = ViTAttention(D, config.num_attention_heads, qkv_bias=config.qkv_bias)
        self.norm2 = nn.LayerNorm(D, eps=eps)
        self.mlp = nn.MLP(D, config.intermediate_size, activation=activation(config.hidden_act))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def bicubic_matrix(size_in, size_out, like):
    """(size_out, size_in) matrix A such that A @ v resamples v as torch's
    interpolate(mode="bicubic", align_corners=False): the cubic convolution kernel with a = −0.75,
    sampled at (i + ½)·size_in/size_out − ½, indices past the edges clamped to the edge."""
    xp = xp_of(like)
    a = -0.75
    source = (xp.arange(size_out, dtype="float64") + 0.5) * (size_in / size_out) - 0.5
    left = xp.floor(source)
    t = source - left
    distances = xp.stack([1 + t, t, 1 - t, 2 - t], axis=1)  # to the 4 neighbours left-1 .. left+2
    near = ((a + 2) * distances - (a + 3)) * distances ** 2 + 1      # |d| <= 1
    far = ((a * distances - 5 * a) * distances + 8 * a) * distances - 4 * a  # 1 < |d| < 2
    weights = xp.where(distances <= 1, near, far)
    columns = xp.clip(left[:, None].astype("int64") + xp.arange(-1, 3), 0, size_in - 1)
    rows = xp.broadcast_to(xp.arange(size_out)[:, None], columns.shape)
    matrix = xp.zeros((size_out, size_in), dtype=like.dtype)
    scatter_add(matrix, (rows, columns), weights.astype(like.dtype))  # clamped taps add up
    return matrix


class ViT(nn.Module):
    """pixels (B, C, H, W) -> logits (B, num_classes), or the final class token (B, D) when
    num_classes=0."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        D, grid = config.hidden_size, config.image_size // config.patch_size
        self.patch_embed = PatchEmbedding(config.num_channels, D, config.patch_size)
        self.cls_token = Parameter(empty(1, 1, D))
        self.pos_embed = Parameter(empty(1, 1 + grid * grid, D))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.head = nn.Linear(D, config.num_classes) if config.num_classes else nn.Identity()
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        init_linear_layers(self)

    def position_embedding(self, rows, cols, interpolate_pos_encoding=False):
        """(1, 1 + rows·cols, D): the learned embeddings, class token's first. For another grid
        than the trained one, the patch embeddings (a grid×grid image with D channels) are resized
        bicubically as HF's interpolate_pos_encoding (torch bicubic, align_corners=False)."""
        grid = self.config.image_size // self.config.patch_size
        if (rows, cols) == (grid, grid):
            return self.pos_embed
        if not interpolate_pos_encoding:
            P = self.config.patch_size
            raise ValueError(f"ViT: input image size {rows * P}×{cols * P} does not match the "
                             f"model's image_size {self.config.image_size}; pass "
                             f"interpolate_pos_encoding=True to resize the position embeddings")
        D = self.config.hidden_size
        patch_pos = self.pos_embed[:, 1:].reshape(grid, grid, D).permute(2, 0, 1)  # (D, grid, grid)
        resize_rows = Tensor(bicubic_matrix(grid, rows, like=self.pos_embed.array))
        resize_cols = Tensor(bicubic_matrix(grid, cols, like=self.pos_embed.array))
        patch_pos = resize_rows @ patch_pos @ resize_cols.T  # (D, rows, cols)
        patch_pos = patch_pos.permute(1, 2, 0).reshape(1, rows * cols, D)
        return F.cat([self.pos_embed[:, :1], patch_pos], dim=1)

    def forward_features(self, pixels, interpolate_pos_encoding=False):
        """(B, C, H, W) -> (B, 1 + N, D) after the final layer norm (HF ViTModel's
        last_hidden_state), the class token first."""
        x = self.patch_embed(pixels)
        B, N, D = x.shape
        P = self.config.patch_size
        x = F.cat([self.cls_token.expand(B, 1, D), x], dim=1)
        x = x + self.position_embedding(pixels.shape[2] // P, pixels.shape[3] // P,
                                        interpolate_pos_encoding)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, pixels, interpolate_pos_encoding=False):
        return self.head(self.forward_features(pixels, interpolate_pos_encoding)[:, 0])

"""The benchmarked minivlm models re-stated in plain torch: same shapes, same ops, same parameter
names, so that a minivlm state dict loads into them as it is.

Test-only peer for benchmarks/workloads.py; minivlm never imports this file. The ViT lives in
benchmarks/vit.py (`torch_vit`) and is reused from there.
"""
import collections

import torch
from torch import nn
from torch.nn import functional as F


def load_minivlm_weights(model, state_dict):
    """Copy a minivlm state dict (name -> Tensor) into the torch `model` (strict)."""
    model.load_state_dict({name: torch.from_numpy(t.numpy().copy())
                           for name, t in state_dict.items()})
    return model


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"quick_gelu": QuickGELU, "gelu": nn.GELU}


# --- CLIP (OpenAI's model.py, with minivlm's names: visual.*, text.*) ----------------------------

class ResidualAttentionBlock(nn.Module):
    def __init__(self, width, heads, mlp_width, activation, eps, causal):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(collections.OrderedDict([
            ("c_fc", nn.Linear(width, mlp_width)),
            ("gelu", ACTIVATIONS[activation]()),
            ("c_proj", nn.Linear(mlp_width, width)),
        ]))
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.causal = causal

    def forward(self, x):
        h = self.ln_1(x)
        mask = None
        if self.causal:
            n = x.shape[1]
            mask = torch.full((n, n), float("-inf"), device=x.device).triu(1)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, mlp_width=None, activation="quick_gelu", eps=1e-5,
                 causal=False):
        super().__init__()
        self.resblocks = nn.Sequential(*(
            ResidualAttentionBlock(width, heads, mlp_width or 4 * width, activation, eps, causal)
            for _ in range(layers)))

    def forward(self, x):
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    """CLIP's image encoder: (N, 3, R, R) -> (N, output_dim)."""

    def __init__(self, config, output_dim):
        super().__init__()
        width, patch = config.width, config.patch_size
        grid = config.image_resolution // patch
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * width ** -0.5)
        self.positional_embedding = nn.Parameter(torch.randn(grid ** 2 + 1, width) * width ** -0.5)
        self.ln_pre = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.transformer = Transformer(width, config.layers, config.heads, config.mlp_width,
                                       config.activation, config.layer_norm_eps)
        self.ln_post = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.proj = nn.Parameter(torch.randn(width, output_dim) * width ** -0.5)

    def forward(self, x):
        x = self.conv1(x).flatten(2).transpose(1, 2)                 # (N, grid², width)
        class_token = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([class_token, x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0, :]) @ self.proj


class TextTransformer(nn.Module):
    """CLIP's text encoder: token ids (N, L) -> (N, embed_dim), read at the highest id."""

    def __init__(self, config, embed_dim):
        super().__init__()
        width = config.width
        self.token_embedding = nn.Embedding(config.vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.randn(config.context_length, width) * 0.01)
        self.transformer = Transformer(width, config.layers, config.heads, config.mlp_width,
                                       config.activation, config.layer_norm_eps, causal=True)
        self.ln_final = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.text_projection = nn.Parameter(torch.randn(width, embed_dim) * width ** -0.5)

    def forward(self, ids):
        x = self.token_embedding(ids) + self.positional_embedding[:ids.shape[1]]
        x = self.ln_final(self.transformer(x))
        return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ self.text_projection


class CLIP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.visual = VisionTransformer(config.vision, config.embed_dim)
        self.text = TextTransformer(config.text, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(2.659260036932778))  # ln(1/0.07)

    def forward(self, pixels, ids):
        image = F.normalize(self.visual(pixels), dim=-1)
        text = F.normalize(self.text(ids), dim=-1)
        return self.logit_scale.exp() * image @ text.T


def clip_loss(logits_per_image):
    labels = torch.arange(len(logits_per_image), device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image.T, labels)
            + F.cross_entropy(logits_per_image, labels)) / 2


# --- Swin Transformer (Hugging Face's SwinModel, with minivlm's names) ---------------------------

def window_partition(x, window):
    """(B, H, W, C) -> (B, windows, window², C)."""
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, (H // window) * (W // window), window * window, C)


def window_merge(windows, window, H, W):
    B, C = windows.shape[0], windows.shape[-1]
    x = windows.view(B, H // window, W // window, window, window, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, C)


def shift_mask(H, W, window, shift, device):
    """(windows, window², window²): 0 for pairs that were neighbours before the shift, -100 else."""
    def regions(n):
        index = torch.arange(n, device=device)
        return (index >= n - window).long() + (index >= n - shift).long()

    labels = (3 * regions(H)[:, None] + regions(W)[None, :]).view(1, H, W, 1)
    labels = window_partition(labels, window).reshape(-1, window * window)
    different = labels[:, :, None] != labels[:, None, :]
    return torch.where(different, -100.0, 0.0)


def relative_position_index(window):
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()])
    delta = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return delta[0] * (2 * window - 1) + delta[1]


class WindowAttention(nn.Module):
    def __init__(self, dim, heads, window):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))
        self.relative_position_bias_table = nn.Parameter(
            torch.randn((2 * window - 1) ** 2, heads) * 0.02)
        self.register_buffer("relative_position_index", relative_position_index(window),
                             persistent=False)

    def forward(self, x, mask=None):
        """x (B, windows, N, C); mask None or (windows, N, N)."""
        B, nW, N, C = x.shape

        def split_heads(t):
            return t.view(B, nW, N, self.heads, C // self.heads).transpose(2, 3)

        bias = self.relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)
        if mask is not None:
            bias = bias + mask[:, None]
        y = F.scaled_dot_product_attention(split_heads(self.q(x)), split_heads(self.k(x)),
                                           split_heads(self.v(x)), attn_mask=bias)
        return self.proj(y.transpose(2, 3).reshape(B, nW, N, C))


class SwinBlock(nn.Module):
    def __init__(self, config, dim, heads, block_index):
        super().__init__()
        self.window_size, self.block_index = config.window_size, block_index
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attn = WindowAttention(dim, heads, config.window_size)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(dim, int(config.mlp_ratio * dim))
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(int(config.mlp_ratio * dim), dim)

    def window_attention(self, x, resolution):
        B, _, C = x.shape
        H, W = resolution
        if min(resolution) <= self.window_size:
            window, shift = min(resolution), 0
        else:
            window, shift = self.window_size, self.window_size // 2 if self.block_index % 2 else 0
        pad_H, pad_W = -H % window, -W % window
        x = F.pad(x.view(B, H, W, C), (0, 0, 0, pad_W, 0, pad_H))
        mask = None
        if shift:
            x = torch.roll(x, (-shift, -shift), dims=(1, 2))
            mask = shift_mask(H + pad_H, W + pad_W, window, shift, x.device)
        x = window_merge(self.attn(window_partition(x, window), mask), window, H + pad_H, W + pad_W)
        if shift:
            x = torch.roll(x, (shift, shift), dims=(1, 2))
        return x[:, :H, :W].reshape(B, H * W, C)

    def forward(self, x, resolution):
        x = x + self.window_attention(self.norm1(x), resolution)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x, resolution):
        B, _, C = x.shape
        H, W = resolution
        x = F.pad(x.view(B, H, W, C), (0, 0, 0, W % 2, 0, H % 2))
        h, w = (H + 1) // 2, (W + 1) // 2
        x = x.view(B, h, 2, w, 2, C).permute(0, 1, 3, 4, 2, 5)
        return self.reduction(self.norm(x.reshape(B, h * w, 4 * C)))


class SwinStage(nn.Module):
    def __init__(self, config, stage):
        super().__init__()
        dim, heads = config.embed_dim * 2 ** stage, config.num_heads[stage]
        self.blocks = nn.ModuleList(SwinBlock(config, dim, heads, j)
                                    for j in range(config.depths[stage]))
        self.downsample = None if stage == len(config.depths) - 1 else PatchMerging(dim)

    def forward(self, x, resolution):
        for block in self.blocks:
            x = block(x, resolution)
        if self.downsample is None:
            return x, resolution
        return self.downsample(x, resolution), ((resolution[0] + 1) // 2, (resolution[1] + 1) // 2)


class SwinTransformer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.patch_size = config.patch_size
        self.patch_embed = nn.Conv2d(config.num_channels, config.embed_dim, config.patch_size,
                                     stride=config.patch_size)
        self.patch_norm = nn.LayerNorm(config.embed_dim)
        self.stages = nn.ModuleList(SwinStage(config, i) for i in range(len(config.depths)))
        final_dim = config.embed_dim * 2 ** (len(config.depths) - 1)
        self.norm = nn.LayerNorm(final_dim, eps=config.layer_norm_eps)
        self.head = nn.Linear(final_dim, config.num_classes)

    def forward(self, pixels):
        x = self.patch_norm(self.patch_embed(pixels).flatten(2).transpose(1, 2))
        resolution = (pixels.shape[2] // self.patch_size, pixels.shape[3] // self.patch_size)
        for stage in self.stages:
            x, resolution = stage(x, resolution)
        return self.head(self.norm(x).mean(dim=1))

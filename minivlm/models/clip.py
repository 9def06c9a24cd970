"""CLIP (Radford et al., 2021): an image encoder and a text encoder trained so that matching
(image, text) pairs have similar embeddings — the slides "Approach" and "Approach (Similarity)".

    model = CLIP(clip_config("ViT-B/32"))
    image_features = model.encode_image(pixels)     # (N, 3, 224, 224) -> (N, 512)
    text_features = model.encode_text(ids)          # (M, 77) token ids -> (M, 512)
    logits_per_image, logits_per_text = model(pixels, ids)   # (N, M), (M, N)
    loss = clip_loss(logits_per_image)              # minivlm.losses; pair k: image k, text k

The embeddings are L2-normalised and their cosine similarities scaled by exp(logit_scale), a
learned inverse temperature that starts at 1/0.07. Training keeps it at most 100: call
`model.clamp_logit_scale_()` after each optimizer step (forward does not clamp, so a checkpoint
gives the same logits as in the implementation that trained it).

The image encoder is CLIP's Vision Transformer (below) or the ModifiedResNet (resnet.py); the
text encoder is text.py's TextTransformer. Parameter names: `visual.*` as OpenAI's, `text.*` for
the text encoder (OpenAI keeps those at the top level; minivlm.pretrained.clip maps between them).
"""
import copy
import dataclasses
import math

from .. import functional as F
from .. import nn
from ..autograd import Parameter, Tensor, empty, full, tensor
from ..backend import xp_of
from ..nn.conv import Conv2d
from .resnet import ModifiedResNet
from .text import CLIPTextConfig, CLIPTransformer, TextTransformer
from .vit import activation as activation_class

MAX_LOGIT_SCALE = math.log(100)


@dataclasses.dataclass
class CLIPVisionConfig:
    """The image encoder's hyperparameters; the defaults are those of OpenAI's ViT-B/32.

    layers: an int for the Vision Transformer, or four block counts for the ModifiedResNet (as
    OpenAI's `vision_layers`; patch_size is then None). heads: None for OpenAI's rule,
    width // 64 for the ViT and 32·width // 64 for the ResNet's attention pool. mlp_width: None
    for 4·width. activation and layer_norm_eps apply to the ViT (the ResNet uses ReLU and batch
    norm)."""
    image_resolution: int = 224
    layers: int | tuple = 12
    width: int = 768
    patch_size: int | None = 32
    heads: int | None = None
    mlp_width: int | None = None
    activation: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        if isinstance(self.layers, list):
            self.layers = tuple(self.layers)
        if self.is_resnet:
            self.patch_size = None
        attention_width = 32 * self.width if self.is_resnet else self.width  # the pool's, or ViT's
        self.heads = self.heads or attention_width // 64
        if not self.heads or attention_width % self.heads:
            raise ValueError(f"CLIPVisionConfig: attention width {attention_width} is not "
                             f"divisible by heads={self.heads}")
        if self.is_resnet and self.image_resolution % 32:
            raise ValueError(f"CLIPVisionConfig: the ResNet's image_resolution must be a multiple "
                             f"of its stride 32, got {self.image_resolution}")
        if not self.is_resnet and self.image_resolution % self.patch_size:
            raise ValueError(f"CLIPVisionConfig: image_resolution={self.image_resolution} is not a "
                             f"multiple of patch_size {self.patch_size}")
        activation_class(self.activation)

    @property
    def is_resnet(self):
        return isinstance(self.layers, tuple)


@dataclasses.dataclass
class CLIPConfig:
    """embed_dim: the joint embedding's width; vision and text: the two encoders' configs (or
    dicts of their fields, as dataclasses.asdict writes them)."""
    embed_dim: int = 512
    vision: CLIPVisionConfig = dataclasses.field(default_factory=CLIPVisionConfig)
    text: CLIPTextConfig = dataclasses.field(default_factory=CLIPTextConfig)

    def __post_init__(self):
        if isinstance(self.vision, dict):
            self.vision = CLIPVisionConfig(**self.vision)
        if isinstance(self.text, dict):
            self.text = CLIPTextConfig(**self.text)


def _openai_config(embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
                   transformer_width):
    """A CLIPConfig from the arguments of OpenAI's CLIP(...): a 77-token context, the 49,408-token
    vocabulary, 12 text layers with width // 64 heads."""
    vision = CLIPVisionConfig(image_resolution, vision_layers, vision_width, vision_patch_size)
    return CLIPConfig(embed_dim, vision,
                      CLIPTextConfig(width=transformer_width, heads=transformer_width // 64))


CONFIGS = {
    "RN50": _openai_config(1024, 224, (3, 4, 6, 3), 64, None, 512),
    "RN101": _openai_config(512, 224, (3, 4, 23, 3), 64, None, 512),
    "RN50x4": _openai_config(640, 288, (4, 6, 10, 6), 80, None, 640),
    "RN50x16": _openai_config(768, 384, (6, 8, 18, 8), 96, None, 768),
    "RN50x64": _openai_config(1024, 448, (3, 15, 36, 10), 128, None, 1024),
    "ViT-B/32": _openai_config(512, 224, 12, 768, 32, 512),
    "ViT-B/16": _openai_config(512, 224, 12, 768, 16, 512),
    "ViT-L/14": _openai_config(768, 224, 24, 1024, 14, 768),
    "ViT-L/14@336px": _openai_config(768, 336, 24, 1024, 14, 768),
    # trains in minutes on 32×32 images with short captions (minivlm.data.shapes)
    "tiny": CLIPConfig(64, CLIPVisionConfig(image_resolution=32, layers=2, width=64, patch_size=8,
                                            heads=2),
                       CLIPTextConfig(context_length=16, width=64, layers=2, heads=2)),
}


def clip_config(name):
    """A fresh copy of a named config: OpenAI's RN50 ... ViT-L/14@336px, or "tiny"."""
    if name not in CONFIGS:
        raise ValueError(f"unknown CLIP config {name!r}; available: {', '.join(CONFIGS)}")
    return copy.deepcopy(CONFIGS[name])


class VisionTransformer(nn.Module):
    """CLIP's Vision Transformer: (N, 3, R, R) images -> (N, output_dim).

    It differs from ViT (vit.py) in its patch embedding conv1 without bias, a layer norm ln_pre
    on the embeddings before the blocks, and a projection proj of the class token after ln_post.
    class_embedding, positional_embedding and proj start as N(0, width⁻¹), as OpenAI's; the rest
    keeps torch's default initialisation (OpenAI re-initialises only the text Transformer)."""

    def __init__(self, config, output_dim):
        super().__init__()
        self.input_resolution, self.output_dim = config.image_resolution, output_dim
        width, patch_size = config.width, config.patch_size
        grid = config.image_resolution // patch_size
        self.conv1 = Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = _normal_parameter(width, std=width ** -0.5)
        self.positional_embedding = _normal_parameter(grid ** 2 + 1, width, std=width ** -0.5)
        self.ln_pre = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.transformer = CLIPTransformer(width, config.layers, config.heads, config.mlp_width,
                                           config.activation, config.layer_norm_eps)
        self.ln_post = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.proj = _normal_parameter(width, output_dim, std=width ** -0.5)

    def forward(self, x):
        x = self.conv1(x)                                          # (N, width, grid, grid)
        n, width = x.shape[:2]
        x = x.reshape(n, width, -1).permute(0, 2, 1)               # (N, grid², width)
        class_token = self.class_embedding.reshape(1, 1, width).expand(n, 1, width)
        x = F.cat([class_token, x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0, :]) @ self.proj


def _normal_parameter(*shape, std):
    return nn.init.normal_(Parameter(empty(*shape)), std=std)


def image_encoder(config, embed_dim):
    """CLIP's image encoder for a CLIPVisionConfig: the ModifiedResNet or the VisionTransformer."""
    if config.is_resnet:
        return ModifiedResNet(config.layers, embed_dim, config.heads, config.image_resolution,
                              config.width)
    return VisionTransformer(config, embed_dim)


class CLIP(nn.Module):
    """CLIP: visual (the image encoder), text (the text encoder) and logit_scale (a scalar,
    ln(1/0.07) at the start). See the module docstring for the methods and shapes."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.visual = image_encoder(config.vision, config.embed_dim)
        self.text = TextTransformer(config.text, config.embed_dim)
        self.logit_scale = Parameter(full((), math.log(1 / 0.07)))

    def encode_image(self, pixels):
        """pixels: float Tensor or array (N, 3, R, R), R = config.vision.image_resolution, as
        preprocess.py makes them -> (N, embed_dim), projected, not normalised."""
        return self.visual(self._checked_pixels(pixels))

    def encode_text(self, ids):
        """ids: integer token ids (N, L), L <= context_length -> (N, embed_dim), projected, not
        normalised."""
        return self.text(ids)

    def embed(self, pixels, ids):
        """-> (image embeddings (N, embed_dim), text embeddings (M, embed_dim)), L2-normalised."""
        return (F.normalize(self.encode_image(pixels), dim=-1),
                F.normalize(self.encode_text(ids), dim=-1))

    def forward(self, pixels, ids):
        """-> (logits_per_image (N, M), logits_per_text (M, N)): exp(logit_scale) times the
        cosine similarity of each image with each text."""
        image_embeddings, text_embeddings = self.embed(pixels, ids)
        logits_per_image = self.logit_scale.exp() * (image_embeddings @ text_embeddings.T)
        return logits_per_image, logits_per_image.T

    def clamp_logit_scale_(self):
        """Keep exp(logit_scale) at most 100 (in place, outside the graph); call it after each
        optimizer step."""
        data = self.logit_scale.array
        data[...] = xp_of(data).minimum(data, MAX_LOGIT_SCALE)
        return self

    def _checked_pixels(self, pixels):
        """pixels as a Tensor on the image encoder's backend and in its dtype, or a clear error."""
        pixels = pixels if isinstance(pixels, Tensor) else tensor(pixels)
        size = self.config.vision.image_resolution
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, size, size):
            raise ValueError(f"CLIP.encode_image: expected images of shape (batch, 3, {size}, "
                             f"{size}), got shape {tuple(pixels.shape)}")
        weight = self.visual.conv1.weight
        if pixels.device != weight.device:
            pixels = pixels.to(weight.device)
        return pixels if pixels.dtype == weight.dtype else pixels.to(weight.dtype)

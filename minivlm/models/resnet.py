"""ResNets (He et al., 2016): torchvision's ResNet-18/34/50, and CLIP's ModifiedResNet encoder.

A ResNet is a stem (convolution, batch norm, ReLU, pooling), four stages of residual blocks that
double the channels and halve the resolution from the second on, and a head. torchvision's
parameter names (conv1, bn1, layer1.0.conv1, layer2.0.downsample.0, fc) and OpenAI CLIP's
(conv1..conv3/bn1..bn3 stem, attnpool.q_proj) are kept, so their checkpoints load as they are.

    model = resnet50()                     # ImageNet: (N, 3, 224, 224) -> logits (N, 1000)
    model = small_resnet(num_classes=10)   # 32×32 images: 3×3 stem, no max pool
    encoder = ModifiedResNet(layers=(3, 4, 6, 3), output_dim=1024, heads=32)   # CLIP RN50
"""
from collections import OrderedDict

from .. import functional as F
from .. import nn
from ..autograd import Parameter, empty


def _projection_shortcut(inplanes, outplanes, stride):
    """torchvision's `downsample`: a strided 1×1 conv and batch norm where the block changes the
    shape of its input, else None (the identity)."""
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(outplanes))


class BasicBlock(nn.Module):
    """Two 3×3 convs with batch norm (the first carries the stride), plus the shortcut."""
    expansion = 1

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _projection_shortcut(inplanes, planes, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 conv down to `planes`, 3×3 conv (carrying the stride, as torchvision's "ResNet v1.5"),
    1×1 conv up to 4·planes, each with batch norm, plus the shortcut."""
    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = _projection_shortcut(inplanes, planes * self.expansion, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _residual_layers(block, width, layers):
    """The four stages layer1..layer4 of `layers[i]` blocks with width·2^i planes each; the first
    block of a stage changes the channels, and from layer2 on halves the resolution."""
    if len(layers) != 4:
        raise ValueError(f"a ResNet has four stages: layers must give four block counts, "
                         f"got {layers!r}")
    stages, inplanes = [], width
    for i, blocks in enumerate(layers):
        planes, stride = width * 2 ** i, 1 if i == 0 else 2
        first = block(inplanes, planes, stride)
        inplanes = planes * block.expansion
        stages.append(nn.Sequential(first, *(block(inplanes, planes) for _ in range(1, blocks))))
    return stages


class ResNet(nn.Module):
    """torchvision's ResNet: (N, in_channels, H, W) -> logits (N, num_classes).

    Stem: 7×7 stride-2 conv, batch norm, ReLU, 3×3 stride-2 max pool; with small_images=True a
    3×3 stride-1 conv and no max pool instead, for 32×32 images (as the ResNet paper's CIFAR
    networks). Then the four stages, a global average pool and the linear classifier fc.
    Initialised as torchvision: convs Kaiming-normal (fan_out, ReLU), batch norm weight 1 and
    bias 0."""

    def __init__(self, block, layers, num_classes=1000, width=64, small_images=False,
                 in_channels=3):
        super().__init__()
        self.config = dict(block=block.__name__, layers=list(layers), num_classes=num_classes,
                           width=width, small_images=small_images, in_channels=in_channels)
        if small_images:
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.layer1, self.layer2, self.layer3, self.layer4 = _residual_layers(block, width, layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    @classmethod
    def from_config(cls, config):
        """The ResNet of `config`, the dict of its arguments that `.config` holds."""
        blocks = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck}
        if config.get("block") not in blocks:
            raise ValueError(f"ResNet: block must be one of {sorted(blocks)}, got "
                             f"{config.get('block')!r}")
        return cls(blocks[config["block"]], **{k: v for k, v in config.items() if k != "block"})

    def forward_features(self, x):
        """The globally pooled features (N, 8·width·expansion) that fc classifies."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)

    def forward(self, x):
        return self.fc(self.forward_features(x))


def resnet18(num_classes=1000):
    """ResNet-18: BasicBlocks (2, 2, 2, 2); 11,689,512 parameters with 1000 classes."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes)


def resnet34(num_classes=1000):
    """ResNet-34: BasicBlocks (3, 4, 6, 3)."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes)


def resnet50(num_classes=1000):
    """ResNet-50: Bottlenecks (3, 4, 6, 3); 25,557,032 parameters with 1000 classes."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes)


def small_resnet(num_classes=10, width=16, layers=(1, 1, 1, 1), block=BasicBlock, in_channels=3):
    """A narrow ResNet for small images (32×32 and below): 3×3 stem without max pool, stages of
    width, 2·width, 4·width, 8·width channels at full, 1/2, 1/4 and 1/8 resolution."""
    return ResNet(block, layers, num_classes, width, small_images=True, in_channels=in_channels)


# --- CLIP's modified ResNet (Radford et al., 2021) -----------------------------------------------

class ModifiedBottleneck(nn.Module):
    """OpenAI CLIP's Bottleneck: every conv has stride 1 and an average pool does the striding
    ("anti-aliased"), after the 3×3 conv and in front of the shortcut's 1×1 conv."""
    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU()
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(OrderedDict([  # "-1" keeps OpenAI's names 0 and 1
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        return self.relu3(out + identity)


class AttentionPool2d(nn.Module):
    """CLIP's replacement for the global average pool: (N, C, H, W) -> (N, output_dim).

    The H·W feature vectors become tokens, their mean is put in front, a learned positional
    embedding is added, and one multi-head attention layer in which the mean token is the only
    query gives the image feature (projected by c_proj)."""

    def __init__(self, spacial_dim, embed_dim, num_heads, output_dim=None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"AttentionPool2d: embed_dim={embed_dim} is not divisible by "
                             f"num_heads={num_heads}")
        positions = Parameter(empty(spacial_dim ** 2 + 1, embed_dim))
        self.positional_embedding = nn.init.normal_(positions, std=embed_dim ** -0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        self.num_heads = num_heads

    def forward(self, x):
        n, c, h, w = x.shape
        if h * w + 1 != self.positional_embedding.shape[0]:
            raise ValueError(f"AttentionPool2d: a feature map of shape {tuple(x.shape)} gives "
                             f"{h * w + 1} tokens, but positional_embedding has shape "
                             f"{tuple(self.positional_embedding.shape)}")
        x = x.reshape(n, c, h * w).permute(0, 2, 1)                # NCHW -> N(HW)C
        x = F.cat([x.mean(dim=1, keepdim=True), x], dim=1)          # N(HW+1)C
        x = x + self.positional_embedding
        q = self._split_heads(self.q_proj(x[:, :1]))               # (N, heads, 1, C/heads)
        k, v = self._split_heads(self.k_proj(x)), self._split_heads(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v)               # (N, heads, 1, C/heads)
        return self.c_proj(out.permute(0, 2, 1, 3).reshape(n, c))

    def _split_heads(self, x):
        """(N, L, C) -> (N, heads, L, C/heads)."""
        n, length, c = x.shape
        return x.reshape(n, length, self.num_heads, c // self.num_heads).permute(0, 2, 1, 3)


class ModifiedResNet(nn.Module):
    """OpenAI CLIP's ResNet image encoder: (N, 3, input_resolution, input_resolution) ->
    (N, output_dim). It differs from torchvision's ResNet in three ways:
    - a stem of three 3×3 convs (the first with stride 2) and an average pool instead of one
      7×7 conv and a max pool;
    - anti-aliased strided blocks (ModifiedBottleneck): an average pool does the striding;
    - the final pooling is an attention pool (AttentionPool2d) instead of an average pool.
    CLIP uses heads = width·32 // 64. The weights are initialised as CLIP.initialize_parameters
    does for its ResNet: the attention pool's projections N(0, 1/embed_dim), and the last batch
    norm of every block zero (so each block starts as its shortcut)."""

    def __init__(self, layers, output_dim, heads, input_resolution=224, width=64):
        super().__init__()
        self.output_dim, self.input_resolution = output_dim, input_resolution

        # the 3-layer stem
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu3 = nn.ReLU()
        self.avgpool = nn.AvgPool2d(2)

        # residual layers
        self.layer1, self.layer2, self.layer3, self.layer4 = _residual_layers(
            ModifiedBottleneck, width, layers)

        embed_dim = width * 32  # the ResNet feature dimension
        self.attnpool = AttentionPool2d(input_resolution // 32, embed_dim, heads, output_dim)
        self.initialize_parameters()

    def initialize_parameters(self):
        std = self.attnpool.c_proj.in_features ** -0.5
        for proj in (self.attnpool.q_proj, self.attnpool.k_proj, self.attnpool.v_proj,
                     self.attnpool.c_proj):
            nn.init.normal_(proj.weight, std=std)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                nn.init.zeros_(block.bn3.weight)

    def stem(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        return self.avgpool(x)

    def forward(self, x):
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)

"""ResNets: the CNN image encoder of the slide "Approach (Image Encodings)".

resnet() takes torchvision's ResNet state dict (conv1, bn1, layer1.0.conv1, ..., downsample.0/1, fc);
modified_resnet() takes the image encoder of OpenAI's CLIP ResNets (the state dict under "visual.":
a three-conv stem, anti-aliased Bottlenecks, and an attention pool instead of the average pool).
Images are (B, C, H, W); batch norm uses the running statistics (eval mode).
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from reference.attention import linear, multihead_attention, packed_attention_weights, weights_under
from reference.transformer import relu


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """nn.Conv2d (no groups or dilation): x (B, C, H, W), weight (O, C, k, k) -> (B, O, H', W').

    Each kernel tap (i, j) adds weight[:, :, i, j] times the input shifted by (i, j).
    """
    B, C, H, W = x.shape
    O, C_w, k_h, k_w = weight.shape
    if C != C_w:
        raise ValueError(f"conv2d: input {x.shape} has {C} channels, weight {weight.shape} expects {C_w}")
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    H_out = (H + 2 * padding - k_h) // stride + 1
    W_out = (W + 2 * padding - k_w) // stride + 1
    out = np.zeros((B, O, H_out, W_out))
    for i in range(k_h):
        for j in range(k_w):
            tap = x[:, :, i:i + stride * H_out:stride, j:j + stride * W_out:stride]  # (B, C, H', W')
            out += np.einsum("bchw,oc->bohw", tap, weight[:, :, i, j])
    return out if bias is None else out + bias[:, None, None]


def batch_norm(x, running_mean, running_var, weight, bias, eps=1e-5):
    """nn.BatchNorm2d in eval mode: per channel, (x − running_mean) / √(running_var + eps) · weight + bias."""
    shape = (1, -1, 1, 1)
    z = (x - running_mean.reshape(shape)) / np.sqrt(running_var.reshape(shape) + eps)
    return z * weight.reshape(shape) + bias.reshape(shape)


def conv_bn(x, weights, conv, bn, stride=1):
    """Bias-free conv `conv` then batch norm `bn`, by their names in `weights`. Every convolution in
    these ResNets pads by half its kernel size (7×7: 3, 3×3: 1, 1×1: 0)."""
    weight = weights[f"{conv}.weight"]
    x = conv2d(x, weight, stride=stride, padding=weight.shape[-1] // 2)
    return batch_norm(x, *(weights[f"{bn}.{name}"] for name in ("running_mean", "running_var", "weight", "bias")))


def max_pool2d(x, kernel_size, stride, padding=0):
    """nn.MaxPool2d: the maximum of each kernel_size² window (padding never wins: it is −inf)."""
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=-np.inf)
    windows = sliding_window_view(x, (kernel_size, kernel_size), axis=(2, 3))[:, :, ::stride, ::stride]
    return windows.max(axis=(-2, -1))


def avg_pool2d(x, k):
    """nn.AvgPool2d(k): the mean of each non-overlapping k×k window (a ragged edge is dropped)."""
    B, C, H, W = x.shape
    x = x[:, :, :H // k * k, :W // k * k]
    return x.reshape(B, C, H // k, k, W // k, k).mean(axis=(3, 5))


def basic_block(x, weights, stride=1):
    """torchvision's BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), 3×3 convs."""
    out = relu(conv_bn(x, weights, "conv1", "bn1", stride))
    out = conv_bn(out, weights, "conv2", "bn2")
    return relu(out + shortcut(x, weights, stride))


def bottleneck(x, weights, stride=1):
    """torchvision's Bottleneck: 1×1 reduce, 3×3 (carrying the stride), 1×1 expand ×4, plus shortcut."""
    out = relu(conv_bn(x, weights, "conv1", "bn1"))
    out = relu(conv_bn(out, weights, "conv2", "bn2", stride))
    out = conv_bn(out, weights, "conv3", "bn3")
    return relu(out + shortcut(x, weights, stride))


def shortcut(x, weights, stride):
    """The identity, or — where the block has downsample.* weights — a strided 1×1 conv and batch norm."""
    if "downsample.0.weight" not in weights:
        return x
    return conv_bn(x, weights, "downsample.0", "downsample.1", stride)


def num_blocks(weights, layer):
    """How many blocks layer `layer` (e.g. "layer2") has in a state dict."""
    return len({name.split(".")[1] for name in weights if name.startswith(f"{layer}.")})


def residual_layers(x, weights, block):
    """layer1 ... layer4; the first block of layer2, layer3, layer4 halves the resolution."""
    for layer in range(1, 5):
        for i in range(num_blocks(weights, f"layer{layer}")):
            stride = 2 if layer > 1 and i == 0 else 1
            x = block(x, weights_under(weights, f"layer{layer}.{i}."), stride)
    return x


def resnet(x, weights):
    """torchvision's ResNet: 7×7/2 conv, 3×3/2 max pool, four residual layers, global average pool, fc.
    x (B, 3, H, W) -> logits (B, classes). Bottleneck blocks if the state dict has conv3 weights."""
    block = bottleneck if "layer1.0.conv3.weight" in weights else basic_block
    x = relu(conv_bn(x, weights, "conv1", "bn1", stride=2))
    x = max_pool2d(x, 3, stride=2, padding=1)
    x = residual_layers(x, weights, block)
    x = x.mean(axis=(2, 3))
    return linear(x, weights["fc.weight"], weights["fc.bias"])


def clip_bottleneck(x, weights, stride=1):
    """CLIP's anti-aliased Bottleneck: all convs have stride 1; an average pool does the striding,
    after the 3×3 conv, and in the shortcut before its 1×1 conv (downsample.0, downsample.1)."""
    out = relu(conv_bn(x, weights, "conv1", "bn1"))
    out = relu(conv_bn(out, weights, "conv2", "bn2"))
    if stride > 1:
        out = avg_pool2d(out, stride)
    out = conv_bn(out, weights, "conv3", "bn3")
    identity = x
    if "downsample.0.weight" in weights:
        identity = conv_bn(avg_pool2d(x, stride) if stride > 1 else x, weights, "downsample.0", "downsample.1")
    return relu(out + identity)


def attention_pool2d(x, weights, num_heads):
    """CLIP's AttentionPool2d: the mean of the H·W feature vectors is prepended as a token, a learned
    positional embedding is added, and one multi-head attention with the mean token as the only query
    gives the image feature. x (B, C, H, W) -> (B, output_dim).

    weights: positional_embedding (H·W+1, C), q_proj, k_proj, v_proj (C -> C), c_proj (C -> output_dim).
    """
    B, C, H, W = x.shape
    tokens = x.reshape(B, C, H * W).transpose(0, 2, 1)  # (B, HW, C)
    tokens = np.concatenate([tokens.mean(axis=1, keepdims=True), tokens], axis=1)  # (B, HW+1, C)
    tokens = tokens + weights["positional_embedding"]
    attention = packed_attention_weights(weights, "q_proj", "k_proj", "v_proj", "c_proj")
    y, _ = multihead_attention(tokens[:, :1], tokens, tokens, attention, num_heads)
    return y[:, 0]


def modified_resnet(x, weights, num_heads):
    """CLIP's ModifiedResNet (OpenAI names, the state dict under "visual."): a stem of three 3×3 convs
    (the first with stride 2) and a 2×2 average pool, four layers of CLIP Bottlenecks, the attention
    pool. x (B, 3, H, W) -> image features I_f (B, output_dim). CLIP uses num_heads = width·32 // 64."""
    for i, stride in ((1, 2), (2, 1), (3, 1)):
        x = relu(conv_bn(x, weights, f"conv{i}", f"bn{i}", stride))
    x = avg_pool2d(x, 2)
    x = residual_layers(x, weights, clip_bottleneck)
    return attention_pool2d(x, weights_under(weights, "attnpool."), num_heads)

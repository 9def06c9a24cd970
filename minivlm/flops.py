"""Floating-point operations of one forward pass, counted analytically from the shapes each layer
sees: the compute axis of the lecture's scaling plots ("ViT's scale well with compute").

    flops = count_flops(model, pixels)            # one forward of a batch of pixels
    flops = count_flops(clip, pixels, ids)        # CLIP: the image and the text encoder
    training = 3 * flops_per_example * examples   # forward + backward ≈ 3 × forward

What is counted: the matrix products, 2 FLOPs per multiply-add, as the ViT and CLIP papers and
torch.utils.flop_counter count them. A Linear on n rows: 2·n·in·out. A convolution: 2·(output
elements)·(in_channels / groups)·(kernel elements). Attention's two products q·kᵀ and
weights·v: 4·(queries)·(keys)·width per sequence (the causal mask's skipped half included, as a
dense implementation computes it), plus its projections. Left out: biases, norms, activations,
softmax, pooling and embedding lookups (a few percent of the total at these widths). The
backward pass computes two products for each of the forward's (the gradients of the input and
of the weight), hence training ≈ 3 × forward.

The count runs the model once with a forward hook on each layer that multiplies matrices, so
any input shape (batch, image size, caption length) counts as it runs.
"""
import math

from . import nn
from .models.clip import VisionTransformer
from .models.resnet import AttentionPool2d
from .models.text import TextEncoder
from .models.vit import PatchEmbedding, ViTAttention
from .nn import evaluating


def _linear(module, inputs, output):
    return 2 * output.numel() * module.in_features


def _convolution(module, inputs, output):
    return 2 * output.numel() * math.prod(module.weight.shape[1:])   # in/groups × kernel


def _multihead_attention(module, inputs, output):
    """The projections of query, key and value, the two products, the output projection."""
    query, key = inputs[:2]
    width = module.embed_dim
    queries, keys = query.numel() // width, key.numel() // module.kdim
    keys_per_sequence = key.shape[1 if module.batch_first and key.ndim == 3 else 0]
    projections = 2 * width * (2 * queries * width + keys * (module.kdim + module.vdim))
    return projections + 4 * queries * keys_per_sequence * width


def _attention_products(module, inputs, output):
    """q·kᵀ and weights·v of ViT's attention (its q, k, v, proj are Linears, counted apart)."""
    x = inputs[0]
    return 4 * x.numel() * x.shape[-2]                 # 4 · tokens · tokens · width


def _attention_pool_products(module, inputs, output):
    """The one (mean) query against the H·W + 1 keys of each image (Linears counted apart)."""
    n, channels, h, w = inputs[0].shape
    return 4 * n * (h * w + 1) * channels


def _patch_embedding(module, inputs, output):
    return 2 * output.numel() * module.in_channels * module.patch_size ** 2


def _projection(matrix):
    """A module whose output is features @ matrix (CLIP's image and text projections)."""
    return lambda module, inputs, output: 2 * output.numel() * getattr(module, matrix).shape[0]


# the layers that multiply matrices, by class (a subclass takes its nearest base's rule)
RULES = {
    nn.Linear: _linear,
    nn.Conv2d: _convolution,
    nn.Conv1d: _convolution,
    nn.MultiheadAttention: _multihead_attention,
    ViTAttention: _attention_products,
    AttentionPool2d: _attention_pool_products,
    PatchEmbedding: _patch_embedding,
    VisionTransformer: _projection("proj"),
    TextEncoder: _projection("text_projection"),
}


def rule_for(module):
    """The FLOP rule of `module`'s class or of its nearest base class in RULES, or None."""
    return next((RULES[cls] for cls in type(module).__mro__ if cls in RULES), None)


def count_flops(model, *inputs, **kwargs):
    """The FLOPs of model(*inputs, **kwargs) (an int), counted as the module docstring says, in
    a forward without gradients in eval mode (batch norm's statistics stay as they are)."""
    counts = []

    def count(module, args, output):
        counts.append(rule_for(module)(module, args, output))

    handles = [module.register_forward_hook(count) for module in model.modules()
               if rule_for(module) is not None]
    try:
        with evaluating(model):
            model(*inputs, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return sum(counts)

"""Differentiable ops with torch.nn.functional's names, each a Function on raw arrays.

Imported as `F`. Every op works on NumPy and CuPy arrays alike (the array module comes from the
inputs via `xp_of`) and in float32 and float64; Python scalars take the tensor's dtype.
Coarse ops (softmax, layer_norm, cross_entropy, attention, linear, embedding) have hand-written
backward passes that keep only what backward needs.

The ops by family, one module each:

    elementwise   add, sub, mul, div, pow; exp, log, sin, cos, ... clamp; relu, gelu, quick_gelu,
                  silu, ...
    tensor_ops    matmul, einsum; sum, mean, var, max, amax, norm, ...; reshape, permute, ...;
                  cast, to_backend; cat, stack, split, unbind, chunk, repeat, roll, pad, where,
                  masked_fill, clone, meshgrid
    indexing      getitem, setitem, gather, sort, argsort, topk, tril, triu, multinomial
    layers        linear, softmax, log_softmax, logsumexp, layer_norm, rms_norm, normalize,
                  cross_entropy, embedding, dropout
    attention     scaled_dot_product_attention (grouped-query too), rotary_cos_sin,
                  apply_rotary_pos_emb
    multihead     multi_head_attention_forward (nn.MultiheadAttention's computation), additive_mask
    conv          conv1d, conv2d, avg_pool2d, max_pool2d, adaptive_avg_pool2d, batch_norm

and how they go fast: `cpu` holds the CPU speed helpers (cache-sized blocks, a float32 erf) and
hands CuPy arrays to the fused GPU kernels of `kernels`.
"""
from .elementwise import (Abs, Add, Clamp, Cos, Div, Exp, GELU, Log, Mul, Neg, Pow, QuickGELU,
                          ReLU, Sigmoid, SiLU, Sin, Sqrt, Sub, Tanh, abs, add, clamp, cos, div, exp,
                          gelu, log, mul, neg, pow, quick_gelu, relu, sigmoid, silu, sin, sqrt, sub,
                          tanh)
from .indexing import (Gather, GetItem, SetItem, SortResult, TopKResult, Triangle, argsort, gather,
                       getitem, multinomial, setitem, sort, topk, tril, triu)
from .tensor_ops import (Cast, Cat, Clone, Einsum, Expand, MatMul, MaxMin, MaxResult, Mean, Norm,
                         Pad, Permute, Repeat, Reshape, Roll, Sum, ToBackend, Var, Where, amax,
                         amin, argmax, argmin, cast, cat, chunk, clone, concatenate, contiguous,
                         einsum, expand, expand_as, flatten, masked_fill, matmul, max, mean,
                         meshgrid, min, norm, pad, permute, repeat, reshape, roll, split, squeeze,
                         stack, sum, to_backend, transpose, unbind, unsqueeze, var, view, where)
from .layers import (CrossEntropy, Dropout, Embedding, LayerNorm, Linear, LogSoftmax, LogSumExp,
                     RMSNorm, Softmax, cross_entropy, dropout, embedding, layer_norm, linear,
                     log_softmax, logsumexp, normalize, rms_norm, softmax)
from .attention import (RotaryEmbedding, ScaledDotProductAttention, apply_rotary_pos_emb,
                        grouped_query_attention, rotary_cos_sin, rotate_half,
                        scaled_dot_product_attention)
from .multihead import additive_mask, multi_head_attention_forward
from .conv import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm, Conv2d, MaxPool2d, adaptive_avg_pool2d,
                   avg_pool2d, batch_norm, conv1d, conv2d, max_pool2d)

# every op imported above (not the family modules themselves), so that help(F) lists them
__all__ = [name for name, value in globals().items() if callable(value) and name[0] != "_"]

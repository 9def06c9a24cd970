"""Differentiable ops with torch.nn.functional's names, each a Function on raw arrays.

Imported as `F`. Every op works on NumPy and CuPy arrays alike (the array module comes from the
inputs via `xp_of`) and in float16, float32 and float64.
Coarse ops (softmax, layer_norm, cross_entropy, attention, linear, embedding) have hand-written
backward passes that keep only what backward needs.

Dtypes follow torch's rule (dtypes.py implements it; tests/test_dtypes.py checks every op
against torch):

- An op of one tensor keeps its dtype: gelu of float16 is float16. The ops that compute in
  floating point but take integers (exp, log, sqrt, tanh, sigmoid, logsumexp, division) give
  float32 for integer or bool tensors; the other float ops refuse them with a TypeError (gelu,
  quick_gelu, softmax, log_softmax, layer_norm, normalize, cross_entropy's logits, attention,
  mean, var, the pools, batch_norm). sum of integers is int64.
- Operands of several dtypes (add, sub, mul, div, pow, clamp, where, cat) meet in
  `result_type`: within a category (bool < integer < float) the wider dtype; across categories
  the higher one's dtype (int64 + float16 is float16). A 0-d tensor or a Python number takes
  part only where its category is higher than every dimensioned tensor's, so float32 + 2.0 and
  float32 + a 0-d float64 tensor stay float32, int64 + 2.5 is float32 (a Python float counts as
  float32, torch's default).
- matmul, einsum, linear, conv2d, scaled_dot_product_attention and the parameters of layer_norm
  and batch_norm need one dtype and raise a TypeError naming them otherwise (a float32 model fed
  float64 images is an error, not a float64 computation). cross_entropy's class weights, a
  constant, are cast to the logits' dtype (torch would refuse another dtype).
- float16 inputs of the ops that sum many terms (softmax, log_softmax, logsumexp, layer_norm,
  normalize, var, cross_entropy, attention, batch_norm, gelu) are computed in float32 and the
  result rounded to float16, as torch's CPU kernels accumulate in float.

The ops by family, one module each:

    elementwise   add, sub, mul, div, pow; exp, log, sin, cos, ... clamp; relu, gelu, quick_gelu,
                  silu, ...
    dtypes        result_type (the rule above), cast
    tensor_ops    matmul, einsum; sum, mean, var, max, amax, norm, ...; reshape, permute, ...;
                  to_backend; cat, stack, split, unbind, chunk, repeat, roll, pad, where,
                  masked_fill, clone, meshgrid
    indexing      getitem, setitem, gather, sort, argsort, topk, tril, triu, multinomial
    layers        linear, softmax, log_softmax, logsumexp, layer_norm, rms_norm, normalize,
                  cross_entropy, embedding, dropout
    attention     scaled_dot_product_attention (grouped-query too), rotary_cos_sin,
                  apply_rotary_pos_emb
    multihead     multi_head_attention_forward (nn.MultiheadAttention's computation), additive_mask
    conv          conv1d, conv2d, avg_pool2d, max_pool2d, adaptive_avg_pool2d, batch_norm
    recurrent     rnn (one layer of nn.RNN, its recurrence one op with backward through time)

and how they go fast: `cpu` holds the CPU speed helpers (cache-sized blocks, a float32 erf) and
hands CuPy arrays to the fused GPU kernels of `kernels`.
"""
from .dtypes import Cast, cast, result_type
from .elementwise import (Abs, Add, Clamp, Cos, Div, Exp, GELU, Log, Mul, Neg, Pow, QuickGELU,
                          ReLU, Sigmoid, SiLU, Sin, Sqrt, Sub, Tanh, abs, add, clamp, cos, div, exp,
                          gelu, log, mul, neg, pow, quick_gelu, relu, sigmoid, silu, sin, sqrt, sub,
                          tanh)
from .indexing import (Gather, GetItem, SetItem, SortResult, TopKResult, Triangle, argsort, gather,
                       getitem, multinomial, setitem, sort, topk, tril, triu)
from .tensor_ops import (Cat, Clone, Einsum, Expand, MatMul, MaxMin, MaxResult, Mean, Norm,
                         Pad, Permute, Repeat, Reshape, Roll, Sum, ToBackend, Var, Where, amax,
                         amin, argmax, argmin, cat, chunk, clone, concatenate, contiguous,
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
from .recurrent import Recurrence, rnn

# every op imported above (not the family modules themselves), so that help(F) lists them
__all__ = [name for name, value in globals().items() if callable(value) and name[0] != "_"]

"""Mutation testing: plant each plausible bug of MUTANTS in a copy of the project, run the tests
that should catch it, and report the share caught. Not part of CI (it runs the tests once per
mutant); tests/MUTATION.md holds the latest score and says why each survivor survives.

    python tests/mutation.py                    # every mutant, one at a time
    python tests/mutation.py --jobs 2 -k swin   # those whose name contains "swin", two at once
    python tests/mutation.py --list             # the mutants and their tests

A mutant is one exact snippet of a source file, its replacement, and the pytest node ids (or
files) that should catch it. The snippet must occur exactly once: a snippet the code no longer
holds is an error to fix in the list, never a silent skip. First each distinct test selection
runs on the unmutated copy and must pass. Then each mutant's tests run (-x, the `ci` hypothesis
profile, a limit of three times the processor time they take unmutated): the mutant is caught
when they fail or error, timed out when they use up the limit (counted as caught, and listed),
and survives when they pass. The exit status is 0 when no mutant survived.
"""
import argparse
import concurrent.futures
import os
import queue
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("minivlm", "reference", "tests", "pyproject.toml")


class Mutant(NamedTuple):
    name: str     # "module: the bug"
    path: str     # the file, relative to the project root
    old: str      # a snippet that occurs exactly once in it
    new: str      # what replaces it
    tests: str    # pytest arguments: node ids or files (and options such as -k)


# Test selections: each mutant's tests stop at the first failure (-x), so a caught mutant costs
# little; a survivor runs its whole selection.
AUTOGRAD = "tests/test_autograd.py tests/test_functional_grad.py"
OPS = ("tests/test_functional_grad.py tests/test_functional_torch.py "
       "tests/test_functional_backends.py tests/test_float32.py")
CONV = "tests/test_conv.py"
NN = "tests/test_nn.py"
ATTENTION = "tests/test_attention.py tests/test_functional_torch.py"
TRANSFORMER = "tests/test_transformer.py"
VIT = "tests/test_vit.py tests/test_pretrained_vision.py tests/test_float32.py"
SWIN = "tests/test_swin.py tests/test_pretrained_vision.py"
CLIP = "tests/test_clip_model.py tests/test_clip_pretrained.py"
RESNET = "tests/test_resnet.py"
LM = "tests/test_lm.py"
RECIPES = ("tests/test_recipes.py tests/test_train_clip.py "
           "tests/test_train_vision.py::test_a_resumed_run_ends_as_an_uninterrupted_one "
           "tests/test_train_vision.py::test_training_is_deterministic_given_the_seed "
           "tests/test_train_vision.py::test_short_run_of_a_tiny_model_learns_the_shapes "
           "tests/test_lm.py::test_an_interrupted_train_lm_resumes_exactly")
IO = "tests/test_io.py"



def ops(keyword):
    """The tests of the op tiers whose names hold `keyword` (an op's name, most often)."""
    extra = " tests/test_attention.py" if keyword == "attention" else ""
    extra += " tests/test_autograd.py" if keyword == "cast" else ""
    return f"{OPS}{extra} -k {keyword}"


M = Mutant
MUTANTS = [
    # --- autograd ---------------------------------------------------------------------------
    M("autograd: no_grad leaves gradients off after its block", "minivlm/autograd.py",
      "        _grad_enabled = self.previous", "        _grad_enabled = False", AUTOGRAD),
    M("autograd: unbroadcast forgets the size-1 axes", "minivlm/autograd.py",
      "    axes = tuple(range(extra)) + tuple(", "    axes = tuple(range(extra)) + 0 * tuple(",
      AUTOGRAD),
    M("autograd: an op's output requires grad only if all its inputs do", "minivlm/autograd.py",
      "        requires_grad = any(fn.needs_input_grad)",
      "        requires_grad = all(fn.needs_input_grad)", AUTOGRAD),
    M("autograd: a node used twice keeps only its last gradient", "minivlm/autograd.py",
      "grads[id(t)] = grads[id(t)] + tg if id(t) in grads else tg", "grads[id(t)] = tg",
      AUTOGRAD),
    M("autograd: a second backward overwrites .grad", "minivlm/autograd.py",
      "            self.grad.array += g", "            self.grad.array = g", AUTOGRAD),
    M("autograd: .grad aliases an array of the graph", "minivlm/autograd.py",
      "            self.grad = Tensor(xp_of(g).array(g))",
      "            self.grad = Tensor(g)", AUTOGRAD),
    M("autograd: the graph is never released", "minivlm/autograd.py",
      "            if not retain_graph:\n                fn.release()",
      "            if False:\n                fn.release()", AUTOGRAD),
    M("autograd: the nodes are visited leaves first", "minivlm/autograd.py",
      "        return reversed(order)", "        return order", AUTOGRAD),
    M("autograd: Python floats become float64 tensors", "minivlm/autograd.py",
      '"f": "float32"}', '"f": "float64"}', AUTOGRAD),
    M("autograd: number - tensor computes tensor - number", "minivlm/autograd.py",
      "    def __rsub__(self, other): return F.sub(other, self)",
      "    def __rsub__(self, other): return F.sub(self, other)", AUTOGRAD),
    M("autograd: number / tensor computes tensor / number", "minivlm/autograd.py",
      "    def __rtruediv__(self, other): return F.div(other, self)",
      "    def __rtruediv__(self, other): return F.div(self, other)", AUTOGRAD),
    M("autograd: .T keeps the order of the dims", "minivlm/autograd.py",
      "        return F.permute(self, tuple(reversed(range(self.ndim))))",
      "        return F.permute(self, tuple(range(self.ndim)))", AUTOGRAD),
    M("autograd: detach keeps the graph", "minivlm/autograd.py",
      "    def detach(self):\n        return Tensor(self.array)",
      "    def detach(self):\n        return self", AUTOGRAD),
    M("autograd: a Parameter does not require grad", "minivlm/autograd.py",
      "    def __init__(self, data, requires_grad=True):",
      "    def __init__(self, data, requires_grad=False):", AUTOGRAD),

    # --- functional: elementwise --------------------------------------------------------------
    M("functional: sub passes +g to its second input", "minivlm/functional/elementwise.py",
      "unbroadcast(-g, self.shapes[1])", "unbroadcast(g, self.shapes[1])", ops("sub")),
    M("functional: div's gradient for the divisor has the wrong sign",
      "minivlm/functional/elementwise.py", "unbroadcast(-g_over_b * self.a / self.b",
      "unbroadcast(g_over_b * self.a / self.b", ops("div")),
    M("functional: pow's gradient uses a**b for a**(b-1)", "minivlm/functional/elementwise.py",
      "g * b * a ** (b - 1)", "g * b * a ** b", ops("pow")),
    M("functional: sqrt's gradient misses the 2", "minivlm/functional/elementwise.py",
      "    def backward(self, g): return g / (2 * self.y)",
      "    def backward(self, g): return g / self.y", ops("sqrt")),
    M("functional: tanh's gradient is 1 + tanh²", "minivlm/functional/elementwise.py",
      "g * (1 - self.y * self.y)", "g * (1 + self.y * self.y)", ops("tanh")),
    M("functional: sigmoid's gradient misses 1 - σ", "minivlm/functional/elementwise.py",
      "    def backward(self, g): return g * self.y * (1 - self.y)",
      "    def backward(self, g): return g * self.y", ops("sigmoid")),
    M("functional: relu passes the gradient at 0", "minivlm/functional/elementwise.py",
      "        self.positive = x > 0", "        self.positive = x >= 0", ops("relu")),
    M("functional: clamp blocks the gradient at its bounds", "minivlm/functional/elementwise.py",
      "            self.inside &= x >= min", "            self.inside &= x > min", ops("clamp")),
    M("functional: the tanh GELU's cubic coefficient", "minivlm/functional/elementwise.py",
      "            self.t = xp_of(x).tanh(_GELU_C * (x + 0.044715 * x * x * x))",
      "            self.t = xp_of(x).tanh(_GELU_C * (x + 0.04715 * x * x * x))", ops("gelu")),
    M("functional: the exact GELU's gradient subtracts x·φ(x)",
      "minivlm/functional/elementwise.py",
      "    grad += gauss\n", "    grad -= gauss\n", ops("gelu")),
    M("functional: QuickGELU without its 1.702", "minivlm/functional/elementwise.py",
      "def quick_gelu_rows(x): return x_sigmoid_rows(x, 1.702)",
      "def quick_gelu_rows(x): return x_sigmoid_rows(x, 1.0)",
      ops("quick_gelu")),
    M("functional: a Python number operand becomes float64", "minivlm/functional/elementwise.py",
      "        return Tensor(xp.asarray(x, dtype=like.dtype))",
      "        return Tensor(xp.asarray(x, dtype='float64'))", ops("scalar")),
    M("functional: linear's bias gradient is a mean", "minivlm/functional/layers.py",
      "        gb = g2.sum(axis=0) if", "        gb = g2.mean(axis=0) if", ops("linear")),
    M("functional: softmax without the max shift overflows", "minivlm/functional/layers.py",
      "    y = x - x.max(axis=axis, keepdims=True)", "    y = x.copy()", ops("softmax")),
    M("functional: softmax's gradient forgets the y factor", "minivlm/functional/layers.py",
      "    grad -= y * grad.sum(axis=axis, keepdims=True)",
      "    grad -= grad.sum(axis=axis, keepdims=True)", ops("softmax")),
    M("functional: log_softmax's gradient uses log p for p", "minivlm/functional/layers.py",
      "        return g - xp_of(g).exp(self.y) * g.sum(axis=self.dim, keepdims=True)",
      "        return g - self.y * g.sum(axis=self.dim, keepdims=True)", ops("log_softmax")),
    M("functional: logsumexp's gradient is exp(x)", "minivlm/functional/layers.py",
      "        return g * xp_of(g).exp(self.x - self.lse)",
      "        return g * xp_of(g).exp(self.x)", ops("logsumexp")),
    M("functional: layer norm with the unbiased variance", "minivlm/functional/layers.py",
      '    rstd = 1 / xp.sqrt(xp.einsum("ij,ij->i", y, y)[:, None] / n + eps)',
      '    rstd = 1 / xp.sqrt(xp.einsum("ij,ij->i", y, y)[:, None] / (n - 1) + eps)',
      ops("layer_norm")),
    M("functional: layer norm adds eps outside the root", "minivlm/functional/layers.py",
      '    rstd = 1 / xp.sqrt(xp.einsum("ij,ij->i", y, y)[:, None] / n + eps)',
      '    rstd = 1 / (xp.sqrt(xp.einsum("ij,ij->i", y, y)[:, None] / n) + eps)',
      ops("layer_norm")),
    M("functional: layer norm's input gradient adds the x̂ term", "minivlm/functional/layers.py",
      "    grad -= xhat\n", "    grad += xhat\n", ops("layer_norm")),
    M("functional: normalize clamps the p-th power at eps, not eps^p",
      "minivlm/functional/layers.py", "clamp(powered, min=eps ** p)", "clamp(powered, min=eps)",
      ops("normalize")),
    M("functional: label smoothing spreads smooth, not smooth / C, on each class",
      "minivlm/functional/layers.py", "(w.mean() * p - w / c)", "(w.mean() * p - w)",
      ops("cross_entropy")),
    M("functional: cross-entropy counts the ignored targets", "minivlm/functional/layers.py",
      "        self.row_weight = self.keep.astype(logits.dtype)",
      "        self.row_weight = xp.ones(n, dtype=logits.dtype)", ops("cross_entropy")),
    M("functional: cross-entropy's mean divides by all targets", "minivlm/functional/layers.py",
      "        self.count = self.row_weight.sum() if",
      "        self.count = logits.dtype.type(n) if", ops("cross_entropy")),
    M("functional: embedding's gradient reaches the padding row", "minivlm/functional/layers.py",
      "            gw[self.padding_idx] = 0", "            pass", ops("embedding")),
    M("functional: embedding's gradient keeps one of repeated ids",
      "minivlm/functional/layers.py",
      "        backend.scatter_add(gw, self.ids.reshape(-1), g.reshape(-1, self.shape[1]))",
      "        gw[self.ids.reshape(-1)] = g.reshape(-1, self.shape[1])", ops("embedding")),
    M("functional: dropout scales the kept elements by 1/p", "minivlm/functional/layers.py",
      "        self.scale = keep * x.dtype.type(1 / (1 - p))",
      "        self.scale = keep * x.dtype.type(1 / p)", ops("dropout")),
    M("functional: dropout acts in eval mode", "minivlm/functional/layers.py",
      "    if not training or p == 0:", "    if p == 0:", ops("dropout")),
    M("functional: matmul's gradient for a uses b, not bᵀ", "minivlm/functional/tensor_ops.py",
      "unbroadcast(g2 @ b2.swapaxes(-1, -2), a2.shape)", "unbroadcast(g2 @ b2, a2.shape)",
      ops("matmul")),
    M("functional: mean's gradient is not divided by the count",
      "minivlm/functional/tensor_ops.py",
      "        g = _expand_reduced(g, self.shape, self.axes, self.keepdim) / self.count",
      "        g = _expand_reduced(g, self.shape, self.axes, self.keepdim)", ops("mean")),
    M("functional: var's gradient misses the 2", "minivlm/functional/tensor_ops.py",
      "        return g * self.centred * (2 / self.dof)",
      "        return g * self.centred * (1 / self.dof)", ops("var")),
    M("functional: var is biased by default", "minivlm/functional/tensor_ops.py",
      "    correction = (1 if unbiased else 0) if", "    correction = (0 if unbiased else 1) if",
      ops("var")),
    M("functional: max gives each tied maximum the whole gradient",
      "minivlm/functional/tensor_ops.py",
      "        return g * self.hit / self.hit.sum(axis=self.axes, keepdims=True, dtype=g.dtype)",
      "        return g * self.hit", ops("max")),
    M("functional: permute's gradient applies the permutation again",
      "minivlm/functional/tensor_ops.py", "inverse[d] = i", "inverse[i] = d", ops("permute")),
    M("functional: a cast's gradient keeps the cast dtype", "minivlm/functional/tensor_ops.py",
      "    def backward(self, g): return g.astype(self.dtype)",
      "    def backward(self, g): return g", ops("cast")),
    M("functional: indexing's gradient keeps one of repeated indices",
      "minivlm/functional/indexing.py",
      "            backend.scatter_add(full, self.index, g)  # repeated indices accumulate",
      "            full[self.index] = g", ops("getitem")),
    M("functional: split drops the remainder", "minivlm/functional/tensor_ops.py",
      "        sizes += [n % split_size_or_sections] if n % split_size_or_sections else []",
      "        sizes += []", ops("split")),
    M("functional: chunk rounds the chunk size down", "minivlm/functional/tensor_ops.py",
      "    return split(x, -(-x.shape[dim] // chunks), dim)",
      "    return split(x, max(1, x.shape[dim] // chunks), dim)", ops("chunk")),
    M("functional: roll's gradient rolls the same way", "minivlm/functional/tensor_ops.py",
      "        return xp_of(g).roll(g, negated, axis=self.dims)",
      "        return xp_of(g).roll(g, self.shifts, axis=self.dims)", ops("roll")),
    M("functional: pad pads the first dims, not the last", "minivlm/functional/tensor_ops.py",
      "            widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])",
      "            widths[i] = (pad[2 * i], pad[2 * i + 1])", ops("pad")),
    M("functional: where's gradient goes to the wrong branch", "minivlm/functional/tensor_ops.py",
      "(unbroadcast(xp_of(g).where(self.condition, g, zero), self.shapes[0])",
      "(unbroadcast(xp_of(g).where(self.condition, zero, g), self.shapes[0])", ops("where")),
    M("functional: attention scaled by 1/d, not 1/√d", "minivlm/functional/attention.py",
      "1 / math.sqrt(q.shape[-1]) if scale is None", "1 / q.shape[-1] if scale is None",
      ops("attention")),
    M("functional: a boolean attention mask read the wrong way round",
      "minivlm/functional/attention.py", "            e = xp.where(mask, e, -xp.inf) if",
      "            e = xp.where(mask, -xp.inf, e) if", ops("attention")),
    M("functional: the causal mask looks ahead", "minivlm/functional/attention.py",
      "            e = xp.where(xp.tril(xp.ones(e.shape[-2:], dtype=bool)), e, -xp.inf)",
      "            e = xp.where(xp.triu(xp.ones(e.shape[-2:], dtype=bool)), e, -xp.inf)",
      ops("attention")),
    M("functional: attention's key gradient misses the scale", "minivlm/functional/attention.py",
      "            gk *= self.scale\n", "            gk *= 1\n", ops("attention")),
    M("functional: a fully masked attention row gives NaN", "minivlm/functional/attention.py",
      "    row_max = xp.where(xp.isfinite(row_max), row_max, 0)", "    row_max = row_max",
      ops("attention")),
    M("functional: attention dropout forgotten in backward", "minivlm/functional/attention.py",
      "            p_used = p if self.drop is None else p * self.drop[block]",
      "            p_used = p", ops("attention")),
    M("functional: attention blocks overwrite a broadcast input's gradient",
      "minivlm/functional/attention.py",
      "                grad[index] += unbroadcast(part, grad[index].shape)",
      "                grad[index] = unbroadcast(part, grad[index].shape)", ops("attention")),
    M("functional: overlapping windows overwrite each other's gradient",
      "minivlm/functional/conv.py",
      "            out[..., i:i + sh * out_h:sh, j:j + sw * out_w:sw] += window_grads[..., i, j]",
      "            out[..., i:i + sh * out_h:sh, j:j + sw * out_w:sw] = window_grads[..., i, j]",
      CONV),
    M("functional: conv2d's bias gradient is a mean", "minivlm/functional/conv.py",
      "            gb = gy.sum(axis=1).reshape(-1)", "            gb = gy.mean(axis=1).reshape(-1)",
      CONV),
    M("functional: avg_pool2d's gradient is not divided by the window",
      "minivlm/functional/conv.py",
      "        share = g / g.dtype.type(math.prod(self.kernel))", "        share = g", CONV),
    M("functional: adaptive pooling bins end by floor, not ceiling", "minivlm/functional/conv.py",
      "    start, end = (i * size_in) // size_out, -((-(i + 1) * size_in) // size_out)",
      "    start, end = (i * size_in) // size_out, ((i + 1) * size_in) // size_out", CONV),
    M("functional: batch norm's running variance is the biased one", "minivlm/functional/conv.py",
      "                running_var += momentum * var * (count / (count - 1))",
      "                running_var += momentum * var", CONV),
    M("functional: batch norm's running mean keeps momentum of the old value",
      "minivlm/functional/conv.py",
      "running_mean *= 1 - momentum\n                running_mean += momentum * mean",
      "running_mean *= momentum\n                running_mean += (1 - momentum) * mean",
      CONV),
    M("functional: batch norm's training gradient ignores the batch statistics",
      "minivlm/functional/conv.py", "            if self.training:  # the batch statistics",
      "            if False:  # the batch statistics", CONV),

    # --- nn -----------------------------------------------------------------------------------
    M("nn: LayerNorm's default eps", "minivlm/nn/layers.py",
      "    def __init__(self, normalized_shape, eps=1e-5,",
      "    def __init__(self, normalized_shape, eps=1e-6,", NN),
    M("nn: Linear's bias drawn in ±1/in, not ±1/√in", "minivlm/nn/layers.py",
      "bound = 1 / math.sqrt(self.in_features)", "bound = 1 / self.in_features",
      NN),
    M("nn: the MLP skips its activation", "minivlm/nn/layers.py",
      "        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))",
      "        return self.drop(self.fc2(self.drop(self.fc1(x))))", NN),
    M("nn: train() sets the mode of the top module only", "minivlm/nn/module.py",
      "        for module in self.modules():\n            module.training = mode",
      "        for module in [self]:\n            module.training = mode", NN),
    M("nn: evaluating() leaves the module in eval mode", "minivlm/nn/module.py",
      "        module.train(was_training)", "        module.train(False)",
      NN + " tests/test_train_vision.py::test_predict_batches_in_eval_mode_and_restores_the_mode"),
    M("nn: a strict load ignores missing keys", "minivlm/nn/module.py",
      "        problems = _describe_problems(missing if strict else [],",
      "        problems = _describe_problems([],", NN),
    M("nn: state_dict saves non-persistent buffers", "minivlm/nn/module.py",
      "                       if name not in module._non_persistent_buffers}",
      "                       if True}", NN),
    M("nn: a shared parameter is listed twice", "minivlm/nn/module.py",
      "                if member is not None and id(member) not in seen:",
      "                if member is not None:", NN),
    M("nn: trunc_normal_ keeps values above b", "minivlm/nn/init.py",
      "    outside = (values < a) | (values > b)\n    while",
      "    outside = (values < a)\n    while", NN),
    M("nn: xavier_uniform_'s bound misses √3", "minivlm/nn/init.py",
      "    bound = math.sqrt(3.0) * gain * math.sqrt(2.0 / (fan_in + fan_out))",
      "    bound = gain * math.sqrt(2.0 / (fan_in + fan_out))", NN),
    M("nn: a boolean attention mask read the wrong way round", "minivlm/functional/multihead.py",
      "    return Tensor(xp.where(data, -xp.inf, 0).astype(like.dtype))",
      "    return Tensor(xp.where(data, 0, -xp.inf).astype(like.dtype))", ATTENTION),
    M("nn: the causal mask hides the diagonal", "minivlm/nn/attention.py",
      "    return Tensor(xp.triu(xp.ones((N_Q, N_X), dtype=bool), k=1))",
      "    return Tensor(xp.triu(xp.ones((N_Q, N_X), dtype=bool), k=0))", ATTENTION),
    M("nn: attention weights summed over the heads, not averaged",
      "minivlm/functional/multihead.py", "        A = mean(A, dim=1)",
      "        A = mean(A, dim=1) * num_heads", ATTENTION),
    M("nn: the heads merged without moving them back beside each other",
      "minivlm/functional/multihead.py",
      "    y = transpose(reshape(transpose(y, 1, 2), N, L, E), 0, 1)",
      "    y = transpose(reshape(y, N, L, E), 0, 1)", ATTENTION),
    M("nn: the key padding mask masks queries", "minivlm/functional/multihead.py",
      "        masks.append(reshape(additive_mask(key_padding_mask, like), N, 1, 1, S))",
      "        masks.append(reshape(additive_mask(key_padding_mask, like), N, 1, S, 1))",
      ATTENTION),
    M("nn: post-norm and pre-norm swapped", "minivlm/nn/transformer.py",
      "        if self.norm_first:\n            return x + dropout(sublayer(norm(x)))",
      "        if not self.norm_first:\n            return x + dropout(sublayer(norm(x)))",
      TRANSFORMER),
    M("nn: cross-attention attends to the target", "minivlm/nn/transformer.py",
      "        return self.multihead_attn(x, memory, memory, attn_mask=attn_mask,",
      "        return self.multihead_attn(x, x, x, attn_mask=attn_mask,", TRANSFORMER),
    M("nn: sinusoidal frequencies grow", "minivlm/nn/positional.py",
      '    frequency = 10000.0 ** (-xp.arange(0, dim, 2, dtype="float64") / dim)',
      '    frequency = 10000.0 ** (xp.arange(0, dim, 2, dtype="float64") / dim)', TRANSFORMER),
    M("nn: sin and cos swapped", "minivlm/nn/positional.py",
      "    table[:, 0::2] = xp.sin(angle)", "    table[:, 0::2] = xp.cos(angle)", TRANSFORMER),
    M("nn: batch norm uses batch statistics in eval mode", "minivlm/nn/conv.py",
      "        use_batch_statistics = self.training or self.running_mean is None",
      "        use_batch_statistics = True", CONV + " " + RESNET),
    M("nn: batch norm's cumulative average counts one batch less", "minivlm/nn/conv.py",
      "                momentum = 1 / self.num_batches_tracked.item()",
      "                momentum = 1 / (self.num_batches_tracked.item() + 1)", CONV),
    M("nn: Conv2d's bias bound ignores the kernel", "minivlm/nn/conv.py",
      "bound = 1 / math.sqrt(self.in_channels // self.groups * math.prod(self.kernel_size))",
      "bound = 1 / math.sqrt(self.in_channels // self.groups)", CONV + " " + NN),

    # --- models -------------------------------------------------------------------------------
    M("models: gelu_pytorch_tanh is the exact GELU", "minivlm/models/vit.py",
      '    "gelu_pytorch_tanh": functools.partial(nn.GELU, approximate="tanh"),',
      '    "gelu_pytorch_tanh": nn.GELU,', VIT),
    M("models: the bicubic resize matrix is float64", "minivlm/models/vit.py",
      "    matrix = xp.zeros((size_out, size_in), dtype=like.dtype)",
      '    matrix = xp.zeros((size_out, size_in), dtype="float64")', VIT),
    M("models: bicubic resizing with a = -0.5", "minivlm/models/vit.py",
      "    a = -0.75\n", "    a = -0.5\n", VIT),
    M("models: the resized position grid swaps rows and columns", "minivlm/models/vit.py",
      "        patch_pos = resize_rows @ patch_pos @ resize_cols.T  # (D, rows, cols)",
      "        patch_pos = resize_cols @ patch_pos @ resize_rows.T  # (D, rows, cols)", VIT),
    M("models: ViT patches read column-major inside each patch", "minivlm/models/vit.py",
      ".permute(0, 2, 4, 1, 3, 5)", ".permute(0, 2, 4, 1, 5, 3)", VIT),
    M("models: ViT's class token goes last", "minivlm/models/vit.py",
      "        x = F.cat([self.cls_token.expand(B, 1, D), x], dim=1)",
      "        x = F.cat([x, self.cls_token.expand(B, 1, D)], dim=1)", VIT),
    M("models: ViT's block has no attention residual", "minivlm/models/vit.py",
      "        x = x + self.attn(self.norm1(x))", "        x = self.attn(self.norm1(x))", VIT),
    M("models: Swin ignores the shift mask", "minivlm/models/swin.py",
      "            mask = shift_mask(H + pad_H, W + pad_W, window, shift, xp_of(x.array), x.dtype)",
      "            mask = None", SWIN),
    M("models: Swin shifts the even blocks", "minivlm/models/swin.py",
      "    return window_size, window_size // 2 if block_index % 2 else 0",
      "    return window_size, window_size // 2 if not block_index % 2 else 0", SWIN),
    M("models: Swin rolls back the wrong way", "minivlm/models/swin.py",
      "            x = F.roll(x, (shift, shift), dims=(1, 2))",
      "            x = F.roll(x, (-shift, -shift), dims=(1, 2))", SWIN),
    M("models: Swin's relative positions read Δrow for Δcol", "minivlm/models/swin.py",
      "    return delta[0] * (2 * table_window - 1) + delta[1]",
      "    return delta[0] * (2 * table_window - 1) + delta[0]", SWIN),
    M("models: Swin merges neighbours row-major", "minivlm/models/swin.py",
      "permute(0, 1, 3, 4, 2, 5)  # (B, h, w, col, row, C)",
      "permute(0, 1, 3, 2, 4, 5)  # (B, h, w, col, row, C)", SWIN),
    M("models: Swin's head reads the first token, not the mean", "minivlm/models/swin.py",
      "        return self.head(self.forward_features(pixels).mean(dim=1))",
      "        return self.head(self.forward_features(pixels)[:, 0])", SWIN),
    M("models: CLIP's logit scale starts at 1/0.07, not its log", "minivlm/models/clip.py",
      "        self.logit_scale = Parameter(full((), math.log(1 / 0.07)))",
      "        self.logit_scale = Parameter(full((), 1 / 0.07))", CLIP),
    M("models: CLIP clamps its logit scale from below", "minivlm/models/clip.py",
      "        data[...] = xp_of(data).minimum(data, MAX_LOGIT_SCALE)",
      "        data[...] = xp_of(data).maximum(data, MAX_LOGIT_SCALE)", CLIP),
    M("losses: the CLIP loss counts the text direction twice", "minivlm/losses.py",
      "    return (loss_i + loss_t) / 2", "    return (loss_t + loss_t) / 2", CLIP),
    M("models: CLIP's logits_per_text is not transposed", "minivlm/models/clip.py",
      "        return logits_per_image, logits_per_image.T",
      "        return logits_per_image, logits_per_image", CLIP),
    M("models: CLIP's ViT skips ln_pre", "minivlm/models/clip.py",
      "        x = self.transformer(self.ln_pre(x))", "        x = self.transformer(x)", CLIP),
    M("models: CLIP's text feature is read at the lowest id", "minivlm/models/text.py",
      "            return ids.argmax(axis=-1)", "            return ids.argmin(axis=-1)", CLIP),
    M("models: CLIP's text encoder looks ahead", "minivlm/models/text.py",
      "config.activation, config.layer_norm_eps, causal=True)",
      "config.activation, config.layer_norm_eps, causal=False)", CLIP),
    M("models: CLIP's text projections start with the wrong std", "minivlm/models/text.py",
      "        proj_std = width ** -0.5 * (2 * layers) ** -0.5",
      "        proj_std = width ** -0.5 * layers ** -0.5", CLIP),
    M("models: ResNet's ReLU before the residual sum", "minivlm/models/resnet.py",
      "        out = self.bn2(self.conv2(out))\n        return self.relu(out + identity)",
      "        out = self.bn2(self.conv2(out))\n        return self.relu(out) + identity", RESNET),
    M("models: CLIP's attention pool queries with the first pixel", "minivlm/models/resnet.py",
      "        x = F.cat([x.mean(dim=1, keepdim=True), x], dim=1)          # N(HW+1)C",
      "        x = F.cat([x, x.mean(dim=1, keepdim=True)], dim=1)          # N(HW+1)C", RESNET),
    M("models: the causal LM looks ahead", "minivlm/models/lm.py",
      "            x = block(x, src_mask=causal,", "            x = block(x, src_mask=None,", LM),
    M("models: BERT masking replaces 15 % of the chosen tokens by random ones",
      "minivlm/models/lm.py", "(action >= 0.8) & (action < 0.9), random_tokens",
      "(action >= 0.8) & (action < 0.95), random_tokens", LM),
    M("models: top-k keeps one token too many", "minivlm/models/generation.py",
      "-min(top_k, logits.shape[-1]), None]", "-min(top_k + 1, logits.shape[-1]), None]",
      "tests/test_generate.py tests/test_lm.py"),

    # --- the training recipes' update step ------------------------------------------------
    M("recipes: gradients accumulate across steps", "minivlm/recipes/common.py",
      "    optimizer.zero_grad()\n", "    pass\n", RECIPES),
    M("recipes: gradients are not clipped", "minivlm/recipes/common.py",
      "    clip_grad_norm_(params, max_grad_norm)\n", "    pass\n", RECIPES),
    M("recipes: an infinite loss does not stop the run", "minivlm/recipes/common.py",
      "    if not math.isfinite(value):", "    if math.isnan(value):", RECIPES),
    M("recipes: the step's hook (CLIP's clamp) is not called", "minivlm/recipes/common.py",
      "        if after_update is not None:\n            after_update()",
      "        if after_update is not None:\n            pass", RECIPES),
    M("recipes: train-clip does not clamp the logit scale", "minivlm/recipes/clip.py",
      "config.max_grad_norm, after_update=model.clamp_logit_scale_,",
      "config.max_grad_norm,", RECIPES),
    M("recipes: the backends are not reseeded each step", "minivlm/recipes/common.py",
      "        seed_backends(seed, step)\n", "        pass\n", RECIPES + " " + LM),
    M("recipes: the metrics log the lr after the schedule's step", "minivlm/recipes/common.py",
      "        run.log(step + 1, loss=loss, lr=lr)",
      "        run.log(step + 1, loss=loss, lr=optimizer.param_groups[0][\"lr\"])", RECIPES),
    M("recipes: AdamW decays every parameter", "minivlm/recipes/common.py",
      "    return AdamW(decay_matrices_only(model.parameters()), lr=lr,",
      "    return AdamW(model.parameters(), lr=lr,", RECIPES),
    M("recipes: train-clip's AdamW decays every parameter", "minivlm/recipes/clip.py",
      "    return adamw(model, config.lr, config.weight_decay, betas=(0.9, 0.98), eps=1e-6)",
      "    from ..optim import AdamW\n    return AdamW(model.parameters(), config.lr, "
      "betas=(0.9, 0.98), eps=1e-6, weight_decay=config.weight_decay)", RECIPES),
    M("recipes: matrices-only decay also spares the matrices", "minivlm/optim.py",
      '    return [{"params": [p for p in params if p.ndim >= 2]},',
      '    return [{"params": [p for p in params if p.ndim >= 3]},', RECIPES),
    M("recipes: train-vision's warm-up lasts the whole run", "minivlm/recipes/vision.py",
      "    schedule = cosine_schedule(optimizer, warmup_steps=steps // 10,",
      "    schedule = cosine_schedule(optimizer, warmup_steps=steps,",
      "tests/test_train_vision.py::test_short_run_of_a_tiny_model_learns_the_shapes"),
    M("recipes: a resumed run keeps the metrics of the lost steps", "minivlm/recipes/common.py",
      '        metrics = [m for m in read_metrics(directory) if m["step"] <= step]',
      '        metrics = list(read_metrics(directory))', RECIPES),

    # --- io ----------------------------------------------------------------------------------
    M("io: BF16 rounding ignores ties-to-even", "minivlm/io.py",
      "    rounded = ((bits + 0x7FFF + lowest_kept_bit) >> 16)",
      "    rounded = ((bits + 0x8000) >> 16)", IO),
    M("io: BF16 widening shifts by 8", "minivlm/io.py", "widened <<= 16", "widened <<= 8", IO),
    M("io: a gap in the data buffer is accepted", "minivlm/io.py",
      "        if begin > end_of_previous:", "        if False:", IO),
    M("io: bytes after the last tensor are accepted", "minivlm/io.py",
      "    if end_of_previous != buffer_size:", "    if False:", IO),
    M("io: a header length past the end of the file is trusted", "minivlm/io.py",
      "        if header_size > min(file_size - 8, _MAX_HEADER_BYTES):",
      "        if header_size > _MAX_HEADER_BYTES:", IO),
    M("io: offsets that disagree with the shape are accepted", "minivlm/io.py",
      "    if offsets[1] - offsets[0] != nbytes:", "    if False:", IO),
    M("io: a failed write leaves its temporary file", "minivlm/io.py",
      "        temporary.unlink(missing_ok=True)\n", "        pass\n", IO),
    M("io: BOOL bytes other than 1 are read as they are", "minivlm/io.py",
      "        return stored.astype(bool)     # any non-zero byte is True",
      "        return stored.view(bool)", IO),
    M("io: npz files may hold pickles", "minivlm/io.py",
      "        return np.lib.format.read_array(f, allow_pickle=False)",
      "        return np.lib.format.read_array(f, allow_pickle=True)", IO),
    M("io: big-endian arrays are written as they are", "minivlm/io.py",
      "    dtype = _NAMES.get(array.dtype.newbyteorder(\"<\"))",
      "    dtype = _NAMES.get(array.dtype)", IO),
]


# --- running ----------------------------------------------------------------------------------

def run_pytest(arguments, copy, cpu_seconds):
    """pytest with `arguments` in `copy` -> (exit status, or None when it used up cpu_seconds of
    processor time (a limit a busy shared machine does not shorten) or ten times as many
    seconds of wall-clock time; its output; the processor seconds it used)."""
    def limit_cpu():
        resource.setrlimit(resource.RLIMIT_CPU, (int(cpu_seconds), int(cpu_seconds) + 5))

    path = os.pathsep.join(filter(None, [str(copy), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "CI": "true", "HYPOTHESIS_PROFILE": "ci",
           "PYTHONDONTWRITEBYTECODE": "1"}   # a mutant may keep its file's size and mtime second
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-rf", "-p", "no:cacheprovider",
               *arguments]
    process = subprocess.Popen(command, cwd=copy, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, preexec_fn=limit_cpu)
    timer = threading.Timer(10 * cpu_seconds, process.kill)
    timer.start()
    try:
        output = process.stdout.read()
        _, wait_status, usage = os.wait4(process.pid, 0)   # the rusage of this child alone
    finally:
        timer.cancel()
        process.stdout.close()
    process.returncode = status = os.waitstatus_to_exitcode(wait_status)
    out_of_time = status in (-signal.SIGXCPU, -signal.SIGKILL)
    return None if out_of_time else status, output, usage.ru_utime + usage.ru_stime


def make_copy(directory):
    """The project's sources and tests in `directory`, without bytecode caches."""
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, directory / name,
                            ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
        else:
            shutil.copy2(source, directory / name)
    return directory


def check_snippets(mutants):
    """An error naming every mutant whose snippet does not occur exactly once."""
    stale = []
    for mutant in mutants:
        count = (ROOT / mutant.path).read_text(encoding="utf-8").count(mutant.old)
        if count != 1:
            stale.append(f"  {mutant.name}: {mutant.path} holds its snippet {count} times:\n"
                         f"    {mutant.old!r}")
    if stale:
        raise SystemExit("mutation.py: update these mutants to the code:\n" + "\n".join(stale))


def run_mutant(mutant, copy, cpu_seconds):
    """-> (outcome: caught, timed out or survived; the first failing test or '')."""
    path = copy / mutant.path
    original = path.read_text(encoding="utf-8")
    path.write_text(original.replace(mutant.old, mutant.new), encoding="utf-8")
    try:
        status, output, _ = run_pytest(shlex.split(mutant.tests), copy, cpu_seconds)
    finally:
        path.write_text(original, encoding="utf-8")
    if status is None:
        return "timed out", f"used {cpu_seconds:.0f} s of processor time"
    if status == 0:
        return "survived", ""
    failed = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return "caught", failed[0][:150] if failed else f"pytest exit status {status}"


def in_copies(jobs, scratch, items, run):
    """run(item, copy) for every item, `jobs` at a time, each in a copy of its own; yields
    (item, result, seconds) in the order of items."""
    copies = queue.Queue()
    for i in range(jobs):
        copies.put(make_copy(Path(scratch) / str(i)))

    def timed(item):
        copy, start = copies.get(), time.monotonic()
        try:
            return run(item, copy), time.monotonic() - start
        finally:
            copies.put(copy)

    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for item, (result, seconds) in zip(items, pool.map(timed, items)):
            yield item, result, seconds


def run_all(mutants, jobs, cpu_factor):
    """Run each distinct test selection unmutated (it must pass), then each mutant with
    cpu_factor times the processor time its selection took, plus 30 s -> [(mutant, outcome)]."""
    with tempfile.TemporaryDirectory(prefix="minivlm-mutation-") as scratch:
        selections = list(dict.fromkeys(mutant.tests for mutant in mutants))
        start, cpu = time.monotonic(), {}
        for tests, (status, output, seconds), _ in in_copies(
                jobs, scratch, selections,
                lambda tests, copy: run_pytest(shlex.split(tests), copy, 3600)):
            if status != 0:
                raise SystemExit(f"mutation.py: these tests fail without any mutant: {tests}\n"
                                 f"{output[-3000:]}")
            cpu[tests] = seconds
        print(f"baseline: the {len(selections)} test selections pass unmutated in "
              f"{sum(cpu.values()):.0f} s of processor time ({time.monotonic() - start:.0f} s)",
              flush=True)
        for path in Path(scratch).iterdir():
            shutil.rmtree(path)

        results = []
        for i, (mutant, (outcome, detail), seconds) in enumerate(in_copies(
                jobs, scratch, mutants,
                lambda m, copy: run_mutant(m, copy, cpu_factor * cpu[m.tests] + 30)), 1):
            print(f"[{i}/{len(mutants)}] {outcome:9} {seconds:5.0f} s  {mutant.name}"
                  + (f"\n    {detail}" if detail else ""), flush=True)
            results.append((mutant, outcome))
    return results


def report(results, seconds):
    caught = sum(outcome != "survived" for _, outcome in results)
    print(f"\ncaught {caught} of {len(results)} mutants ({100 * caught / len(results):.1f} %) in "
          f"{seconds / 60:.0f} min")
    for kind in ("timed out", "survived"):
        for mutant, outcome in results:
            if outcome == kind:
                print(f"  {kind}: {mutant.name}\n    {mutant.path}: {mutant.old!r} -> "
                      f"{mutant.new!r}")
    return 0 if caught == len(results) else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default="", help="only the mutants whose name contains this")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    parser.add_argument("--cpu-factor", type=float, default=3,
                        help="a mutant's tests time out after this many times the processor "
                             "time they take unmutated, plus 30 s (default 3)")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    args = parser.parse_args(argv)
    mutants = [m for m in MUTANTS if args.k in m.name]
    if not mutants:
        parser.error(f"no mutant's name contains {args.k!r}")
    check_snippets(mutants)
    if args.list:
        for mutant in mutants:
            print(f"{mutant.name}\n    {mutant.path}: {mutant.old!r} -> {mutant.new!r}\n"
                  f"    {mutant.tests}")
        return 0
    start = time.monotonic()
    return report(run_all(mutants, args.jobs, args.cpu_factor), time.monotonic() - start)


if __name__ == "__main__":
    sys.exit(main())

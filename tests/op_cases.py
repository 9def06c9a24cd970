"""Every differentiable op of minivlm.functional, described once for the three test tiers.

An OpCase draws an example — the differentiable inputs (a dict name -> float64 host array) and
the other arguments (dims, flags, integer and boolean arrays) — and computes the op with minivlm,
`ours(**tensors, **params)`, and with torch, `theirs(torch, **tensors, **params)`. Values keep
clear of the points where an op is not differentiable (|x| and relu at 0, ties under max, the
bounds of clamp) and of inputs that float32 cannot compare with float64 (near-constant rows under
layer norm or var).
"""
import math
from typing import Callable, NamedTuple

import numpy as np
from hypothesis import assume, strategies as st
from hypothesis.extra import numpy as hnp

import minivlm as mv
import minivlm.functional as F
from strategies import arrays, broadcastable_shapes, distinct_arrays, finite_floats, shapes


class OpCase(NamedTuple):
    name: str
    inputs: st.SearchStrategy  # -> (dict name -> float64 array, dict of other arguments)
    ours: Callable
    theirs: Callable

    def __str__(self):
        return self.name


def ours_params(params, device):
    """The non-differentiable arguments for minivlm: arrays, also inside index tuples, become
    Tensors on `device`."""
    if isinstance(params, dict):
        return {name: ours_params(value, device) for name, value in params.items()}
    if isinstance(params, tuple):
        return tuple(ours_params(value, device) for value in params)
    return mv.tensor(params, device=device) if isinstance(params, np.ndarray) else params


def torch_params(params, torch):
    """The same arguments for torch: arrays become torch tensors."""
    if isinstance(params, dict):
        return {name: torch_params(value, torch) for name, value in params.items()}
    if isinstance(params, tuple):
        return tuple(torch_params(value, torch) for value in params)
    return torch.from_numpy(params) if isinstance(params, np.ndarray) else params


def _tf(torch):
    return torch.nn.functional


def _dim(draw, ndim, new_axis=False):
    """A dim of an array with `ndim` dims, maybe negative (one past the end for a new axis)."""
    extra = 1 if new_axis else 0
    return draw(st.integers(-ndim - extra, ndim - 1 + extra))


def _dims(draw, ndim):
    """None, one dim (maybe negative) or a non-empty tuple of distinct dims."""
    several = st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple)
    return draw(st.none() | st.integers(-ndim, ndim - 1) | several)


def _one_input(name, ours, theirs, values=arrays, min_dims=0, params=lambda draw, shape: {}):
    """An op of one input x, with `params(draw, shape)` for its other arguments."""
    @st.composite
    def inputs(draw):
        shape = draw(shapes(min_dims, 3))
        return {"x": draw(values(shape))}, params(draw, shape)
    return OpCase(name, inputs(), ours, theirs)


def _elements(elements):
    return lambda shape: arrays(shape, elements=elements)


# --- elementwise ---------------------------------------------------------------------------------

positive = _elements(finite_floats(0.25, 3.0))
nonzero = _elements(finite_floats(min_magnitude=0.1))
clear_of_clamp_bounds = _elements(finite_floats(-2, 2).filter(
    lambda v: abs(abs(v) - 0.5) > 0.01 and abs(abs(v) - 1) > 0.01))


def _clamp_params(draw, shape):
    low, high = draw(st.sampled_from([(-0.5, 1.0), (None, 0.5), (-1.0, None)]))
    return {"min": low, "max": high}


def _binary(name, ours, theirs, a=None, b=None):
    @st.composite
    def inputs(draw):
        shape_a, shape_b = draw(broadcastable_shapes())
        return {"a": draw(arrays(shape_a, elements=a)), "b": draw(arrays(shape_b, elements=b))}, {}
    return OpCase(name, inputs(), ours, theirs)


def _with_scalar(name, ours, theirs, values=arrays):
    """An operator with a Python number `c` on one side."""
    return _one_input(name, ours, theirs, values,
                      params=lambda draw, shape: {"c": draw(st.sampled_from([-1.5, 0.5, 2.0, 3]))})


ELEMENTWISE = [
    _one_input("neg", lambda x: -x, lambda torch, x: -x),
    _one_input("exp", F.exp, lambda torch, x: torch.exp(x)),
    _one_input("log", F.log, lambda torch, x: torch.log(x), positive),
    _one_input("sqrt", F.sqrt, lambda torch, x: torch.sqrt(x), positive),
    _one_input("abs", F.abs, lambda torch, x: torch.abs(x), nonzero),
    _one_input("tanh", F.tanh, lambda torch, x: torch.tanh(x)),
    _one_input("sigmoid", F.sigmoid, lambda torch, x: torch.sigmoid(x)),
    _one_input("relu", F.relu, lambda torch, x: torch.relu(x), nonzero),
    _one_input("gelu", F.gelu, lambda torch, x: _tf(torch).gelu(x)),
    _one_input("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"),
               lambda torch, x: _tf(torch).gelu(x, approximate="tanh")),
    _one_input("quick_gelu", F.quick_gelu, lambda torch, x: x * torch.sigmoid(1.702 * x)),
    _one_input("silu", F.silu, lambda torch, x: _tf(torch).silu(x)),
    _one_input("sin", F.sin, lambda torch, x: torch.sin(x)),
    _one_input("cos", F.cos, lambda torch, x: torch.cos(x)),
    _one_input("clamp", F.clamp, lambda torch, x, min, max: torch.clamp(x, min, max),
               clear_of_clamp_bounds, params=_clamp_params),
    _binary("add", F.add, lambda torch, a, b: a + b),
    _binary("sub", F.sub, lambda torch, a, b: a - b),
    _binary("mul", F.mul, lambda torch, a, b: a * b),
    _binary("div", F.div, lambda torch, a, b: a / b, b=finite_floats(min_magnitude=0.5)),
    _binary("pow", F.pow, lambda torch, a, b: a ** b, a=finite_floats(0.5, 2.0),
            b=finite_floats(-2.0, 2.0)),
    _with_scalar("scalar_minus_x", lambda x, c: c - x, lambda torch, x, c: c - x),
    _with_scalar("scalar_over_x", lambda x, c: c / x, lambda torch, x, c: c / x, nonzero),
    _with_scalar("x_pow_scalar", lambda x, c: x ** c, lambda torch, x, c: x ** c, positive),
    _with_scalar("scalar_pow_x", lambda x, c: abs(c) ** x, lambda torch, x, c: abs(c) ** x),
]


# --- matrix products -----------------------------------------------------------------------------

@st.composite
def _matmul_inputs(draw):
    batch_a, batch_b = draw(broadcastable_shapes(max_dims=2, max_side=3))
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    shape_a = draw(st.sampled_from([(k,), (*batch_a, m, k)]))  # 1-d operands too
    shape_b = draw(st.sampled_from([(k,), (*batch_b, k, n)]))
    return {"a": draw(arrays(shape_a)), "b": draw(arrays(shape_b))}, {}


@st.composite
def _linear_inputs(draw):
    lead = draw(shapes(0, 2, max_side=3))
    n_in, n_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    inputs = {"x": draw(arrays((*lead, n_in))), "weight": draw(arrays((n_out, n_in)))}
    if draw(st.booleans()):
        inputs["bias"] = draw(arrays((n_out,)))
    return inputs, {}


@st.composite
def _einsum_inputs(draw):
    """Two operands of a drawn equation over letters i, j, k (with a batch ellipsis): products,
    outer products, traces of a whole axis and broadcast summed axes."""
    first, second, out = draw(st.sampled_from([
        ("ij", "jk", "ik"), ("ij", "kj", "ki"), ("i", "j", "ij"), ("ij", "ij", ""),
        ("ij", "j", "i"), ("...ij", "...jk", "...ik"), ("ijk", "ik", "ij"), ("ij", "jk", "")]))
    sizes = {c: draw(st.integers(1, 3)) for c in "ijk"}
    batch = draw(shapes(0, 2, max_side=2)) if "..." in first else ()
    a = draw(arrays(batch + tuple(sizes[c] for c in first.replace("...", ""))))
    b = draw(arrays(batch + tuple(sizes[c] for c in second.replace("...", ""))))
    return {"a": a, "b": b}, {"equation": f"{first},{second}->{out}"}


MATRIX = [
    OpCase("matmul", _matmul_inputs(), F.matmul, lambda torch, a, b: a @ b),
    OpCase("einsum", _einsum_inputs(), lambda a, b, equation: F.einsum(equation, a, b),
           lambda torch, a, b, equation: torch.einsum(equation, a, b)),
    OpCase("linear", _linear_inputs(), F.linear,
           lambda torch, x, weight, bias=None: _tf(torch).linear(x, weight, bias)),
]


# --- reductions ----------------------------------------------------------------------------------

def _max_or_min(name):
    """max/min over everything (dim None) or (values, indices) over one dim."""
    def ours(x, dim, keepdim=False):
        op = getattr(F, name)
        return op(x) if dim is None else op(x, dim, keepdim).values

    def theirs(torch, x, dim, keepdim=False):
        op = getattr(torch, name)
        return op(x) if dim is None else op(x, dim, keepdim).values

    def params(draw, shape):
        dim = draw(st.none() | st.integers(-len(shape), len(shape) - 1))
        return {"dim": dim} if dim is None else {"dim": dim, "keepdim": draw(st.booleans())}

    return _one_input(name, ours, theirs, distinct_arrays, min_dims=1, params=params)


def _all(x, dim):
    """torch's amax/amin spell "every dim" as the tuple of them."""
    return tuple(range(x.ndim)) if dim is None else dim


def _reduce_params(draw, shape):
    return {"dim": _dims(draw, len(shape)), "keepdim": draw(st.booleans())}


@st.composite
def _var_inputs(draw):
    shape = draw(shapes(1, 3, min_side=2))
    params = dict(_reduce_params(draw, shape), correction=draw(st.sampled_from([0, 1])))
    return {"x": draw(distinct_arrays(shape))}, params


REDUCTIONS = [
    _one_input("sum", F.sum, lambda torch, x, dim, keepdim: torch.sum(x, dim, keepdim),
               min_dims=1, params=_reduce_params),
    _one_input("mean", F.mean, lambda torch, x, dim, keepdim: torch.mean(x, dim, keepdim),
               min_dims=1, params=_reduce_params),
    OpCase("var", _var_inputs(), F.var,
           lambda torch, x, dim, correction, keepdim: torch.var(x, dim, correction=correction,
                                                                keepdim=keepdim)),
    _max_or_min("max"),
    _max_or_min("min"),
    _one_input("amax", F.amax, lambda torch, x, dim, keepdim: torch.amax(x, _all(x, dim), keepdim),
               distinct_arrays, min_dims=1, params=_reduce_params),
    _one_input("amin", F.amin, lambda torch, x, dim, keepdim: torch.amin(x, _all(x, dim), keepdim),
               distinct_arrays, min_dims=1, params=_reduce_params),
    _one_input("norm", F.norm, lambda torch, x, dim, keepdim: torch.norm(x, 2, dim, keepdim),
               nonzero, min_dims=1, params=_reduce_params),
    _one_input("logsumexp", F.logsumexp,
               lambda torch, x, dim, keepdim: torch.logsumexp(x, dim, keepdim), min_dims=1,
               params=lambda draw, shape: {"dim": _dim(draw, len(shape)),
                                           "keepdim": draw(st.booleans())}),
    _one_input("softmax", F.softmax, lambda torch, x, dim: torch.softmax(x, dim), min_dims=1,
               params=lambda draw, shape: {"dim": _dim(draw, len(shape))}),
    _one_input("log_softmax", F.log_softmax, lambda torch, x, dim: torch.log_softmax(x, dim),
               min_dims=1, params=lambda draw, shape: {"dim": _dim(draw, len(shape))}),
]


# --- shapes --------------------------------------------------------------------------------------

def _reshape_params(draw, shape):
    target = list(draw(st.permutations(shape)))  # the same number of elements
    if target and draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    return {"shape": tuple(target)}


def _expand_params(draw, shape):
    kept = [draw(st.integers(1, 3)) if n == 1 else draw(st.sampled_from([n, -1])) for n in shape]
    return {"shape": (*draw(st.lists(st.integers(1, 3), max_size=1)), *kept)}


def _permute_params(draw, shape):
    dims = draw(st.permutations(range(len(shape))))
    return {"dims": tuple(d - len(shape) if draw(st.booleans()) else d for d in dims)}


def _flatten_params(draw, shape):
    start, end = sorted(draw(st.integers(0, len(shape) - 1)) for _ in range(2))
    return {"start_dim": start - len(shape) * draw(st.integers(0, 1)), "end_dim": end}


def _squeeze_params(draw, shape):
    return {"dim": draw(st.none() | st.integers(-len(shape), len(shape) - 1))}


def _transpose_params(draw, shape):
    return {"dim0": _dim(draw, len(shape)), "dim1": _dim(draw, len(shape))}


def _repeat_params(draw, shape):
    return {"sizes": tuple(draw(st.integers(1, 3)) for _ in range(len(shape) +
                                                                  draw(st.integers(0, 1))))}


SHAPES = [
    _one_input("repeat", lambda x, sizes: F.repeat(x, *sizes),
               lambda torch, x, sizes: x.repeat(sizes), params=_repeat_params),
    _one_input("clone", F.clone, lambda torch, x: x.clone()),
    _one_input("unbind", lambda x, dim: _reversed_pieces(F.unbind(x, dim), dim, F.stack),
               lambda torch, x, dim: _reversed_pieces(torch.unbind(x, dim), dim, torch.stack),
               min_dims=1, params=lambda draw, shape: {"dim": _dim(draw, len(shape))}),
    _one_input("reshape", lambda x, shape: F.reshape(x, shape),
               lambda torch, x, shape: x.reshape(shape), params=_reshape_params),
    _one_input("transpose", F.transpose, lambda torch, x, dim0, dim1: x.transpose(dim0, dim1),
               min_dims=1, params=_transpose_params),
    _one_input("permute", lambda x, dims: F.permute(x, *dims),
               lambda torch, x, dims: x.permute(dims), min_dims=1, params=_permute_params),
    _one_input("T", lambda x: x.T, lambda torch, x: x.permute(tuple(reversed(range(x.ndim))))),
    _one_input("expand", lambda x, shape: F.expand(x, *shape),
               lambda torch, x, shape: x.expand(shape), params=_expand_params),
    _one_input("squeeze", F.squeeze,
               lambda torch, x, dim: x.squeeze() if dim is None else x.squeeze(dim), min_dims=1,
               params=_squeeze_params),
    _one_input("unsqueeze", F.unsqueeze, lambda torch, x, dim: x.unsqueeze(dim),
               params=lambda draw, shape: {"dim": _dim(draw, len(shape), new_axis=True)}),
    _one_input("flatten", F.flatten,
               lambda torch, x, start_dim, end_dim: x.flatten(start_dim, end_dim), min_dims=1,
               params=_flatten_params),
]


# --- indexing, joining, splitting ----------------------------------------------------------------

def _index(draw, shape):
    """Slices, an integer, an integer array with repeats, a boolean mask, or None and Ellipsis."""
    axis = draw(st.integers(0, len(shape) - 1))
    before, n = (slice(None),) * axis, shape[axis]
    kind = draw(st.sampled_from(["slices", "integer", "integer array", "mask", "newaxis"]))
    if kind == "slices":
        return tuple(slice(draw(st.none() | st.integers(-side - 1, side + 1)),
                           draw(st.none() | st.integers(-side - 1, side + 1)),
                           draw(st.none() | st.integers(1, 3))) for side in shape)
    if kind == "integer":
        return before + (draw(st.integers(-n, n - 1)),)
    if kind == "integer array":
        ids = hnp.arrays(np.int64, shapes(1, 2), elements=st.integers(-n, n - 1))
        return before + (draw(ids),)
    if kind == "mask":
        return (draw(hnp.arrays(np.bool_, shape[:axis + 1])),)
    return (None, Ellipsis, draw(st.integers(-shape[-1], shape[-1] - 1)))


@st.composite
def _cat_inputs(draw, same_shapes=False):
    shape = list(draw(shapes(1, 3)))
    dim = _dim(draw, len(shape), new_axis=same_shapes)
    inputs = {}
    for i in range(draw(st.integers(1, 3))):
        if not same_shapes:
            shape[dim] = draw(st.integers(1, 3))
        inputs[f"t{i}"] = draw(arrays(tuple(shape)))
    return inputs, {"dim": dim}


def _split_params(draw, shape):
    dim = _dim(draw, len(shape))
    n = shape[dim]
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
    sections = [b - a for a, b in zip([0, *cuts], [*cuts, n])]
    return {"split_size_or_sections": draw(st.integers(1, n + 1) | st.just(sections)), "dim": dim}


def _roll_params(draw, shape):
    if draw(st.booleans()):
        return {"shifts": draw(st.integers(-5, 5)), "dims": None}
    dims = draw(st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1, max_size=len(shape),
                         unique_by=lambda d: d % len(shape)))
    return {"shifts": tuple(draw(st.integers(-5, 5)) for _ in dims), "dims": tuple(dims)}


def _pad_params(draw, shape):
    pairs = draw(st.integers(1, len(shape)))  # (before, after) for the last `pairs` dims
    pad = tuple(draw(st.integers(0, 2)) for _ in range(2 * pairs))
    return {"pad": pad, "value": draw(st.sampled_from([0.0, 1.5]))}


@st.composite
def _where_inputs(draw):
    condition, a, b = draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_side=3)).input_shapes
    return ({"a": draw(arrays(a)), "b": draw(arrays(b))},
            {"condition": draw(hnp.arrays(np.bool_, condition))})


def _masked_fill_params(draw, shape):
    suffix = shape[draw(st.integers(0, len(shape))):]
    mask_shape = tuple(draw(st.sampled_from([n, 1])) for n in suffix)
    return {"mask": draw(hnp.arrays(np.bool_, mask_shape)),
            "value": draw(st.sampled_from([0.0, -2.5]))}


def _reversed_pieces(pieces, dim, cat):
    return cat(list(pieces)[::-1], dim)  # every piece reaches the output, out of place


@st.composite
def _setitem_inputs(draw):
    """x and a value for x[index] = value (the value broadcast to the indexed part)."""
    shape = draw(shapes(1, 3))
    index = _index(draw, shape)
    for axis, part in enumerate(index):   # a position written twice keeps the last value only
        if isinstance(part, np.ndarray) and part.dtype != bool:
            assume(len(np.unique(part % shape[axis])) == part.size)
    target = np.zeros(shape)[index].shape
    value_shape = target[draw(st.integers(0, len(target))):]   # a suffix broadcasts
    return {"x": draw(arrays(shape)), "value": draw(arrays(value_shape))}, {"index": index}


def _torch_setitem(torch, x, value, index):
    out = x.clone()
    out[index] = value
    return out


@st.composite
def _gather_inputs(draw):
    shape = draw(shapes(1, 3))
    dim = _dim(draw, len(shape))
    index_shape = tuple(draw(st.integers(1, 3)) if d == dim % len(shape) else
                        draw(st.integers(1, n)) for d, n in enumerate(shape))
    index = draw(hnp.arrays(np.int64, index_shape, elements=st.integers(0, shape[dim] - 1)))
    return {"x": draw(arrays(shape))}, {"dim": dim, "index": index}


def _topk_params(draw, shape):
    dim = _dim(draw, len(shape))
    return {"k": draw(st.integers(0, shape[dim])), "dim": dim, "largest": draw(st.booleans())}


def _sort_params(draw, shape):
    return {"dim": _dim(draw, len(shape)), "descending": draw(st.booleans())}


INDEXING = [
    OpCase("setitem", _setitem_inputs(), lambda x, value, index: F.setitem(x, index, value),
           _torch_setitem),
    OpCase("gather", _gather_inputs(), lambda x, dim, index: F.gather(x, dim, index),
           lambda torch, x, dim, index: torch.gather(x, dim, index)),
    _one_input("topk", lambda x, **kw: F.topk(x, **kw).values,
               lambda torch, x, **kw: torch.topk(x, **kw).values, distinct_arrays, min_dims=1,
               params=_topk_params),
    _one_input("sort", lambda x, **kw: F.sort(x, **kw).values,
               lambda torch, x, **kw: torch.sort(x, **kw).values, distinct_arrays, min_dims=1,
               params=_sort_params),
    _one_input("tril", F.tril, lambda torch, x, diagonal: torch.tril(x, diagonal), min_dims=2,
               params=lambda draw, shape: {"diagonal": draw(st.integers(-2, 2))}),
    _one_input("triu", F.triu, lambda torch, x, diagonal: torch.triu(x, diagonal), min_dims=2,
               params=lambda draw, shape: {"diagonal": draw(st.integers(-2, 2))}),
]


JOINING = [
    _one_input("getitem", lambda x, index: x[index], lambda torch, x, index: x[index], min_dims=1,
               params=lambda draw, shape: {"index": _index(draw, shape)}),
    OpCase("cat", _cat_inputs(), lambda dim, **ts: F.cat(list(ts.values()), dim),
           lambda torch, dim, **ts: torch.cat(list(ts.values()), dim)),
    OpCase("stack", _cat_inputs(same_shapes=True),
           lambda dim, **ts: F.stack(list(ts.values()), dim),
           lambda torch, dim, **ts: torch.stack(list(ts.values()), dim)),
    _one_input("split", lambda x, split_size_or_sections, dim: _reversed_pieces(
                   F.split(x, split_size_or_sections, dim), dim, F.cat),
               lambda torch, x, split_size_or_sections, dim: _reversed_pieces(
                   torch.split(x, split_size_or_sections, dim), dim, torch.cat),
               min_dims=1, params=_split_params),
    _one_input("chunk",
               lambda x, chunks, dim: _reversed_pieces(F.chunk(x, chunks, dim), dim, F.cat),
               lambda torch, x, chunks, dim: _reversed_pieces(torch.chunk(x, chunks, dim), dim,
                                                              torch.cat),
               min_dims=1, params=lambda draw, shape: {"chunks": draw(st.integers(1, 4)),
                                                       "dim": _dim(draw, len(shape))}),
    _one_input("roll", F.roll, lambda torch, x, shifts, dims: torch.roll(x, shifts, dims),
               min_dims=1, params=_roll_params),
    _one_input("pad", F.pad, lambda torch, x, pad, value: _tf(torch).pad(x, pad, value=value),
               min_dims=1, params=_pad_params),
    OpCase("where", _where_inputs(), lambda a, b, condition: F.where(condition, a, b),
           lambda torch, a, b, condition: torch.where(condition, a, b)),
    _one_input("masked_fill", F.masked_fill,
               lambda torch, x, mask, value: x.masked_fill(mask, value),
               params=_masked_fill_params),
]


# --- normalisation, losses, embedding, attention -------------------------------------------------

@st.composite
def _layer_norm_inputs(draw):
    lead = draw(shapes(0, 2, max_side=3))
    # two elements normalise to ±1 whatever they are: a gradient of ~0, useless in float32
    normalized = draw(shapes(1, 2).filter(lambda s: math.prod(s) > 2))
    inputs = {"x": draw(distinct_arrays(lead + normalized))}
    for name in ("weight", "bias"):
        if draw(st.booleans()):
            inputs[name] = draw(arrays(normalized))
    return inputs, {"normalized_shape": normalized, "eps": draw(st.sampled_from([1e-5, 1e-6]))}


@st.composite
def _cross_entropy_inputs(draw):
    n, classes = draw(st.integers(1, 4)), draw(st.integers(2, 5))
    positions = draw(shapes(0, 1, max_side=3))  # (N, C) or (N, C, d)
    ignore_index = draw(st.sampled_from([-100, 0]))
    target = draw(hnp.arrays(np.int64, (n, *positions),
                             elements=st.integers(0, classes - 1) | st.just(ignore_index)))
    target.flat[0] = draw(st.integers(1, classes - 1))  # at least one target counts
    params = {"target": target, "ignore_index": ignore_index,
              "label_smoothing": draw(st.sampled_from([0.0, 0.1, 0.3])),
              "reduction": draw(st.sampled_from(["mean", "sum", "none"]))}
    if draw(st.booleans()):
        params["weight"] = draw(arrays(classes, elements=st.floats(0.25, 2.0)))
    return {"logits": draw(arrays((n, classes, *positions)))}, params


@st.composite
def _embedding_inputs(draw):
    vocabulary, width = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    ids = draw(hnp.arrays(np.int64, shapes(1, 2), elements=st.integers(0, vocabulary - 1)))
    padding_idx = draw(st.none() | st.integers(0, vocabulary - 1))
    return {"weight": draw(arrays((vocabulary, width)))}, {"ids": ids, "padding_idx": padding_idx}


@st.composite
def _attention_inputs(draw):
    """q, k, v with no mask, a boolean mask (every query keeps a key), a float mask (which gets a
    gradient) or is_causal; the default scale or another."""
    batch = draw(shapes(0, 2, max_side=2))
    queries, keys, width, value_width = (draw(st.integers(1, 4)) for _ in range(4))
    inputs = {"q": draw(arrays((*batch, queries, width))), "k": draw(arrays((*batch, keys, width))),
              "v": draw(arrays((*batch, keys, value_width)))}
    params = {"scale": draw(st.sampled_from([None, 0.3]))}
    mask = draw(st.sampled_from(["none", "bool", "float", "causal"]))
    if mask == "bool":
        allowed = draw(hnp.arrays(np.bool_, (queries, keys)))
        allowed[np.arange(queries), draw(hnp.arrays(np.int64, queries,
                                                    elements=st.integers(0, keys - 1)))] = True
        params["attn_mask"] = allowed
    elif mask == "float":
        inputs["attn_mask"] = draw(arrays((queries, keys)))
    elif mask == "causal":
        params["is_causal"] = True
    return inputs, params


@st.composite
def _conv1d_inputs(draw):
    groups = draw(st.integers(1, 2))
    channels, out_channels = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel, stride, padding = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(
        st.integers(0, 1))
    length = draw(st.integers(max(1, kernel - 2 * padding), 6))
    inputs = {"x": draw(arrays((draw(st.integers(1, 2)), channels, length))),
              "weight": draw(arrays((out_channels, channels // groups, kernel)))}
    if draw(st.booleans()):
        inputs["bias"] = draw(arrays((out_channels,)))
    return inputs, {"stride": stride, "padding": padding, "groups": groups}


@st.composite
def _multihead_inputs(draw):
    """torch's functional multi-head attention, sequence first, with every option it has."""
    heads, head_dim = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    E, L, S, N = heads * head_dim, draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(
        st.integers(1, 2))
    # the projections within ±1 (their initialisation's scale): with four factors of up to 3 a
    # gradient that cancels to 0 sums terms of ~100, beyond the float32 tier's ATOL (terms ~10)
    def weights(shape):
        return arrays(shape, elements=finite_floats(-1.0, 1.0))

    inputs = {"query": draw(arrays((L, N, E))), "key": draw(arrays((S, N, E))),
              "value": draw(arrays((S, N, E))), "in_proj_weight": draw(weights((3 * E, E))),
              "in_proj_bias": draw(weights((3 * E,))), "out_proj_weight": draw(weights((E, E))),
              "out_proj_bias": draw(weights((E,)))}
    if draw(st.booleans()):
        inputs |= {"bias_k": draw(weights((1, 1, E))), "bias_v": draw(weights((1, 1, E)))}
    params = {"embed_dim_to_check": E, "num_heads": heads, "add_zero_attn": draw(st.booleans()),
              "dropout_p": 0.0, "need_weights": draw(st.booleans()),
              "average_attn_weights": draw(st.booleans())}
    if draw(st.booleans()):
        params["key_padding_mask"] = np.zeros((N, S), bool)
        params["key_padding_mask"][:, 1:] = draw(hnp.arrays(np.bool_, (N, S - 1)))
    if draw(st.booleans()):
        params["attn_mask"] = draw(arrays((L, S)))
    return inputs, params


def _multihead(module, **kw):
    """Both outputs of a multi-head attention summed into one (the weights when returned)."""
    kw.setdefault("bias_k", None)
    kw.setdefault("bias_v", None)
    output, weights = module.multi_head_attention_forward(**kw)
    return output if weights is None else output.sum() + weights.sum()


@st.composite
def _rms_norm_inputs(draw):
    lead = draw(shapes(0, 2, max_side=3))
    normalized = draw(shapes(1, 2).filter(lambda s: math.prod(s) > 1))
    inputs = {"x": draw(distinct_arrays(lead + normalized))}
    if draw(st.booleans()):
        inputs["weight"] = draw(arrays(normalized))
    return inputs, {"normalized_shape": normalized, "eps": draw(st.sampled_from([1e-5, 1e-6]))}


@st.composite
def _gqa_inputs(draw):
    """Grouped-query attention: 1–3 key/value heads, each shared by 1–3 query heads; no mask, a
    boolean (L, S) mask, a float mask per query head or is_causal."""
    batch = draw(shapes(0, 1, max_side=2))
    kv_heads, group = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    queries, keys, width = (draw(st.integers(1, 4)) for _ in range(3))
    heads = kv_heads * group
    inputs = {"q": draw(arrays((*batch, heads, queries, width))),
              "k": draw(arrays((*batch, kv_heads, keys, width))),
              "v": draw(arrays((*batch, kv_heads, keys, width)))}
    params = {"enable_gqa": True}
    mask = draw(st.sampled_from(["none", "bool", "float", "causal"]))
    if mask == "bool":
        allowed = draw(hnp.arrays(np.bool_, (queries, keys)))
        allowed[:, 0] = True
        params["attn_mask"] = allowed
    elif mask == "float":
        inputs["attn_mask"] = draw(arrays((heads, queries, keys)))
    elif mask == "causal":
        params["is_causal"] = True
    return inputs, params


@st.composite
def _rotary_inputs(draw):
    """x (..., T, D) with D even, explicit position ids (..., T) (left padding makes them start
    anywhere), a rope_theta."""
    lead = draw(shapes(0, 2, max_side=2))
    length, half = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    position_ids = draw(hnp.arrays(np.int64, (*lead[:1], length), elements=st.integers(0, 40)))
    theta = draw(st.sampled_from([10000.0, 100000.0, 3.5]))
    return ({"x": draw(arrays((*lead, length, 2 * half)))},
            {"position_ids": position_ids, "theta": theta})


def _rotary_ours(x, position_ids, theta):
    cos, sin = F.rotary_cos_sin(position_ids, x.shape[-1], theta, x.dtype)
    if x.ndim == 4:                                          # (B, heads, T, D): one angle per head
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return F.apply_rotary_pos_emb(x, cos, sin)


def _rotary_theirs(torch, x, position_ids, theta):
    """transformers' Llama RoPE (rotate_half form): the angles in float64, cos and sin then cast
    to x's dtype as LlamaRotaryEmbedding returns them."""
    dim = x.shape[-1]
    inverse_frequency = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angles = position_ids[..., None].double() * inverse_frequency
    emb = torch.cat([angles, angles], dim=-1)
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    if x.ndim == 4:
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    rotated = torch.cat([-x[..., dim // 2:], x[..., :dim // 2]], dim=-1)
    return x * cos + rotated * sin


@st.composite
def _rnn_inputs(draw):
    """One RNN layer: input (L, N, H_in), hx, the weights, optional biases, tanh or relu, either
    direction. For relu every pre-activation keeps clear of the kink at 0."""
    L, N, H_in, H = (draw(st.integers(1, 3)) for _ in range(4))
    inputs = {"input": draw(arrays((L, N, H_in))), "hx": draw(arrays((N, H))),
              "weight_ih": draw(arrays((H, H_in))), "weight_hh": draw(arrays((H, H)))}
    if draw(st.booleans()):
        inputs |= {"bias_ih": draw(arrays((H,))), "bias_hh": draw(arrays((H,)))}
    params = {"nonlinearity": draw(st.sampled_from(["tanh", "relu"])),
              "reverse": draw(st.booleans())}
    if params["nonlinearity"] == "relu":
        assume(np.abs(_rnn_pre_activations(**inputs, **params)).min() > 0.01)
    return inputs, params


def _rnn_pre_activations(input, hx, weight_ih, weight_hh, bias_ih=0.0, bias_hh=0.0,
                         nonlinearity="relu", reverse=False):
    """Every step's argument of the nonlinearity, computed plainly in float64."""
    pre, h = [], hx
    for x in (input[::-1] if reverse else input):
        pre.append(x @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh)
        h = np.tanh(pre[-1]) if nonlinearity == "tanh" else np.maximum(pre[-1], 0)
    return np.array(pre)


def _rnn_theirs(torch, input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None,
                nonlinearity="tanh", reverse=False):
    """torch's fused RNN layer (torch.rnn_tanh / rnn_relu); reversed by flipping the sequence."""
    biases = [] if bias_ih is None else [bias_ih, bias_hh]
    run = torch.rnn_tanh if nonlinearity == "tanh" else torch.rnn_relu
    sequence = input.flip(0) if reverse else input
    output, _ = run(sequence, hx[None], [weight_ih, weight_hh, *biases], bool(biases), 1, 0.0,
                    False, False, False)
    return output.flip(0) if reverse else output


LAYERS = [
    OpCase("conv1d", _conv1d_inputs(), F.conv1d,
           lambda torch, x, weight, bias=None, **kw: _tf(torch).conv1d(x, weight, bias, **kw)),
    OpCase("multi_head_attention_forward", _multihead_inputs(), lambda **kw: _multihead(F, **kw),
           lambda torch, **kw: _multihead(_tf(torch), **kw)),
    OpCase("layer_norm", _layer_norm_inputs(), F.layer_norm,
           lambda torch, x, normalized_shape, weight=None, bias=None, eps=1e-5:
           _tf(torch).layer_norm(x, normalized_shape, weight, bias, eps)),
    _one_input("normalize", F.normalize, lambda torch, x, p, dim: _tf(torch).normalize(x, p, dim),
               nonzero, min_dims=1, params=lambda draw, shape: {
                   "p": draw(st.sampled_from([1.0, 2.0, 3.0])), "dim": _dim(draw, len(shape))}),
    OpCase("cross_entropy", _cross_entropy_inputs(), F.cross_entropy,
           lambda torch, logits, **kw: _tf(torch).cross_entropy(logits, **kw)),
    OpCase("embedding", _embedding_inputs(), F.embedding,
           lambda torch, weight, ids, padding_idx: _tf(torch).embedding(ids, weight, padding_idx)),
    OpCase("scaled_dot_product_attention", _attention_inputs(), F.scaled_dot_product_attention,
           lambda torch, q, k, v, **kw: _tf(torch).scaled_dot_product_attention(q, k, v, **kw)),
    OpCase("grouped_query_attention", _gqa_inputs(), F.scaled_dot_product_attention,
           lambda torch, q, k, v, **kw: _tf(torch).scaled_dot_product_attention(q, k, v, **kw)),
    OpCase("rms_norm", _rms_norm_inputs(), F.rms_norm,
           lambda torch, x, normalized_shape, weight=None, eps=None:
           _tf(torch).rms_norm(x, normalized_shape, weight, eps)),
    OpCase("rotary_embedding", _rotary_inputs(), _rotary_ours, _rotary_theirs),
    OpCase("rnn", _rnn_inputs(), F.rnn, _rnn_theirs),
]

CASES = ELEMENTWISE + MATRIX + REDUCTIONS + SHAPES + INDEXING + JOINING + LAYERS

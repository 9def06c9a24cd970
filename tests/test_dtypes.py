"""Dtypes, op by op: the rule stated in minivlm/functional/__init__.py, checked over every op of
the catalogue (op_cases.CASES and the image ops of test_conv) against torch.

1. float16 inputs give a float16 output and float16 gradients (every gradient reaching an input
   is float16), within 1 % of torch's float64 results on the same float16-rounded inputs (or,
   where the results cancel, no further from them than 4 times torch's own float16 results). (The
   same for float32 is test_float32's and test_functional_backends', for float64
   test_functional_torch's and test_conv's.)
2. Inputs of mixed dtypes (bool, integers, floats, 0-d tensors, Python numbers) give torch's
   result dtype and torch's values, or a TypeError / ValueError where torch refuses them too.
   The ops that refuse integer inputs where torch computes something are listed in
   REFUSES_INTEGERS, each with its reason; those that refuse mixed dtypes where torch's answer
   depends on the shapes, in ONE_DTYPE; those that cast where torch refuses, in CASTS_TO.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minivlm as mv
from minivlm.testing import assert_close
from op_cases import CASES, ours_params, torch_params
from test_conv import CASES as IMAGE_CASES
from test_functional_backends import gradient_dtypes_reaching_leaves

torch = pytest.importorskip("torch")

ALL_CASES = CASES + IMAGE_CASES
FLOATS = ("float16", "float32", "float64")
DTYPES = ("int32", "int64") + FLOATS
RTOL = {"float16": 1e-2, "float32": 1e-4, "float64": 1e-10}   # of a result in this dtype
ATOL = {"float16": 1e-2, "float32": 1e-5, "float64": 1e-12}   # terms that cancel to ~0

# Ops that refuse integer inputs although torch computes something for them
REFUSES_INTEGERS = {
    "quick_gelu": "torch has no quick_gelu: the oracle x·sigmoid(1.702x) is float arithmetic",
    "avg_pool2d": "torch truncates each window's mean to an integer",
    "max_pool2d": "pooling is a float op here (its padding is −inf)",
    "rotary_embedding": "the oracle is transformers' float formula; torch has no RoPE op",
    "einsum": "torch gives int64 or the inputs' int32 depending on how it contracts",
    "rnn": "torch computes integers of one element in float32 and refuses larger ones",
}
# NumPy's refusal, kept: torch gives 0 or ±1 for an integer to a negative integer power
NEGATIVE_INTEGER_POWER = "Integers to negative integer powers are not allowed"
# torch lets a float16 input take float32 parameters here (CPU "mixed dtype"); minivlm does not
MIXED_PRECISION_PARAMETERS = {"layer_norm", "batch_norm"}
# minivlm raises for operands of several dtypes, as matmul, where torch's result depends on the
# shapes or the kernel: einsum promotes only where no matrix product is formed (each contracted
# dim of size 1), rms_norm gives float16 for a float16 input and an int32 weight
ONE_DTYPE = {"einsum", "rms_norm"}
# minivlm casts an operand to this input's dtype where torch refuses another dtype: setitem's
# value (torch casts it too, but not through an index array), cross_entropy's class weights
CASTS_TO = {"setitem": "x", "cross_entropy": "logits"}


def _upstream(shape, dtype):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("case", ALL_CASES, ids=str)
@given(data=st.data())
def test_op_computes_float16_in_float16(case, data):
    dtype = "float16"
    inputs, params = data.draw(case.inputs, label="inputs, params")
    inputs = {name: values.astype(dtype) for name, values in inputs.items()}
    in_dtype = {name: value.astype(dtype) if getattr(value, "dtype", None) == np.float64
                else value for name, value in params.items()}   # batch norm's statistics
    ours = {name: mv.tensor(values, requires_grad=True) for name, values in inputs.items()}
    with gradient_dtypes_reaching_leaves() as seen:
        out = case.ours(**ours, **ours_params(in_dtype, "numpy"))
        out.backward(mv.tensor(_upstream(out.shape, dtype)))
    assert out.dtype == dtype
    assert seen and all(grad == dtype for grad in seen), seen
    assert all(t.grad.dtype == dtype for t in ours.values())

    theirs = {name: torch.tensor(values.astype(np.float64), requires_grad=True)
              for name, values in inputs.items()}
    as_float64 = {name: value.astype(np.float64) if getattr(value, "dtype", None) == dtype
                  else value for name, value in in_dtype.items()}
    expected = case.theirs(torch, **theirs, **torch_params(as_float64, torch))
    expected.backward(torch.from_numpy(_upstream(out.shape, dtype).astype(np.float64)))
    half = _torch_in_float16(case, inputs, in_dtype, out.shape)
    _assert_float16_close(out, expected.detach().numpy(), half and half[0])
    for name, t in ours.items():
        their_grad = theirs[name].grad
        _assert_float16_close(t.grad, np.zeros(t.shape) if their_grad is None
                              else their_grad.numpy(), half and half[1][name])


def _torch_in_float16(case, inputs, params, shape):
    """torch's own float16 output and {name: gradient} on the same inputs (no gradient: zeros),
    or None where its CPU kernels refuse float16."""
    theirs = {name: torch.tensor(values, requires_grad=True) for name, values in inputs.items()}
    try:
        out = case.theirs(torch, **theirs, **torch_params(params, torch))
        out.backward(torch.from_numpy(_upstream(shape, "float16")))
    except (RuntimeError, NotImplementedError):
        return None
    return out.detach().numpy(), {name: np.zeros(t.shape) if t.grad is None else t.grad.numpy()
                                  for name, t in theirs.items()}


def _assert_float16_close(ours, exact, torch_float16):
    """ours within 1 % of the exact (float64) values; or, where the values cancel (a sum of large
    terms of both signs, which no float16 computation gets within 1 %), no further from them than
    4 times torch's own float16 result."""
    try:
        assert_close(ours, exact, rtol=RTOL["float16"], atol=ATOL["float16"])
    except AssertionError:
        if torch_float16 is None:
            raise
        ours = ours.numpy().astype(np.float64)
        error, torch_error = (np.linalg.norm(np.ravel(v.astype(np.float64) - exact))
                              for v in (ours, torch_float16))
        assert error <= 4 * torch_error, (f"float16 error {error:.3g}, torch's float16 error "
                                          f"{torch_error:.3g}")


def _run(tensor, inputs, dtypes, op):
    """op(**tensors) and backward: (output, {name: gradient}) or the exception raised."""
    tensors = {name: tensor(values.astype(dtypes[name]), dtypes[name] in FLOATS)
               for name, values in inputs.items()}
    try:
        out = op(**tensors)
        if out.requires_grad:
            out.backward(tensor(_upstream(tuple(out.shape), str(out.dtype).split(".")[-1]),
                                False))
    except Exception as error:  # torch: RuntimeError, NotImplementedError; ours: checked below
        return error, None
    return out, {name: t.grad for name, t in tensors.items() if t.requires_grad}


@pytest.mark.parametrize("case", ALL_CASES, ids=str)
@given(data=st.data())
def test_mixed_dtypes_promote_as_torch(case, data):
    inputs, params = data.draw(case.inputs, label="inputs, params")
    dtypes = {name: data.draw(st.sampled_from(DTYPES), label=f"dtype of {name}")
              for name in inputs}
    theirs, their_grads = _run(lambda v, grad: torch.tensor(v, requires_grad=grad), inputs,
                               dtypes, lambda **t: case.theirs(torch, **t,
                                                               **torch_params(params, torch)))
    ours, our_grads = _run(lambda v, grad: mv.tensor(v, requires_grad=grad), inputs, dtypes,
                           lambda **t: case.ours(**t, **ours_params(params, "numpy")))
    integers = any(dtypes[name] not in FLOATS for name in inputs)
    if case.name in CASTS_TO and isinstance(theirs, Exception) \
            and not isinstance(ours, Exception):
        assert str(ours.dtype) == dtypes[CASTS_TO[case.name]]
        return
    if isinstance(theirs, Exception) or (integers and case.name in REFUSES_INTEGERS):
        assert isinstance(ours, (TypeError, ValueError)), f"torch: {theirs!r}; ours: {ours!r}"
        return
    if isinstance(ours, ValueError) and NEGATIVE_INTEGER_POWER in str(ours):
        return
    if case.name in MIXED_PRECISION_PARAMETERS and dtypes["x"] == "float16" \
            and set(dtypes.values()) == {"float16", "float32"}:
        assert isinstance(ours, TypeError) and "expected one dtype" in str(ours)
        return
    if case.name in ONE_DTYPE and len(set(dtypes.values())) > 1:
        assert isinstance(ours, TypeError) and "expected one dtype" in str(ours)
        return
    assert not isinstance(ours, Exception), f"torch gives {theirs.dtype}; ours raised {ours!r}"
    dtype = str(theirs.dtype).removeprefix("torch.")
    assert str(ours.dtype) == dtype
    if dtype in FLOATS:
        assert_close(ours, theirs.detach().numpy(), rtol=RTOL[dtype], atol=ATOL[dtype])
    else:
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    # torch's backward may compute a term in any input's dtype (b − 1 in float16 for a ** b)
    coarsest = max((d for d in (dtype, *dtypes.values()) if d in FLOATS), key=RTOL.get,
                   default=None)
    for name, grad in our_grads.items():
        if grad is None:   # no gradient through an integer result
            assert their_grads[name] is None
            continue
        assert grad.dtype == dtypes[name]
        assert_close(grad, their_grads[name].numpy(), rtol=RTOL[coarsest], atol=ATOL[coarsest])

"""The dtypes ops compute in: torch's promotion rule (stated in functional/__init__.py), the cast
that carries a gradient back to the dtype it came from, and the checks of the ops that take one
dtype only.

    result_type(x, 2.0)            # x's dtype: a Python number does not widen a tensor
    a, b = promoted(a, b)          # both as Tensors of result_type(a, b)
"""
import numbers

from ..autograd import Function, Tensor
from ..backend import xp_of

CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2}     # bool < integer < floating point
DEFAULT_FLOAT = "float32"                       # a Python float's dtype, as torch's default


class Cast(Function):
    def forward(self, x, dtype):
        self.dtype = x.dtype
        return x.astype(dtype)

    def backward(self, g): return g.astype(self.dtype)


def cast(x, dtype): return Cast.apply(x, dtype=dtype)


def _category(dtype):
    return CATEGORY[dtype.kind]


def promote_types(a, b):
    """The dtype of a and b together: the wider of one category, else the higher category's."""
    if _category(a) != _category(b):
        return a if _category(a) > _category(b) else b
    return xp_of().promote_types(a, b)   # (NumPy's dtypes, on either backend)


def _number_dtype(x):
    dtype = "bool" if isinstance(x, bool) else "int64" if isinstance(x, numbers.Integral) \
        else DEFAULT_FLOAT
    return xp_of().dtype(dtype)


def result_type(*operands):
    """The dtype an op computes in, by torch's rule: the dimensioned tensors' dtypes promoted;
    then the 0-d tensors', then the Python numbers', each only where their category (bool <
    integer < float) is higher than all before (a Python float counts as float32, an int as
    int64). Arrays count as tensors; None is skipped."""
    groups = ([], [], [])   # dimensioned tensors, 0-d tensors, Python numbers
    for x in operands:
        if x is None:
            continue
        if isinstance(x, numbers.Number):   # NumPy's scalars too, as torch takes np.float64
            groups[2].append(_number_dtype(x))
        else:
            data = x.array if isinstance(x, Tensor) else x
            groups[0 if data.ndim else 1].append(data.dtype)
    result = None
    for dtypes in groups:
        if not dtypes:
            continue
        dtype = dtypes[0]
        for other in dtypes[1:]:
            dtype = promote_types(dtype, other)
        if result is None or _category(dtype) > _category(result):
            result = dtype
    return result


def as_tensor(x, dtype, like):
    """x (a Tensor, an array or a Python number) as a Tensor of `dtype` on the backend of the
    array `like`; a Tensor of another dtype through `cast`, so its gradient comes back in its
    own dtype (none to an integer or bool dtype, as torch)."""
    if isinstance(x, Tensor):
        return x if x.dtype == dtype else cast(x if dtype.kind == "f" else x.detach(), dtype)
    return Tensor(xp_of(like).asarray(x, dtype=dtype))


def as_tensors(*operands):
    """The operands (Tensors, arrays) as Tensors, each in its own dtype, for the ops that take
    one dtype (check_same_dtype)."""
    like = next(x.array for x in operands if isinstance(x, Tensor))
    return tuple(x if isinstance(x, Tensor) else Tensor(xp_of(like).asarray(x)) for x in operands)


def promoted(*operands):
    """The operands (Tensors, arrays, Python numbers) as Tensors of their result_type."""
    dtype = result_type(*operands)
    like = next(x.array for x in operands if isinstance(x, Tensor))
    return tuple(as_tensor(x, dtype, like) for x in operands)


def floating(x):
    """x, or an integer or bool Tensor as float32 (torch's default float): for the ops that
    compute in floating point (exp, log, ..., division) but take integers, as torch."""
    return x if x.dtype.kind == "f" else cast(x, DEFAULT_FLOAT)


def check_floating(op, *tensors):
    """A TypeError naming the op and the dtype, for the ops that take floating point only."""
    for t in tensors:
        if t is not None and t.dtype.kind != "f":
            raise TypeError(f"{op}: expected a floating-point tensor, got {t.dtype} (cast it "
                            f"with .float())")


def check_same_dtype(op, **tensors):
    """A TypeError naming every dtype, for the ops whose operands must share one (matmul,
    linear, conv2d, attention, the parameters of the norms), as torch."""
    given = {name: t.dtype for name, t in tensors.items() if t is not None}
    if len(set(given.values())) > 1:
        raise TypeError(f"{op}: expected one dtype, got "
                        + ", ".join(f"{name} {dtype}" for name, dtype in given.items())
                        + " (cast with .to(dtype))")


def half_in_float32(op, *tensors, **kwargs):
    """op(*tensors, **kwargs), with float16 tensors computed in float32 and the result (a Tensor
    or a tuple of them) cast back to float16: the sums of a norm, a softmax or a loss overflow
    float16 (300² > 65504), as torch's CPU kernels avoid by accumulating in float."""
    if not any(t is not None and t.dtype == "float16" for t in tensors):
        return op(*tensors, **kwargs)
    out = op(*(t if t is None or t.dtype != "float16" else cast(t, "float32") for t in tensors),
             **kwargs)
    if isinstance(out, tuple):
        return tuple(cast(t, "float16") for t in out)
    return cast(out, "float16")

"""The engine: a Tensor that remembers the Function that made it, and backward().

A `Function` turns raw arrays into a raw array in `forward` and keeps only what `backward` needs;
`backward` turns the gradient of its output into one gradient per input. `Tensor.backward` walks
the graph in reverse topological order, summing the gradients of a node used several times.
"""
import contextlib
import numbers

from . import backend
from .backend import xp_of

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Within this block ops record no graph (inference, optimizer updates, initialisation)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled():
    return _grad_enabled


def unbroadcast(grad, shape):
    """Sum `grad` over the axes along which an input of `shape` was broadcast."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape)
                                       if n == 1 and grad.shape[i + extra] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


class Function:
    """One differentiable op. Subclasses define forward(*arrays, **kw) -> array, keeping what
    backward needs, and backward(grad) -> one array (or None) per input; backward never writes
    into `grad`, which other nodes may share. Under no_grad `needs_input_grad` is all False,
    so forward can skip what only backward would need."""

    @classmethod
    def apply(cls, *inputs, **kwargs):
        fn = cls()
        fn.needs_input_grad = tuple(_grad_enabled and t.requires_grad for t in inputs)
        out = fn.forward(*(t.data for t in inputs), **kwargs)
        requires_grad = any(fn.needs_input_grad)
        result = Tensor(out, requires_grad=requires_grad)
        if requires_grad:
            fn.inputs = inputs
            result._ctx = fn
        return result

    def forward(self, *arrays, **kwargs):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def release(self):
        """Drop what was saved for backward; a second backward through it is an error."""
        self.__dict__ = {"inputs": self.inputs, "released": True}


_PYTHON_DTYPES = {"b": "bool", "i": "int64", "u": "int64", "f": "float32"}


def _as_array(data, dtype, device):
    """A copy of `data` as an array on backend `device`."""
    if isinstance(data, Tensor):
        data = data.data
    if backend.is_array(data):
        array = backend.to_backend(data, device)
        return array.astype(dtype or array.dtype, copy=array is data)  # a transfer has copied
    host = backend.numpy.asarray(data)  # Python scalars and (nested) lists
    dtype = dtype or _PYTHON_DTYPES.get(host.dtype.kind, "float32")
    return backend.to_backend(host.astype(dtype), device)


class Tensor:
    """An n-d array (NumPy or CuPy) with an optional gradient and the Function that made it."""

    __array_priority__ = 1000  # numpy_array * tensor -> Tensor.__rmul__

    def __init__(self, data, requires_grad=False):
        self.data = data
        self.requires_grad = requires_grad
        self.grad = None
        self._ctx = None

    # --- what the tensor is -------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    device = property(lambda self: backend.name_of(self.data))
    is_leaf = property(lambda self: self._ctx is None)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self):
        return int(self.data.size)

    def __len__(self):
        return self.shape[0]

    def __bool__(self):  # else Python falls back to len(): tensor([0.]) would be True
        return bool(self.data)  # several elements: NumPy's "truth value is ambiguous" error

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        body = repr(backend.to_numpy(self.data)).replace("array(", "tensor(", 1)
        return f"{body[:-1]}{grad}, device={self.device!r})" if self.device != "numpy" \
            else f"{body[:-1]}{grad})"

    def numpy(self):
        """The values as a host NumPy array (a copy when on the GPU)."""
        return backend.to_numpy(self.data)

    def item(self):
        return self.data.item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self):
        return Tensor(self.data)

    def requires_grad_(self, flag=True):
        self.requires_grad = flag
        return self

    def to(self, target):
        """A copy on another backend ('numpy'/'cpu', 'cupy'/'cuda') or in another dtype."""
        if isinstance(target, str) and target.lower() in (*backend.BACKENDS, *backend.ALIASES):
            return F.to_backend(self, backend.canonical_name(target))
        try:
            return F.cast(self, xp_of(self.data).dtype(target))
        except TypeError:
            raise ValueError(f"to({target!r}): not a backend ({', '.join(backend.BACKENDS)}, or "
                             f"'cpu'/'cuda') nor a dtype") from None

    def float(self):
        return self.to("float32")

    def double(self):
        return self.to("float64")

    def long(self):
        return Tensor(self.data.astype("int64"))

    def cpu(self):
        return self.to("numpy")

    def cuda(self):
        return self.to("cupy")

    # --- backward -------------------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's .grad (times `grad` for a non-scalar)."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input of the computation had requires_grad=True)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a scalar output; this one "
                                   f"has shape {self.shape}: pass grad= of that shape")
            grad = xp_of(self.data).ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            grad = xp_of(self.data).asarray(grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward(grad): grad has shape {grad.shape} but the tensor has "
                                 f"shape {self.shape}")
        grads = {id(self): grad}
        for node in self._topological_order():
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._ctx is None:
                node._accumulate(g)
                continue
            fn = node._ctx
            if getattr(fn, "released", False):
                raise RuntimeError("backward through the graph a second time: its saved values were "
                                   "freed by the first backward; pass retain_graph=True to the first")
            input_grads = fn.backward(g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for t, tg in zip(fn.inputs, input_grads):
                if tg is None or not t.requires_grad:
                    continue
                grads[id(t)] = grads[id(t)] + tg if id(t) in grads else tg
            if not retain_graph:
                fn.release()

    def _accumulate(self, g):
        if g.dtype != self.dtype:
            g = g.astype(self.dtype)
        if self.grad is None:
            # own the array (it may alias another node's gradient), an array even where NumPy's
            # reductions give a scalar (a 0-d leaf), so that clipping can scale it in place
            self.grad = Tensor(xp_of(g).array(g))
        else:
            self.grad.data += g

    def _topological_order(self):
        """Nodes from this one back to the leaves, each after every node that uses it."""
        order, visited, stack = [], set(), [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))
            if node._ctx is not None:
                stack.extend((t, False) for t in node._ctx.inputs
                             if t.requires_grad and id(t) not in visited)
        return reversed(order)

    # --- operators (the ops themselves live in functional) -------------------------------------
    def __add__(self, other): return F.add(self, other)
    def __radd__(self, other): return F.add(other, self)
    def __sub__(self, other): return F.sub(self, other)
    def __rsub__(self, other): return F.sub(other, self)
    def __mul__(self, other): return F.mul(self, other)
    def __rmul__(self, other): return F.mul(other, self)
    def __truediv__(self, other): return F.div(self, other)
    def __rtruediv__(self, other): return F.div(other, self)
    def __matmul__(self, other): return F.matmul(self, other)
    def __rmatmul__(self, other): return F.matmul(other, self)
    def __pow__(self, other): return F.pow(self, other)
    def __rpow__(self, other): return F.pow(other, self)
    def __neg__(self): return F.neg(self)
    def __getitem__(self, index): return F.getitem(self, index)

    def _compare(self, other, op):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor(getattr(self.data, op)(other))

    def __lt__(self, other): return self._compare(other, "__lt__")
    def __le__(self, other): return self._compare(other, "__le__")
    def __gt__(self, other): return self._compare(other, "__gt__")
    def __ge__(self, other): return self._compare(other, "__ge__")
    def __eq__(self, other): return self._compare(other, "__eq__")
    def __ne__(self, other): return self._compare(other, "__ne__")
    __hash__ = object.__hash__

    @property
    def T(self):
        return F.permute(self, tuple(reversed(range(self.ndim))))

    # --- methods: torch's Tensor methods, each the op of functional with the tensor first -------
    def exp(self): return F.exp(self)
    def log(self): return F.log(self)
    def sqrt(self): return F.sqrt(self)
    def abs(self): return F.abs(self)
    def tanh(self): return F.tanh(self)
    def sigmoid(self): return F.sigmoid(self)
    def relu(self): return F.relu(self)
    def pow(self, b): return F.pow(self, b)
    def clamp(self, min=None, max=None): return F.clamp(self, min, max)
    def matmul(self, b): return F.matmul(self, b)

    def sum(self, dim=None, keepdim=False): return F.sum(self, dim, keepdim)
    def mean(self, dim=None, keepdim=False): return F.mean(self, dim, keepdim)
    def max(self, dim=None, keepdim=False): return F.max(self, dim, keepdim)
    def min(self, dim=None, keepdim=False): return F.min(self, dim, keepdim)
    def argmax(self, dim=None, keepdim=False): return F.argmax(self, dim, keepdim)
    def argmin(self, dim=None, keepdim=False): return F.argmin(self, dim, keepdim)

    def var(self, dim=None, unbiased=True, keepdim=False, correction=None):
        return F.var(self, dim, unbiased, keepdim, correction)

    def reshape(self, *shape): return F.reshape(self, *shape)
    def view(self, *shape): return F.view(self, *shape)
    def permute(self, *dims): return F.permute(self, *dims)
    def transpose(self, dim0, dim1): return F.transpose(self, dim0, dim1)
    def expand(self, *shape): return F.expand(self, *shape)
    def expand_as(self, other): return F.expand_as(self, other)
    def squeeze(self, dim=None): return F.squeeze(self, dim)
    def unsqueeze(self, dim): return F.unsqueeze(self, dim)
    def flatten(self, start_dim=0, end_dim=-1): return F.flatten(self, start_dim, end_dim)
    def contiguous(self): return F.contiguous(self)

    def softmax(self, dim=-1): return F.softmax(self, dim)
    def log_softmax(self, dim=-1): return F.log_softmax(self, dim)
    def logsumexp(self, dim, keepdim=False): return F.logsumexp(self, dim, keepdim)
    def masked_fill(self, mask, value): return F.masked_fill(self, mask, value)
    def chunk(self, chunks, dim=0): return F.chunk(self, chunks, dim)
    def roll(self, shifts, dims=None): return F.roll(self, shifts, dims)

    def split(self, split_size_or_sections, dim=0):
        return F.split(self, split_size_or_sections, dim)


class Parameter(Tensor):
    """A Tensor that a Module registers as a learnable parameter (requires_grad=True)."""

    def __init__(self, data, requires_grad=True):
        data = data.data if isinstance(data, Tensor) else data
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


# --- creating tensors ----------------------------------------------------------------------------

def _xp(device):
    return backend.module(device) if device is not None else backend.default_xp()


def tensor(data, requires_grad=False, dtype=None, device=None):
    """A new leaf Tensor holding a copy of `data`. NumPy/CuPy arrays keep their dtype (float64
    stays float64) and, unless `device` says otherwise, their backend; Python floats become
    float32, ints int64 and bools bool, as in torch.tensor."""
    if device is None:
        source = data.data if isinstance(data, Tensor) else data
        device = "cupy" if backend.is_cupy_array(source) else backend.default_name()
    return Tensor(_as_array(data, dtype, backend.canonical_name(device)), requires_grad)


def shape_arg(shape):
    """The `*shape` of f(2, 3) or of f((2, 3)) (one tuple or list) as the shape itself."""
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


def zeros(*shape, dtype="float32", device=None, requires_grad=False):
    return Tensor(_xp(device).zeros(shape_arg(shape), dtype=dtype), requires_grad)


def ones(*shape, dtype="float32", device=None, requires_grad=False):
    return Tensor(_xp(device).ones(shape_arg(shape), dtype=dtype), requires_grad)


def empty(*shape, dtype="float32", device=None, requires_grad=False):
    return Tensor(_xp(device).empty(shape_arg(shape), dtype=dtype), requires_grad)


def full(shape, fill_value, dtype="float32", device=None, requires_grad=False):
    return Tensor(_xp(device).full(shape_arg((shape,)), fill_value, dtype=dtype), requires_grad)


def arange(start, stop=None, step=1, dtype=None, device=None):
    values = _xp(device).arange(start, stop, step) if stop is not None else _xp(device).arange(start)
    if dtype is None:
        dtype = "int64" if all(isinstance(v, numbers.Integral) for v in (start, stop or 0, step)) \
            else "float32"
    return Tensor(values.astype(dtype))


def randn(*shape, dtype="float32", device=None, requires_grad=False):
    """Standard normal samples from the backend's generator (seeded by manual_seed)."""
    xp = _xp(device)
    return Tensor(backend.rng(xp).standard_normal(shape_arg(shape)).astype(dtype), requires_grad)


def rand(*shape, dtype="float32", device=None, requires_grad=False):
    """Uniform [0, 1) samples from the backend's generator (seeded by manual_seed)."""
    xp = _xp(device)
    return Tensor(backend.rng(xp).random(shape_arg(shape)).astype(dtype), requires_grad)


def randint(low, high, shape, device=None):
    xp = _xp(device)
    return Tensor(backend.rng(xp).integers(low, high, size=shape_arg((shape,))).astype("int64"))


def zeros_like(t, dtype=None):
    return Tensor(xp_of(t.data).zeros_like(t.data, dtype=dtype))


def ones_like(t, dtype=None):
    return Tensor(xp_of(t.data).ones_like(t.data, dtype=dtype))


def manual_seed(seed):
    """Make initialisation, dropout and random tensors reproducible on every backend."""
    backend.manual_seed(seed)


# The one import circle of the package, sanctioned: Tensor's operators and methods call the ops
# of functional, and the ops build Tensors (functional imports Function and Tensor from here).
# Imported last, after everything functional takes from this module is defined, so either module
# may be imported first.
from . import functional as F  # noqa: E402

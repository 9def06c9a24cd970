"""The engine: a Tensor that remembers the Function that made it, and backward().

A `Function` turns raw arrays into a raw array in `forward` and keeps only what `backward` needs;
`backward` turns the gradient of its output into one gradient per input. `Tensor.backward` walks
the graph in reverse topological order, summing the gradients of a node used several times.
"""
import contextlib
import functools
import math
import numbers

from . import backend
from .backend import xp_of

_grad_enabled = True


class set_grad_enabled(contextlib.ContextDecorator):
    """Within a `with` block, or a function it decorates, ops record a graph or not (`mode`)."""

    def __init__(self, mode):
        self.mode = bool(mode)

    def __enter__(self):
        global _grad_enabled
        self.previous, _grad_enabled = _grad_enabled, self.mode
        return self

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self.previous


class no_grad(set_grad_enabled):
    """No graph is recorded (inference, optimizer updates, initialisation):
    `with no_grad():`, `@no_grad()` or `@no_grad` as torch's."""

    def __new__(cls, function=None):
        if callable(function):          # @no_grad without parentheses
            return cls()(function)
        return super().__new__(cls)

    def __init__(self, function=None):
        super().__init__(False)


class enable_grad(set_grad_enabled):
    def __init__(self):
        super().__init__(True)


class inference_mode(set_grad_enabled):
    """torch.inference_mode: here the same as no_grad (mode=False records a graph again)."""

    def __init__(self, mode=True):
        super().__init__(not mode)


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
        out = fn.forward(*(t.array for t in inputs), **kwargs)
        requires_grad = any(fn.needs_input_grad)
        result = Tensor(out, requires_grad=requires_grad)
        if requires_grad:
            fn.inputs = inputs
            result._ctx = fn
            for t in inputs:
                t._used = True   # an in-place op on t now would change what fn saw
        return result

    def forward(self, *arrays, **kwargs):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def release(self):
        """Drop what was saved for backward; a second backward through it is an error."""
        self.__dict__ = {"inputs": self.inputs, "released": True}


_PYTHON_DTYPES = {"b": "bool", "i": "int64", "u": "int64", "f": "float32"}


def _wrapped(data):
    """The array a Tensor(*data) holds (see Tensor)."""
    if len(data) == 1 and isinstance(data[0], Tensor):
        return data[0].array
    if len(data) == 1 and backend.is_array(data[0]):
        return backend.as_array(data[0])
    if all(isinstance(n, numbers.Integral) and not isinstance(n, bool) for n in data):
        return backend.default_xp().empty(data or (0,), dtype="float32")  # Tensor(2, 3), Tensor()
    if len(data) == 1:
        return _as_array(data[0], "float32", backend.default_name())  # Tensor([1.0, 2.0])
    raise TypeError(f"Tensor(*data): expected one array or list, or integer sizes, got {data!r}")


def _as_array(data, dtype, device):
    """A copy of `data` as an array on backend `device`."""
    if isinstance(data, Tensor):
        data = data.array
    if backend.is_array(data):
        array = backend.to_backend(data, device)
        return array.astype(dtype or array.dtype, copy=array is data)  # a transfer has copied
    host = backend.numpy.asarray(data)  # Python scalars and (nested) lists
    dtype = dtype or _PYTHON_DTYPES.get(host.dtype.kind, "float32")
    return backend.to_backend(host.astype(dtype), device)


class Tensor:
    """An n-d array (NumPy or CuPy) with an optional gradient and the Function that made it.

    Tensor(array) wraps a NumPy or CuPy array (a NumPy scalar becomes a 0-d array), kept as
    `.array`. As torch.Tensor, Tensor([1.0, 2.0]) copies a list into float32, Tensor(2, 3) is an
    uninitialised float32 tensor of that shape, and `.data` is the same values outside the graph."""

    __array_priority__ = 1000  # numpy_array * tensor -> Tensor.__rmul__

    def __init__(self, *data, requires_grad=False):
        self.array = _wrapped(data)
        self.requires_grad = requires_grad
        self.grad = None
        self._ctx = None

    # --- what the tensor is -------------------------------------------------------------------
    shape = property(lambda self: self.array.shape)
    dtype = property(lambda self: self.array.dtype)
    ndim = property(lambda self: self.array.ndim)
    device = property(lambda self: backend.name_of(self.array))
    is_leaf = property(lambda self: self._ctx is None)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self):
        return int(self.array.size)

    def __len__(self):
        return self.shape[0]

    def __bool__(self):  # else Python falls back to len(): tensor([0.]) would be True
        return bool(self.array)  # several elements: NumPy's "truth value is ambiguous" error

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        body = repr(backend.to_numpy(self.array)).replace("array(", "tensor(", 1)
        return f"{body[:-1]}{grad}, device={self.device!r})" if self.device != "numpy" \
            else f"{body[:-1]}{grad})"

    def numpy(self):
        """The values as a host NumPy array (a copy when on the GPU)."""
        return backend.to_numpy(self.array)

    def item(self):
        return self.array.item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self):
        return Tensor(self.array)

    @property
    def data(self):
        """torch's `.data`: a tensor outside the graph sharing this one's memory (x.data.zero_()
        zeroes x, unseen by autograd)."""
        return Tensor(self.array)

    @data.setter
    def data(self, values):
        """x.data = t: x holds t's array from now on (any shape and dtype, as torch's)."""
        if not isinstance(values, Tensor):
            raise TypeError(f"x.data = ...: expected a Tensor, got {type(values).__name__} "
                            "(wrap an array as minivlm.tensor(array))")
        self.array = values.array

    def requires_grad_(self, flag=True):
        self.requires_grad = flag
        return self

    def to(self, *args, dtype=None, device=None, non_blocking=False, copy=False):
        """This tensor on another backend ('numpy'/'cpu', 'cupy'/'cuda') and/or in another
        dtype, as torch: to(device), to(dtype), to(device, dtype), to(other_tensor), or by
        keyword; self itself when nothing changes (and copy is False). A cast to an integer or
        bool dtype is not differentiable."""
        for arg in args:
            if isinstance(arg, Tensor):
                dtype, device = arg.dtype, arg.device
            elif backend.is_backend_name(arg):
                device = arg
            elif backend.is_dtype(arg):
                dtype = arg
            else:
                raise ValueError(f"to({arg!r}): not a backend ({', '.join(backend.BACKENDS)}, "
                                 f"or 'cpu'/'cuda') nor a dtype")
        result = self
        if device is not None and backend.canonical_name(device) != self.device:
            result = F.to_backend(result, backend.canonical_name(device))
        if dtype is not None:
            dtype = backend.dtype(dtype)
            if dtype != result.dtype:
                result = F.cast(result if dtype.kind in "fc" else result.detach(), dtype)
        return F.clone(result) if copy and result is self else result

    def type(self, dtype=None):
        """The dtype's name, or (given a dtype) this tensor cast to it."""
        return str(self.dtype) if dtype is None else self.to(dtype)

    def float(self): return self.to("float32")
    def double(self): return self.to("float64")
    def half(self): return self.to("float16")
    def int(self): return self.to("int32")
    def long(self): return self.to("int64")
    def bool(self): return self.to("bool")
    def cpu(self): return self.to("numpy")
    def cuda(self): return self.to("cupy")
    def dim(self): return self.ndim
    def is_floating_point(self): return self.dtype.kind == "f"

    def new_zeros(self, *size, dtype=None): return zeros(*size, dtype=dtype or self.dtype,
                                                          device=self.device)
    def new_ones(self, *size, dtype=None): return ones(*size, dtype=dtype or self.dtype,
                                                        device=self.device)
    def new_full(self, size, fill_value, dtype=None):
        return full(size, fill_value, dtype=dtype or self.dtype, device=self.device)

    def new_tensor(self, data, dtype=None):
        return tensor(data, dtype=dtype or self.dtype, device=self.device)

    # --- backward -------------------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's .grad (times `grad` for a non-scalar)."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input of the computation had requires_grad=True)")
        if grad is None:
            if self.array.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a scalar output; this one "
                                   f"has shape {self.shape}: pass grad= of that shape")
            grad = xp_of(self.array).ones_like(self.array)
        else:
            grad = grad.array if isinstance(grad, Tensor) else grad
            grad = xp_of(self.array).asarray(grad, dtype=self.dtype)
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
            self.grad.array += g

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
    def __abs__(self): return F.abs(self)
    def __getitem__(self, index): return F.getitem(self, index)

    def __setitem__(self, index, value):
        """x[index] = value, in place (with a gradient for x and value where there is a graph)."""
        self._in_place(lambda old: F.setitem(old, index, value))

    # --- logical operators, for boolean (and integer) tensors: no gradient -----------------------
    def _logical(self, other, op):
        other = other.array if isinstance(other, Tensor) else other
        return Tensor(getattr(self.array, op)(other))

    def __invert__(self): return Tensor(~self.array)
    def __and__(self, other): return self._logical(other, "__and__")
    def __or__(self, other): return self._logical(other, "__or__")
    def __xor__(self, other): return self._logical(other, "__xor__")
    def __rand__(self, other): return self._logical(other, "__rand__")
    def __ror__(self, other): return self._logical(other, "__ror__")
    def __floordiv__(self, other): return self._logical(other, "__floordiv__")
    def __mod__(self, other): return self._logical(other, "__mod__")
    def any(self, dim=None, keepdim=False): return Tensor(self.array.any(axis=dim, keepdims=keepdim))
    def all(self, dim=None, keepdim=False): return Tensor(self.array.all(axis=dim, keepdims=keepdim))

    def __lt__(self, other): return self._logical(other, "__lt__")
    def __le__(self, other): return self._logical(other, "__le__")
    def __gt__(self, other): return self._logical(other, "__gt__")
    def __ge__(self, other): return self._logical(other, "__ge__")
    def __eq__(self, other): return self._logical(other, "__eq__")
    def __ne__(self, other): return self._logical(other, "__ne__")
    __hash__ = object.__hash__

    @property
    def T(self):
        return F.permute(self, tuple(reversed(range(self.ndim))))

    def t(self):
        """The transpose of a tensor of at most 2 dims, as torch's t()."""
        if self.ndim > 2:
            raise ValueError(f"t() expects a tensor of at most 2 dims, got shape {self.shape}")
        return self.T

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

    def sin(self): return F.sin(self)
    def cos(self): return F.cos(self)
    def amax(self, dim=None, keepdim=False): return F.amax(self, dim, keepdim)
    def amin(self, dim=None, keepdim=False): return F.amin(self, dim, keepdim)
    def norm(self, p="fro", dim=None, keepdim=False): return F.norm(self, p, dim, keepdim)
    def unbind(self, dim=0): return F.unbind(self, dim)
    def repeat(self, *sizes): return F.repeat(self, *sizes)
    def clone(self): return F.clone(self)
    def gather(self, dim, index): return F.gather(self, dim, index)
    def sort(self, dim=-1, descending=False): return F.sort(self, dim, descending)
    def argsort(self, dim=-1, descending=False): return F.argsort(self, dim, descending)
    def topk(self, k, dim=-1, largest=True, sorted=True): return F.topk(self, k, dim, largest)
    def tril(self, diagonal=0): return F.tril(self, diagonal)
    def triu(self, diagonal=0): return F.triu(self, diagonal)

    # --- in place: torch's `_` methods ------------------------------------------------------------
    def _in_place(self, op):
        """Make self hold op(self). Where op records no graph (under no_grad, as initialisation
        and optimizers run, or with no input requiring grad) the result is written into self's
        array; otherwise self becomes the op's output node, as torch's in-place ops do — an error
        for a leaf that requires grad, or for a tensor that recorded ops already used (their
        gradients would see the new values)."""
        old = Tensor(self.array, requires_grad=self.requires_grad)
        old._ctx = self._ctx
        result = op(old)
        if not result.requires_grad:
            self.array[...] = result.array
            return self
        if self.is_leaf and self.requires_grad:
            raise RuntimeError("an in-place operation on a leaf tensor that requires grad: do "
                               "it under minivlm.no_grad() (as initialisation does)")
        if getattr(self, "_used", False):
            raise RuntimeError("an in-place operation on a tensor that recorded operations "
                               "already used: their gradients would be wrong; write it out of "
                               "place (y = x.clone(); y[...] = ...)")
        self.array, self._ctx, self.requires_grad = result.array, result._ctx, True
        return self

    def fill_(self, value): return self._in_place(lambda t: F.setitem(t, Ellipsis, value))
    def zero_(self): return self.fill_(0)
    def copy_(self, src): return self._in_place(lambda t: F.setitem(t, Ellipsis, src))
    def add_(self, other, alpha=1): return self._in_place(lambda t: t + other * alpha)
    def sub_(self, other, alpha=1): return self._in_place(lambda t: t - other * alpha)
    def mul_(self, other): return self._in_place(lambda t: t * other)
    def div_(self, other): return self._in_place(lambda t: t / other)
    def clamp_(self, min=None, max=None): return self._in_place(lambda t: t.clamp(min, max))
    def masked_fill_(self, mask, value):
        return self._in_place(lambda t: F.masked_fill(t, mask, value))
    def tril_(self, diagonal=0): return self._in_place(lambda t: F.tril(t, diagonal))
    def triu_(self, diagonal=0): return self._in_place(lambda t: F.triu(t, diagonal))

    def normal_(self, mean=0.0, std=1.0, generator=None):
        samples = randn(*self.shape, dtype=self.dtype, device=self.device, generator=generator)
        return self.copy_(samples * std + mean)

    def uniform_(self, a=0.0, b=1.0, generator=None):
        samples = rand(*self.shape, dtype=self.dtype, device=self.device, generator=generator)
        return self.copy_(samples * (b - a) + a)


class Parameter(Tensor):
    """A Tensor that a Module registers as a learnable parameter (requires_grad=True)."""

    def __init__(self, data, requires_grad=True):
        data = data.array if isinstance(data, Tensor) else data
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
        source = data.array if isinstance(data, Tensor) else data
        device = "cupy" if backend.is_cupy_array(source) else backend.default_name()
    return Tensor(_as_array(data, dtype, backend.canonical_name(device)),
                  requires_grad=requires_grad)


def from_numpy(array):
    """A Tensor sharing the memory of a NumPy array, as torch.from_numpy."""
    return Tensor(backend.numpy.asarray(array))


def shape_arg(shape):
    """The `*shape` of f(2, 3) or of f((2, 3)) (one tuple or list) as the shape itself."""
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


def zeros(*shape, dtype="float32", device=None, requires_grad=False):
    return Tensor(_xp(device).zeros(shape_arg(shape), dtype=dtype), requires_grad=requires_grad)


def ones(*shape, dtype="float32", device=None, requires_grad=False):
    return Tensor(_xp(device).ones(shape_arg(shape), dtype=dtype), requires_grad=requires_grad)


def empty(*shape, dtype="float32", device=None, requires_grad=False):
    return Tensor(_xp(device).empty(shape_arg(shape), dtype=dtype), requires_grad=requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    """A tensor of `size` filled with fill_value; its dtype follows the value (float32, int64 or
    bool) unless given, as torch.full."""
    dtype = dtype or _PYTHON_DTYPES[backend.numpy.asarray(fill_value).dtype.kind]
    return Tensor(_xp(device).full(shape_arg((size,)), fill_value, dtype=dtype),
                  requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    """start, start + step, ... below end (one argument: 0 ... start − 1), as torch.arange:
    int64 for integer arguments, float32 otherwise, unless dtype says."""
    if end is None:
        start, end = 0, start
    if dtype is None:
        dtype = "int64" if all(isinstance(v, numbers.Integral) for v in (start, end, step)) \
            else "float32"
    return Tensor(_xp(device).arange(start, end, step).astype(dtype), requires_grad=requires_grad)


def randn(*shape, dtype="float32", device=None, requires_grad=False, generator=None):
    """Standard normal samples from the backend's generator (seeded by manual_seed)."""
    rng = _rng(device, generator)
    return Tensor(rng.standard_normal(shape_arg(shape)).astype(dtype), requires_grad=requires_grad)


def rand(*shape, dtype="float32", device=None, requires_grad=False, generator=None):
    """Uniform [0, 1) samples from the backend's generator (seeded by manual_seed)."""
    rng = _rng(device, generator)
    return Tensor(rng.random(shape_arg(shape)).astype(dtype), requires_grad=requires_grad)


def randint(*args, dtype="int64", device=None, generator=None):
    """Integers uniform in [low, high) of shape `size`: randint(low, high, size) or
    randint(high, size), as torch.randint."""
    *bounds, size = args
    low, high = bounds if len(bounds) == 2 else (0, *bounds)
    rng = _rng(device, generator)
    return Tensor(rng.integers(low, high, size=shape_arg((size,))).astype(dtype))


def randperm(n, dtype="int64", device=None, generator=None):
    """A random permutation of 0 ... n − 1."""
    return Tensor(_rng(device, generator).permutation(n).astype(dtype))


def _rng(device, generator):
    return generator.rng(_xp(device)) if generator is not None else backend.rng(_xp(device))


class Generator:
    """A random stream of its own, as torch.Generator: Generator().manual_seed(0) makes
    DataLoader shuffling and randn(generator=...) reproducible apart from the global seed."""

    def __init__(self, device=None):
        self.seed, self._rngs = None, {}

    def manual_seed(self, seed):
        self.seed, self._rngs = int(seed), {}
        return self

    def initial_seed(self):
        return self.seed

    def rng(self, xp):
        """This generator's stream of array module `xp`."""
        if xp not in self._rngs:
            self._rngs[xp] = xp.random.default_rng(self.seed)
        return self._rngs[xp]


def _like(t, dtype, device):
    return _xp(device or t.device), dtype or t.dtype


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    xp, dtype = _like(t, dtype, device)
    return Tensor(xp.zeros(t.shape, dtype=dtype), requires_grad=requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False):
    xp, dtype = _like(t, dtype, device)
    return Tensor(xp.ones(t.shape, dtype=dtype), requires_grad=requires_grad)


def empty_like(t, dtype=None, device=None, requires_grad=False):
    xp, dtype = _like(t, dtype, device)
    return Tensor(xp.empty(t.shape, dtype=dtype), requires_grad=requires_grad)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    xp, dtype = _like(t, dtype, device)
    return Tensor(xp.full(t.shape, fill_value, dtype=dtype), requires_grad=requires_grad)


def randn_like(t, dtype=None, device=None, requires_grad=False):
    return randn(*t.shape, dtype=dtype or t.dtype, device=device or t.device,
                 requires_grad=requires_grad)


def rand_like(t, dtype=None, device=None, requires_grad=False):
    return rand(*t.shape, dtype=dtype or t.dtype, device=device or t.device,
                requires_grad=requires_grad)


def is_tensor(obj):
    return isinstance(obj, Tensor)


def numel(t):
    return t.numel()


def manual_seed(seed):
    """Make initialisation, dropout and random tensors reproducible on every backend."""
    backend.manual_seed(seed)


# The one import circle of the package, sanctioned: Tensor's operators and methods call the ops
# of functional, and the ops build Tensors (functional imports Function and Tensor from here).
# Imported last, after everything functional takes from this module is defined, so either module
# may be imported first.
from . import functional as F  # noqa: E402

"""Module: the base class of every layer, and the containers ModuleList, Sequential, Identity.

As in torch, a Module registers what is assigned to its attributes: a `Parameter` goes into
`_parameters`, a `Module` into `_modules`, and `register_buffer` adds a non-learnable tensor
(a running statistic, a fixed mask) to `_buffers`. Names are dotted paths ("blocks.0.fc1.weight")
and `state_dict` / `load_state_dict` save and restore them.
"""
import contextlib
from collections import OrderedDict, namedtuple

from .. import backend
from ..autograd import Parameter, Tensor, no_grad

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class: subclasses set attributes in __init__ and define forward(*inputs)."""

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())

    def forward(self, *inputs, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *inputs, **kwargs):
        """forward, between the hooks: each pre-hook(module, inputs) may return new inputs, each
        hook(module, inputs, output) a new output (torch's register_forward_*hook)."""
        for hook in list(self._forward_pre_hooks.values()):
            changed = hook(self, inputs)
            if changed is not None:
                inputs = changed if isinstance(changed, tuple) else (changed,)
        output = self.forward(*inputs, **kwargs)
        for hook in list(self._forward_hooks.values()):
            changed = hook(self, inputs, output)
            if changed is not None:
                output = changed
        return output

    def register_forward_pre_hook(self, hook):
        """Call hook(module, inputs) before each forward; returns a handle with .remove()."""
        return RemovableHandle(self._forward_pre_hooks, hook)

    def register_forward_hook(self, hook):
        """Call hook(module, inputs, output) after each forward; returns a handle with .remove()."""
        return RemovableHandle(self._forward_hooks, hook)

    # --- registration by attribute assignment -------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__() was called: "
                                 f"call super().__init__() first in {type(self).__name__}.__init__")
        if isinstance(value, Parameter) or name in self._parameters:
            self.register_parameter(name, value)
        elif isinstance(value, Module):
            self._forget(name, keep=self._modules)
            self._modules[name] = value
        elif name in self._buffers:
            self._buffers[name] = _checked_buffer(name, value)
        else:
            self._forget(name, keep=self.__dict__)
            object.__setattr__(self, name, value)

    def _forget(self, name, keep):
        """Remove `name` from every registry but `keep` (so a re-assignment keeps its place)."""
        for registry in (self._parameters, self._buffers, self._modules, self.__dict__):
            if registry is not keep:
                registry.pop(name, None)

    def __getattr__(self, name):  # only called when normal lookup fails
        for registry in ("_parameters", "_buffers", "_modules"):
            members = self.__dict__.get(registry, {})
            if name in members:
                return members[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute {name!r}")

    def __delattr__(self, name):
        self._forget(name, keep=None)

    def register_parameter(self, name, param):
        """Register `param` (a Parameter or None) under `name`."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign {type(param).__name__} as parameter {name!r} of "
                            f"{type(self).__name__} (a Parameter or None is expected)")
        self._forget(name, keep=self._parameters)
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        """A tensor that is part of the module's state but is not learned (None allowed).
        Non-persistent buffers are moved by to() but left out of state_dict()."""
        self._forget(name, keep=self._buffers)
        self._buffers[name] = _checked_buffer(name, tensor)
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    # --- walking the tree ---------------------------------------------------------------------
    def named_modules(self, prefix="", remove_duplicate=True, _seen=None):
        """(dotted name, module) for this module and every descendant, depth first."""
        seen = set() if _seen is None else _seen
        if remove_duplicate:
            if id(self) in seen:
                return
            seen.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(_join(prefix, name), remove_duplicate, seen)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        for name, child in self._modules.items():
            if child is not None:
                yield name, child

    def children(self):
        for _, child in self.named_children():
            yield child

    def _named_members(self, registry, prefix, recurse):
        """(dotted name, tensor) from `registry` ('_parameters' or '_buffers') of each module,
        each shared tensor once."""
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        seen = set()
        for module_prefix, module in modules:
            for name, member in getattr(module, registry).items():
                if member is not None and id(member) not in seen:
                    seen.add(id(member))
                    yield _join(module_prefix, name), member

    def named_parameters(self, prefix="", recurse=True):
        """(dotted name, Parameter), each shared parameter once."""
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse=True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix="", recurse=True):
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse=True):
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    def num_parameters(self, trainable_only=False):
        """How many scalars the parameters hold (each shared parameter counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def apply(self, fn):
        """Call fn(module) on every descendant, then on self (as torch); returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # --- modes, gradients, devices and dtypes -------------------------------------------------
    def train(self, mode=True):
        """Set training mode here and in every descendant (Dropout reads it); returns self."""
        for module in self.modules():
            module.training = mode
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        """Freeze (False) or unfreeze every parameter, e.g. the encoder under a linear probe."""
        for param in self.parameters():
            param.requires_grad = requires_grad
        return self

    def zero_grad(self, set_to_none=True):
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.array[...] = 0

    def to(self, *targets, device=None, dtype=None):
        """Move every parameter and buffer, in place, to a backend ('numpy'/'cpu', 'cupy'/'cuda'),
        and/or cast the floating-point ones to a dtype ('float32', 'float64'), given as torch
        takes them (to(device), to(dtype), to(device, dtype), by keyword); returns self.
        Integer buffers (position ids, index tables) keep their dtype, as in torch."""
        targets = targets + tuple(t for t in (device, dtype) if t is not None)
        for tensor in (*self.parameters(), *self.buffers()):
            for target in targets:
                tensor.array = _converted(tensor.array, target)
                if tensor.grad is not None:
                    tensor.grad.array = _converted(tensor.grad.array, target)
        return self

    def float(self):
        return self.to("float32")

    def double(self):
        return self.to("float64")

    def half(self):
        return self.to("float16")

    def cpu(self):
        return self.to("numpy")

    def cuda(self, device=None):
        return self.to("cupy")

    def _state_tensors(self):
        """What state_dict saves: parameters and persistent buffers by dotted name, a shared
        tensor under each of its names (as in torch)."""
        tensors = OrderedDict()
        for module_prefix, module in self.named_modules(remove_duplicate=False):
            buffers = {name: buf for name, buf in module._buffers.items()
                       if name not in module._non_persistent_buffers}
            for name, tensor in (*module._parameters.items(), *buffers.items()):
                if tensor is not None:
                    tensors[_join(module_prefix, name)] = tensor
        return tensors

    # --- saving and loading -------------------------------------------------------------------
    def state_dict(self):
        """OrderedDict dotted name -> detached Tensor: the parameters and persistent buffers.
        A parameter shared by two modules appears under both names, as in torch."""
        return OrderedDict((name, tensor.detach()) for name, tensor in self._state_tensors().items())

    def load_state_dict(self, state_dict, strict=True):
        """Copy values (Tensors or NumPy/CuPy arrays) into the existing parameters and buffers,
        keeping their dtype and backend. Raises one RuntimeError that lists every mis-shaped key
        and, when strict, every missing and unexpected key; nothing is changed in that case.
        Returns (missing_keys, unexpected_keys)."""
        own = self._state_tensors()
        missing = [name for name in own if name not in state_dict]
        unexpected = [name for name in state_dict if name not in own]
        values = {name: _array_of(value) for name, value in state_dict.items() if name in own}
        mismatched = [(name, tuple(value.shape), tuple(own[name].shape))
                      for name, value in values.items() if tuple(value.shape) != own[name].shape]
        problems = _describe_problems(missing if strict else [], unexpected if strict else [],
                                      mismatched)
        if problems:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n"
                               + "\n".join(problems))
        for name, value in values.items():
            target = own[name].array
            target[...] = backend.to_backend(value, backend.name_of(target))
        return IncompatibleKeys(missing, unexpected)

    # --- printing -----------------------------------------------------------------------------
    def extra_repr(self):
        """The arguments shown inside Name(...) for a leaf layer; subclasses override."""
        return ""

    def __repr__(self):
        children = [f"({name}): {_indent(repr(child))}" for name, child in self._modules.items()]
        extra = self.extra_repr()
        if not children:
            return f"{type(self).__name__}({extra})"
        lines = ([extra] if extra else []) + children
        return f"{type(self).__name__}(\n" + "".join(f"  {line}\n" for line in lines) + ")"


@contextlib.contextmanager
def evaluating(module):
    """Inside the block `module` is in eval mode (dropout off, batch norm's running statistics)
    and no graph is recorded; its training flag is restored after."""
    was_training = module.training
    module.eval()
    try:
        with no_grad():
            yield module
    finally:
        module.train(was_training)


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def _indent(text):
    return text.replace("\n", "\n  ")


def _checked_buffer(name, tensor):
    if tensor is not None and not isinstance(tensor, Tensor):
        raise TypeError(f"buffer {name!r} must be a Tensor or None, got {type(tensor).__name__}")
    return tensor


def _array_of(value):
    """The raw array of a Tensor, or a NumPy/CuPy array as given."""
    if isinstance(value, Tensor):
        return value.array
    if backend.is_array(value):
        return value
    raise TypeError(f"state_dict values must be Tensors or arrays, got {type(value).__name__}")


def _describe_problems(missing, unexpected, mismatched):
    """One line per kind of problem, naming every key (and both shapes of a mis-shaped one)."""
    problems = []
    if missing:
        problems.append("  Missing key(s): " + ", ".join(repr(k) for k in missing))
    if unexpected:
        problems.append("  Unexpected key(s): " + ", ".join(repr(k) for k in unexpected))
    for name, loaded, expected in mismatched:
        problems.append(f"  Size mismatch for {name!r}: the checkpoint has shape {loaded}, "
                        f"the model has shape {expected}")
    return problems


def _converted(array, target):
    """`array` on backend `target`, or cast to dtype `target` if it is floating point."""
    if backend.is_backend_name(target):
        return backend.to_backend(array, target)
    return array.astype(backend.dtype(target)) if array.dtype.kind == "f" else array


class RemovableHandle:
    """What register_forward_hook returns: handle.remove() unregisters the hook."""

    def __init__(self, hooks, hook):
        self.hooks, self.id = hooks, id(hook)
        hooks[self.id] = hook

    def remove(self):
        self.hooks.pop(self.id, None)


class ModuleList(Module):
    """A list of modules, registered under the names "0", "1", ..."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def append(self, module):
        self._modules[str(len(self))] = module
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def __getitem__(self, index):
        items = list(self._modules.values())
        if isinstance(index, slice):
            return ModuleList(items[index])
        return items[index]

    def __setitem__(self, index, module):
        name = list(self._modules)[index]
        self._modules[name] = module

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Modules applied one after the other: Sequential(a, b, c)(x) == c(b(a(x))).
    Named "0", "1", ..., or by the keys of a single OrderedDict argument (as in torch)."""

    def __init__(self, *modules):
        if len(modules) == 1 and isinstance(modules[0], dict):
            super().__init__()
            self._modules.update(modules[0])
        else:
            super().__init__(modules)

    def __getitem__(self, index):
        items = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*items[index])
        return items[index]

    def forward(self, x):
        for module in self:
            x = module(x)
        return x


class Identity(Module):
    """Returns its input unchanged (a placeholder where a layer is optional)."""

    def forward(self, x, *args, **kwargs):
        return x


class ModuleDict(Module):
    """Modules by name, registered under their keys (torch.nn.ModuleDict)."""

    def __init__(self, modules=None):
        super().__init__()
        self.update(modules or {})

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        setattr(self, key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def update(self, modules):
        for key, module in dict(modules).items():
            self[key] = module


class ParameterList(Module):
    """Parameters in a list, registered under "0", "1", ... (torch.nn.ParameterList)."""

    def __init__(self, values=None):
        super().__init__()
        self.extend(values or [])

    def __getitem__(self, index):
        return list(self._parameters.values())[index]

    def __len__(self):
        return len(self._parameters)

    def __iter__(self):
        return iter(self._parameters.values())

    def append(self, value):
        self.register_parameter(str(len(self)), _as_parameter(value))
        return self

    def extend(self, values):
        for value in values:
            self.append(value)
        return self


class ParameterDict(Module):
    """Parameters by name (torch.nn.ParameterDict)."""

    def __init__(self, parameters=None):
        super().__init__()
        for key, value in dict(parameters or {}).items():
            self[key] = value

    def __getitem__(self, key):
        return self._parameters[key]

    def __setitem__(self, key, value):
        self.register_parameter(key, _as_parameter(value))

    def __len__(self):
        return len(self._parameters)

    def __iter__(self):
        return iter(self._parameters)

    def keys(self):
        return self._parameters.keys()

    def values(self):
        return self._parameters.values()

    def items(self):
        return self._parameters.items()


def _as_parameter(value):
    """A Parameter as it is; a Tensor wrapped in one (as torch's ParameterList does)."""
    return value if isinstance(value, Parameter) else Parameter(value)

"""Optimizers (SGD, AdamW), learning-rate schedules and gradient clipping, as torch.optim.

An optimizer updates each parameter's array in place (`param.array`), in the parameter's own
dtype: hyperparameters are Python floats, which NumPy and CuPy apply without upcasting a float32
array. Its state (momenta, step counts) is saved by `state_dict()` as NumPy arrays and Python
numbers, so a training run resumes exactly from a checkpoint.
"""
import copy
import math

from . import backend
from .autograd import Tensor
from .backend import xp_of


class Optimizer:
    """Holds `param_groups` (dicts of "params" and hyperparameters) and per-parameter `state`.

    `params` is an iterable of Parameters, or of dicts {"params": [...], "lr": ..., ...} whose
    keys override the defaults for that group (e.g. weight_decay=0 for norms and biases)."""

    def __init__(self, params, defaults):
        self.defaults = defaults
        self.param_groups = []
        self.state = {}  # Parameter -> dict
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__} got an empty list of parameters")
        for group in groups if isinstance(groups[0], dict) else [{"params": groups}]:
            self.add_param_group(group)

    def add_param_group(self, group):
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        unknown = group.keys() - self.defaults.keys() - {"params"}
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown hyperparameter(s) "
                             f"{sorted(unknown)}; valid ones are {sorted(self.defaults)}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params) or len({id(p) for p in params}) != len(params):
            raise ValueError("a parameter appears in more than one place in the param groups")
        self.param_groups.append({**self.defaults, **group, "params": params})

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if set_to_none:
                    param.grad = None
                else:
                    param.grad.array[...] = 0

    def step(self):
        """Update every parameter that has a gradient."""
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param.array, param.grad.array, self.state.setdefault(param, {}),
                                 group)

    def _update(self, param, grad, state, group):
        """Change the array `param` in place, given its gradient, its state and its group."""
        raise NotImplementedError

    # --- checkpoints --------------------------------------------------------------------------
    def state_dict(self):
        """{"state": {index: {name: NumPy array or number}}, "param_groups": [{..., "params":
        [index]}]}, parameters numbered in group order (torch's layout). A copy."""
        index = {id(p): i for i, p in enumerate(self._params())}
        state = {index[id(p)]: {k: _to_host(v) for k, v in s.items()} for p, s in self.state.items()}
        groups = [{**copy.deepcopy({k: v for k, v in g.items() if k != "params"}),
                   "params": [index[id(p)] for p in g["params"]]} for g in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyperparameters and state saved by state_dict() for the same parameter
        layout; arrays go to each parameter's backend and dtype."""
        groups = state_dict["param_groups"]
        saved_sizes = [len(g["params"]) for g in groups]
        own_sizes = [len(g["params"]) for g in self.param_groups]
        if saved_sizes != own_sizes:
            raise ValueError(f"optimizer state_dict has param groups of sizes {saved_sizes}, but "
                             f"this optimizer's groups have sizes {own_sizes}")
        params, state = self._params(), {}
        for index, saved in state_dict["state"].items():
            param = params[int(index)]
            _check_state_shapes(index, saved, param)
            state[param] = {name: _to_param(value, param) for name, value in saved.items()}
        self.state = state
        for own, saved in zip(self.param_groups, groups):
            own.update({k: copy.deepcopy(v) for k, v in saved.items() if k != "params"})

    def _params(self):
        return [p for group in self.param_groups for p in group["params"]]


def _to_host(value):
    return backend.to_numpy(value).copy() if backend.is_array(value) else copy.deepcopy(value)


def _to_param(value, param):
    """A saved state value back on the parameter's backend, in its dtype if floating point."""
    if not backend.is_array(value) or value.ndim == 0:
        return value
    array = backend.to_backend(value, param.device)
    return array.astype(param.dtype) if array.dtype.kind == "f" else array.copy()


def _check_state_shapes(index, saved, param):
    for name, value in saved.items():
        if backend.is_array(value) and value.ndim and tuple(value.shape) != param.shape:
            raise ValueError(f"optimizer state_dict: state {name!r} of parameter {index} has "
                             f"shape {tuple(value.shape)}, but the parameter has shape "
                             f"{param.shape}")


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov momentum and
    (L2, coupled) weight decay, exactly as torch.optim.SGD:
        g ← g + wd·θ;  b ← μ·b + (1 − dampening)·g  (b = g at the first step)
        g ← g + μ·b if nesterov else b;  θ ← θ − lr·g"""

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        _check_non_negative(lr=lr, momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"Nesterov momentum needs momentum > 0 and dampening = 0, got "
                             f"momentum={momentum}, dampening={dampening}")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _update(self, param, grad, state, group):
        lr, momentum, weight_decay = (float(group[k]) for k in ("lr", "momentum", "weight_decay"))
        if weight_decay:
            grad = grad + weight_decay * param
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf *= momentum
                buf += (1 - float(group["dampening"])) * grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        param -= lr * grad


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), exactly as torch.optim.AdamW:
        θ ← θ·(1 − lr·wd);  m ← β₁m + (1 − β₁)g;  v ← β₂v + (1 − β₂)g²
        θ ← θ − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)
    With amsgrad, v in the denominator is the running maximum of v."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False):
        _check_non_negative(lr=lr, eps=eps, weight_decay=weight_decay)
        if not all(0 <= beta < 1 for beta in betas):
            raise ValueError(f"AdamW: betas must lie in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad))

    def _update(self, param, grad, state, group):
        lr, eps, weight_decay = (float(group[k]) for k in ("lr", "eps", "weight_decay"))
        beta1, beta2 = (float(beta) for beta in group["betas"])
        xp = xp_of(param)
        if not state:
            state.update(step=0, exp_avg=xp.zeros_like(param), exp_avg_sq=xp.zeros_like(param))
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(param)
        state["step"] = step = int(state["step"]) + 1  # a Python int: no float64 upcast
        m, v = state["exp_avg"], state["exp_avg_sq"]

        param *= 1 - lr * weight_decay
        m += (1 - beta1) * (grad - m)  # torch's lerp: m ← β₁m + (1 − β₁)g
        v *= beta2
        v += (1 - beta2) * grad * grad
        if group["amsgrad"]:
            xp.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
            v = state["max_exp_avg_sq"]

        step_size = lr / (1 - beta1 ** step)
        denom = xp.sqrt(v) / math.sqrt(1 - beta2 ** step) + eps
        param -= step_size * m / denom


class Adam(AdamW):
    """torch.optim.Adam: AdamW's update, but weight decay is L2, added to the gradient
    (g ← g + wd·θ, coupled with the moments), and 0 by default."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)

    def _update(self, param, grad, state, group):
        weight_decay = float(group["weight_decay"])
        if weight_decay:
            grad = grad + weight_decay * param
        super()._update(param, grad, state, {**group, "weight_decay": 0.0})


def _check_non_negative(**hyperparameters):
    for name, value in hyperparameters.items():
        if not value >= 0:
            raise ValueError(f"invalid {name}={value}: it must be >= 0")


# --- learning-rate schedules ---------------------------------------------------------------------

class LRScheduler:
    """Sets each group's "lr" from its initial lr and the number of steps taken.

    Call `step()` once after each optimizer.step(). `last_epoch` (torch's name) counts the calls;
    the lr for step 0 is set on construction."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = 0
        self._set_lrs()

    def lr_at(self, step, base_lr):
        """The learning rate after `step` steps for a group whose initial lr is base_lr."""
        raise NotImplementedError

    def step(self):
        self.last_epoch += 1
        self._set_lrs()

    def _set_lrs(self):
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.lr_at(self.last_epoch, base_lr)

    def get_last_lr(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self):
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state_dict):
        self.last_epoch = int(state_dict["last_epoch"])
        self.base_lrs = [float(lr) for lr in state_dict["base_lrs"]]
        self._set_lrs()


class LambdaLR(LRScheduler):
    """lr = initial_lr · lr_lambda(step), as torch.optim.lr_scheduler.LambdaLR."""

    def __init__(self, optimizer, lr_lambda):
        self.lr_lambda = lr_lambda
        super().__init__(optimizer)

    def lr_at(self, step, base_lr):
        return base_lr * self.lr_lambda(step)


class WarmupCosineLR(LRScheduler):
    """Linear warm-up from 0 to the initial lr over `warmup_steps`, then a half cosine down to
    `min_lr` at `total_steps`, then constant (Hugging Face's cosine-with-min-lr schedule):
        step < W:  lr = base · step / W
        else:      lr = min_lr + (base − min_lr) · ½(1 + cos(π · min(1, (step − W) / (T − W))))"""

    def __init__(self, optimizer, warmup_steps, total_steps, min_lr=0.0):
        if not 0 <= warmup_steps <= total_steps or total_steps <= 0:
            raise ValueError(f"need 0 <= warmup_steps <= total_steps and total_steps > 0, got "
                             f"warmup_steps={warmup_steps}, total_steps={total_steps}")
        self.warmup_steps, self.total_steps, self.min_lr = warmup_steps, total_steps, min_lr
        super().__init__(optimizer)

    def lr_at(self, step, base_lr):
        if step < self.warmup_steps:
            return base_lr * step / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr + (base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def cosine_schedule(optimizer, warmup_steps, total_steps, min_lr=0.0):
    """Linear warm-up then cosine decay to min_lr: a WarmupCosineLR (see there)."""
    return WarmupCosineLR(optimizer, warmup_steps, total_steps, min_lr)


# --- gradient clipping ---------------------------------------------------------------------------

def decay_matrices_only(parameters):
    """Two param groups: matrices (weight decay) and vectors such as biases and norm gains
    (none), as GPT-2, CLIP and nanoGPT train."""
    params = list(parameters)
    return [{"params": [p for p in params if p.ndim >= 2]},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients in place so that their joint norm is at most max_norm, as torch:
    coefficient min(1, max_norm / (total_norm + 1e-6)). Returns the norm before clipping
    (a 0-d Tensor; norm_type may be float('inf'))."""
    parameters = [parameters] if isinstance(parameters, Tensor) else parameters
    grads = [p.grad.array for p in parameters if p.grad is not None]
    if not grads:
        return Tensor(backend.default_xp().zeros((), dtype="float32"))
    xp = xp_of(*grads)
    total_norm = _vector_norm(xp.stack([_vector_norm(g, norm_type) for g in grads]), norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total_norm)):
        raise RuntimeError(f"the total norm of order {norm_type} of the gradients is "
                           f"{float(total_norm)}, which is not finite")
    clip_coef = xp.minimum(max_norm / (total_norm + 1e-6), 1.0)
    for g in grads:
        g *= clip_coef
    return Tensor(xp.asarray(total_norm))


def _vector_norm(a, norm_type):
    """The p-norm of all elements of `a`, as a 0-d array of its dtype."""
    xp = xp_of(a)
    if norm_type == math.inf:
        return xp.abs(a).max()
    return (xp.abs(a) ** norm_type).sum() ** (1.0 / norm_type)

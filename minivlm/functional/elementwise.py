"""Elementwise ops: arithmetic with broadcasting, the unary ops and the activations.

The binary ops lift a Python number or array operand to a constant Tensor (`lift`,
`as_operands`), in the tensor's dtype for numbers. GELU, QuickGELU and SiLU keep only x and
recompute the rest in backward; on the CPU they run block by block (cpu.by_blocks).
"""
import math
import numbers

from ..autograd import Function, Tensor, unbroadcast
from ..backend import xp_of
from .cpu import as_rows, by_blocks, gaussian, normal_cdf, scaled_sigmoid


def lift(x, like):
    """A non-Tensor operand (Python number or array) as a constant Tensor of `like`'s kind."""
    if isinstance(x, Tensor):
        return x
    xp = xp_of(like.array)
    if isinstance(x, numbers.Number) and like.dtype.kind == "f":
        return Tensor(xp.asarray(x, dtype=like.dtype))
    return Tensor(xp.asarray(x))


def as_operands(a, b):
    """The operands of a binary op as two Tensors, a number or array lifted to the other's kind."""
    if not isinstance(a, Tensor):
        a = lift(a, b)
    return a, lift(b, a)


def _check_broadcast(a, b, op):
    try:
        return xp_of(a).broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {tuple(a.shape)} and {tuple(b.shape)} do not broadcast") from None


# --- arithmetic -----------------------------------------------------------------------------------

class Add(Function):
    def forward(self, a, b):
        _check_broadcast(a, b, "add")
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, g):
        return tuple(unbroadcast(g, s) if need else None
                     for s, need in zip(self.shapes, self.needs_input_grad))


class Sub(Function):
    def forward(self, a, b):
        _check_broadcast(a, b, "sub")
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, g):
        ga, gb = self.needs_input_grad
        return (unbroadcast(g, self.shapes[0]) if ga else None,
                unbroadcast(-g, self.shapes[1]) if gb else None)


class Mul(Function):
    def forward(self, a, b):
        _check_broadcast(a, b, "mul")
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        ga, gb = self.needs_input_grad
        return (unbroadcast(g * self.b, self.a.shape) if ga else None,
                unbroadcast(g * self.a, self.b.shape) if gb else None)


class Div(Function):
    def forward(self, a, b):
        _check_broadcast(a, b, "div")
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        ga, gb = self.needs_input_grad
        g_over_b = g / self.b
        return (unbroadcast(g_over_b, self.a.shape) if ga else None,
                unbroadcast(-g_over_b * self.a / self.b, self.b.shape) if gb else None)


class Pow(Function):
    def forward(self, a, b):
        _check_broadcast(a, b, "pow")
        self.a, self.b = a, b
        self.out = a ** b
        return self.out

    def backward(self, g):
        ga, gb = self.needs_input_grad
        a, b = self.a, self.b
        return (unbroadcast(g * b * a ** (b - 1), a.shape) if ga else None,
                unbroadcast(g * self.out * xp_of(a).log(a), b.shape) if gb else None)


def add(a, b): return Add.apply(*as_operands(a, b))
def sub(a, b): return Sub.apply(*as_operands(a, b))
def mul(a, b): return Mul.apply(*as_operands(a, b))
def div(a, b): return Div.apply(*as_operands(a, b))
def pow(a, b): return Pow.apply(*as_operands(a, b))


# --- unary ops and activations --------------------------------------------------------------------

class Neg(Function):
    def forward(self, x): return -x
    def backward(self, g): return -g


class Exp(Function):
    def forward(self, x):
        self.y = xp_of(x).exp(x)
        return self.y

    def backward(self, g): return g * self.y


class Log(Function):
    def forward(self, x):
        self.x = x
        return xp_of(x).log(x)

    def backward(self, g): return g / self.x


class Sqrt(Function):
    def forward(self, x):
        self.y = xp_of(x).sqrt(x)
        return self.y

    def backward(self, g): return g / (2 * self.y)


class Abs(Function):
    def forward(self, x):
        self.x = x
        return xp_of(x).abs(x)

    def backward(self, g): return g * xp_of(self.x).sign(self.x)


class Tanh(Function):
    def forward(self, x):
        self.y = xp_of(x).tanh(x)
        return self.y

    def backward(self, g): return g * (1 - self.y * self.y)




class Sin(Function):
    def forward(self, x):
        self.x = x
        return xp_of(x).sin(x)

    def backward(self, g): return g * xp_of(g).cos(self.x)


class Cos(Function):
    def forward(self, x):
        self.x = x
        return xp_of(x).cos(x)

    def backward(self, g): return -g * xp_of(g).sin(self.x)


class Sigmoid(Function):
    def forward(self, x):
        self.y = scaled_sigmoid(x)
        return self.y

    def backward(self, g): return g * self.y * (1 - self.y)


class ReLU(Function):
    def forward(self, x):
        self.positive = x > 0
        return x * self.positive

    def backward(self, g): return g * self.positive


class Clamp(Function):
    def forward(self, x, min=None, max=None):
        self.inside = xp_of(x).ones(x.shape, dtype=bool)
        if min is not None:
            self.inside &= x >= min
        if max is not None:
            self.inside &= x <= max
        return xp_of(x).clip(x, min, max)

    def backward(self, g): return g * self.inside


class GELU(Function):
    """x·Φ(x) exactly (erf), or with the tanh approximation. Keeps only x: backward recomputes
    Φ(x), block by block."""

    def forward(self, x, approximate="none"):
        self.x, self.approximate = x, approximate
        if approximate == "tanh":
            self.t = xp_of(x).tanh(_GELU_C * (x + 0.044715 * x * x * x))
            return 0.5 * x * (1 + self.t)
        if approximate != "none":
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', not {approximate!r}")
        return by_blocks(gelu_rows, [as_rows(x)])[0].reshape(x.shape)

    def backward(self, g):
        x = self.x
        if self.approximate == "tanh":
            dt = (1 - self.t * self.t) * _GELU_C * (1 + 3 * 0.044715 * x * x)
            return g * (0.5 * (1 + self.t) + 0.5 * x * dt)
        return by_blocks(gelu_grad_rows, [as_rows(x), as_rows(g)])[0].reshape(x.shape)


def gelu_rows(x):
    """x·Φ(x), for rows x."""
    y = normal_cdf(x, gaussian(x))
    y *= x
    return (y,)


def gelu_grad_rows(x, g):
    """g · (Φ(x) + x·φ(x)), φ(x) = exp(−x²/2) / √(2π)."""
    gauss = gaussian(x)
    grad = normal_cdf(x, gauss)
    gauss *= x
    gauss *= _INV_SQRT_2PI
    grad += gauss
    grad *= g
    return (grad,)


_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_GELU_C = math.sqrt(2 / math.pi)


class SigmoidWeighted(Function):
    """x·σ(scale·x): QuickGELU (scale 1.702, OpenAI CLIP's approximation of GELU) and SiLU
    (scale 1, the swish of Llama's MLP). Keeps only x, block by block."""
    rows = grad_rows = None  # each subclass's functions of rows (a fused kernel stands in on GPU)

    def forward(self, x):
        self.x = x
        return by_blocks(self.rows, [as_rows(x)])[0].reshape(x.shape)

    def backward(self, g):
        x = self.x
        return by_blocks(self.grad_rows, [as_rows(x), as_rows(g)])[0].reshape(x.shape)


def x_sigmoid_rows(x, scale):
    """x·σ(scale·x), for rows x."""
    y = scaled_sigmoid(x, scale)
    y *= x
    return (y,)


def x_sigmoid_grad_rows(x, g, scale):
    """g · σ(scale·x) · (1 + scale·x·(1 − σ(scale·x)))."""
    s = scaled_sigmoid(x, scale)
    grad = 1 - s
    grad *= x
    grad *= scale
    grad += 1
    grad *= s
    grad *= g
    return (grad,)


def quick_gelu_rows(x): return x_sigmoid_rows(x, 1.702)
def quick_gelu_grad_rows(x, g): return x_sigmoid_grad_rows(x, g, 1.702)
def silu_rows(x): return x_sigmoid_rows(x, 1.0)
def silu_grad_rows(x, g): return x_sigmoid_grad_rows(x, g, 1.0)


class QuickGELU(SigmoidWeighted):
    rows, grad_rows = staticmethod(quick_gelu_rows), staticmethod(quick_gelu_grad_rows)


class SiLU(SigmoidWeighted):
    rows, grad_rows = staticmethod(silu_rows), staticmethod(silu_grad_rows)


def neg(x): return Neg.apply(x)
def exp(x): return Exp.apply(x)
def log(x): return Log.apply(x)
def sqrt(x): return Sqrt.apply(x)
def abs(x): return Abs.apply(x)
def tanh(x): return Tanh.apply(x)
def sin(x): return Sin.apply(x)
def cos(x): return Cos.apply(x)
def sigmoid(x): return Sigmoid.apply(x)
def relu(x): return ReLU.apply(x)
def gelu(x, approximate="none"): return GELU.apply(x, approximate=approximate)
def quick_gelu(x): return QuickGELU.apply(x)
def silu(x): return SiLU.apply(x)
def clamp(x, min=None, max=None): return Clamp.apply(x, min=min, max=max)

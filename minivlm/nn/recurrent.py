"""The recurrent layer: nn.RNN, an Elman RNN with torch's names, parameter layout and init.

    h_t = act(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh)       act = tanh (default) or relu

The slide "Three Ways of Processing Sequences": after one layer the last state h_T has seen the
whole sequence, but the states must be computed one after another.
"""
import math
import numbers
import warnings

from .. import functional as F
from ..autograd import zeros
from ..functional.recurrent import NONLINEARITIES
from . import init
from .layers import empty_parameter
from .module import Module


class RNN(Module):
    """A stack of `num_layers` RNN layers (two directions each when bidirectional; a layer above
    the first reads both directions' states, concatenated). Dropout(dropout) acts on each
    layer's output but the last's, in training.

    forward(input, hx=None) -> (output, h_n):
        input (L, N, input_size), or (N, L, input_size) with batch_first, or (L, input_size)
        hx    (num_layers·D, N, hidden_size), or (num_layers·D, hidden_size); default zeros
        output: the last layer's states, (L, N, D·hidden_size) (batch-first / unbatched alike)
        h_n:  each layer's and direction's final state, (num_layers·D, N, hidden_size)
    with D = 2 if bidirectional else 1. Parameters weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k},
    bias_hh_l{k} (suffix _reverse for the backward direction), all U(±1/√hidden_size)."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None):
        super().__init__()
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"RNN: unknown nonlinearity {nonlinearity!r}; select from 'tanh' "
                             f"or 'relu'")
        if not isinstance(dropout, numbers.Real) or isinstance(dropout, bool) \
                or not 0 <= dropout <= 1:
            raise ValueError(f"RNN: dropout must be a probability in [0, 1], got {dropout!r}")
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"RNN: {name} must be a positive int, got {value!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"RNN: dropout={dropout} acts between layers, and num_layers=1 has "
                          f"none", stacklevel=2)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.nonlinearity, self.bias, self.batch_first = nonlinearity, bias, batch_first
        self.dropout, self.bidirectional = float(dropout), bidirectional
        directions = 2 if bidirectional else 1
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * directions
            for suffix in self._suffixes(layer):
                shapes = {"weight_ih": (hidden_size, layer_input),
                          "weight_hh": (hidden_size, hidden_size)}
                if bias:
                    shapes |= {"bias_ih": (hidden_size,), "bias_hh": (hidden_size,)}
                for name, shape in shapes.items():
                    setattr(self, name + suffix, empty_parameter(*shape, dtype=dtype,
                                                                 device=device))
        self.reset_parameters()

    def _suffixes(self, layer):
        """The parameter-name suffixes of a layer's directions: _l{k}, and _l{k}_reverse."""
        return [f"_l{layer}"] + ([f"_l{layer}_reverse"] if self.bidirectional else [])

    def reset_parameters(self):
        bound = 1 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            init.uniform_(weight, -bound, bound)

    def forward(self, input, hx=None):
        unbatched = input.ndim == 2
        if input.ndim not in (2, 3) or input.shape[-1] != self.input_size:
            raise ValueError(f"{self!r}: expected an input (L, N, {self.input_size}) (N first "
                             f"with batch_first) or (L, {self.input_size}), got shape "
                             f"{tuple(input.shape)}")
        x = input.unsqueeze(1) if unbatched else \
            input.transpose(0, 1) if self.batch_first else input
        states = self.num_layers * (2 if self.bidirectional else 1)
        expected = (states, x.shape[1], self.hidden_size)
        if hx is None:
            hx = zeros(*expected, dtype=x.dtype, device=x.device)
        elif unbatched and hx.ndim == 2:
            hx = hx.unsqueeze(1)
        if tuple(hx.shape) != expected:
            raise ValueError(f"{self!r}: for an input of shape {tuple(input.shape)} hx must have "
                             f"shape {expected[:1] + expected[2:] if unbatched else expected}, "
                             f"got {tuple(hx.shape)}")
        finals = []
        for layer in range(self.num_layers):
            if layer:
                x = F.dropout(x, self.dropout, self.training)
            outputs = []
            for reverse, suffix in enumerate(self._suffixes(layer)):
                states_of_direction = F.rnn(
                    x, hx[len(finals)], getattr(self, "weight_ih" + suffix),
                    getattr(self, "weight_hh" + suffix), getattr(self, "bias_ih" + suffix, None),
                    getattr(self, "bias_hh" + suffix, None), self.nonlinearity, bool(reverse))
                outputs.append(states_of_direction)
                finals.append(states_of_direction[0 if reverse else -1])
            x = outputs[0] if len(outputs) == 1 else F.cat(outputs, dim=-1)
        h_n = F.stack(finals)
        if unbatched:
            return x.squeeze(1), h_n.squeeze(1)
        return (x.transpose(0, 1) if self.batch_first else x), h_n

    def extra_repr(self):
        options = [f"{self.input_size}, {self.hidden_size}"]
        for name, default in (("num_layers", 1), ("nonlinearity", "tanh"), ("bias", True),
                              ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False)):
            value = getattr(self, name)
            if value != default:
                options.append(f"{name}={value!r}")
        return ", ".join(options)

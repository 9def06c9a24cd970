"""The recurrent op: one layer of an Elman RNN (nn.RNN's computation), in one direction.

    h_t = act(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh)       act = tanh or relu

The input term x_t W_ihᵀ + b_ih of every step is one matrix product over the whole sequence (the
parallel half); the recurrence is a loop of L steps, each waiting for the one before (the
sequential half, the slide's "not parallelizable"). `Recurrence` runs that loop as one coarse
op with a hand-written backward through time, which keeps only the hidden states.
"""
from ..autograd import Function
from ..backend import xp_of
from .dtypes import check_floating, check_same_dtype
from .layers import linear

NONLINEARITIES = ("tanh", "relu")


class Recurrence(Function):
    """h_t = act(inputs_t + h_{t−1} W_hhᵀ) for t = 0 .. L−1, or L−1 .. 0 when reverse.
    inputs (L, N, H), h0 (N, H), weight_hh (H, H) -> every h_t, (L, N, H)."""

    def forward(self, inputs, h0, weight_hh, nonlinearity, reverse):
        xp = xp_of(inputs)
        self.reverse, self.nonlinearity = reverse, nonlinearity
        inputs = inputs[::-1] if reverse else inputs
        hidden = xp.empty_like(inputs)
        h = h0
        for t in range(len(inputs)):                     # step t needs step t − 1
            h = inputs[t] + h @ weight_hh.T
            h = xp.tanh(h) if nonlinearity == "tanh" else xp.maximum(h, 0)
            hidden[t] = h
        self.hidden, self.h0, self.weight_hh = hidden, h0, weight_hh
        return hidden[::-1] if reverse else hidden

    def backward(self, g):
        """Backpropagation through time: the gradient reaching h_t is the output's at t plus
        what h_{t+1} sends back through W_hh, times act'(·) at step t."""
        xp, hidden = xp_of(g), self.hidden
        g = g[::-1] if self.reverse else g
        slope = 1 - hidden * hidden if self.nonlinearity == "tanh" else \
            (hidden > 0).astype(hidden.dtype)
        g_inputs = xp.empty_like(hidden)
        carry = xp.zeros_like(self.h0)
        for t in reversed(range(len(hidden))):
            g_inputs[t] = (g[t] + carry) * slope[t]
            carry = g_inputs[t] @ self.weight_hh
        previous = xp.concatenate([self.h0[None], hidden[:-1]])    # h_{t−1} for each t
        g_weight = xp.einsum("lni,lnj->ij", g_inputs, previous)
        return (g_inputs[::-1] if self.reverse else g_inputs), carry, g_weight


def rnn(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, nonlinearity="tanh",
        reverse=False):
    """One RNN layer over a time-major sequence: input (L, N, H_in), hx (N, H), weight_ih
    (H, H_in), weight_hh (H, H), biases (H,) -> the hidden state of every step, (L, N, H);
    reverse=True runs from the last step to the first (the backward half of a bidirectional
    RNN). The last state the loop reaches is output[-1] (output[0] when reversed)."""
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"rnn: nonlinearity must be one of {NONLINEARITIES}, got "
                         f"{nonlinearity!r}")
    check_floating("rnn", input)
    check_same_dtype("rnn", input=input, hx=hx, weight_ih=weight_ih, weight_hh=weight_hh,
                     bias_ih=bias_ih, bias_hh=bias_hh)
    hidden_size = weight_hh.shape[0]
    if input.ndim != 3 or tuple(hx.shape) != (input.shape[1], hidden_size) \
            or tuple(weight_hh.shape) != (hidden_size, hidden_size) \
            or tuple(weight_ih.shape) != (hidden_size, input.shape[-1]):
        raise ValueError(f"rnn: expected input (L, N, H_in), hx (N, H), weight_ih (H, H_in) and "
                         f"weight_hh (H, H), got shapes {tuple(input.shape)}, {tuple(hx.shape)}, "
                         f"{tuple(weight_ih.shape)} and {tuple(weight_hh.shape)}")
    inputs = linear(input, weight_ih, bias_ih)        # every step's input term at once
    if bias_hh is not None:
        inputs = inputs + bias_hh
    return Recurrence.apply(inputs, hx, weight_hh, nonlinearity=nonlinearity, reverse=reverse)

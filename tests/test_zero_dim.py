"""0-d results stay 0-d arrays. NumPy returns scalars (numpy.float32, ...) from 0-d arithmetic
and full reductions; a Tensor holding one looks right but cannot be updated in place, so a
Parameter made of it never trains (`nn.Parameter(ones([]) * np.log(1 / 0.07))`, OpenAI CLIP's
logit scale). Every op of the catalogue, on each backend: its output and every gradient are
arrays, never NumPy scalars."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minivlm as mv
from minivlm import backend as backends, nn, optim
from op_cases import CASES, ours_params


def is_array(a):
    return backends.is_array(a) and not isinstance(a, np.generic)


@pytest.mark.parametrize("case", CASES, ids=str)
@given(data=st.data())
def test_outputs_and_gradients_are_arrays(case, data, backend):
    arrays, params = data.draw(case.inputs)
    tensors = {name: mv.tensor(a, device=backend, requires_grad=True)
               for name, a in arrays.items()}
    out = case.ours(**tensors, **ours_params(params, backend))
    assert is_array(out.array), f"{case}: the output is a {type(out.array).__name__}"
    out.backward(backends.module(backend).ones_like(out.array))
    for name, t in tensors.items():
        assert t.grad is None or is_array(t.grad.array), f"{case}: the gradient of {name}"


@pytest.mark.parametrize("op", [
    lambda x: x * np.log(1 / 0.07), lambda x: x + 1, lambda x: 2 - x, lambda x: x / 3,
    lambda x: x ** 2, lambda x: -x, lambda x: x.exp(), lambda x: x.sum(), lambda x: x.mean(),
    lambda x: x.max(), lambda x: x.reshape(1).sum(), lambda x: x * np.float64(2.0),
    lambda x: np.float32(2.0) * x, lambda x: x.clamp(0, 1), lambda x: x.tanh()])
def test_0d_inputs_give_0d_arrays(op, backend):
    x = mv.ones([], device=backend, requires_grad=True)
    out = op(x)
    assert out.shape == () and is_array(out.array)
    out.backward()
    assert x.grad.shape == () and is_array(x.grad.array)


def test_a_0d_parameter_trains():
    """OpenAI CLIP's logit_scale, written as OpenAI writes it, moves with the optimizer and
    loads from a state dict."""
    logit_scale = nn.Parameter(mv.ones([]) * np.log(1 / 0.07))
    assert is_array(logit_scale.array) and logit_scale.shape == ()
    for opt in (optim.SGD([logit_scale], lr=0.1), optim.AdamW([logit_scale], lr=0.1)):
        before = logit_scale.item()
        (logit_scale * 3).backward()
        opt.step()
        assert logit_scale.item() != before
        logit_scale.grad = None
    holder = nn.Module()
    holder.logit_scale = logit_scale
    holder.load_state_dict({"logit_scale": np.array(4.5, np.float32)})
    assert logit_scale.item() == 4.5

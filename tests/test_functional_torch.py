"""Tier 3: every op, forward and backward, against torch in float64."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minivlm as mv
import minivlm.functional as F
from minivlm.testing import assert_close
from op_cases import CASES, ours_params, torch_params

torch = pytest.importorskip("torch")

RTOL, ATOL = 1e-10, 1e-12  # float64 sums taken in another order, or cancelling to ~0


@pytest.mark.parametrize("case", CASES, ids=str)
@given(data=st.data())
def test_forward_and_backward_match_torch(case, data):
    inputs, params = data.draw(case.inputs, label="inputs, params")
    ours = {name: mv.tensor(values, requires_grad=True) for name, values in inputs.items()}
    theirs = {name: torch.tensor(values, requires_grad=True) for name, values in inputs.items()}
    out = case.ours(**ours, **ours_params(params, "numpy"))
    expected = case.theirs(torch, **theirs, **torch_params(params, torch))
    upstream = np.random.default_rng(0).standard_normal(tuple(expected.shape))
    out.backward(mv.tensor(upstream))
    expected.backward(torch.from_numpy(upstream))

    assert out.dtype == np.float64
    assert_close(out, expected.detach().numpy(), rtol=RTOL, atol=ATOL)
    for name, t in ours.items():
        their_grad = theirs[name].grad
        assert_close(t.grad, np.zeros(t.shape) if their_grad is None else their_grad.numpy(),
                     rtol=RTOL, atol=ATOL)


def test_normalize_of_a_zero_vector_matches_torch():
    values = np.array([[0.0, 0.0, 0.0], [3.0, -4.0, 1e-20]])
    x, y = mv.tensor(values, requires_grad=True), torch.tensor(values, requires_grad=True)
    out, expected = F.normalize(x, dim=1), torch.nn.functional.normalize(y, dim=1)
    upstream = np.array([[1.0, -2.0, 0.5], [0.3, 0.2, 0.1]])
    out.backward(mv.tensor(upstream))
    expected.backward(torch.from_numpy(upstream))
    assert_close(out, expected.detach().numpy(), rtol=RTOL)
    assert_close(x.grad, y.grad.numpy(), rtol=RTOL)  # finite: 1/eps times upstream, as torch

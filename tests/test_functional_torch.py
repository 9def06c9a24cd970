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


KINKS = {  # name: (ours, theirs); the values sit on each op's kinks and ties
    "relu at 0": (F.relu, torch.relu),
    "abs at 0": (F.abs, torch.abs),
    "clamp at its bounds": (lambda x: F.clamp(x, -1.0, 1.0), lambda x: torch.clamp(x, -1.0, 1.0)),
    "max of tied values": (lambda x: F.max(x, dim=1).values, lambda x: torch.amax(x, dim=1)),
    "min of tied values": (lambda x: F.min(x, dim=1).values, lambda x: torch.amin(x, dim=1)),
    "max of all, tied": (F.max, torch.amax),
}


@pytest.mark.parametrize("name", list(KINKS))
def test_gradients_at_kinks_and_ties_are_torchs(name):
    """Where an op has no derivative, torch picks one (relu' = 0 and |x|' = 0 at 0, clamp' = 1 on
    its bounds, a max or min shared by ties): the drawn examples keep clear of these points."""
    ours, theirs = KINKS[name]
    values = np.array([[-1.0, 0.0, 1.0, 0.0, 1.0], [2.0, -1.0, -1.0, 2.0, 0.0]])
    x, y = mv.tensor(values, requires_grad=True), torch.tensor(values, requires_grad=True)
    out, expected = ours(x), theirs(y)
    upstream = np.arange(1.0, 1.0 + out.numel()).reshape(out.shape)
    out.backward(mv.tensor(upstream))
    expected.backward(torch.from_numpy(upstream))
    assert_close(out, expected.detach().numpy(), rtol=0)
    assert_close(x.grad, y.grad.numpy(), rtol=0, elementwise=True)


LARGE_LOGITS = {  # name: (ours, theirs) of logits x (2, 3)
    "softmax": (lambda x: F.softmax(x, -1), lambda x: torch.softmax(x, -1)),
    "log_softmax": (lambda x: F.log_softmax(x, -1), lambda x: torch.log_softmax(x, -1)),
    "logsumexp": (lambda x: F.logsumexp(x, -1), lambda x: torch.logsumexp(x, -1)),
    "cross_entropy": (lambda x: F.cross_entropy(x, np.array([0, 2])),
                      lambda x: torch.nn.functional.cross_entropy(x, torch.tensor([0, 2]))),
}


@pytest.mark.parametrize("name", list(LARGE_LOGITS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_softmax_family_shifts_large_logits_before_exp(name, dtype):
    """exp overflows above 88 in float32 and 709 in float64: the ops subtract each row's
    maximum first, and stay finite and equal to torch's on logits of ±1000."""
    ours, theirs = LARGE_LOGITS[name]
    values = np.array([[1000.0, 999.0, -1000.0], [-1000.0, -1001.0, -998.0]], dtype=dtype)
    x, y = mv.tensor(values, requires_grad=True), torch.tensor(values, requires_grad=True)
    out, expected = ours(x), theirs(y)
    upstream = np.ones(out.shape, dtype=dtype)
    out.backward(mv.tensor(upstream))
    expected.backward(torch.from_numpy(upstream))
    assert_close(out, expected.detach().numpy(), rtol=1e-6, atol=1e-6, elementwise=True)
    assert_close(x.grad, y.grad.numpy(), rtol=1e-6, atol=1e-6, elementwise=True)


def test_var_has_torchs_default_correction():
    """Bessel's correction (divide by n − 1) unless told otherwise, as torch.var."""
    values = np.array([[1.0, 2.0, 4.0], [0.5, -1.0, 3.0]])
    x, y = mv.tensor(values), torch.tensor(values)
    assert_close(F.var(x), torch.var(y).numpy(), rtol=1e-15)
    assert_close(x.var(dim=1), y.var(dim=1).numpy(), rtol=1e-15)
    assert_close(F.var(x, unbiased=False), torch.var(y, unbiased=False).numpy(), rtol=1e-15)

"""nn.RNN: torch's parameter names, layout and init; forward and every gradient against
torch.nn.RNN from the same weights (tier 3), finite differences in float64 (tier 1), float32 on
every backend against float64 (tier 2), dropout between layers, and the errors. One layer's op,
F.rnn, goes through the three tiers as an OpCase (tests/op_cases.py)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minivlm as mv
from minivlm import nn
from minivlm.testing import assert_close, gradcheck

torch = pytest.importorskip("torch")
FEW = settings(max_examples=min(20, settings.default.max_examples), deadline=None)


@st.composite
def rnn_cases(draw):
    """Constructor arguments, and the input and hx shapes: batched (time or batch first) or
    unbatched, hx given or left to default to zeros."""
    kwargs = dict(num_layers=draw(st.integers(1, 3)),
                  nonlinearity=draw(st.sampled_from(["tanh", "relu"])), bias=draw(st.booleans()),
                  batch_first=draw(st.booleans()), bidirectional=draw(st.booleans()))
    input_size, hidden_size = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    L, N, unbatched = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.booleans())
    shape = (L, input_size) if unbatched else \
        (N, L, input_size) if kwargs["batch_first"] else (L, N, input_size)
    states = kwargs["num_layers"] * (2 if kwargs["bidirectional"] else 1)
    hx_shape = None if draw(st.booleans()) else \
        (states, hidden_size) if unbatched else (states, N, hidden_size)
    return input_size, hidden_size, kwargs, shape, hx_shape


def twins(input_size, hidden_size, **kwargs):
    """A float64 torch.nn.RNN and an nn.RNN holding the same weights."""
    theirs = torch.nn.RNN(input_size, hidden_size, **kwargs).double()
    ours = nn.RNN(input_size, hidden_size, **kwargs).double()
    ours.load_state_dict({name: t.detach().numpy() for name, t in theirs.state_dict().items()})
    return ours, theirs


@FEW
@given(case=rnn_cases(), seed=st.integers(0, 2**16))
def test_forward_and_every_gradient_match_torch(case, seed):
    input_size, hidden_size, kwargs, shape, hx_shape = case
    torch.manual_seed(seed)
    ours, theirs = twins(input_size, hidden_size, **kwargs)
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape)] + ([] if hx_shape is None
                                             else [rng.standard_normal(hx_shape)])
    our_inputs = [mv.tensor(a, requires_grad=True) for a in arrays]
    their_inputs = [torch.tensor(a, requires_grad=True) for a in arrays]
    (output, h_n), (their_output, their_h_n) = ours(*our_inputs), theirs(*their_inputs)
    assert_close(output, their_output.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert_close(h_n, their_h_n.detach().numpy(), rtol=1e-10, atol=1e-12)
    g, g_h = rng.standard_normal(output.shape), rng.standard_normal(h_n.shape)
    ((output * mv.tensor(g)).sum() + (h_n * mv.tensor(g_h)).sum()).backward()
    ((their_output * torch.tensor(g)).sum() + (their_h_n * torch.tensor(g_h)).sum()).backward()
    for ours_input, their_input in zip(our_inputs, their_inputs):
        assert_close(ours_input.grad, their_input.grad.numpy(), rtol=1e-10, atol=1e-12)
    their_parameters = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, their_parameters[name].grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs", [{}, dict(num_layers=2, bidirectional=True, bias=False)])
def test_parameter_names_shapes_order_and_init_are_torchs(kwargs):
    theirs = torch.nn.RNN(3, 5, **kwargs)
    ours = nn.RNN(3, 5, **kwargs)
    assert [(name, tuple(t.shape)) for name, t in ours.state_dict().items()] == \
        [(name, tuple(t.shape)) for name, t in theirs.state_dict().items()]
    assert repr(ours) == repr(theirs)


def test_init_is_uniform_within_one_over_sqrt_hidden_size():
    mv.manual_seed(0)
    ours = nn.RNN(200, 100, num_layers=2)
    bound = 1 / math.sqrt(100)
    for name, p in ours.named_parameters():
        values = p.numpy()
        assert np.abs(values).max() <= bound, name
        assert abs(values.std() - bound / math.sqrt(3)) < 0.15 * bound / math.sqrt(3), name


def test_gradients_match_finite_differences():
    """Two bidirectional layers with biases, every parameter, the input and hx, in float64."""
    mv.manual_seed(1)
    ours = nn.RNN(2, 3, num_layers=2, bidirectional=True).double()
    rng = np.random.default_rng(1)
    x = mv.tensor(rng.standard_normal((4, 2, 2)), requires_grad=True)
    hx = mv.tensor(rng.standard_normal((4, 2, 3)), requires_grad=True)
    parameters = dict(ours.named_parameters())

    def outputs(x, hx, **_):
        output, h_n = ours(x, hx)
        return output.sum(dim=-1) + h_n.sum(dim=(0, 2))[None]

    gradcheck(outputs, {"x": x, "hx": hx, **parameters})


@FEW
@given(case=rnn_cases(), seed=st.integers(0, 2**16))
def test_float32_on_each_backend_matches_float64(backend, case, seed):
    input_size, hidden_size, kwargs, shape, hx_shape = case
    mv.manual_seed(seed)
    reference = nn.RNN(input_size, hidden_size, **kwargs).double()
    model = nn.RNN(input_size, hidden_size, **kwargs).to(backend)
    model.load_state_dict({k: v.numpy().astype(np.float32) for k, v in
                           reference.state_dict().items()})
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape)] + ([] if hx_shape is None
                                             else [rng.standard_normal(hx_shape)])
    arrays = [a.astype(np.float32) for a in arrays]
    expected = sum(t.sum() for t in reference(*(mv.tensor(a.astype(np.float64))
                                                 for a in arrays)))
    actual = sum(t.sum() for t in model(*(mv.tensor(a, device=backend) for a in arrays)))
    assert (actual.dtype, actual.device) == (np.float32, backend)
    assert_close(actual, expected, rtol=1e-4, atol=1e-5)
    expected.backward()
    actual.backward()
    for p32, p64 in zip(model.parameters(), reference.parameters()):
        assert p32.grad.dtype == np.float32
        assert_close(p32.grad, p64.grad, rtol=1e-4, atol=1e-5)


def test_dropout_acts_between_layers_in_training_only():
    torch.manual_seed(0)
    ours, theirs = twins(3, 4, num_layers=2, dropout=0.5)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    ours.eval()
    theirs.eval()
    assert_close(ours(mv.tensor(x))[0], theirs(torch.tensor(x))[0].detach().numpy(), rtol=1e-12)
    ours.train()
    mv.manual_seed(0)
    trained = ours(mv.tensor(x))[0].numpy()
    assert not np.allclose(trained, ours.eval()(mv.tensor(x))[0].numpy())
    with pytest.warns(UserWarning, match="num_layers=1"):
        nn.RNN(3, 4, dropout=0.5)


@pytest.mark.parametrize("call, message", [
    (lambda: nn.RNN(3, 4, nonlinearity="sigmoid"), r"unknown nonlinearity 'sigmoid'"),
    (lambda: nn.RNN(3, 4, dropout=1.5), r"dropout must be a probability in \[0, 1\], got 1.5"),
    (lambda: nn.RNN(3, 0), r"hidden_size must be a positive int, got 0"),
    (lambda: nn.RNN(3, 4)(mv.zeros(5, 2, 2)), r"expected an input \(L, N, 3\).*got shape "
                                               r"\(5, 2, 2\)"),
    (lambda: nn.RNN(3, 4, num_layers=2)(mv.zeros(5, 2, 3), mv.zeros(1, 2, 4)),
     r"input of shape \(5, 2, 3\) hx must have shape \(2, 2, 4\), got \(1, 2, 4\)"),
    (lambda: nn.RNN(3, 4)(mv.zeros(5, 3), mv.zeros(1, 2, 4)),
     r"input of shape \(5, 3\) hx must have shape \(1, 4\), got \(1, 2, 4\)"),
])
def test_bad_arguments_are_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()

"""Module machinery, the basic layers against torch.nn (tier 3), and initialisation statistics."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minivlm as mv
from minivlm import nn
from minivlm.testing import assert_close

torch = pytest.importorskip("torch")

batch_shapes = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)


def _copy_into_torch(ours, theirs):
    """Give a torch module the weights of ours (same parameter names)."""
    state = {name: torch.tensor(t.numpy()) for name, t in ours.state_dict().items()}
    theirs.load_state_dict(state)
    return theirs


def _compare_forward_backward(ours, theirs, x, rtol=1e-10):
    """Run both modules on x, backpropagate the same random output gradient, compare the
    output, the input gradient and every parameter gradient."""
    our_x = mv.tensor(x, requires_grad=x.dtype.kind == "f")
    their_x = torch.tensor(x, requires_grad=x.dtype.kind == "f")
    our_y, their_y = ours(our_x), theirs(their_x)
    np.testing.assert_allclose(our_y.numpy(), their_y.detach().numpy(), rtol=rtol, atol=rtol)
    g = np.random.default_rng(0).standard_normal(our_y.shape)
    our_y.backward(mv.tensor(g))
    their_y.backward(torch.tensor(g))
    if x.dtype.kind == "f":
        np.testing.assert_allclose(our_x.grad.numpy(), their_x.grad.numpy(), rtol=rtol, atol=rtol)
    their_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), their_params[name].grad.numpy(), rtol=rtol,
                                   atol=rtol, err_msg=name)


# --- layers against torch.nn ---------------------------------------------------------------------

@settings(max_examples=20, deadline=None)
@given(batch=batch_shapes, n_in=st.integers(1, 5), n_out=st.integers(1, 5), bias=st.booleans())
def test_linear_matches_torch(batch, n_in, n_out, bias):
    ours = nn.Linear(n_in, n_out, bias=bias).double()
    theirs = _copy_into_torch(ours, torch.nn.Linear(n_in, n_out, bias=bias).double())
    x = np.random.default_rng(1).standard_normal(batch + (n_in,))
    _compare_forward_backward(ours, theirs, x)


@settings(max_examples=20, deadline=None)
@given(batch=batch_shapes, shape=st.lists(st.integers(1, 4), min_size=1, max_size=2).map(tuple),
       affine=st.booleans(), bias=st.booleans(), eps=st.sampled_from([1e-5, 1e-6, 0.1]))
def test_layer_norm_matches_torch(batch, shape, affine, bias, eps):
    ours = nn.LayerNorm(shape, eps=eps, elementwise_affine=affine, bias=bias).double()
    theirs = torch.nn.LayerNorm(shape, eps=eps, elementwise_affine=affine, bias=bias).double()
    for p in ours.parameters():  # move away from the ones/zeros init so the test can fail
        nn.init.normal_(p)
    _copy_into_torch(ours, theirs)
    x = np.random.default_rng(2).standard_normal(batch + shape)
    _compare_forward_backward(ours, theirs, x)


def test_layer_norm_defaults_are_torchs():
    """Built with defaults only (eps 1e-5, gain 1, bias 0), on rows whose variance (1e-6) is
    below eps, where a wrong eps changes every output."""
    x = 1 + 1e-3 * np.random.default_rng(3).standard_normal((4, 6))
    _compare_forward_backward(nn.LayerNorm(6).double(), torch.nn.LayerNorm(6).double(), x)


@settings(max_examples=20, deadline=None)
@given(batch=batch_shapes, shape=st.lists(st.integers(2, 4), min_size=1, max_size=2).map(tuple),
       affine=st.booleans(), eps=st.sampled_from([None, 1e-6, 0.1]))
def test_rms_norm_matches_torch(batch, shape, affine, eps):
    ours = nn.RMSNorm(shape, eps=eps, elementwise_affine=affine).double()
    theirs = torch.nn.RMSNorm(shape, eps=eps, elementwise_affine=affine).double()
    for p in ours.parameters():  # move away from the ones init so the test can fail
        nn.init.normal_(p)
    _copy_into_torch(ours, theirs)
    x = np.random.default_rng(2).standard_normal(batch + shape)
    _compare_forward_backward(ours, theirs, x)


@settings(max_examples=20, deadline=None)
@given(batch=batch_shapes, vocab=st.integers(1, 6), dim=st.integers(1, 4), seed=st.integers(0, 99),
       padding=st.booleans())
def test_embedding_matches_torch(batch, vocab, dim, seed, padding):
    padding_idx = vocab - 1 if padding else None
    ours = nn.Embedding(vocab, dim, padding_idx=padding_idx).double()
    theirs = _copy_into_torch(ours, torch.nn.Embedding(vocab, dim, padding_idx).double())
    ids = np.random.default_rng(seed).integers(0, vocab, size=batch + (3,))
    _compare_forward_backward(ours, theirs, ids)
    if padding:
        np.testing.assert_array_equal(ours.weight.numpy()[padding_idx], 0)


@pytest.mark.parametrize("activation, torch_activation", [
    (nn.GELU, torch.nn.GELU), (lambda: nn.GELU("tanh"), lambda: torch.nn.GELU("tanh")),
    (nn.ReLU, torch.nn.ReLU), (nn.SiLU, torch.nn.SiLU), (nn.QuickGELU, None)])
def test_mlp_matches_torch(activation, torch_activation):
    class QuickGELU(torch.nn.Module):  # as in OpenAI's CLIP model.py
        def forward(self, x):
            return x * torch.sigmoid(1.702 * x)

    class TorchMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(4, 7), torch.nn.Linear(7, 3)
            self.act = (torch_activation or QuickGELU)()

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    ours = nn.MLP(4, 7, 3, activation=activation).double()
    theirs = _copy_into_torch(ours, TorchMLP().double())
    _compare_forward_backward(ours, theirs, np.random.default_rng(3).standard_normal((2, 5, 4)))


def test_repr_matches_torch():
    def build(nn_):
        return nn_.Sequential(nn_.Embedding(10, 4, padding_idx=0), nn_.LayerNorm(4, eps=1e-6),
                              nn_.LayerNorm((2, 3), elementwise_affine=False),
                              nn_.ModuleList([nn_.Linear(4, 8), nn_.GELU(approximate="tanh")]),
                              nn_.Linear(8, 2, bias=False), nn_.Identity())
    assert repr(build(nn)) == repr(build(torch.nn))


def test_model_runs_on_every_backend(backend):
    """A float32 model moved to the backend agrees with its float64 NumPy twin, forward and
    backward; its state_dict loads back into a NumPy model."""
    def build():
        return nn.Sequential(nn.Embedding(7, 4), nn.LayerNorm(4), nn.MLP(4, 8, 3))
    model, twin = build().to(backend), build().double()
    twin.load_state_dict(model.state_dict())
    ids = np.array([[1, 2, 6], [0, 0, 3]])
    y, y64 = model(mv.tensor(ids, device=backend)), twin(mv.tensor(ids))
    y.sum().backward()
    y64.sum().backward()
    assert y.device == backend and y.dtype == np.float32
    assert_close(y, y64, rtol=1e-5)
    for (name, p), p64 in zip(model.named_parameters(), twin.parameters()):
        assert p.device == backend and p.grad.device == backend, name
        assert_close(p.grad, p64.grad, rtol=1e-4)


# --- module machinery ------------------------------------------------------------------------------

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(3)
        self.layers = nn.ModuleList([nn.Linear(3, 3), nn.Linear(3, 2, bias=False)])
        self.scale = nn.Parameter(mv.ones(()))
        self.register_buffer("position_ids", mv.arange(3))
        self.register_buffer("cache", mv.zeros(2), persistent=False)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        for layer in self.layers:
            x = layer(self.drop(self.norm(x) if x.shape[-1] == 3 else x))
        return x * self.scale


def test_registration_order_and_names():
    block = Block()
    assert [name for name, _ in block.named_parameters()] == [
        "scale", "norm.weight", "norm.bias", "layers.0.weight", "layers.0.bias", "layers.1.weight"]
    assert [name for name, _ in block.named_buffers()] == ["position_ids", "cache"]
    assert list(block.state_dict()) == [
        "scale", "position_ids", "norm.weight", "norm.bias", "layers.0.weight", "layers.0.bias",
        "layers.1.weight"]  # non-persistent buffers are not saved
    assert [name for name, _ in block.named_children()] == ["norm", "layers", "drop"]
    assert [name for name, _ in block.named_modules()] == [
        "", "norm", "layers", "layers.0", "layers.1", "drop"]
    assert block.num_parameters() == 1 + 3 + 3 + 9 + 3 + 6
    assert len(block.layers) == 2 and block.layers[-1] is list(block.layers)[1]
    assert isinstance(block.layers[:1], nn.ModuleList) and len(block.layers[:1]) == 1


def test_reassignment_and_shared_parameters():
    block = Block()
    block.norm = nn.Identity()  # a module replaced keeps its place; its parameters are gone
    assert "norm.weight" not in dict(block.named_parameters())
    assert [name for name, _ in block.named_children()] == ["norm", "layers", "drop"]
    with pytest.raises(TypeError, match="'scale'"):
        block.scale = mv.ones(())  # a parameter must stay a Parameter (or None)
    outer = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    outer[1].weight = outer[0].weight
    assert len(list(outer.parameters())) == 3  # counted once
    assert "1.weight" in outer.state_dict()  # but saved under both names, as torch


def test_forgetting_super_init_is_explained():
    class Broken(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)
    with pytest.raises(AttributeError, match="super\\(\\).__init__\\(\\)"):
        Broken()


def test_train_eval_reaches_dropout():
    model = nn.Sequential(nn.Linear(50, 50), nn.MLP(50, 80, dropout=0.5))
    x = mv.randn(4, 50)
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())
    model.train()
    assert all(m.training for m in model.modules())
    assert (model[1].drop(mv.ones(1000)).numpy() == 0).mean() == pytest.approx(0.5, abs=0.1)


def test_to_dtype_casts_floats_and_keeps_integer_buffers():
    block = Block()
    block.scale.grad = mv.ones(())
    block.to("float64")
    assert all(p.dtype == np.float64 for p in block.parameters())
    assert block.scale.grad.dtype == np.float64
    assert block.position_ids.dtype == np.int64
    assert block(mv.randn(2, 3, dtype="float64")).dtype == np.float64


def test_zero_grad_and_apply():
    block = Block()
    block(mv.randn(2, 3)).sum().backward()
    assert all(p.grad is not None for p in block.parameters())
    block.zero_grad(set_to_none=False)
    assert all(not p.grad.numpy().any() for p in block.parameters())
    block.zero_grad()
    assert all(p.grad is None for p in block.parameters())
    visited = []
    block.apply(lambda m: visited.append(type(m).__name__))
    assert visited == ["LayerNorm", "Linear", "Linear", "ModuleList", "Dropout", "Block"]


# --- state_dict / load_state_dict ----------------------------------------------------------------

def test_state_dict_round_trip():
    source, target = Block().eval(), Block().eval()
    x = mv.randn(2, 3)
    assert not np.allclose(source(x).numpy(), target(x).numpy())
    result = target.load_state_dict(source.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    np.testing.assert_array_equal(source(x).numpy(), target(x).numpy())
    assert target.layers[0].weight is not source.layers[0].weight  # values copied, not shared


def test_load_numpy_float64_keeps_float32():
    block = Block()
    weight_before = block.layers[0].weight
    state = {name: t.numpy().astype("float64") for name, t in Block().state_dict().items()}
    state["layers.0.weight"] = np.arange(9.0).reshape(3, 3)
    block.load_state_dict(state)
    assert block.layers[0].weight is weight_before and block.layers[0].weight.dtype == np.float32
    np.testing.assert_array_equal(block.layers[0].weight.numpy(), np.arange(9).reshape(3, 3))


def test_load_state_dict_error_lists_every_problem_and_changes_nothing():
    block = Block()
    before = {name: t.numpy().copy() for name, t in block.state_dict().items()}
    state = {name: t.numpy() + 1 for name, t in Block().state_dict().items()}
    del state["norm.bias"], state["layers.1.weight"]
    state["layers.0.weight"] = np.zeros((3, 5))
    state["scale"] = np.zeros((1,))
    state["head.weight"] = np.zeros(2)
    state["norm.gamma"] = np.zeros(3)
    with pytest.raises(RuntimeError) as error:
        block.load_state_dict(state)
    message = str(error.value)
    for expected in ("norm.bias", "layers.1.weight", "head.weight", "norm.gamma", "Block",
                     "'layers.0.weight'", "(3, 5)", "(3, 3)", "'scale'", "(1,)", "()"):
        assert expected in message, f"{expected!r} missing from:\n{message}"
    for name, value in block.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), before[name], err_msg=name)


def test_load_state_dict_non_strict_reports_keys():
    block = Block()
    state = block.state_dict()
    del state["norm.bias"]
    state["extra"] = mv.zeros(1)
    missing, unexpected = block.load_state_dict(state, strict=False)
    assert (missing, unexpected) == (["norm.bias"], ["extra"])
    state["scale"] = mv.zeros(2)
    with pytest.raises(RuntimeError, match="'scale'"):  # a shape mismatch is never ignored
        block.load_state_dict(state, strict=False)


def test_linear_error_names_layer_and_both_shapes():
    with pytest.raises(ValueError) as error:
        nn.Linear(3, 4)(mv.randn(2, 5))
    assert all(s in str(error.value) for s in ("Linear", "in_features=3", "(2, 5)"))


# --- initialisation --------------------------------------------------------------------------------

def test_linear_and_embedding_init_distributions():
    mv.manual_seed(0)
    fc = nn.Linear(400, 500)
    bound = 1 / math.sqrt(400)
    weight = fc.weight.numpy()
    assert weight.min() >= -bound and weight.max() <= bound
    assert weight.min() < -0.99 * bound and weight.max() > 0.99 * bound
    assert weight.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    bias = np.abs(fc.bias.numpy())                  # U(±1/√in) too, as torch's
    assert bias.max() <= bound and bias.max() > 0.9 * bound
    table = nn.Embedding(300, 300).weight.numpy()
    assert table.mean() == pytest.approx(0, abs=0.02) and table.std() == pytest.approx(1, rel=0.02)


def test_manual_seed_makes_init_reproducible():
    mv.manual_seed(7)
    a = nn.Linear(3, 3).weight.numpy()
    mv.manual_seed(7)
    np.testing.assert_array_equal(a, nn.Linear(3, 3).weight.numpy())
    assert not np.array_equal(a, nn.Linear(3, 3).weight.numpy())


@pytest.mark.parametrize("mean, std, a, b", [(0, 1, -2, 2), (0, 0.02, -0.04, 0.04),
                                             (1.0, 0.5, 0.0, 3.0), (0, 0.02, -2, 2),
                                             (0, 1, -10, 0.5)])   # no first draw falls below a
def test_trunc_normal_matches_scipy(mean, std, a, b):
    truncnorm = pytest.importorskip("scipy.stats").truncnorm
    mv.manual_seed(1)
    values = nn.init.trunc_normal_(mv.empty(200, 200), mean, std, a, b).numpy()
    reference = truncnorm((a - mean) / std, (b - mean) / std, loc=mean, scale=std)
    assert values.min() >= a and values.max() <= b
    assert values.mean() == pytest.approx(reference.mean(), abs=0.02 * std)
    assert values.std() == pytest.approx(reference.std(), rel=0.02)


def test_trunc_normal_rejects_an_empty_interval():
    with pytest.raises(ValueError, match="mass"):
        nn.init.trunc_normal_(mv.empty(3), mean=0, std=1, a=10, b=11)


@pytest.mark.parametrize("shape", [(300, 200), (64, 16, 3, 3), (40, 30, 5)])
def test_variance_scaling_inits(shape):
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(mv.empty(*shape))
    assert (fan_in, fan_out) == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    mv.manual_seed(2)
    cases = [
        (nn.init.xavier_uniform_, {"gain": 2.0}, 2.0 * math.sqrt(2 / (fan_in + fan_out))),
        (nn.init.xavier_normal_, {}, math.sqrt(2 / (fan_in + fan_out))),
        (nn.init.kaiming_uniform_, {"a": math.sqrt(5)}, 1 / math.sqrt(3 * fan_in)),
        (nn.init.kaiming_normal_, {"mode": "fan_out", "nonlinearity": "relu"},
         math.sqrt(2 / fan_out)),
    ]
    for init_fn, kwargs, std in cases:
        values = init_fn(mv.empty(*shape), **kwargs).numpy()
        assert values.std() == pytest.approx(std, rel=0.03), init_fn.__name__
        assert values.mean() == pytest.approx(0, abs=0.03 * std), init_fn.__name__


def test_constant_inits_and_gain():
    assert (nn.init.constant_(mv.empty(2, 2), 0.5).numpy() == 0.5).all()
    assert (nn.init.ones_(mv.empty(3)).numpy() == 1).all()
    assert (nn.init.zeros_(mv.ones(3)).numpy() == 0).all()
    for nonlinearity, param in [("relu", None), ("tanh", None), ("leaky_relu", 0.2),
                                ("linear", None), ("selu", None)]:
        assert nn.init.calculate_gain(nonlinearity, param) == pytest.approx(
            torch.nn.init.calculate_gain(nonlinearity, param))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nn.init.xavier_uniform_(mv.empty(5))


@pytest.mark.parametrize("init_name", ["kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
                                       "xavier_normal_"])
def test_fan_scaled_inits_leave_a_tensor_of_no_elements_as_torch(init_name):
    """Their fan is 0: torch returns the tensor untouched (a no-op) instead of dividing by 0."""
    ours = getattr(nn.init, init_name)(mv.zeros(3, 0))
    assert ours.shape == (3, 0)
    assert tuple(getattr(torch.nn.init, init_name)(torch.zeros(3, 0)).shape) == (3, 0)
    layer = nn.Linear(0, 3)
    assert layer.weight.shape == (3, 0)
    np.testing.assert_array_equal(layer.bias.numpy(), torch.nn.Linear(0, 3).bias.detach())

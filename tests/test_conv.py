"""Convolution, pooling and batch norm: minivlm.functional's ops and the layers of minivlm.nn.conv.

Each op is an OpCase (tests/op_cases.py) checked in the three tiers: finite differences in float64,
float32 on every backend against NumPy float64, and float64 forward and backward against
torch.nn.functional. Then the running statistics, the layers (names, initialisation, train/eval)
and the error messages.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minivlm as mv
import minivlm.functional as F
from minivlm import nn
from minivlm.nn.conv import AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv2d, MaxPool2d
from minivlm.testing import assert_close, gradcheck
from strategies import arrays, distinct_arrays, finite_floats
from op_cases import OpCase, ours_params, torch_params


def _pair(value):
    return (value, value) if isinstance(value, int) else value


def _int_or_pair(low, high):
    """An int, or an (h, w) pair that may be non-square."""
    side = st.integers(low, high)
    return side | st.tuples(side, side)


@st.composite
def _image(draw, kernel, padding, channels, values=arrays):
    """A batch (N, channels, H, W) large enough for one window of `kernel` after `padding`."""
    n = draw(st.integers(1, 2))
    h, w = (max(1, k - 2 * p) + draw(st.integers(0, 3)) for k, p in zip(kernel, padding))
    return draw(values((n, channels, h, w)))


@st.composite
def _conv_inputs(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    c_in, c_out = (groups * draw(st.integers(1, 2)) for _ in range(2))
    kernel, stride = draw(_int_or_pair(1, 3)), draw(_int_or_pair(1, 2))
    padding = draw(_int_or_pair(0, 2))
    inputs = {"x": draw(_image(_pair(kernel), _pair(padding), c_in)),
              "weight": draw(arrays((c_out, c_in // groups, *_pair(kernel))))}
    if draw(st.booleans()):
        inputs["bias"] = draw(arrays((c_out,)))
    return inputs, {"stride": stride, "padding": padding, "groups": groups}


def _pool_inputs(values):
    @st.composite
    def inputs(draw):
        kernel = draw(_int_or_pair(1, 3))
        padding = tuple(draw(st.integers(0, k // 2)) for k in _pair(kernel))  # torch's limit
        stride = draw(st.none() | _int_or_pair(1, 3))
        x = draw(_image(_pair(kernel), padding, draw(st.integers(1, 2)), values))
        return {"x": x}, {"kernel_size": kernel, "stride": stride, "padding": padding}
    return inputs()


@st.composite
def _adaptive_inputs(draw):
    x = draw(arrays((draw(st.integers(1, 2)), 2, draw(st.integers(1, 5)), draw(st.integers(1, 5)))))
    size = st.integers(1, 6)  # larger than the input too: bins then overlap
    output_size = draw(size | st.tuples(size | st.none(), size | st.none()))
    return {"x": x}, {"output_size": output_size}


@st.composite
def _batch_norm_inputs(draw):
    """x with well-spread values per channel (so float32 and finite differences behave), optional
    affine parameters, and running statistics used in eval and updated in training."""
    spatial = draw(st.sampled_from([(), (2,), (2, 3), (1, 3)]))
    n, c = draw(st.integers(1 if spatial else 2, 3)), draw(st.integers(1, 3))  # 2+ values each
    inputs = {"x": draw(distinct_arrays((n, c, *spatial)))}
    for name in ("weight", "bias"):
        if draw(st.booleans()):
            inputs[name] = draw(arrays((c,)))
    params = {"running_mean": draw(arrays((c,))),
              "running_var": draw(arrays((c,), elements=finite_floats(0.5, 2.0))),
              "training": draw(st.booleans()), "momentum": draw(st.sampled_from([0.1, 0.5])),
              "eps": draw(st.sampled_from([1e-5, 1e-3]))}
    return inputs, params


def _torch_batch_norm(torch, x, running_mean, running_var, weight=None, bias=None, **kw):
    """torch's batch norm on copies of the running statistics (torch updates them in place)."""
    return torch.nn.functional.batch_norm(x, running_mean.clone(), running_var.clone(), weight,
                                          bias, **kw)


CASES = [
    OpCase("conv2d", _conv_inputs(), F.conv2d,
           lambda torch, x, weight, bias=None, **kw:
           torch.nn.functional.conv2d(x, weight, bias, **kw)),
    OpCase("avg_pool2d", _pool_inputs(arrays), F.avg_pool2d,
           lambda torch, x, **kw: torch.nn.functional.avg_pool2d(x, **kw)),
    OpCase("max_pool2d", _pool_inputs(distinct_arrays), F.max_pool2d,  # no ties
           lambda torch, x, **kw: torch.nn.functional.max_pool2d(x, **kw)),
    OpCase("adaptive_avg_pool2d", _adaptive_inputs(), F.adaptive_avg_pool2d,
           lambda torch, x, **kw: torch.nn.functional.adaptive_avg_pool2d(x, **kw)),
    OpCase("batch_norm", _batch_norm_inputs(), F.batch_norm, _torch_batch_norm),
]


def _run(case, inputs, params, dtype="float64", device="numpy", seed=0):
    """Forward and backward with minivlm: the output and each input's gradient, on the host, for a
    fixed random output gradient."""
    tensors = {name: mv.tensor(a.astype(dtype), device=device, requires_grad=True)
               for name, a in inputs.items()}
    params = {name: a.astype(dtype) if getattr(a, "dtype", None) == np.float64 else a
              for name, a in params.items()}   # batch norm's running statistics
    y = case.ours(**tensors, **ours_params(params, device))
    y.backward(np.random.default_rng(seed).standard_normal(y.shape).astype(dtype))
    return y.numpy(), {name: t.grad.numpy() for name, t in tensors.items()}


# --- tier 1: finite differences ------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=str)
@given(data=st.data())
def test_gradients_match_finite_differences(case, data):
    inputs, params = data.draw(case.inputs)
    tensors = {name: mv.tensor(a, requires_grad=True) for name, a in inputs.items()}
    gradcheck(lambda **ts: case.ours(**ts, **ours_params(params, "numpy")), tensors)


def test_gradient_of_a_residual_block_that_reuses_its_input():
    """A diamond: x feeds the convolution and the shortcut; batch statistics couple the batch."""
    rng = np.random.default_rng(0)
    inputs = {"x": mv.tensor(rng.standard_normal((2, 3, 5, 4)), requires_grad=True),
              "weight": mv.tensor(rng.standard_normal((3, 3, 3, 3)), requires_grad=True),
              "gamma": mv.tensor(rng.standard_normal(3), requires_grad=True)}

    def block(x, weight, gamma):
        out = F.batch_norm(F.conv2d(x, weight, padding=1), None, None, gamma, training=True)
        return F.avg_pool2d(F.tanh(out + x), 2)
    gradcheck(block, inputs)


# --- tier 2: float32 on each backend against NumPy float64 ----------------------------------------

@pytest.mark.parametrize("case", CASES, ids=str)
@given(data=st.data())
def test_float32_on_each_backend_matches_float64(case, data, backend):
    inputs, params = data.draw(case.inputs)
    y64, grads64 = _run(case, inputs, params)
    y32, grads32 = _run(case, inputs, params, dtype="float32", device=backend)
    pairs = {"output": (y32, y64), **{name: (grads32[name], grads64[name]) for name in grads64}}
    for name, (ours, expected) in pairs.items():
        assert ours.dtype == np.float32, name
        assert_close(ours, expected, rtol=1e-4, atol=1e-6)
        # each element too: over 300 examples of each op, at most 5.5e-8 beyond rtol·|expected|
        assert_close(ours, expected, rtol=1e-4, atol=1e-6, elementwise=True)


# --- tier 3: torch.nn.functional ----------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=str)
@given(data=st.data())
def test_forward_and_backward_match_torch(case, data):
    torch = pytest.importorskip("torch")
    inputs, params = data.draw(case.inputs)
    y, grads = _run(case, inputs, params)
    their_inputs = {name: torch.tensor(a, requires_grad=True) for name, a in inputs.items()}
    their_y = case.theirs(torch, **their_inputs, **torch_params(params, torch))
    their_y.backward(torch.from_numpy(np.random.default_rng(0).standard_normal(y.shape)))
    assert_close(y, their_y.detach().numpy(), rtol=1e-10, atol=1e-12)
    for name, t in their_inputs.items():
        assert_close(grads[name], t.grad.numpy(), rtol=1e-10, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(inputs=_batch_norm_inputs())
def test_batch_norm_updates_running_statistics_as_torch(inputs):
    """Training moves the running mean towards the batch mean and the running variance towards
    the unbiased batch variance; eval leaves them alone."""
    torch = pytest.importorskip("torch")
    (inputs, params), x = inputs, inputs[0]["x"]
    ours = {name: mv.tensor(params[name]) for name in ("running_mean", "running_var")}
    theirs = {name: torch.tensor(params[name]) for name in ("running_mean", "running_var")}
    kwargs = {k: params[k] for k in ("training", "momentum", "eps")}
    F.batch_norm(mv.tensor(x), ours["running_mean"], ours["running_var"], **kwargs)
    torch.nn.functional.batch_norm(torch.tensor(x), theirs["running_mean"], theirs["running_var"],
                                   **kwargs)
    for name in ours:
        assert_close(ours[name], theirs[name].numpy(), rtol=1e-12)
    if not params["training"]:
        np.testing.assert_array_equal(ours["running_mean"].numpy(), params["running_mean"])


def test_max_pool_sends_the_gradient_to_the_first_of_tied_maxima_as_torch():
    torch = pytest.importorskip("torch")
    x = np.maximum(np.random.default_rng(0).standard_normal((2, 3, 7, 6)), 0).round(1)  # many ties
    ours = mv.tensor(x, requires_grad=True)
    F.max_pool2d(ours, 3, stride=2, padding=1).sum().backward()
    theirs = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(theirs, 3, stride=2, padding=1).sum().backward()
    np.testing.assert_array_equal(ours.grad.numpy(), theirs.grad.numpy())


# --- layers --------------------------------------------------------------------------------------

def _torch_twin(torch, ours, theirs):
    """`theirs` with the parameters and buffers of `ours` (which must have the same names)."""
    theirs.load_state_dict({name: torch.tensor(t.numpy()) for name, t in ours.state_dict().items()})
    return theirs


@pytest.mark.parametrize("kwargs", [dict(kernel_size=3),
                                    dict(kernel_size=(1, 3), stride=2, padding=(0, 1)),
                                    dict(kernel_size=2, bias=False, groups=2)])
def test_conv2d_layer_has_torch_names_shapes_and_outputs(kwargs):
    torch = pytest.importorskip("torch")
    ours = Conv2d(4, 6, **kwargs).double()
    theirs = torch.nn.Conv2d(4, 6, **kwargs).double()
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    _torch_twin(torch, ours, theirs)
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 6))
    assert_close(ours(mv.tensor(x)), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-12)


def test_conv2d_layer_initialises_uniform_within_one_over_sqrt_fan_in():
    mv.manual_seed(0)
    layer = Conv2d(16, 64, 3)
    bound = 1 / math.sqrt(16 * 3 * 3)
    for p in (layer.weight, layer.bias):
        values = p.numpy()
        assert np.abs(values).max() <= bound
        std = bound / math.sqrt(3)  # of U(±bound)
        assert abs(values.std() - std) < 0.15 * std


@pytest.mark.parametrize("kwargs, shape", [
    (dict(kernel_size=3), (2, 4, 7)),
    (dict(kernel_size=(2,), stride=2, padding=1, bias=False, groups=2), (2, 4, 6)),
    (dict(kernel_size=3, padding=(1,)), (4, 5)),                          # unbatched (C, L)
])
def test_conv1d_layer_has_torch_names_shapes_outputs_and_gradients(kwargs, shape):
    torch = pytest.importorskip("torch")
    ours = nn.Conv1d(4, 6, **kwargs).double()
    theirs = torch.nn.Conv1d(4, 6, **kwargs).double()
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    _torch_twin(torch, ours, theirs)
    x = np.random.default_rng(0).standard_normal(shape)
    our_x, their_x = mv.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, their_y = ours(our_x), theirs(their_x)
    assert_close(y, their_y.detach().numpy(), rtol=1e-12)
    g = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(g)
    their_y.backward(torch.tensor(g))
    assert_close(our_x.grad, their_x.grad.numpy(), rtol=1e-12)
    for name, p in theirs.named_parameters():
        assert_close(getattr(ours, name).grad, p.grad.numpy(), rtol=1e-12)


def test_conv1d_layer_initialises_uniform_within_one_over_sqrt_fan_in():
    mv.manual_seed(0)
    layer = nn.Conv1d(16, 256, 5)
    bound = 1 / math.sqrt(16 * 5)
    for p in (layer.weight, layer.bias):
        values = p.numpy()
        assert np.abs(values).max() <= bound
        std = bound / math.sqrt(3)  # of U(±bound)
        assert abs(values.std() - std) < 0.15 * std


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_layer_trains_and_evaluates_as_torch(momentum):
    """Three training batches (running statistics, num_batches_tracked, cumulative average when
    momentum is None), then eval; outputs and gradients of the affine parameters."""
    torch = pytest.importorskip("torch")
    ours = BatchNorm2d(3, momentum=momentum).double()
    theirs = torch.nn.BatchNorm2d(3, momentum=momentum).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for p in ours.parameters():  # away from the ones/zeros init, so the test can fail
        nn.init.normal_(p)
    _torch_twin(torch, ours, theirs)
    rng = np.random.default_rng(0)
    for x in [rng.standard_normal((4, 3, 2, 3)) * 2 + 1 for _ in range(3)]:
        assert_close(ours(mv.tensor(x)), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-12)
    for name, theirs_value in theirs.state_dict().items():
        assert_close(ours.state_dict()[name], theirs_value.numpy(), rtol=1e-12)
    assert ours.num_batches_tracked.item() == 3
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((2, 3, 4, 4))
    y, their_y = ours(mv.tensor(x)), theirs(torch.tensor(x))
    assert_close(y, their_y.detach().numpy(), rtol=1e-12)
    (y * y).sum().backward()
    (their_y * their_y).sum().backward()
    assert_close(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-12)
    assert_close(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-12)
    assert ours.num_batches_tracked.item() == 3


def test_batch_norm_layer_without_running_statistics_always_uses_the_batch():
    torch = pytest.importorskip("torch")
    ours = BatchNorm2d(2, affine=False, track_running_stats=False).eval()
    assert list(ours.state_dict()) == []
    x = np.random.default_rng(0).standard_normal((3, 2, 2, 2))
    theirs = torch.nn.BatchNorm2d(2, affine=False, track_running_stats=False).eval()
    expected = theirs(torch.tensor(x))
    assert_close(ours(mv.tensor(x)), expected.numpy(), rtol=1e-12)


@pytest.mark.parametrize("layer, args", [
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("MaxPool2d", dict(kernel_size=2)),
    ("AdaptiveAvgPool2d", dict(output_size=(2, None))),
])
def test_pooling_layers_match_torch(layer, args):
    torch = pytest.importorskip("torch")
    ours = {"AvgPool2d": AvgPool2d, "MaxPool2d": MaxPool2d, "AdaptiveAvgPool2d": AdaptiveAvgPool2d}
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 5))
    expected = getattr(torch.nn, layer)(**args)(torch.tensor(x)).numpy()
    assert_close(ours[layer](**args)(mv.tensor(x)), expected, rtol=1e-12)


# --- errors --------------------------------------------------------------------------------------

def test_conv1d_channel_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"conv1d: input of shape \(1, 3, 5\) has 3 channels but "
                                         r"the weight of shape \(4, 2, 3\) .* expects 2"):
        nn.Conv1d(2, 4, 3)(mv.zeros(1, 3, 5))


def test_conv2d_channel_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"input of shape \(1, 3, 5, 5\) has 3 channels but the "
                                         r"weight of shape \(4, 2, 3, 3\) .* expects 2"):
        F.conv2d(mv.zeros(1, 3, 5, 5), mv.zeros(4, 2, 3, 3))


@pytest.mark.parametrize("call, message", [
    (lambda: F.conv2d(mv.zeros(1, 3, 2, 2), mv.zeros(4, 3, 3, 3)), r"kernel \(3, 3\) is larger"),
    (lambda: F.conv2d(mv.zeros(3, 5, 5), mv.zeros(4, 3, 3, 3)),
     r"\(N, C, H, W\), got shape \(3, 5, 5\)"),
    (lambda: F.conv2d(mv.zeros(1, 4, 5, 5), mv.zeros(3, 2, 3, 3), groups=2),
     r"divisible by groups=2"),
    (lambda: F.conv2d(mv.zeros(1, 3, 5, 5), mv.zeros(4, 3, 3, 3), mv.zeros(3)),
     r"bias of shape \(3,\)"),
    (lambda: F.max_pool2d(mv.zeros(1, 1, 4, 4), 2, padding=2), r"at most half the kernel"),
    (lambda: F.avg_pool2d(mv.zeros(1, 1, 2, 2), 3), r"kernel \(3, 3\) is larger"),
    (lambda: F.batch_norm(mv.zeros(2, 3, 4), mv.zeros(4), mv.ones(4)), r"\(2, 3, 4\).*\(4,\)"),
    (lambda: F.batch_norm(mv.zeros(1, 3), None, None, training=True), r"more than 1 value"),
    (lambda: BatchNorm2d(3)(mv.zeros(2, 3)), r"4-d input"),
])
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()

"""torch's public surface on minivlm, so that PyTorch code ports by changing its imports: the
top-level functions and dtypes, Tensor's methods (item assignment and in-place ops included), the
nn layers and containers torch code uses, forward hooks, minivlm.utils.data, einops, save/load
and the cuda namespace — each against torch where torch computes the same thing. (The
differentiable ops themselves go through the three tiers of tests/op_cases.py.)"""
import numpy as np
import pytest

import minivlm as mv
import minivlm.nn.functional as F
from minivlm import backend, io, nn
from minivlm.testing import assert_close
from minivlm.utils.data import DataLoader, RandomSampler, TensorDataset, default_collate

torch = pytest.importorskip("torch")
RNG = np.random.default_rng(0)


def pair(*shape, requires_grad=True):
    """The same float64 values as a minivlm and a torch tensor."""
    values = RNG.standard_normal(shape)
    return (mv.tensor(values, requires_grad=requires_grad),
            torch.tensor(values, requires_grad=requires_grad))


# --- top level -------------------------------------------------------------------------------

def test_top_level_ops_are_torch_s():
    (a, ta), (b, tb) = pair(3, 4), pair(3, 4)
    for ours, theirs in [
            (mv.cat([a, b], 1), torch.cat([ta, tb], 1)), (mv.stack([a, b]), torch.stack([ta, tb])),
            (mv.matmul(a, b.T), torch.matmul(ta, tb.T)), (mv.sigmoid(a), torch.sigmoid(ta)),
            (mv.tanh(a), torch.tanh(ta)), (mv.pow(a, 2), torch.pow(ta, 2)),
            (mv.exp(a), torch.exp(ta)), (mv.log(mv.exp(a)), torch.log(torch.exp(ta))),
            (mv.where(a > 0, a, b), torch.where(ta > 0, ta, tb)), (mv.tril(a, -1), ta.tril(-1)),
            (mv.triu(a, 1), torch.triu(ta, 1)), (mv.topk(a, 2).values, torch.topk(ta, 2).values),
            (mv.sort(a, 0).values, torch.sort(ta, 0).values),
            (mv.gather(a, 1, mv.tensor([[0, 0], [1, 3], [2, 1]])),
             torch.gather(ta, 1, torch.tensor([[0, 0], [1, 3], [2, 1]]))),
            (mv.einsum("ij,kj->ik", a, b), torch.einsum("ij,kj->ik", ta, tb))]:
        assert_close(ours, theirs.detach().numpy(), rtol=1e-12)
    np.testing.assert_array_equal(mv.argsort(a, 1).numpy(), torch.argsort(ta, 1).numpy())
    assert mv.topk(a, 2).indices.dtype == np.int64


def test_creation_follows_torch_s_dtypes_and_signatures():
    assert mv.arange(5).dtype == np.int64 and mv.arange(0.0, 1.0, 0.25).dtype == np.float32
    assert mv.arange(5, dtype=mv.float64, device="cpu").dtype == np.float64
    assert mv.full((2,), 1.5).dtype == np.float32 and mv.full((2,), 3).dtype == np.int64
    assert mv.full((2,), True).dtype == bool
    assert mv.Tensor([1, 2]).dtype == np.float32 and mv.Tensor(2, 3).shape == (2, 3)
    assert mv.Tensor().shape == (0,)
    x = mv.ones(2, 3)
    assert mv.zeros_like(x).shape == mv.ones_like(x).shape == mv.empty(2, 3).shape == (2, 3)
    assert mv.full_like(x, 7).numpy().tolist() == [[7.0] * 3] * 2
    mv.manual_seed(0)
    draws = mv.randint(3, 5, (1000,)).numpy()
    assert set(draws.tolist()) == {3, 4} and mv.randint(5, (2, 2)).shape == (2, 2)
    array = np.zeros(3, np.float32)
    mv.from_numpy(array).array[0] = 5
    assert array[0] == 5                                 # the memory is shared, as torch's
    assert mv.float32 == "float32" and mv.long == mv.int64 == "int64" and x.dtype == mv.float
    assert mv.finfo(x.dtype).max == torch.finfo(torch.float32).max
    with pytest.raises(TypeError, match="bfloat16 tensors are not supported"):
        x.to(mv.bfloat16)


def test_manual_seed_and_generators_reproduce_random_tensors():
    mv.manual_seed(3)
    first = mv.randn(4).numpy()
    mv.manual_seed(3)
    np.testing.assert_array_equal(mv.randn(4).numpy(), first)
    g1, g2 = mv.Generator().manual_seed(7), mv.Generator().manual_seed(7)
    np.testing.assert_array_equal(mv.rand(3, generator=g1).numpy(),
                                  mv.rand(3, generator=g2).numpy())


def test_multinomial_draws_by_weight_and_without_replacement_never_twice():
    mv.manual_seed(0)
    weights = mv.tensor([0.0, 1.0, 3.0])
    draws = mv.multinomial(weights, 4000, replacement=True).numpy()
    assert 0 not in draws and abs((draws == 2).mean() - 0.75) < 0.03
    rows = mv.multinomial(mv.tensor([[1.0, 1.0, 0.0, 1.0]] * 50), 3).numpy()
    assert all(sorted(r) == [0, 1, 3] for r in rows.tolist())
    with pytest.raises(ValueError, match="without replacement"):
        mv.multinomial(weights, 3)


def test_no_grad_and_inference_mode_decorate_and_enable_grad_restores():
    x = mv.ones(2, requires_grad=True)

    @mv.no_grad
    def bare(t):
        return (t * 2).requires_grad

    @mv.no_grad()
    @mv.enable_grad()
    def nested(t):
        return (t * 2).requires_grad

    @mv.inference_mode()
    def inferring(t):
        return (t * 2).requires_grad
    assert not bare(x) and nested(x) and not inferring(x) and (x * 2).requires_grad
    with mv.set_grad_enabled(False):
        assert not mv.is_grad_enabled()
    assert mv.is_grad_enabled()


def test_cuda_answers_honestly_and_devices_name_backends():
    assert mv.cuda.is_available() == backend.cupy_available()
    assert mv.cuda.device_count() == (backend.module("cupy").cuda.runtime.getDeviceCount()
                                      if backend.cupy_available() else 0)
    assert mv.device("cpu") == "numpy" and mv.device("cuda:0") == "cupy"


# --- Tensor ----------------------------------------------------------------------------------

def test_item_assignment_has_torch_s_gradients():
    """x[mask] = v and x[:, i] = t on a tensor in a graph: the gradient reaches both."""
    (x, tx), (t, tt), (v, tv) = pair(3, 4), pair(3), pair(1)
    mask = np.array([[True, False, True, False]] * 3)
    y, ty = x * 2, tx * 2
    y[:, 1] = t
    ty[:, 1] = tt
    y[mask] = v
    ty[torch.from_numpy(mask)] = tv
    weights = RNG.standard_normal((3, 4))
    (y * mv.tensor(weights)).sum().backward()
    (ty * torch.from_numpy(weights)).sum().backward()
    assert_close(y, ty.detach().numpy(), rtol=1e-12)
    for ours, theirs in ((x, tx), (t, tt), (v, tv)):
        assert_close(ours.grad, theirs.grad.numpy(), rtol=1e-12)


def test_item_assignment_that_would_corrupt_gradients_is_refused():
    x = mv.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        x[0] = 5.0
    y = x * 2
    z = y * 3                      # uses y: changing y now would make z's gradient wrong
    with pytest.raises(RuntimeError, match="recorded operations already used"):
        y[0] = 5.0
    with mv.no_grad():
        x[0] = 5.0                 # initialisation-style writes are fine
    assert x.numpy().tolist() == [5.0, 1.0, 1.0] and z.requires_grad


def test_in_place_methods_under_no_grad_are_torch_s():
    ours, theirs = mv.zeros(3, 4), torch.zeros(3, 4)
    with mv.no_grad(), torch.no_grad():
        for name, args in [("fill_", (2.0,)), ("add_", (1.5,)), ("mul_", (3.0,)),
                           ("triu_", (1,)), ("masked_fill_", (None, -1.0)), ("clamp_", (-0.5, 4.0)),
                           ("copy_", (np.arange(4.0),)), ("tril_", ()), ("zero_", ())]:
            if name == "masked_fill_":
                mask = RNG.random((3, 4)) > 0.5
                getattr(ours, name)(mv.tensor(mask), args[1])
                getattr(theirs, name)(torch.from_numpy(mask), args[1])
            elif name == "copy_":
                ours.copy_(mv.tensor(args[0]))
                theirs.copy_(torch.from_numpy(args[0]))
            else:
                assert getattr(ours, name)(*args) is ours
                getattr(theirs, name)(*args)
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), err_msg=name)
    mv.manual_seed(0)
    w = mv.empty(1000)
    assert abs(w.normal_(2.0, 0.5).numpy().std() - 0.5) < 0.05
    assert 1.0 <= w.uniform_(1.0, 2.0).numpy().min() and w.numpy().max() < 2.0


def test_tensor_methods_are_torch_s():
    (x, tx) = pair(2, 3)
    assert x.dim() == 2 and x.t().shape == (3, 2) and x.type() == "float64"
    assert x.half().dtype == np.float16 and x.int().dtype == np.int32
    assert x.long().dtype == np.int64 and x.bool().dtype == bool and not x.long().requires_grad
    assert x.type(mv.float32).dtype == np.float32
    assert x.to(dtype=mv.float32, device="cpu").dtype == np.float32 and x.to("cpu") is x
    assert x.to(mv.ones(1)).dtype == np.float32
    for ours, theirs in [(x.norm(), tx.norm()), (x.norm(dim=1), tx.norm(dim=1)),
                         (x.clone(), tx.clone()), (x.repeat(2, 1, 3), tx.repeat(2, 1, 3)),
                         (x.amax(1), tx.amax(1)), (x.sin(), tx.sin()),
                         (x.unbind(1)[2], tx.unbind(1)[2]), (abs(x), abs(tx))]:
        assert_close(ours, theirs.detach().numpy(), rtol=1e-12)
    assert (~(x > 0)).numpy().tolist() == (~(tx > 0)).numpy().tolist()
    assert ((x > 0) & (x < 1)).dtype == bool
    assert x.new_zeros(4).dtype == np.float64 and x.new_full((2,), 3.0).numpy().tolist() == [3, 3]


# --- nn --------------------------------------------------------------------------------------

def copied(theirs, ours):
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return ours


def test_layers_match_torch():
    torch.manual_seed(0)
    x = RNG.standard_normal((2, 3, 7))
    layers = [(nn.Conv1d(3, 4, 3, stride=2, padding=1), torch.nn.Conv1d(3, 4, 3, 2, 1)),
              (nn.Conv1d(4, 4, (2,), groups=2, bias=False),
               torch.nn.Conv1d(4, 4, (2,), groups=2, bias=False)),
              (nn.Softmax(dim=1), torch.nn.Softmax(dim=1)), (nn.SiLU(), torch.nn.SiLU()),
              (nn.Tanh(), torch.nn.Tanh()), (nn.Sigmoid(), torch.nn.Sigmoid()),
              (nn.LogSoftmax(-1), torch.nn.LogSoftmax(-1)), (nn.Flatten(), torch.nn.Flatten()),
              (nn.ReLU(inplace=True), torch.nn.ReLU()), (nn.Dropout(0.3, inplace=True).eval(),
                                                         torch.nn.Dropout(0.3).eval())]
    for ours, theirs in layers:
        theirs = theirs.double()
        ours = copied(theirs, ours.double())
        inputs = x if not isinstance(ours, nn.Conv1d) or ours.in_channels == 3 else \
            RNG.standard_normal((2, 4, 5))
        assert_close(ours(mv.tensor(inputs)), theirs(torch.from_numpy(inputs)).detach().numpy(),
                     rtol=1e-12)
    assert list(dict(nn.Conv1d(3, 4, 3).named_parameters())) == ["weight", "bias"]
    assert nn.Conv1d(3, 4, 3).weight.shape == (4, 3, 3)


def test_multihead_attention_with_bias_kv_and_zero_attn_matches_torch():
    torch.manual_seed(0)
    theirs = torch.nn.MultiheadAttention(6, 2, add_bias_kv=True, add_zero_attn=True,
                                         batch_first=True).double()
    ours = copied(theirs, nn.MultiheadAttention(6, 2, add_bias_kv=True, add_zero_attn=True,
                                                batch_first=True).double())
    assert nn.MultiheadAttention(6, 2).bias_k is None and ours.bias_k.shape == (1, 1, 6)
    x = RNG.standard_normal((2, 4, 6))
    mask = np.zeros((2, 4), bool)
    mask[0, 3] = True
    y, w = ours(*(mv.tensor(x),) * 3, key_padding_mask=mask)
    ty, tw = theirs(*(torch.from_numpy(x),) * 3, key_padding_mask=torch.from_numpy(mask))
    assert_close(y, ty.detach().numpy(), rtol=1e-10)
    assert_close(w, tw.detach().numpy(), rtol=1e-10)


def test_containers_register_under_torch_s_names():
    torch_dict = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 3), "b": torch.nn.Linear(3, 1)})
    ours_dict = nn.ModuleDict({"a": nn.Linear(2, 3), "b": nn.Linear(3, 1)})
    assert list(ours_dict.state_dict()) == list(torch_dict.state_dict())
    assert list(ours_dict) == ["a", "b"] and "a" in ours_dict and len(ours_dict) == 2
    params = nn.ParameterList([nn.Parameter(mv.ones(2)), mv.zeros(3)])
    torch_params = torch.nn.ParameterList([torch.nn.Parameter(torch.ones(2)), torch.zeros(3)])
    assert list(params.state_dict()) == list(torch_params.state_dict())
    assert all(isinstance(p, nn.Parameter) for p in params) and len(list(params.parameters())) == 2
    table = nn.ParameterDict({"scale": nn.Parameter(mv.ones(1))})
    assert list(table.state_dict()) == ["scale"] and table["scale"].shape == (1,)


def test_forward_hooks_see_and_replace_inputs_and_outputs():
    layer, seen = nn.Linear(2, 2), []
    handle = layer.register_forward_hook(lambda m, inputs, output: seen.append(output.shape))
    pre = layer.register_forward_pre_hook(lambda m, inputs: (inputs[0] * 0,))
    out = layer(mv.ones(3, 2))
    assert seen == [(3, 2)]
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(layer.bias.numpy(), (3, 2)))
    handle.remove()
    pre.remove()
    replace = layer.register_forward_hook(lambda m, inputs, output: output * 0 + 7)
    assert layer(mv.ones(1, 2)).numpy().tolist() == [[7.0, 7.0]] and seen == [(3, 2)]
    replace.remove()


def test_clip_grad_norm_in_nn_utils_and_functional_options():
    layer = nn.Linear(3, 3)
    (layer(mv.ones(2, 3)) * 100).sum().backward()
    total = nn.utils.clip_grad_norm_(layer.parameters(), 1.0)
    assert total.item() > 1 and abs(sum((p.grad.numpy() ** 2).sum()
                                        for p in layer.parameters()) ** 0.5 - 1) < 1e-4
    x = mv.tensor(RNG.standard_normal((2, 3)).astype(np.float32))
    assert F.softmax(x, dim=-1, dtype=mv.float64).dtype == np.float64
    assert F.log_softmax(x, dim=-1, dtype="float64").dtype == np.float64


# --- minivlm.utils.data ------------------------------------------------------------------------

def test_data_loader_batches_shuffles_reproducibly_and_collates():
    data = TensorDataset(mv.arange(10.0), mv.arange(10))
    batches = list(DataLoader(data, batch_size=4))
    assert [b[1].numpy().tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(DataLoader(data, batch_size=4, drop_last=True)) == 2
    orders = [[y.numpy().tolist() for _, y in DataLoader(
        data, batch_size=5, shuffle=True, generator=mv.Generator().manual_seed(1))]
        for _ in range(2)]
    assert orders[0] == orders[1] and sorted(sum(orders[0], [])) == list(range(10))
    assert sum(orders[0], []) != list(range(10))
    batch = default_collate([(np.ones(2), 3, {"k": 1.5}), (np.zeros(2), 4, {"k": 2.5})])
    assert batch[0].shape == (2, 2) and batch[1].numpy().tolist() == [3, 4]
    assert batch[2]["k"].numpy().tolist() == [1.5, 2.5]
    sampler = RandomSampler(data, replacement=True, num_samples=25,
                            generator=mv.Generator().manual_seed(0))
    assert len(list(sampler)) == 25 and len(set(sampler)) < 10
    with pytest.raises(ValueError, match="first dimensions differ"):
        TensorDataset(mv.ones(3), mv.ones(4))


# --- einops --------------------------------------------------------------------------------------

def test_einops_rearranges_repeats_and_reduces_minivlm_tensors_with_gradients():
    einops = pytest.importorskip("einops")
    from einops.layers.minivlm import Rearrange
    x, tx = pair(2, 3, 4)
    for pattern, kwargs, op in [("b c (h w) -> b (c h) w", {"h": 2}, einops.rearrange),
                                ("b c d -> b k c d", {"k": 3}, einops.repeat),
                                ("b c d -> b d", {}, lambda t, p: einops.reduce(t, p, "max")),
                                ("b c d -> c", {}, lambda t, p: einops.reduce(t, p, "mean"))]:
        ours, theirs = op(x, pattern, **kwargs), op(tx, pattern, **kwargs)
        assert_close(ours, theirs.detach().numpy(), rtol=1e-12)
        weights = RNG.standard_normal(ours.shape)
        (ours * mv.tensor(weights)).sum().backward()
        (theirs * torch.from_numpy(weights)).sum().backward()
        assert_close(x.grad, tx.grad.numpy(), rtol=1e-12)
        x.grad, tx.grad = None, None
    layer = Rearrange("b c (h p) -> b h (p c)", p=2)
    assert isinstance(layer, nn.Module) and layer(x).shape == (2, 2, 6)


# --- saving and loading ------------------------------------------------------------------------

def test_save_and_load_state_dicts_never_pickles(tmp_path):
    model = nn.Linear(3, 2)
    mv.save(model.state_dict(), tmp_path / "model.pt")
    loaded = mv.load(tmp_path / "model.pt")
    assert set(loaded) == {"weight", "bias"} and isinstance(loaded["weight"], mv.Tensor)
    other = nn.Linear(3, 2)
    other.load_state_dict(loaded)
    np.testing.assert_array_equal(other.weight.numpy(), model.weight.numpy())
    with pytest.raises(TypeError, match="does not pickle objects as torch.save does"):
        mv.save(model, tmp_path / "whole.pt")
    torch.save({"weight": torch.ones(2)}, tmp_path / "pickled.pt")
    with pytest.raises(io.CheckpointError, match="minivlm never loads pickles"):
        mv.load(tmp_path / "pickled.pt")


def test_data_is_a_tensor_outside_the_graph_sharing_memory():
    weight = nn.Linear(3, 2).weight
    assert isinstance(weight.data, mv.Tensor) and not weight.data.requires_grad
    weight.data.normal_(0.0, 0.02)                       # the initialisation idiom of torch code
    weight.data[0] = 1.0
    assert weight.requires_grad and (weight.numpy()[0] == 1.0).all()
    assert 0 < np.abs(weight.numpy()[1]).max() < 0.2
    x = mv.ones(2, 3, requires_grad=True)
    (weight.data * x).sum().backward()                   # .data takes no part in the gradient
    assert weight.grad is None and x.grad is not None
    (weight * x).sum().backward()
    weight.grad.data.zero_()
    assert (weight.grad.numpy() == 0).all()
    weight.data = mv.zeros(4, 3, dtype=mv.float64)       # any shape and dtype, as torch's
    assert weight.shape == (4, 3) and weight.dtype == np.float64 and weight.requires_grad
    with pytest.raises(TypeError, match="expected a Tensor, got ndarray"):
        weight.data = np.zeros(3)

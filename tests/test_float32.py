"""float32 stays float32: no op of minivlm.functional, and no model, makes a float64 array out of
float32 inputs anywhere — not in an op's output, not in what a Function keeps for backward, not
in a gradient an op's backward hands on (a silent upcast costs twice the memory and time even
where the final result is cast back). Also: the coarse ops that run in cache-sized blocks on the
CPU (GELU, QuickGELU, softmax, layer norm, attention) give the same numbers as torch in float64
when their inputs span several blocks.
"""
import contextlib

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minivlm as mv
import minivlm.functional as F
from minivlm import autograd, backend
from minivlm.functional import cpu
from minivlm.models import SwinConfig, SwinTransformer, ViT, ViTConfig
from minivlm.losses import clip_loss
from minivlm.models.clip import CLIP, clip_config
from minivlm.models.resnet import ModifiedResNet
from minivlm.testing import assert_close
from op_cases import CASES, ours_params


def _float64_arrays(value):
    """The float64 arrays (and NumPy float64 scalars) in a saved value, a tuple or a list."""
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in _float64_arrays(v)]
    return [value] if backend.is_array(value) and value.dtype == np.float64 else []


@contextlib.contextmanager
def float64_spy():
    """Yield a list that collects (op, where) for every float64 array an op produces: its output,
    what it saves for backward (right after forward) and the gradients its backward returns."""
    found = []
    apply = autograd.Function.apply.__func__

    def spy_apply(cls, *inputs, **kwargs):
        out = apply(cls, *inputs, **kwargs)
        if _float64_arrays(out.array):
            found.append((cls.__name__, "output"))
        fn = out._ctx
        if fn is not None:
            found.extend((cls.__name__, f"saved {name}") for name, value in vars(fn).items()
                         if name != "inputs" and _float64_arrays(value))
            fn.backward = _spied_backward(fn.backward, cls.__name__, found)
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(autograd.Function, "apply", classmethod(spy_apply))
        yield found


def _spied_backward(backward, name, found):
    def spy(grad):
        grads = backward(grad)
        if _float64_arrays(grads):
            found.append((name, "gradient"))
        return grads
    return spy


def _float32_run(case, inputs, params):
    tensors = {name: mv.tensor(values.astype(np.float32), requires_grad=True)
               for name, values in inputs.items()}
    out = case.ours(**tensors, **ours_params(params, "numpy"))
    out.backward(mv.tensor(np.ones(out.shape, dtype=np.float32)))
    return out, tensors


@pytest.mark.parametrize("case", CASES, ids=str)
@given(data=st.data())
def test_op_makes_no_float64_from_float32(case, data):
    inputs, params = data.draw(case.inputs, label="inputs, params")
    with float64_spy() as found:
        out, tensors = _float32_run(case, inputs, params)
    assert found == [], f"float64 inside the graph: {found}"
    assert out.dtype == np.float32
    assert all(t.grad.dtype == np.float32 for t in tensors.values())


def _image_ops():
    """The image ops that op_cases leaves out, as functions of a float32 image batch x."""
    rng = np.random.default_rng(0)
    weight = mv.tensor(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), requires_grad=True)
    scale = mv.tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    shift = mv.tensor(np.zeros(3, dtype=np.float32), requires_grad=True)
    mean, var = mv.zeros(3), mv.ones(3)
    return {
        "conv2d": lambda x: F.conv2d(x, weight, stride=2, padding=1),
        "avg_pool2d": lambda x: F.avg_pool2d(x, 2, padding=1),
        "max_pool2d": lambda x: F.max_pool2d(x, 3, stride=2, padding=1),
        "adaptive_avg_pool2d": lambda x: F.adaptive_avg_pool2d(x, 3),
        "batch_norm (training)": lambda x: F.batch_norm(x, mean, var, scale, shift, training=True),
        "batch_norm (eval)": lambda x: F.batch_norm(x, mean, var, scale, shift),
        "dropout": lambda x: F.dropout(x, 0.3),
    }


@pytest.mark.parametrize("name", list(_image_ops()))
def test_image_op_makes_no_float64_from_float32(name):
    op = _image_ops()[name]
    x = mv.tensor(np.random.default_rng(1).standard_normal((2, 3, 7, 7)).astype(np.float32),
                  requires_grad=True)
    with float64_spy() as found:
        out = op(x)
        out.backward(mv.ones(*out.shape))
    assert found == [], f"float64 inside the graph: {found}"
    assert out.dtype == x.grad.dtype == np.float32


# --- whole models ---------------------------------------------------------------------------------

def _tiny_vit():
    model = ViT(ViTConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=2,
                          num_attention_heads=2, intermediate_size=32, num_classes=3))
    return model, lambda m, x: F.cross_entropy(m(x), np.array([0, 2])), (2, 3, 8, 8)


def _tiny_vit_interpolated():
    """The ViT of _tiny_vit on 12×8 images: its 2×2 grid of position embeddings resized to 3×2."""
    model = _tiny_vit()[0]
    return (model, lambda m, x: F.cross_entropy(m(x, interpolate_pos_encoding=True),
                                                np.array([0, 2])), (2, 3, 12, 8))


def _tiny_swin():
    model = SwinTransformer(SwinConfig(image_size=8, patch_size=1, num_channels=3, embed_dim=4,
                                       depths=[2, 1], num_heads=[1, 2], window_size=2,
                                       num_classes=3))
    return model, lambda m, x: F.cross_entropy(m(x), np.array([1, 0])), (2, 3, 8, 8)


def _tiny_clip():
    model = CLIP(clip_config("tiny"))
    ids = np.random.default_rng(2).integers(0, 1000, (2, 16))
    return model, lambda m, x: clip_loss(m(x, ids)[0]), (2, 3, 32, 32)


def _tiny_modified_resnet():
    model = ModifiedResNet((1, 1, 1, 1), output_dim=8, heads=2, input_resolution=32, width=8)
    return model, lambda m, x: m(x).sum(), (2, 3, 32, 32)


MODELS = {"vit": _tiny_vit, "vit, interpolated positions": _tiny_vit_interpolated,
          "swin": _tiny_swin, "clip": _tiny_clip,
          "modified_resnet": _tiny_modified_resnet}


@pytest.mark.parametrize("name", list(MODELS))
def test_model_forward_backward_makes_no_float64(name):
    mv.manual_seed(0)
    model, loss_of, image_shape = MODELS[name]()
    pixels = mv.tensor(np.random.default_rng(3).standard_normal(image_shape).astype(np.float32))
    with float64_spy() as found:
        loss = loss_of(model, pixels)
        loss.backward()
    assert found == [], f"float64 inside the graph: {sorted(set(found))}"
    assert loss.dtype == np.float32
    grads = {name: p.grad.dtype for name, p in model.named_parameters() if p.grad is not None}
    assert grads and set(grads.values()) == {np.dtype(np.float32)}, grads


@pytest.mark.parametrize("name", list(MODELS))
def test_model_inference_makes_no_float64(name):
    mv.manual_seed(0)
    model, loss_of, image_shape = MODELS[name]()
    pixels = mv.tensor(np.random.default_rng(3).standard_normal(image_shape).astype(np.float32))
    with float64_spy() as found, mv.no_grad():
        loss = loss_of(model.eval(), pixels)
    assert found == [] and loss.dtype == np.float32
    assert loss._ctx is None  # no graph, so nothing saved for backward outlives its op


# --- the blocked CPU paths against torch -----------------------------------------------------

BLOCKED_OPS = {  # name: (ours, theirs, input shapes), inputs drawn standard normal
    "gelu": (F.gelu, lambda torch, x: torch.nn.functional.gelu(x), [(5, 7, 9)]),
    "quick_gelu": (F.quick_gelu, lambda torch, x: x * torch.sigmoid(1.702 * x), [(5, 7, 9)]),
    "softmax": (lambda x: F.softmax(x, -1), lambda torch, x: torch.softmax(x, -1), [(5, 7, 9)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (3, 9), w, b),
                   lambda torch, x, w, b: torch.nn.functional.layer_norm(x, (3, 9), w, b),
                   [(5, 3, 9), (3, 9), (3, 9)]),
    "attention": (F.scaled_dot_product_attention,
                  lambda torch, q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v),
                  [(4, 3, 5, 2), (4, 3, 6, 2), (4, 3, 6, 3)]),
    "attention, Swin's masks": (
        lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
        lambda torch, q, k, v, m: torch.nn.functional.scaled_dot_product_attention(q, k, v, m),
        [(2, 4, 3, 5, 2), (2, 4, 3, 5, 2), (2, 4, 3, 5, 2), (4, 1, 5, 5)]),
    "attention, causal, shared keys": (
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        lambda torch, q, k, v: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True),
        [(4, 3, 5, 2), (1, 3, 5, 2), (3, 5, 2)]),
}


@pytest.mark.parametrize("name", list(BLOCKED_OPS))
@pytest.mark.parametrize("block", [4, 40])
def test_blocked_op_matches_torch_in_float64(monkeypatch, name, block):
    """With a block of a few elements every input spans many blocks (the partial sums of layer
    norm's γ and β gradients and the attention blocks over several batch dims included)."""
    torch = pytest.importorskip("torch")
    ours, theirs, input_shapes = BLOCKED_OPS[name]
    rng = np.random.default_rng(4)
    values = [rng.standard_normal(shape) for shape in input_shapes]
    monkeypatch.setattr(cpu, "BLOCK", block)
    tensors = [mv.tensor(v, requires_grad=True) for v in values]
    out = ours(*tensors)
    upstream = rng.standard_normal(out.shape)
    out.backward(mv.tensor(upstream))
    expected_inputs = [torch.tensor(v, requires_grad=True) for v in values]
    expected = theirs(torch, *expected_inputs)
    expected.backward(torch.tensor(upstream))
    # every element: the largest relative error measured is 2.4e-13 (layer norm's)
    assert_close(out, expected.detach().numpy(), rtol=1e-12, elementwise=True)
    for t, e in zip(tensors, expected_inputs):
        assert_close(t.grad, e.grad.numpy(), rtol=1e-12, elementwise=True)


def test_blocked_op_keeps_float32(monkeypatch):
    monkeypatch.setattr(cpu, "BLOCK", 8)
    x = mv.tensor(np.random.default_rng(5).standard_normal((6, 10)).astype(np.float32),
                  requires_grad=True)
    with float64_spy() as found:
        y = F.layer_norm(F.gelu(x), (10,)).softmax(-1)
        y.backward(mv.ones(6, 10))
    assert found == [] and y.dtype == x.grad.dtype == np.float32

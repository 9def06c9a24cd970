"""minivlm.models.swin's Swin-V2: gradients (finite differences), float32 on every backend against
float64, reference/swin.py's V2 functions in float64, and transformers' Swinv2 (forward and every
gradient; the committed fixture is in test_pretrained_vision.py). The V1 parts it shares
(windows, shifts, padding) are tested in test_swin.py."""
import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minivlm as mv
from make_vision_fixtures import (assert_float32_matches_float64, assert_same_gradients,
                                  randomize_minivlm)
from minivlm import nn
from minivlm.models import SwinTransformerV2, SwinV2Config
from minivlm.models.swin import (MAX_LOGIT_SCALE, PatchMergingV2, WindowAttentionV2,
                                 log_spaced_coordinates)
from minivlm.pretrained import load_pretrained, to_hf_state_dict
from minivlm.testing import assert_close, gradcheck
from test_swin import random_pixels, swin_configs

FEW = settings(max_examples=min(10, settings.default.max_examples), deadline=None)
FEWER = settings(max_examples=min(4, settings.default.max_examples), deadline=None)  # gradcheck


@st.composite
def swinv2_configs(draw, max_image=12):
    """test_swin's tiny configurations as Swin-V2 ones, each stage pre-trained with no window or
    with one of 2–5."""
    config = draw(swin_configs(max_image))
    pretrained = [draw(st.sampled_from([0, 2, 3, 5])) for _ in config.depths]
    return SwinV2Config(**dataclasses.asdict(config), pretrained_window_sizes=pretrained)


def random_swinv2(config, seed, dtype="float64", max_temperature=200):
    """A Swin-V2 with every parameter drawn (make_vision_fixtures.random_parameter) and the
    logit scales spread over [log 1, log max_temperature] (200: some beyond the clamp at 100)."""
    mv.manual_seed(seed)
    model = randomize_minivlm(SwinTransformerV2(config).to(dtype), seed)
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if name.endswith("logit_scale"):
            p.array[...] = rng.uniform(0, math.log(max_temperature), p.shape)
    return model


# --- the parts -----------------------------------------------------------------------------------

def test_log_spaced_coordinates_by_hand():
    """Window 3 (offsets −2 … 2), no pre-training window: Δ scaled by 8/(3 − 1) = 4 to
    [−8, 8], then sign·log2(1 + |·|)/3."""
    coordinates = log_spaced_coordinates(3, 0, np)
    assert coordinates.shape == (25, 2) and coordinates.dtype == np.float32
    expected_axis = [-np.log2(9) / 3, -np.log2(5) / 3, 0, np.log2(5) / 3, np.log2(9) / 3]
    np.testing.assert_allclose(coordinates[:, 0], np.repeat(expected_axis, 5), rtol=1e-6)
    np.testing.assert_allclose(coordinates[:, 1], np.tile(expected_axis, 5), rtol=1e-6)
    # a pre-training window of 5 scales by 8/(5 − 1) = 2 instead: Δ = 2 -> 4 -> log2(5)/3
    np.testing.assert_allclose(log_spaced_coordinates(3, 5, np)[-1], [np.log2(5) / 3] * 2,
                               rtol=1e-6)
    np.testing.assert_array_equal(log_spaced_coordinates(1, 0, np), [[0, 0]])


@pytest.mark.parametrize("window, pretrained", [(1, 0), (2, 0), (3, 0), (4, 0), (7, 0), (8, 0),
                                                (3, 4), (4, 8), (2, 5)])
def test_log_spaced_coordinates_equal_transformers_table(window, pretrained):
    """Bit for bit: the same float32 operations as transformers' create_coords_table_and_index.
    (For some larger windows NumPy's and torch's float32 log2 differ in the last bit.)"""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.swinv2.modeling_swinv2 import Swinv2SelfAttention
    attention = Swinv2SelfAttention(transformers.Swinv2Config(), 4, 2, window,
                                    [pretrained, pretrained])
    np.testing.assert_array_equal(log_spaced_coordinates(window, pretrained, np),
                                  attention.relative_coords_table.numpy().reshape(-1, 2))


def test_the_logit_scale_is_clamped_at_log_100():
    """Above log 100 the temperature stays 100 and logit_scale gets no gradient (torch.clamp)."""
    attention = WindowAttentionV2(4, 2).to("float64")
    attention.logit_scale.array[...] = np.array([1.0, 6.0]).reshape(2, 1, 1)
    x = mv.tensor(np.random.default_rng(0).standard_normal((3, 4, 4)))
    attention(x).sum().backward()
    assert attention.logit_scale.grad.numpy()[1, 0, 0] == 0
    assert attention.logit_scale.grad.numpy()[0, 0, 0] != 0
    clamped = attention(x).numpy()
    attention.logit_scale.array[1] = MAX_LOGIT_SCALE
    np.testing.assert_allclose(attention(x).numpy(), clamped, rtol=1e-13)


def test_window_attention_v2_keys_have_no_bias():
    attention = WindowAttentionV2(6, 2, qkv_bias=True)
    assert attention.q.bias is not None and attention.v.bias is not None
    assert attention.k.bias is None
    assert attention.cpb_mlp[0].weight.shape == (512, 2) and attention.cpb_mlp[2].bias is None
    assert attention.logit_scale.shape == (2, 1, 1)
    np.testing.assert_allclose(attention.logit_scale.numpy(), math.log(10), rtol=1e-7)


@given(H=st.integers(1, 5), W=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_patch_merging_v2_matches_the_reference(H, W, seed):
    rs = pytest.importorskip("reference.swin")
    merging = randomize_minivlm(PatchMergingV2(3).to("float64"), seed)
    assert merging.norm.weight.shape == (6,)   # V2 normalises the 2C outputs
    x = np.random.default_rng(seed).standard_normal((2, H * W, 3))
    weights = {"norm.weight": merging.norm.weight.numpy(), "norm.bias": merging.norm.bias.numpy(),
               "reduction.weight": merging.reduction.weight.numpy()}
    assert_close(merging(mv.tensor(x), (H, W)), rs.patch_merging_v2(x, (H, W), weights),
                 rtol=1e-12)


@given(window=st.integers(1, 4), pretrained=st.sampled_from([0, 3, 6]), seed=st.integers(0, 99))
def test_continuous_position_bias_matches_the_reference(window, pretrained, seed):
    rs = pytest.importorskip("reference.swin")
    attention = randomize_minivlm(WindowAttentionV2(4, 2, pretrained).to("float64"), seed)
    weights = {"self.continuous_position_bias_mlp." + name[len("cpb_mlp."):]: p.numpy()
               for name, p in attention.named_parameters() if name.startswith("cpb_mlp.")}
    bias = attention.relative_position_bias(window)
    assert bias.shape == (2, window ** 2, window ** 2)
    assert_close(bias, rs.continuous_position_bias(weights, window, pretrained), rtol=1e-12)
    assert 0 < bias.numpy().min() and bias.numpy().max() < 16


# --- tier 1: gradients ---------------------------------------------------------------------------

@FEWER
@given(config=swinv2_configs(max_image=8), seed=st.integers(0, 2**16))
def test_gradients_of_every_parameter_and_the_pixels(config, seed):
    """Temperatures up to 20, where the central differences' own error stays small (the clamp
    has its own test). The position-bias MLP's first layer is checked in the fixed case below:
    among its 512 ReLUs one may sit within a step of its kink."""
    model = random_swinv2(config, seed, max_temperature=20)
    pixels = mv.tensor(random_pixels(config, seed, batch=1), requires_grad=True)
    params = {name: p for name, p in model.named_parameters() if "cpb_mlp.0" not in name}
    gradcheck(lambda pixels, **_: model(pixels), {"pixels": pixels, **params}, n_directions=1,
              max_elements=2)


def test_gradients_of_the_position_bias_mlp_and_temperatures():
    """One fixed case where every part is active: 7×7 tokens, window 3 (padded to 9), shift 1
    in the second block; every element of the temperatures, directions for the MLP."""
    config = SwinV2Config(image_size=7, patch_size=1, num_channels=1, embed_dim=4, depths=[2],
                          num_heads=[2], window_size=3, num_classes=2,
                          pretrained_window_sizes=[4])
    model = random_swinv2(config, seed=5)
    pixels = mv.tensor(random_pixels(config, 5, batch=1))
    checked = {name: p for name, p in model.named_parameters()
               if "logit_scale" in name or "cpb_mlp" in name}
    gradcheck(lambda **_: model(pixels), checked, max_elements=4, n_directions=3)


# --- tier 2: float32 on each backend against float64 --------------------------------------------

@FEW
@given(config=swinv2_configs(), seed=st.integers(0, 2**16))
def test_float32_on_each_backend_matches_float64(backend, config, seed):
    """With temperatures up to 10, the initial one: a temperature of 100 turns float32's
    ~1e-7 rounding of the cosines into ~1e-5 in the scores, beyond 1e-3 of small gradients."""
    model = random_swinv2(config, seed, max_temperature=10).to("float32").to(backend)
    assert_float32_matches_float64(random_swinv2(config, seed, max_temperature=10), model,
                                   random_pixels(config, seed), backend)


# --- tier 3: reference/swin.py and transformers --------------------------------------------------

@FEW
@given(config=swinv2_configs(), seed=st.integers(0, 2**16))
def test_matches_the_reference_in_float64(config, seed):
    rs = pytest.importorskip("reference.swin")
    model = random_swinv2(config, seed)
    pixels = random_pixels(config, seed)
    expected = rs.swin_last_hidden_state(pixels, to_hf_state_dict(model, "swinv2"),
                                         dataclasses.asdict(config))
    assert_close(model.forward_features(mv.tensor(pixels)), expected, rtol=1e-10)


@pytest.mark.parametrize("image_size, window_size, pretrained", [
    (16, 3, [0, 4, 0]),   # 8 (padded to 9) -> 4 (padded to 6) -> 2: one 2×2 window, unshifted
    (32, 4, [0, 0, 8]),   # 16 -> 8 -> 4: shifted windows in the first two stages
])
def test_logits_and_every_gradient_match_transformers(image_size, window_size, pretrained,
                                                      tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from make_vision_fixtures import randomize
    config = transformers.Swinv2Config(image_size=image_size, patch_size=2, embed_dim=4,
                                       depths=[2, 2, 1], num_heads=[1, 2, 2],
                                       window_size=window_size, pretrained_window_sizes=pretrained,
                                       num_labels=3)
    hf = randomize(transformers.Swinv2ForImageClassification(config), seed=3)
    hf.save_pretrained(tmp_path)
    hf.double()
    model = load_pretrained(tmp_path, dtype="float64")
    pixels = np.random.default_rng(3).standard_normal((2, 3, image_size, image_size))
    expected = hf(torch.from_numpy(pixels)).logits
    expected.sum().backward()
    actual = model(mv.tensor(pixels))
    actual.sum().backward()
    assert_close(actual, expected.detach().numpy(), rtol=1e-10)
    assert_same_gradients(model, hf)


def test_transformers_adds_the_shift_mask_twice(tmp_path, monkeypatch):
    """At temperature 100 in a shifted block the scores span ±116, so the −100 of the shift mask
    no longer silences a pair; transformers adds the mask twice (−200) where the paper's code
    adds it once. minivlm follows the paper: it differs from transformers there, and equals it
    with the mask value doubled."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from make_vision_fixtures import randomize
    config = transformers.Swinv2Config(image_size=8, patch_size=1, embed_dim=4, depths=[2],
                                       num_heads=[2], window_size=2)
    hf = randomize(transformers.Swinv2Model(config), seed=4)
    with torch.no_grad():
        hf.encoder.layers[0].blocks[1].attention.self.logit_scale.fill_(MAX_LOGIT_SCALE)
    hf.save_pretrained(tmp_path)
    model = load_pretrained(tmp_path, dtype="float64")
    pixels = np.random.default_rng(4).standard_normal((1, 3, 8, 8))
    with torch.no_grad():
        expected = hf.double()(torch.from_numpy(pixels)).last_hidden_state.numpy()
    difference = np.abs(model.forward_features(mv.tensor(pixels)).numpy() - expected).max()
    assert difference > 1e-3
    monkeypatch.setattr("minivlm.models.swin.SHIFT_MASK_VALUE", -200.0)
    assert_close(model.forward_features(mv.tensor(pixels)), expected, rtol=1e-10)


# --- configurations and errors ------------------------------------------------------------------

def test_a_config_needs_a_pretrained_window_per_stage():
    with pytest.raises(ValueError, match=r"pretrained_window_sizes \(0,\) needs one entry per "
                                         r"stage of depths \(2, 2\)"):
        SwinV2Config(depths=[2, 2], num_heads=[3, 6], pretrained_window_sizes=[0])


def test_swin_v2_t_has_transformers_parameter_count():
    """Swin-V2-T at 256 (window 8): counted from shapes alone, as transformers' on torch's meta
    device."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    with nn.init.shapes_only():
        ours = SwinTransformerV2(SwinV2Config(image_size=256, window_size=8)).num_parameters()
    with torch.device("meta"):
        theirs = transformers.Swinv2ForImageClassification(
            transformers.Swinv2Config(image_size=256, window_size=8, num_labels=1000))
    assert ours == sum(p.numel() for p in theirs.parameters()) == 28_347_154

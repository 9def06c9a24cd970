"""minivlm.models.swin: gradients (finite differences), float32 on every backend against float64,
reference/swin.py in float64, and transformers (forward and backward)."""
import dataclasses

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import minivlm as mv
from make_vision_fixtures import (assert_float32_matches_float64, assert_same_gradients,
                                  randomize_minivlm)
from minivlm.models import SwinConfig, SwinTransformer, swin_t
from minivlm.models.swin import (PatchMerging, relative_position_index, shift_mask,
                                 window_merge, window_partition)
from minivlm.io import save_safetensors
from minivlm.pretrained import load_pretrained, to_hf_state_dict
from minivlm.testing import assert_close, gradcheck

FEW = settings(max_examples=min(10, settings.default.max_examples), deadline=None)
FEWER = settings(max_examples=min(4, settings.default.max_examples), deadline=None)  # gradcheck


@st.composite
def swin_configs(draw, max_image=12):
    """Tiny SwinConfigs: 1–2 stages of 1–2 blocks, window 2–3, heads of 2–3 dims, images up to
    max_image pixels in patches of 1–2 (so padding, shifts and small last stages all occur)."""
    stages = draw(st.integers(1, 2))
    heads = [draw(st.integers(1, 2)) for _ in range(stages)]
    head_dim = draw(st.integers(2, 3))
    return SwinConfig(image_size=draw(st.integers(2, max_image)),
                      patch_size=draw(st.integers(1, 2)), num_channels=draw(st.integers(1, 3)),
                      embed_dim=heads[0] * head_dim * 2,
                      depths=[draw(st.integers(1, 2)) for _ in range(stages)],
                      num_heads=[h * 2 ** i for i, h in enumerate(heads)],
                      window_size=draw(st.integers(2, 3)),
                      mlp_ratio=draw(st.sampled_from([1.0, 1.5])), qkv_bias=draw(st.booleans()),
                      hidden_act=draw(st.sampled_from(["gelu", "relu"])),
                      layer_norm_eps=draw(st.sampled_from([1e-5, 1e-6])),
                      num_classes=draw(st.integers(0, 3)))


def random_swin(config, seed, dtype="float64"):
    mv.manual_seed(seed)
    return randomize_minivlm(SwinTransformer(config).to(dtype), seed)


def random_pixels(config, seed, batch=2):
    size = config.image_size
    return np.random.default_rng(seed).standard_normal((batch, config.num_channels, size, size))


def stage_resolutions(config):
    """The feature-map side in each stage (the image padded to whole patches, then halved)."""
    side = -(-config.image_size // config.patch_size)
    sides = []
    for _ in config.depths:
        sides.append(side)
        side = (side + 1) // 2
    return sides


# --- tier 1: gradients ---------------------------------------------------------------------------

@FEWER
@given(config=swin_configs(max_image=8), seed=st.integers(0, 2**16))
def test_gradients_of_every_parameter_and_the_pixels(config, seed):
    model = random_swin(config, seed)
    pixels = mv.tensor(random_pixels(config, seed, batch=1), requires_grad=True)
    params = dict(model.named_parameters())
    gradcheck(lambda pixels, **_: model(pixels), {"pixels": pixels, **params}, n_directions=1,
              max_elements=2)


def test_gradients_with_shifted_padded_windows_and_a_bias_table():
    """One fixed case where every feature is active in the first stage: 7×7 tokens, window 3
    (padded to 9), shift 1 in the second block, and a large relative position bias."""
    config = SwinConfig(image_size=7, patch_size=1, num_channels=1, embed_dim=4, depths=[2],
                        num_heads=[2], window_size=3, num_classes=2)
    model = random_swin(config, seed=5)
    pixels = mv.tensor(random_pixels(config, 5, batch=1))
    tables = {name: p for name, p in model.named_parameters() if "bias_table" in name}
    gradcheck(lambda **_: model(pixels), tables, max_elements=0, n_directions=3)


# --- tier 2: float32 on each backend against float64 --------------------------------------------

@FEW
@given(config=swin_configs(), seed=st.integers(0, 2**16))
def test_float32_on_each_backend_matches_float64(backend, config, seed):
    model = random_swin(config, seed).to("float32").to(backend)
    assert_float32_matches_float64(random_swin(config, seed), model, random_pixels(config, seed),
                                   backend)


# --- tier 3: reference/swin.py ------------------------------------------------------------------

@FEW
@given(config=swin_configs(), seed=st.integers(0, 2**16))
def test_matches_the_reference_in_float64(config, seed):
    rs = pytest.importorskip("reference.swin")
    assume(min(stage_resolutions(config)) >= config.window_size)  # the reference's window table
    model = random_swin(config, seed)
    pixels = random_pixels(config, seed)
    expected = rs.swin_last_hidden_state(pixels, to_hf_state_dict(model, "swin"),
                                         dataclasses.asdict(config))
    features = model.forward_features(mv.tensor(pixels))
    assert_close(features, expected, rtol=1e-10)
    if config.num_classes:
        head = model.head
        logits = expected.mean(axis=1) @ head.weight.numpy().T + head.bias.numpy()
        assert_close(model(mv.tensor(pixels)), logits, rtol=1e-10)


@given(data=st.data(), window=st.integers(2, 4))
def test_shift_mask_matches_the_reference(data, window):
    rs = pytest.importorskip("reference.swin")
    H, W = (window * data.draw(st.integers(2, 3)) for _ in range(2))
    shift = data.draw(st.integers(1, window - 1))
    actual = shift_mask(H, W, window, shift, np, np.dtype("float64"))
    np.testing.assert_array_equal(actual, rs.shift_mask(H, W, window, shift))


def test_shift_mask_by_hand():
    """A 4×4 map of 2×2 windows shifted by 1: after the roll, row/col 3 came from the far edge.
    Window 0 (rows 0-1, cols 0-1) holds one region; window 3 (rows 2-3, cols 2-3) holds four."""
    mask = shift_mask(4, 4, 2, 1, np, np.dtype("float64"))
    assert mask.shape == (4, 4, 4)
    np.testing.assert_array_equal(mask[0], np.zeros((4, 4)))
    # window 1: rows 0-1, cols 2-3: tokens (0,2), (0,3), (1,2), (1,3); col 3 is another region
    other = -100.0
    np.testing.assert_array_equal(mask[1], [[0, other, 0, other], [other, 0, other, 0],
                                            [0, other, 0, other], [other, 0, other, 0]])
    assert (mask[3] == other).sum() == 16 - 4  # four regions of one token each


@given(window=st.integers(1, 5), extra=st.integers(0, 2))
def test_relative_position_index_points_at_the_offset(window, extra):
    """Row (Δr + M − 1)·(2M − 1) + (Δc + M − 1) of the table for the pair (i, j), where
    (Δr, Δc) is the position of token i minus that of token j and M is the table's window,
    here window + extra (a smaller window uses the centre)."""
    M = window + extra
    index = relative_position_index(window, M, np)
    for i in range(window * window):
        for j in range(window * window):
            d_row, d_col = i // window - j // window, i % window - j % window
            assert index[i, j] == (d_row + M - 1) * (2 * M - 1) + (d_col + M - 1)


def test_relative_position_index_matches_the_reference():
    rs = pytest.importorskip("reference.swin")
    for M in (1, 2, 3, 7):
        np.testing.assert_array_equal(relative_position_index(M, M, np),
                                      rs.relative_position_index(M))


@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
       window=st.integers(1, 3))
def test_window_partition_matches_the_reference_and_merge_inverts_it(shape, window):
    rs = pytest.importorskip("reference.swin")
    B, rows, cols, C = shape
    x = np.arange(B * rows * window * cols * window * C, dtype=np.float64)
    x = x.reshape(B, rows * window, cols * window, C)
    windows = window_partition(mv.tensor(x), window)
    expected = rs.window_partition(x, window).reshape(B, rows * cols, window * window, C)
    np.testing.assert_array_equal(windows.numpy(), expected)
    merged = window_merge(windows, window, rows * window, cols * window)
    np.testing.assert_array_equal(merged.numpy(), x)


@given(H=st.integers(1, 5), W=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_patch_merging_matches_the_reference(H, W, seed):
    rs = pytest.importorskip("reference.swin")
    merging = randomize_minivlm(PatchMerging(3).to("float64"), seed)
    x = np.random.default_rng(seed).standard_normal((2, H * W, 3))
    weights = {"norm.weight": merging.norm.weight.numpy(), "norm.bias": merging.norm.bias.numpy(),
               "reduction.weight": merging.reduction.weight.numpy()}
    assert_close(merging(mv.tensor(x), (H, W)), rs.patch_merging(x, (H, W), weights), rtol=1e-12)


# --- tier 3: transformers ------------------------------------------------------------------------

def test_gradients_match_transformers(tmp_path):
    """Logits and the gradient of every parameter against HF SwinForImageClassification, on the
    fixture's configuration (shifts in three stages, padding, a last stage of one window)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from make_vision_fixtures import tiny_swin
    hf = tiny_swin(seed=3)
    hf.save_pretrained(tmp_path)
    hf.double()
    model = load_pretrained(tmp_path, dtype="float64")
    pixels = np.random.default_rng(3).standard_normal((2, 3, 41, 41))
    expected = hf(torch.from_numpy(pixels)).logits
    expected.sum().backward()
    actual = model(mv.tensor(pixels))
    actual.sum().backward()
    assert_close(actual, expected.detach().numpy(), rtol=1e-10)
    assert_same_gradients(model, hf)


@pytest.mark.parametrize("side", [2, 3])
def test_a_map_smaller_than_the_window_uses_the_centre_of_the_table(side, tmp_path):
    """Window 4 on a side×side map: one side×side window, which must equal transformers with
    window_size=side and the centre (2·side − 1)² rows of the window-4 table. (transformers itself
    fails on a map smaller than its window.)"""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = SwinConfig(image_size=side, patch_size=1, embed_dim=4, depths=[2], num_heads=[2],
                        window_size=4, num_classes=0)
    model = random_swin(config, seed=side)
    centre = np.arange(7 * 7).reshape(7, 7)[4 - side:3 + side, 4 - side:3 + side].reshape(-1)
    state = {name: array[centre] if "relative_position_bias_table" in name else array
             for name, array in to_hf_state_dict(model, "swin").items()}
    save_safetensors(state, tmp_path / "model.safetensors")
    transformers.SwinConfig(image_size=side, patch_size=1, embed_dim=4, depths=[2],
                            num_heads=[2], window_size=side).save_pretrained(tmp_path)
    hf = transformers.SwinModel.from_pretrained(tmp_path).double().eval()
    pixels = random_pixels(config, side)
    with torch.no_grad():
        expected = hf(torch.from_numpy(pixels)).last_hidden_state.numpy()
    assert_close(model.forward_features(mv.tensor(pixels)), expected, rtol=1e-10)


# --- configurations, parameter counts, errors --------------------------------------------------

def swin_parameter_count(embed, depths, heads, window, patch=4, channels=3, ratio=4, classes=1000):
    """Counted by hand: patch projection and norm; per block two norms, q/k/v/out projections,
    the bias table and the MLP; patch merging (norm over 4C, 4C×2C) between stages; the final
    norm and the head."""
    count = channels * patch * patch * embed + embed + 2 * embed
    for stage, (depth, n_heads) in enumerate(zip(depths, heads)):
        d = embed * 2 ** stage
        block = 2 * 2 * d + 4 * (d * d + d) + (2 * window - 1) ** 2 * n_heads \
            + (d * ratio * d + ratio * d) + (ratio * d * d + d)
        count += depth * block
        if stage < len(depths) - 1:
            count += 2 * 4 * d + 4 * d * 2 * d
    d_last = embed * 2 ** (len(depths) - 1)
    return count + 2 * d_last + d_last * classes + classes


def test_the_hand_count_counts_the_model():
    config = SwinConfig(patch_size=2, num_channels=2, embed_dim=6, depths=[1, 2], num_heads=[1, 2],
                        window_size=3, mlp_ratio=2, num_classes=4)
    assert SwinTransformer(config).num_parameters() == swin_parameter_count(
        6, [1, 2], [1, 2], 3, patch=2, channels=2, ratio=2, classes=4)
    assert swin_parameter_count(96, [2, 2, 6, 2], [3, 6, 12, 24], 7) == 28_288_354


@pytest.mark.slow  # builds the 28M-parameter model
def test_swin_t_has_28_288_354_parameters():
    assert SwinTransformer(swin_t()).num_parameters() == 28_288_354


def test_bad_configurations_and_inputs_name_the_problem():
    with pytest.raises(ValueError, match=r"depths \(2, 2\) and num_heads \(3,\)"):
        SwinConfig(depths=[2, 2], num_heads=[3])
    config = SwinConfig(image_size=8, patch_size=2, embed_dim=4, depths=[1], num_heads=[2],
                        window_size=2, num_classes=0)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(1, 1, 8, 8\)"):
        SwinTransformer(config)(mv.zeros(1, 1, 8, 8))

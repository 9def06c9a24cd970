"""minivlm.models.vit: gradients (finite differences), float32 on every backend against float64,
reference/vit.py in float64, and torch / transformers (forward and backward)."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minivlm as mv
from make_vision_fixtures import (assert_float32_matches_float64, assert_same_gradients,
                                  randomize_minivlm)
from minivlm.models import ViT, ViTConfig, vit_b16, vit_b32, vit_l16
from minivlm.models.vit import ACTIVATIONS, PatchEmbedding, bicubic_matrix
from minivlm.pretrained import load_pretrained, to_hf_state_dict
from minivlm.testing import assert_close, gradcheck

FEW = settings(max_examples=min(10, settings.default.max_examples), deadline=None)
FEWER = settings(max_examples=min(5, settings.default.max_examples), deadline=None)  # gradcheck


@st.composite
def vit_configs(draw, max_grid=3):
    """Tiny ViTConfigs: 1–3 heads of 2–4 dims (width >= 4, as a layer norm over 2 values is
    degenerate), patch 1–3, a 1–max_grid grid of patches."""
    heads, head_dim = draw(st.integers(1, 3)), draw(st.integers(2, 4))
    heads = max(heads, 2) if head_dim < 4 else heads
    patch = draw(st.integers(1, 3))
    return ViTConfig(image_size=patch * draw(st.integers(1, max_grid)), patch_size=patch,
                     num_channels=draw(st.integers(1, 3)), hidden_size=heads * head_dim,
                     num_hidden_layers=draw(st.integers(1, 2)), num_attention_heads=heads,
                     intermediate_size=draw(st.integers(1, 8)),
                     hidden_act=draw(st.sampled_from(sorted(ACTIVATIONS))),
                     layer_norm_eps=draw(st.sampled_from([1e-12, 1e-5])),
                     qkv_bias=draw(st.booleans()), num_classes=draw(st.integers(0, 3)))


def random_vit(config, seed, dtype="float64"):
    mv.manual_seed(seed)
    return randomize_minivlm(ViT(config).to(dtype), seed)


def random_pixels(config, seed, batch=2, size=None):
    rows, cols = size or (config.image_size, config.image_size)
    return np.random.default_rng(seed).standard_normal((batch, config.num_channels, rows, cols))


# --- tier 1: gradients ---------------------------------------------------------------------------

@FEWER
@given(config=vit_configs(max_grid=2), seed=st.integers(0, 2**16))
def test_gradients_of_every_parameter_and_the_pixels(config, seed):
    model = random_vit(config, seed)
    pixels = mv.tensor(random_pixels(config, seed, batch=1), requires_grad=True)
    params = dict(model.named_parameters())
    gradcheck(lambda pixels, **_: model(pixels), {"pixels": pixels, **params}, n_directions=1,
              max_elements=2)


def test_gradient_through_the_interpolated_position_embedding():
    config = ViTConfig(image_size=6, patch_size=2, hidden_size=4, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=4, num_classes=2)
    model = random_vit(config, seed=1)
    pixels = mv.tensor(random_pixels(config, 1, batch=1, size=(8, 4)))
    gradcheck(lambda pos_embed: model(pixels, interpolate_pos_encoding=True),
              {"pos_embed": model.pos_embed}, max_elements=0, n_directions=4)


# --- tier 2: float32 on each backend against float64 --------------------------------------------

@FEW
@given(config=vit_configs(), seed=st.integers(0, 2**16))
def test_float32_on_each_backend_matches_float64(backend, config, seed):
    model = random_vit(config, seed).to("float32").to(backend)
    assert_float32_matches_float64(random_vit(config, seed), model, random_pixels(config, seed),
                                   backend)


# --- tier 3: reference/vit.py and torch / transformers ------------------------------------------

@FEW
@given(config=vit_configs(), seed=st.integers(0, 2**16))
def test_matches_the_reference_in_float64(config, seed):
    rv = pytest.importorskip("reference.vit")
    from reference.transformer import ACTIVATIONS as REFERENCE_ACTIVATIONS
    if config.hidden_act not in REFERENCE_ACTIVATIONS:  # the reference has relu and exact gelu
        config = dataclasses.replace(config, hidden_act="gelu")
    model = random_vit(config, seed)
    pixels = random_pixels(config, seed)
    weights = to_hf_state_dict(model, "vit")
    hf_config = dataclasses.asdict(config)
    expected = rv.vit_last_hidden_state(pixels, weights, hf_config)
    assert_close(model.forward_features(mv.tensor(pixels)), expected, rtol=1e-10)
    if config.num_classes:
        logits = rv.classification_head(expected, weights["classifier.weight"],
                                        weights["classifier.bias"])
        assert_close(model(mv.tensor(pixels)), logits, rtol=1e-10)


@FEW
@given(seed=st.integers(0, 2**16), patch=st.integers(1, 4), channels=st.integers(1, 3),
       grid=st.tuples(st.integers(1, 3), st.integers(1, 3)))
def test_patch_embedding_is_a_convolution_with_stride_equal_to_kernel(seed, patch, channels, grid):
    torch = pytest.importorskip("torch")
    embed = randomize_minivlm(PatchEmbedding(channels, 5, patch).to("float64"), seed)
    pixels = np.random.default_rng(seed).standard_normal((2, channels, grid[0] * patch,
                                                          grid[1] * patch))
    expected = torch.nn.functional.conv2d(torch.from_numpy(pixels),
                                          torch.from_numpy(embed.weight.numpy()),
                                          torch.from_numpy(embed.bias.numpy()), stride=patch)
    expected = expected.flatten(2).transpose(1, 2).numpy()  # (B, rows·cols, D), row-major
    assert_close(embed(mv.tensor(pixels)), expected, rtol=1e-12)


@FEW
@given(size_in=st.integers(1, 9), size_out=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_bicubic_matrix_resizes_as_torch_interpolate(size_in, size_out, seed):
    torch = pytest.importorskip("torch")
    image = np.random.default_rng(seed).standard_normal((1, 2, size_in, size_in))
    expected = torch.nn.functional.interpolate(torch.from_numpy(image), size=(size_out, size_in),
                                               mode="bicubic", align_corners=False).numpy()
    resize = bicubic_matrix(size_in, size_out, like=image)
    assert_close(resize @ image, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_each_activation_is_the_one_transformers_names_so(name):
    """ACTIVATIONS maps Hugging Face hidden_act names: each must compute what transformers'
    ACT2FN[name] computes (the exact and the tanh GELU differ by up to 4.7e-4, at |x| = 2.7)."""
    torch = pytest.importorskip("torch")
    transformers_activations = pytest.importorskip("transformers.activations")
    x = np.linspace(-6, 6, 241)
    expected = transformers_activations.ACT2FN[name](torch.from_numpy(x)).numpy()
    assert_close(ACTIVATIONS[name]()(mv.tensor(x)), expected, rtol=1e-12, atol=1e-15,
                 elementwise=True)


def test_gradients_match_transformers(tmp_path):
    """Logits and the gradient of every parameter against HF ViTForImageClassification."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from make_vision_fixtures import tiny_vit
    hf = tiny_vit(seed=3)
    hf.save_pretrained(tmp_path)
    hf.double()
    model = load_pretrained(tmp_path, dtype="float64")
    pixels = random_pixels(model.config, 3)
    expected = hf(torch.from_numpy(pixels)).logits
    expected.sum().backward()
    actual = model(mv.tensor(pixels))
    actual.sum().backward()
    assert_close(actual, expected.detach().numpy(), rtol=1e-10)
    assert_same_gradients(model, hf)


# --- configurations, parameter counts, errors --------------------------------------------------

def vit_parameter_count(patch, width, depth, mlp, image=224, channels=3, classes=1000):
    """Counted by hand: patch projection, class token, positions, per block two layer norms,
    q/k/v/out projections and the MLP, the final norm and the head."""
    patches = (image // patch) ** 2
    embedding = channels * patch * patch * width + width + width + (patches + 1) * width
    block = (2 * 2 * width + 4 * (width * width + width)
             + (width * mlp + mlp) + (mlp * width + width))
    return embedding + depth * block + 2 * width + width * classes + classes


def test_the_hand_count_counts_the_model():
    config = ViTConfig(image_size=12, patch_size=3, num_channels=2, hidden_size=8,
                       num_hidden_layers=2, num_attention_heads=2, intermediate_size=12,
                       num_classes=5)
    assert ViT(config).num_parameters() == vit_parameter_count(
        patch=3, width=8, depth=2, mlp=12, image=12, channels=2, classes=5)
    assert vit_parameter_count(patch=16, width=768, depth=12, mlp=3072) == 86_567_656


@pytest.mark.slow  # builds the models: 86M to 304M parameters
@pytest.mark.parametrize("make, patch, width, depth, mlp", [(vit_b16, 16, 768, 12, 3072),
                                                           (vit_b32, 32, 768, 12, 3072),
                                                           (vit_l16, 16, 1024, 24, 4096)])
def test_named_configurations_parameter_counts(make, patch, width, depth, mlp):
    assert ViT(make()).num_parameters() == vit_parameter_count(patch, width, depth, mlp)


def test_bad_inputs_name_the_problem():
    config = ViTConfig(image_size=8, patch_size=4, hidden_size=4, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=4, num_classes=0)
    model = ViT(config)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*multiples of 4.*\(1, 3, 10, 8\)"):
        model(mv.zeros(1, 3, 10, 8))
    with pytest.raises(ValueError, match=r"\(1, 1, 8, 8\)"):
        model(mv.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError,
                       match="12×8 does not match.*image_size 8.*interpolate_pos_encoding"):
        model(mv.zeros(1, 3, 12, 8))
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        ViTConfig(image_size=10, patch_size=4)
    with pytest.raises(ValueError, match="unknown hidden_act 'swish'"):
        ViTConfig(hidden_act="swish")
    with pytest.raises(ValueError, match="dim 4 is not divisible by num_heads 3"):
        ViT(dataclasses.replace(config, num_attention_heads=3))


def test_without_a_head_the_model_returns_the_final_class_token():
    config = ViTConfig(image_size=4, patch_size=2, hidden_size=4, num_hidden_layers=1,
                       num_attention_heads=1, intermediate_size=4, num_classes=0)
    model = random_vit(config, seed=0)
    pixels = mv.tensor(random_pixels(config, 0))
    assert_close(model(pixels), model.forward_features(pixels)[:, 0], rtol=0)

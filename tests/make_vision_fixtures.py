"""Write tests/fixtures/vit_tiny/ and tests/fixtures/swin_tiny/: tiny random-weight transformers
models (ViTForImageClassification, SwinForImageClassification), saved with save_pretrained
(config.json + model.safetensors), and expected.npz with inputs and what transformers computes
from them: last_hidden_state (of the ViTModel / SwinModel inside) and the classifier's logits.

The weights are drawn at scales that make every part matter (the Swin relative position bias
tables with std 1.5); the expected outputs are computed in float64 from the saved float32
weights and float32 pixels, so a float64 load can be compared at ~1e-12.

Swin: a 41×41 image in 2×2 patches (padded to 42), window 3: stage resolutions 21, 11 (padded
to 12), 6, 3, so three stages shift their windows and the last is one unshifted 3×3 window.
ViT: a second, non-square image checks the bicubic position-embedding interpolation.

    PYTHONPATH=. python tests/make_vision_fixtures.py     # needs torch and transformers

The tests import the helpers below (random weights, gradient comparison) for their live
comparisons.
"""
import math
from pathlib import Path

import numpy as np

from minivlm.testing import assert_close

FIXTURES = Path(__file__).with_name("fixtures")


def random_parameter(name, noise, bias_table_std=1.5):
    """A random value for the parameter called `name` (HF's or minivlm's name), from standard
    normal `noise` of its shape: matrices N(0, 1/fan_in), vectors N(0, 0.2²) (layer-norm scales
    1 + N(0, 0.2²)), position embeddings and class token N(0, 0.5²), relative position bias
    tables N(0, bias_table_std²)."""
    if "relative_position_bias_table" in name:
        return bias_table_std * noise
    if any(key in name for key in ("position_embeddings", "pos_embed", "cls_token")):
        return 0.5 * noise
    if noise.ndim >= 2:
        return noise / math.sqrt(math.prod(noise.shape[1:]))
    if "norm" in name and name.endswith("weight"):
        return 1 + 0.2 * noise
    return 0.2 * noise


def randomize(model, seed, bias_table_std=1.5):
    """Redraw every parameter of a transformers model in place (see random_parameter)."""
    import torch
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
            p.copy_(random_parameter(name, noise, bias_table_std))
    return model.eval()


def randomize_minivlm(model, seed, bias_table_std=1.5):
    """Redraw every parameter of a minivlm model in place (see random_parameter)."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        p.array[...] = random_parameter(name, rng.standard_normal(p.shape), bias_table_std)
    return model


def assert_same_gradients(model, hf_model):
    """Each parameter's gradient equals that of the HF parameter holding the same (random, so
    unique) values: transformers' in-memory names differ from its checkpoint names. (The key
    bias gets a zero gradient: softmax ignores a score added to every key.)"""
    hf_by_value = {p.detach().numpy().tobytes(): p for p in hf_model.parameters()}
    assert len(hf_by_value) == len(list(hf_model.parameters())) == len(list(model.parameters()))
    for p in model.parameters():
        assert_close(p.grad, hf_by_value[p.numpy().tobytes()].grad.numpy(), rtol=1e-10,
                     atol=1e-12)


def assert_float32_matches_float64(reference, model, pixels, backend):
    """model (a float32 copy of the float64 `reference`, on `backend`) gives the same logits and
    parameter gradients within 1e-3 relative."""
    import minivlm as mv
    expected = reference(mv.tensor(pixels))
    actual = model(mv.tensor(pixels.astype(np.float32), device=backend))
    assert actual.device == backend and actual.dtype == np.float32
    assert_close(actual, expected, rtol=1e-3, atol=1e-6)
    expected.backward(mv.ones_like(expected))
    actual.backward(mv.ones_like(actual))
    for p32, p64 in zip(model.parameters(), reference.parameters()):
        assert_close(p32.grad, p64.grad, rtol=1e-3, atol=1e-6)


def tiny_vit(seed=0):
    from transformers import ViTConfig, ViTForImageClassification
    config = ViTConfig(image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=32, num_labels=3)
    return randomize(ViTForImageClassification(config), seed)


def tiny_swin(seed=0):
    from transformers import SwinConfig, SwinForImageClassification
    config = SwinConfig(image_size=41, patch_size=2, embed_dim=4, depths=[2, 2, 2, 2],
                        num_heads=[1, 2, 2, 4], window_size=3, num_labels=5)
    return randomize(SwinForImageClassification(config), seed)


def backbone_and_logits(model, pixels, **kwargs):
    """(last_hidden_state, logits) as float64 NumPy arrays, computed in float64."""
    import copy

    import torch
    model = copy.deepcopy(model).double()
    pixels = pixels.astype(np.float64)
    backbone = model.vit if hasattr(model, "vit") else model.swin
    with torch.no_grad():
        pixels = torch.from_numpy(pixels)
        hidden = backbone(pixels, **kwargs).last_hidden_state.numpy()
        logits = model(pixels, **kwargs).logits.numpy()
    return hidden, logits


def main():
    import torch
    import transformers

    from minivlm.io import save_npz
    rng = np.random.default_rng(0)
    versions = np.array([f"torch {torch.__version__}", f"transformers {transformers.__version__}"])

    vit = tiny_vit()
    vit.save_pretrained(FIXTURES / "vit_tiny")
    pixels = rng.standard_normal((2, 3, 16, 16), dtype=np.float32)
    hidden, logits = backbone_and_logits(vit, pixels)
    pixels_other_size = rng.standard_normal((1, 3, 24, 20), dtype=np.float32)
    hidden_other_size, _ = backbone_and_logits(vit, pixels_other_size,
                                               interpolate_pos_encoding=True)
    save_npz(dict(pixels=pixels, last_hidden_state=hidden, logits=logits,
                  pixels_other_size=pixels_other_size,
                  last_hidden_state_other_size=hidden_other_size, versions=versions),
             FIXTURES / "vit_tiny" / "expected.npz")

    swin = tiny_swin()
    swin.save_pretrained(FIXTURES / "swin_tiny")
    pixels = rng.standard_normal((2, 3, 41, 41), dtype=np.float32)
    hidden, logits = backbone_and_logits(swin, pixels)
    save_npz(dict(pixels=pixels, last_hidden_state=hidden, logits=logits, versions=versions),
             FIXTURES / "swin_tiny" / "expected.npz")


if __name__ == "__main__":
    main()

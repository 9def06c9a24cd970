"""minivlm.models.text and minivlm.models.clip: gradients of the blocks, encoders and contrastive
loss (finite differences, tier 1), float32 on every backend against float64 (tier 2), a torch
re-statement of OpenAI's ResidualAttentionBlock, reference/clip.py's pseudocode and transformers'
CLIPModel forward and backward (tier 3); OpenAI's initialisation, the named configs, and the
errors on bad input. Loading checkpoints: test_clip_pretrained.py."""
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minivlm as mv
from make_vision_fixtures import randomize_minivlm
from minivlm.losses import clip_loss
from minivlm.models.clip import CLIP, CONFIGS, CLIPConfig, CLIPVisionConfig, clip_config
from minivlm.models.text import ResidualAttentionBlock, CLIPTextConfig
from minivlm.testing import assert_close, gradcheck
from reference import clip as reference

FEW = settings(max_examples=min(10, settings.default.max_examples), deadline=None)
FEWER = settings(max_examples=min(4, settings.default.max_examples), deadline=None)  # gradcheck
FIXTURES = Path(__file__).with_name("fixtures")


def tiny_config(activation="quick_gelu", resnet=False, eos_token_id=None):
    """Two heads of width 4 everywhere; 8×8 images in 4×4 patches (or a ResNet of width 2 on
    32×32 images), a 5-token context over an 11-token vocabulary, 6-wide embeddings."""
    if resnet:
        vision = CLIPVisionConfig(image_resolution=32, layers=(1, 1, 1, 1), width=2, heads=2)
    else:
        vision = CLIPVisionConfig(image_resolution=8, layers=1, width=8, patch_size=4, heads=2,
                                  mlp_width=5, activation=activation)
    text = CLIPTextConfig(context_length=5, vocab_size=11, width=8, layers=2, heads=2, mlp_width=7,
                          activation=activation, eos_token_id=eos_token_id)
    return CLIPConfig(embed_dim=6, vision=vision, text=text)


def random_clip(config, seed, dtype="float64"):
    """A CLIP with every parameter drawn at random (biases and norms too: a swapped term shows)."""
    mv.manual_seed(seed)
    return randomize_minivlm(CLIP(config).to(dtype), seed)


def random_inputs(config, seed, batch=3):
    """(pixels (batch, 3, R, R) float64, ids (batch, context_length) int64)."""
    rng = np.random.default_rng(seed)
    size = config.vision.image_resolution
    pixels = rng.standard_normal((batch, 3, size, size))
    ids = rng.integers(0, config.text.vocab_size, (batch, config.text.context_length))
    return pixels, ids


# --- tier 1: gradients ---------------------------------------------------------------------------

@FEWER
@given(seed=st.integers(0, 2**16), activation=st.sampled_from(["quick_gelu", "gelu"]))
def test_gradient_of_the_loss_wrt_every_parameter(seed, activation):
    config = tiny_config(activation)
    model = random_clip(config, seed)
    pixels, ids = random_inputs(config, seed)
    gradcheck(lambda **_: clip_loss(model(pixels, ids)[0]), dict(model.named_parameters()),
              n_directions=1, max_elements=1)


def test_gradient_of_the_loss_through_the_resnet_encoder():
    config = tiny_config(resnet=True)
    model = random_clip(config, seed=5).eval()  # batch norm from its running statistics
    pixels, ids = random_inputs(config, seed=5, batch=2)
    checked = ["logit_scale", "visual.conv1.weight", "visual.layer2.0.conv3.weight",
               "visual.attnpool.positional_embedding", "visual.attnpool.q_proj.weight",
               "visual.attnpool.c_proj.bias"]
    parameters = dict(model.named_parameters())
    gradcheck(lambda **_: clip_loss(model(pixels, ids)[0]),
              {name: parameters[name] for name in checked}, n_directions=2, max_elements=1)


@FEWER
@given(seed=st.integers(0, 2**16))
def test_gradient_wrt_the_pixels(seed):
    config = tiny_config()
    model = random_clip(config, seed)
    pixels, _ = random_inputs(config, seed, batch=2)
    gradcheck(lambda pixels: model.encode_image(pixels),
              [mv.tensor(pixels, requires_grad=True)], max_elements=0, n_directions=3)


@FEW
@given(logits=st.integers(1, 5).flatmap(
    lambda n: st.lists(st.floats(-30, 30), min_size=n * n, max_size=n * n).map(
        lambda values: np.array(values).reshape(n, n))))
def test_gradient_of_the_loss_wrt_the_logits(logits):
    gradcheck(clip_loss, [mv.tensor(logits, requires_grad=True)])


# --- tier 2: float32 on each backend against float64 --------------------------------------------

@FEW
@given(seed=st.integers(0, 2**16), activation=st.sampled_from(["quick_gelu", "gelu"]),
       resnet=st.booleans())
def test_float32_on_each_backend_matches_float64(backend, seed, activation, resnet):
    config = tiny_config(activation, resnet)
    reference_model = random_clip(config, seed).eval()
    model = random_clip(config, seed, dtype="float32").eval().to(backend)
    pixels, ids = random_inputs(config, seed)
    expected = clip_loss(reference_model(pixels, ids)[0])
    actual = clip_loss(model(mv.tensor(pixels.astype(np.float32), device=backend), ids)[0])
    assert actual.device == backend and actual.dtype == np.float32
    assert_close(actual, expected, rtol=1e-3)
    expected.backward()
    actual.backward()
    for (name, p32), p64 in zip(model.named_parameters(), reference_model.parameters()):
        assert_close(p32.grad, p64.grad, rtol=1e-3, atol=1e-6)


# --- tier 3: torch, reference/clip.py, transformers ----------------------------------------------

def torch_residual_attention_block(x, p, heads, activation, eps, causal):
    """OpenAI's ResidualAttentionBlock (model.py) in torch, batch first: x (N, L, W), p the
    block's parameters by name."""
    import torch
    import torch.nn.functional as tF
    width, length = x.shape[-1], x.shape[1]
    mask = torch.full((length, length), -math.inf, dtype=x.dtype).triu(1) if causal else None
    h = tF.layer_norm(x, (width,), p["ln_1.weight"], p["ln_1.bias"], eps).transpose(0, 1)
    attended, _ = tF.multi_head_attention_forward(
        h, h, h, width, heads, p["attn.in_proj_weight"], p["attn.in_proj_bias"], None, None,
        False, 0.0, p["attn.out_proj.weight"], p["attn.out_proj.bias"], need_weights=False,
        attn_mask=mask)
    x = x + attended.transpose(0, 1)
    h = tF.linear(tF.layer_norm(x, (width,), p["ln_2.weight"], p["ln_2.bias"], eps),
                  p["mlp.c_fc.weight"], p["mlp.c_fc.bias"])
    h = h * torch.sigmoid(1.702 * h) if activation == "quick_gelu" else tF.gelu(h)
    return x + tF.linear(h, p["mlp.c_proj.weight"], p["mlp.c_proj.bias"])


@FEW
@given(seed=st.integers(0, 2**16), heads=st.integers(1, 3), head_dim=st.integers(2, 4),
       mlp_width=st.integers(1, 9), length=st.integers(1, 5),
       activation=st.sampled_from(["quick_gelu", "gelu"]), causal=st.booleans(),
       eps=st.sampled_from([1e-5, 1e-6]))
def test_residual_attention_block_matches_torch(seed, heads, head_dim, mlp_width, length,
                                                activation, causal, eps):
    torch = pytest.importorskip("torch")
    width = heads * head_dim
    block = randomize_minivlm(ResidualAttentionBlock(width, heads, mlp_width, activation, eps,
                                                     causal).to("float64"), seed)
    x = np.random.default_rng(seed).standard_normal((2, length, width))
    params = {name: torch.tensor(p.numpy(), requires_grad=True)
              for name, p in block.named_parameters()}
    theirs_x = torch.tensor(x, requires_grad=True)
    theirs = torch_residual_attention_block(theirs_x, params, heads, activation, eps, causal)
    ours_x = mv.tensor(x, requires_grad=True)
    ours = block(ours_x)
    assert_close(ours, theirs.detach().numpy(), rtol=1e-12)
    grad = np.random.default_rng(seed + 1).standard_normal(x.shape)
    ours.backward(grad)
    theirs.backward(torch.from_numpy(grad))
    assert_close(ours_x.grad, theirs_x.grad.numpy(), rtol=1e-12)
    for name, p in block.named_parameters():
        assert_close(p.grad, params[name].grad.numpy(), rtol=1e-12, atol=1e-14)


@FEW
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 4))
def test_logits_and_loss_match_the_reference_pseudocode(seed, batch):
    """logits = exp(t)·cos(image, text) and the symmetric loss, as reference/clip.py: fed the
    encoders' projected features with W_i = W_t = I."""
    config = tiny_config()
    model = random_clip(config, seed)
    pixels, ids = random_inputs(config, seed, batch)
    I_e, T_e = model.encode_image(pixels).numpy(), model.encode_text(ids).numpy()
    identity, t = np.eye(config.embed_dim), model.logit_scale.item()
    logits_per_image, logits_per_text = model(pixels, ids)
    assert_close(logits_per_image, reference.clip_logits(I_e, T_e, identity, identity, t),
                 rtol=1e-12)
    assert_close(logits_per_text, logits_per_image.numpy().T, rtol=0)
    assert_close(clip_loss(logits_per_image),
                 reference.clip_loss(I_e, T_e, identity, identity, t), rtol=1e-12)


@FEW
@given(seed=st.integers(0, 2**16), n=st.integers(1, 6), scale=st.floats(0.1, 50))
def test_loss_and_its_gradient_match_a_torch_restatement(seed, n, scale):
    torch = pytest.importorskip("torch")
    logits = scale * np.random.default_rng(seed).standard_normal((n, n))
    theirs = torch.tensor(logits, requires_grad=True)
    labels = torch.arange(n)
    expected = (torch.nn.functional.cross_entropy(theirs, labels)
                + torch.nn.functional.cross_entropy(theirs.T, labels)) / 2
    expected.backward()
    ours = mv.tensor(logits, requires_grad=True)
    loss = clip_loss(ours)
    loss.backward()
    assert_close(loss, expected.item(), rtol=1e-12)
    assert_close(ours.grad, theirs.grad.numpy(), rtol=1e-12)


def test_loss_and_gradients_match_transformers_clip_model():
    """The fixture checkpoint in both libraries, float64: HF's return_loss (the same symmetric
    loss) and the gradient of every parameter (HF's q/k/v gradients stacked as in_proj)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from minivlm.pretrained import load_clip
    directory = FIXTURES / "clip_tiny"
    expected = np.load(directory / "expected.npz")
    pixels, ids = expected["pixels"], expected["input_ids"][:2]
    hf = transformers.CLIPModel.from_pretrained(directory).double()
    output = hf(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels).double(),
                return_loss=True)
    output.loss.backward()
    model = load_clip(directory, dtype="float64")
    loss = clip_loss(model(pixels, ids)[0])
    loss.backward()
    assert_close(loss, output.loss.item(), rtol=1e-12)
    grads = {name: p.grad.numpy() for name, p in hf.named_parameters()}
    parameters = dict(model.named_parameters())
    for hf_layer, ours in (("text_model.encoder.layers.1", "text.transformer.resblocks.1"),
                           ("vision_model.encoder.layers.0", "visual.transformer.resblocks.0")):
        stacked = np.concatenate([grads[f"{hf_layer}.self_attn.{p}_proj.weight"] for p in "qkv"])
        assert_close(parameters[f"{ours}.attn.in_proj_weight"].grad, stacked, rtol=1e-10)
        assert_close(parameters[f"{ours}.mlp.c_fc.weight"].grad,
                     grads[f"{hf_layer}.mlp.fc1.weight"], rtol=1e-10)
    for ours, theirs in (("text.token_embedding.weight",
                          "text_model.embeddings.token_embedding.weight"),
                         ("visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight"),
                         ("visual.class_embedding", "vision_model.embeddings.class_embedding"),
                         ("visual.ln_pre.weight", "vision_model.pre_layrnorm.weight"),
                         ("logit_scale", "logit_scale")):
        assert_close(parameters[ours].grad, grads[theirs], rtol=1e-10)
    assert_close(parameters["text.text_projection"].grad, grads["text_projection.weight"].T,
                 rtol=1e-10)
    assert_close(parameters["visual.proj"].grad, grads["visual_projection.weight"].T, rtol=1e-10)


# --- the text feature's position -----------------------------------------------------------------

def test_text_feature_is_read_at_the_highest_id_or_at_the_first_eos_token():
    """OpenAI (eos_token_id None) reads argmax(ids); with an eos_token_id, its first position.
    The feature at position p depends on tokens 0..p only (causal), so it changes with p."""
    ids = np.array([[1, 9, 4, 10, 10], [1, 3, 10, 2, 0]])
    by_argmax = random_clip(tiny_config(), seed=2)
    by_eos = random_clip(tiny_config(eos_token_id=4), seed=2)
    positions = {"argmax": [3, 2], "eos": [2, 2]}
    assert by_argmax.text.end_of_text_positions(ids).tolist() == positions["argmax"]
    with pytest.raises(ValueError, match=r"rows \[1\] hold no end-of-text token \(eos_token_id"):
        by_eos.encode_text(ids)
    ids[1, 2] = 4
    assert by_eos.text.end_of_text_positions(ids).tolist() == positions["eos"]
    # prefixes: the feature read at position p equals that of the sequence cut after p
    for model, where in ((by_argmax, positions["argmax"]), (by_eos, positions["eos"])):
        full = model.encode_text(ids).numpy()
        for row, p in enumerate(where):
            assert_close(full[row], model.encode_text(ids[row:row + 1, :p + 1]).numpy()[0],
                         rtol=1e-12)


# --- initialisation ------------------------------------------------------------------------------

def test_openai_initialisation():
    """The std of each parameter group, as OpenAI's CLIP.initialize_parameters and
    VisionTransformer.__init__: sample std and mean within 4 standard errors (std·√(1/2n) and
    std·√(1/n) for n samples)."""
    width, layers, vision_width = 64, 3, 96
    mv.manual_seed(0)
    model = CLIP(CLIPConfig(embed_dim=48,
                            vision=CLIPVisionConfig(image_resolution=64, layers=1,
                                                    width=vision_width, patch_size=4, heads=2),
                            text=CLIPTextConfig(vocab_size=1000, width=width, layers=layers,
                                                heads=2)))
    params = dict(model.named_parameters())
    proj_std = width ** -0.5 * (2 * layers) ** -0.5
    expected_std = {"text.token_embedding.weight": 0.02, "text.positional_embedding": 0.01,
                    "text.text_projection": width ** -0.5,
                    "visual.class_embedding": vision_width ** -0.5,
                    "visual.positional_embedding": vision_width ** -0.5,
                    "visual.proj": vision_width ** -0.5,
                    # torch's defaults: Xavier uniform in_proj, Kaiming uniform Linear
                    "visual.transformer.resblocks.0.attn.in_proj_weight":
                        math.sqrt(2 / (vision_width + 3 * vision_width)),
                    "visual.transformer.resblocks.0.mlp.c_fc.weight": (3 * vision_width) ** -0.5}
    for i in range(layers):
        block = f"text.transformer.resblocks.{i}"
        expected_std.update({f"{block}.attn.in_proj_weight": width ** -0.5,
                             f"{block}.attn.out_proj.weight": proj_std,
                             f"{block}.mlp.c_fc.weight": (2 * width) ** -0.5,
                             f"{block}.mlp.c_proj.weight": proj_std})
    for name, std in expected_std.items():
        values = params[name].numpy()
        assert abs(values.std() / std - 1) < 4 / math.sqrt(2 * values.size), (name, values.std())
        assert abs(values.mean()) < 4 * std / math.sqrt(values.size), (name, values.mean())
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07), rel=1e-7)
    for name, p in params.items():
        if name.endswith(("attn.in_proj_bias", "attn.out_proj.bias", "ln_1.bias")):
            assert not p.numpy().any(), name


def test_resnet_encoder_initialisation():
    """OpenAI's: the attention pool's projections N(0, 1/C), each block's last batch norm zero."""
    mv.manual_seed(0)
    model = CLIP(CLIPConfig(embed_dim=32, vision=CLIPVisionConfig(image_resolution=64,
                                                                  layers=(2, 1, 1, 1), width=4),
                            text=CLIPTextConfig(width=16, heads=2, layers=1)))
    pool = model.visual.attnpool
    for proj in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
        assert abs(proj.weight.numpy().std() * math.sqrt(128) - 1) < 0.05
    bn3 = [p for name, p in model.named_parameters() if name.endswith("bn3.weight")
           and ".layer" in name]
    assert len(bn3) == 5 and not any(p.numpy().any() for p in bn3)


def test_clamp_logit_scale_keeps_exp_at_most_100():
    model = random_clip(tiny_config(), seed=0)
    model.logit_scale.array[...] = 7.0
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == pytest.approx(math.log(100), rel=1e-12)
    model.logit_scale.array[...] = -1.0
    assert model.clamp_logit_scale_().logit_scale.item() == -1.0


# --- configs -------------------------------------------------------------------------------------

# (embed_dim, image_resolution, vision layers, vision width, vision heads, patch size,
#  text width, text heads) of the CLIP paper's Tables 19 and 20
PAPER = {"RN50": (1024, 224, (3, 4, 6, 3), 64, 32, None, 512, 8),
         "RN101": (512, 224, (3, 4, 23, 3), 64, 32, None, 512, 8),
         "RN50x4": (640, 288, (4, 6, 10, 6), 80, 40, None, 640, 10),
         "RN50x16": (768, 384, (6, 8, 18, 8), 96, 48, None, 768, 12),
         "RN50x64": (1024, 448, (3, 15, 36, 10), 128, 64, None, 1024, 16),
         "ViT-B/32": (512, 224, 12, 768, 12, 32, 512, 8),
         "ViT-B/16": (512, 224, 12, 768, 12, 16, 512, 8),
         "ViT-L/14": (768, 224, 24, 1024, 16, 14, 768, 12),
         "ViT-L/14@336px": (768, 336, 24, 1024, 16, 14, 768, 12)}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_named_configs_are_the_papers(name):
    config = clip_config(name)
    v, t = config.vision, config.text
    assert (config.embed_dim, v.image_resolution, v.layers, v.width, v.heads, v.patch_size,
            t.width, t.heads) == PAPER[name]
    assert (t.context_length, t.vocab_size, t.layers, t.activation) == (77, 49408, 12,
                                                                        "quick_gelu")
    assert clip_config(name) is not clip_config(name)  # a fresh copy each time


def test_configs_round_trip_through_dicts():
    for name in CONFIGS:
        config = clip_config(name)
        assert CLIPConfig(**dataclasses.asdict(config)) == config


@pytest.mark.slow
def test_vit_b32_has_openais_parameter_count():
    """151,277,313 parameters: text 63,428,096 (token embedding 49,408·512, positions 77·512,
    12 blocks of 3,152,384, ln_final, projection 512·512) + image 87,849,216 (conv 768·3·32²,
    class token, 50 positions, ln_pre, 12 blocks of 7,087,872, ln_post, projection 768·512) + 1."""
    assert CLIP(clip_config("ViT-B/32")).num_parameters() == 151_277_313


def test_tiny_config_reads_32_pixel_images_and_16_token_captions():
    model = CLIP(clip_config("tiny"))
    pixels = np.zeros((2, 3, 32, 32), dtype=np.float32)
    ids = np.array([[49406, 320, 49407] + [0] * 13] * 2)
    assert model(pixels, ids)[0].shape == (2, 2)


# --- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 8, 7), (2, 1, 8, 8), (3, 8, 8), (2, 4, 8, 8)])
def test_images_of_the_wrong_shape_are_rejected(shape):
    model = random_clip(tiny_config(), seed=0)
    with pytest.raises(ValueError, match=rf"expected images of shape \(batch, 3, 8, 8\), got "
                                         rf"shape {re_tuple(shape)}"):
        model.encode_image(np.zeros(shape))


def re_tuple(shape):
    return "\\(" + ", ".join(map(str, shape)) + "\\)"


@pytest.mark.parametrize("ids, error, message", [
    ([[1, 2, 11]], ValueError, r"must lie in \[0, vocab_size=11\), got values in \[1, 11\]"),
    ([[-1, 2, 3]], ValueError, r"got values in \[-1, 3\]"),
    ([[1, 2, 3, 4, 5, 6]], ValueError, r"length <= context_length=5, got shape \(1, 6\)"),
    ([1, 2, 3], ValueError, r"got shape \(3,\)"),
    ([[1.0, 2.0]], TypeError, "expected integer token ids, got float64"),
])
def test_bad_token_ids_are_rejected(ids, error, message):
    model = random_clip(tiny_config(), seed=0)
    with pytest.raises(error, match=message):
        model.encode_text(np.array(ids))


def test_loss_needs_square_logits():
    with pytest.raises(ValueError, match=r"square logits .* got shape \(2, 3\)"):
        clip_loss(mv.zeros(2, 3))


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="image_resolution=30 is not a multiple of patch_size 8"):
        CLIPVisionConfig(image_resolution=30, patch_size=8)
    with pytest.raises(ValueError, match="width=10 is not divisible by heads=3"):
        CLIPTextConfig(width=10, heads=3)
    with pytest.raises(ValueError, match="unknown hidden_act 'swish'"):
        CLIPTextConfig(activation="swish")
    with pytest.raises(ValueError, match="unknown CLIP config 'ViT-H/14'; available: RN50, "):
        clip_config("ViT-H/14")

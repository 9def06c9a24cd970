"""minivlm.pretrained (CLIP), minivlm.preprocess and the zero-shot command, against
transformers: the committed fixtures (made by make_clip_fixtures.py, always run), live
CLIPModels on hypothesis-drawn configs, OpenAI-named checkpoints (names mapped in this file),
CLIPImageProcessor, and the errors for checkpoints that do not fit."""
import contextlib
import io as text_io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st
from PIL import Image

from make_clip_fixtures import hf_clip, hf_outputs
from make_vision_fixtures import randomize_minivlm
from minivlm import io
from minivlm.__main__ import main
from minivlm.models.clip import CLIP, CLIPConfig, CLIPVisionConfig
from minivlm.pretrained import load_clip
from minivlm.pretrained.clip import save_clip
from minivlm.models.text import CLIPTextConfig
from minivlm.preprocess import MEAN, STD, center_crop, preprocess
from minivlm.pretrained import load_pretrained
from minivlm.testing import assert_close
from minivlm.tokenizers import CLIPTokenizer
from reference import clip as reference

FIXTURES = Path(__file__).with_name("fixtures")
FEW = settings(max_examples=min(8, settings.default.max_examples), deadline=None)
TOLERANCE = {"float32": 1e-5, "float64": 1e-10}  # relative ‖a−b‖/‖b‖ against float64 outputs


def outputs(model, pixels, ids):
    return dict(image_features=model.encode_image(pixels), text_features=model.encode_text(ids),
                logits_per_image=model(pixels, ids)[0])


def assert_outputs_close(model, expected, dtype):
    pixels, ids = expected["pixels"], expected["input_ids"]
    for name, actual in outputs(model, pixels, ids).items():
        assert actual.dtype == dtype
        assert_close(actual, expected[name], rtol=TOLERANCE[dtype])


# --- Hugging Face directories --------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["clip_tiny", "clip_tiny_gelu"])
def test_committed_fixtures_give_transformers_outputs(name, dtype):
    """clip_tiny: QuickGELU, F32, feature at argmax(ids); clip_tiny_gelu: GELU, BF16 weights,
    feature at the first eos_token_id (argmax would read elsewhere)."""
    model = load_clip(FIXTURES / name, dtype=dtype)
    assert not model.training
    assert_outputs_close(model, np.load(FIXTURES / name / "expected.npz"), dtype)


def test_load_pretrained_knows_clip():
    model = load_pretrained(FIXTURES / "clip_tiny_gelu", dtype="float64")
    assert isinstance(model, CLIP) and model.config.text.eos_token_id == 10
    assert_outputs_close(model, np.load(FIXTURES / "clip_tiny_gelu" / "expected.npz"), "float64")


@st.composite
def hf_configs(draw):
    """(text, vision, projection_dim) keyword arguments of tiny transformers CLIP configs."""
    def tower():
        heads, head_dim = draw(st.integers(1, 3)), draw(st.integers(2, 5))
        return dict(hidden_size=heads * head_dim, num_attention_heads=heads,
                    intermediate_size=draw(st.integers(1, 9)),
                    num_hidden_layers=draw(st.integers(1, 2)),
                    hidden_act=draw(st.sampled_from(["quick_gelu", "gelu"])),
                    layer_norm_eps=draw(st.sampled_from([1e-5, 1e-6])))
    vocab_size = draw(st.integers(3, 20))
    eos = draw(st.sampled_from([2, vocab_size - 1, vocab_size // 2]))
    text = dict(tower(), vocab_size=vocab_size, max_position_embeddings=draw(st.integers(2, 8)),
                eos_token_id=eos, bos_token_id=0, pad_token_id=0)
    patch = draw(st.integers(1, 4))
    vision = dict(tower(), patch_size=patch, image_size=patch * draw(st.integers(1, 3)))
    return text, vision, draw(st.integers(1, 6))


@FEW
@given(config=hf_configs(), dtype=st.sampled_from(["float32", "float16", "bfloat16"]),
       seed=st.integers(0, 2**16))
def test_live_transformers_models_load_and_match(config, dtype, seed):
    """A random CLIPModel saved with save_pretrained in F32, F16 or BF16: our float64 features
    and logits equal transformers' in float64, from the same (widened) weights."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    text, vision, projection_dim = config
    hf = hf_clip(text, vision, projection_dim, seed, dtype)
    rng = np.random.default_rng(seed)
    length = text["max_position_embeddings"]
    ids = rng.integers(0, text["vocab_size"], (3, length))
    ids[np.arange(3), rng.integers(0, length, 3)] = text["eos_token_id"]  # each row has one
    pixels = rng.standard_normal((2, 3, vision["image_size"], vision["image_size"]))
    expected = dict(hf_outputs(hf, pixels, ids), pixels=pixels, input_ids=ids)
    with tempfile.TemporaryDirectory() as directory:
        hf.save_pretrained(directory)
        model = load_clip(directory, dtype="float64")
    assert_outputs_close(model, expected, "float64")


# --- OpenAI-named checkpoints --------------------------------------------------------------------

HF_TO_OPENAI = [  # (Hugging Face name part, OpenAI's), applied in this order
    ("text_model.embeddings.position_embedding.weight", "positional_embedding"),
    ("text_model.embeddings.", ""),
    ("text_model.encoder.layers.", "transformer.resblocks."),
    ("text_model.final_layer_norm", "ln_final"),
    ("text_projection.weight", "text_projection"),
    ("vision_model.embeddings.class_embedding", "visual.class_embedding"),
    ("vision_model.embeddings.patch_embedding", "visual.conv1"),
    ("vision_model.embeddings.position_embedding.weight", "visual.positional_embedding"),
    ("vision_model.pre_layrnorm", "visual.ln_pre"),
    ("vision_model.encoder.layers.", "visual.transformer.resblocks."),
    ("vision_model.post_layernorm", "visual.ln_post"),
    ("visual_projection.weight", "visual.proj"),
    ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("self_attn.out_proj", "attn.out_proj"),
    ("self_attn.in_proj.", "attn.in_proj_"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
]


def openai_name(hf_name):
    """A Hugging Face CLIPModel name -> OpenAI's (model.py), written independently of
    minivlm.pretrained.clip's tables."""
    for hf_part, openai_part in HF_TO_OPENAI:
        hf_name = hf_name.replace(hf_part, openai_part)
    return hf_name


def to_openai(hf_checkpoint):
    """{HF name: array} -> {OpenAI name: array}: q, k, v stacked into attn.in_proj_weight and
    in_proj_bias, the projections transposed (OpenAI multiplies x @ proj), position_ids dropped."""
    state = {}
    for name, array in hf_checkpoint.items():
        if ".k_proj." in name or ".v_proj." in name or name.endswith("position_ids"):
            continue
        if ".q_proj." in name:
            array = np.concatenate([hf_checkpoint[name.replace(".q_proj.", f".{p}_proj.")]
                                    for p in "qkv"])
            name = name.replace(".q_proj.", ".in_proj.")
        target = openai_name(name)
        state[target] = array.T if target in ("text_projection", "visual.proj") else array
    return state


def fixture_config():
    """clip_tiny's hyperparameters, written out (its heads do not follow OpenAI's width // 64)."""
    return CLIPConfig(16, CLIPVisionConfig(image_resolution=32, layers=2, width=40, patch_size=8,
                                           heads=4),
                      CLIPTextConfig(context_length=77, vocab_size=18, width=24, layers=2, heads=2))


def test_openai_named_checkpoint_gives_transformers_outputs(tmp_path):
    """The clip_tiny fixture renamed to OpenAI's names by this file's own mapping."""
    path = tmp_path / "openai.safetensors"
    hf_checkpoint = io.load_safetensors(FIXTURES / "clip_tiny" / "model.safetensors")
    io.save_safetensors(to_openai(hf_checkpoint), path)
    model = load_clip(path, dtype="float64", config=fixture_config())
    assert_outputs_close(model, np.load(FIXTURES / "clip_tiny" / "expected.npz"), "float64")


def test_save_clip_writes_openais_names_and_reads_back(tmp_path):
    model = load_clip(FIXTURES / "clip_tiny_gelu")
    save_clip(model, tmp_path / "clip.safetensors")
    saved = io.load_safetensors(tmp_path / "clip.safetensors")
    hf = io.load_safetensors(FIXTURES / "clip_tiny_gelu" / "model.safetensors")
    assert set(saved) == set(to_openai(hf))
    reloaded = load_clip(tmp_path / "clip.safetensors")
    assert reloaded.config == model.config  # GELU, eps 1e-6, eos_token_id kept by the metadata
    assert_outputs_close(reloaded, np.load(FIXTURES / "clip_tiny_gelu" / "expected.npz"),
                         "float32")


@pytest.mark.parametrize("vision", [
    CLIPVisionConfig(image_resolution=32, layers=2, width=64, patch_size=16, mlp_width=72),
    CLIPVisionConfig(image_resolution=64, layers=(1, 2, 1, 1), width=2)])
def test_config_is_inferred_from_openai_shapes(tmp_path, vision):
    """Without metadata, the config comes from the shapes (OpenAI's build_model): widths, layer
    and block counts, resolution, patch size, context, vocabulary, embed_dim; heads by OpenAI's
    rule, which these configs follow."""
    config = CLIPConfig(48, vision, CLIPTextConfig(context_length=9, vocab_size=30, width=64,
                                                   layers=3, heads=1, mlp_width=100))
    model = randomize_minivlm(CLIP(config), seed=0)
    save_clip(model, tmp_path / "with_metadata.safetensors")
    io.save_safetensors(io.load_safetensors(tmp_path / "with_metadata.safetensors"),
                        tmp_path / "plain.safetensors")
    assert io.read_safetensors_metadata(tmp_path / "plain.safetensors") == {}
    loaded = load_clip(tmp_path / "plain.safetensors")
    assert loaded.config == config
    pixels = np.random.default_rng(0).standard_normal((1, 3, vision.image_resolution,
                                                       vision.image_resolution))
    ids = np.array([[3, 29, 4, 0, 0]])
    for name, actual in outputs(loaded, pixels, ids).items():
        assert_close(actual, outputs(model.eval(), pixels, ids)[name], rtol=1e-6)


# --- checkpoints that do not fit -----------------------------------------------------------------

def copy_fixture(tmp_path, edit):
    """clip_tiny in tmp_path with its tensors changed by edit({name: array})."""
    checkpoint = io.load_safetensors(FIXTURES / "clip_tiny" / "model.safetensors")
    edit(checkpoint)
    io.save_safetensors(checkpoint, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((FIXTURES / "clip_tiny" / "config.json").read_text())
    return tmp_path


def test_missing_extra_and_misshaped_tensors_are_all_listed(tmp_path):
    def edit(checkpoint):
        del checkpoint["text_model.final_layer_norm.bias"]
        checkpoint["vision_model.extra.weight"] = np.zeros(3, np.float32)
        checkpoint["visual_projection.weight"] = np.zeros((16, 41), np.float32)
        del checkpoint["vision_model.encoder.layers.1.self_attn.k_proj.bias"]
    with pytest.raises(ValueError) as error:
        load_clip(copy_fixture(tmp_path, edit))
    message = str(error.value)
    for expected in ["tensors with no entry in the name table: ", "vision_model.extra.weight",
                     "vision_model.encoder.layers.1.self_attn.q_proj.bias",
                     "missing tensors: ", "text_model.final_layer_norm.bias",
                     "vision_model.encoder.layers.1.self_attn.in_proj.bias",  # q, k, v stacked
                     "visual_projection.weight has shape (41, 16) in the checkpoint but (40, 16)"]:
        assert expected in message


def test_bad_paths_and_configs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such CLIP checkpoint"):
        load_clip(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        load_clip(tmp_path)
    config = json.loads((FIXTURES / "clip_tiny" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "vit"}))
    with pytest.raises(ValueError, match="expected a Hugging Face config with model_type 'clip', "
                                         "got 'vit'"):
        load_clip(tmp_path)
    io.save_safetensors({"visual.proj": np.zeros((4, 2), np.float32)}, tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="holds no 'ln_final.weight'"):
        load_clip(tmp_path / "x.safetensors")
    hf_checkpoint = io.load_safetensors(FIXTURES / "clip_tiny" / "model.safetensors")
    io.save_safetensors(to_openai(hf_checkpoint), tmp_path / "narrow.safetensors")
    with pytest.raises(ValueError, match="attention 24 wide: .* pass config= to load_clip"):
        load_clip(tmp_path / "narrow.safetensors")


# --- image preprocessing -------------------------------------------------------------------------

def random_image(seed, width, height, mode):
    rng = np.random.default_rng(seed)
    channels = (height, width) if mode == "L" else (height, width, 3)
    return Image.fromarray(rng.integers(0, 256, channels, dtype=np.uint8), mode=mode)


def clip_image_processor(size):
    """transformers' CLIPImageProcessor with the PIL backend (what it falls back to without
    torchvision), resizing the shortest side to `size` and cropping size×size."""
    transformers = pytest.importorskip("transformers")
    processor_class = getattr(transformers, "CLIPImageProcessorPil", None)
    return (processor_class or transformers.CLIPImageProcessor)(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def crop_offsets_agree(width, height, size):
    """Whether torchvision's round-half-even and HF's floor give the same crop offsets."""
    short = min(width, height)
    long_side = int(size * max(width, height) / short)
    return (long_side - size) % 4 != 3


@FEW
@given(width=st.integers(8, 90), height=st.integers(8, 90), size=st.integers(4, 40),
       mode=st.sampled_from(["RGB", "L"]), seed=st.integers(0, 2**16))
def test_preprocess_matches_clip_image_processor(width, height, size, mode, seed):
    """Equal to transformers' CLIPImageProcessor (PIL backend) within 1e-6 (observed: exactly),
    where the two centre crops agree (see crop_offsets_agree)."""
    assume(crop_offsets_agree(width, height, size))
    image = random_image(seed, width, height, mode)
    processor = clip_image_processor(size)
    expected = processor(images=image, return_tensors="np")["pixel_values"][0]
    actual = preprocess(image, size)
    assert actual.dtype == np.float32 and actual.shape == (3, size, size)
    assert np.abs(actual - expected).max() <= 1e-6


def test_centre_crop_rounds_half_to_even_as_torchvision():
    """A 27-wide image cropped to 24: (27 − 24) / 2 = 1.5 rounds to 2 (torchvision); HF's
    floor gives 1. Pixel values are column numbers, so the crop's first value is its offset."""
    columns = np.tile(np.arange(27, dtype=np.uint8), (24, 1))
    crop = np.asarray(center_crop(Image.fromarray(columns), 24))
    assert crop[0, 0] == 2 and crop.shape == (24, 24)
    crop = np.asarray(center_crop(Image.fromarray(columns[:, :26]), 24))
    assert crop[0, 0] == 1


def test_to_pixels_normalises_by_clips_mean_and_std():
    pixels = preprocess(Image.new("RGB", (5, 5), (255, 0, 51)), image_size=5)
    expected = (np.array([1.0, 0.0, 0.2]) - MEAN) / STD
    assert_close(pixels[:, 2, 2], expected, rtol=1e-6)


# --- the zero-shot command -----------------------------------------------------------------------

def run_zero_shot(model_path, images, labels, template=None):
    """Run the command (without --template when template is None); {image: {label:
    probability}} from what it prints."""
    out = text_io.StringIO()
    given = [] if template is None else ["--template", template]
    with contextlib.redirect_stdout(out):
        assert main(["zero-shot", "--model", str(model_path), "--image", *map(str, images),
                     "--labels", labels, *given]) == 0
    result, current = {}, None
    for line in out.getvalue().splitlines():
        if not line.startswith("  "):
            current = result.setdefault(line, {})
        else:
            label, probability = line.rsplit(maxsplit=1)
            current[label.strip()] = float(probability)
    return result


def write_images(tmp_path):
    paths = [tmp_path / "a.png", tmp_path / "b.jpg"]
    random_image(1, 40, 30, "RGB").save(paths[0])
    random_image(2, 32, 48, "L").save(paths[1])
    return paths


@pytest.mark.parametrize("template, caption", [
    ("a {} in a photo", "a {} in a photo"),
    (None, "a photo of a {}."),     # the default: the CLIP paper's prompt, section 3.1.4
])
def test_zero_shot_prints_softmax_of_scaled_cosines(tmp_path, template, caption):
    """Probabilities = softmax(exp(logit_scale)·cos) from reference/clip.py, fed our encoders'
    features of the preprocessed images and the tokenized captions."""
    config = CLIPConfig(8, CLIPVisionConfig(image_resolution=32, layers=1, width=8, patch_size=16,
                                            heads=2),
                        CLIPTextConfig(context_length=12, width=8, layers=1, heads=2))
    model = randomize_minivlm(CLIP(config).eval(), seed=3)
    save_clip(model, tmp_path / "clip.safetensors")
    images = write_images(tmp_path)
    printed = run_zero_shot(tmp_path / "clip.safetensors", images, "cat, dog,red car", template)
    labels = ["cat", "dog", "red car"]
    pixels = np.stack([preprocess(Image.open(path), 32) for path in images])
    ids = CLIPTokenizer()([caption.format(label) for label in labels], context_length=12)
    logits = reference.clip_logits(model.encode_image(pixels).numpy(),
                                   model.encode_text(ids).numpy(), np.eye(8), np.eye(8),
                                   model.logit_scale.item())
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for path, row in zip(images, expected):
        assert list(printed[str(path)]) == [labels[i] for i in row.argsort()[::-1]]
        for label, probability in zip(labels, row):
            assert printed[str(path)][label] == pytest.approx(probability, abs=6e-5)


def test_zero_shot_matches_transformers_end_to_end(tmp_path):
    """A random transformers CLIPModel with CLIP's vocabulary: our command against
    CLIPImageProcessor + the model's logits_per_image.softmax (ids from our tokenizer)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    text = dict(hidden_size=8, intermediate_size=12, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16)
    vision = dict(hidden_size=8, intermediate_size=12, num_hidden_layers=1,
                  num_attention_heads=2, image_size=32, patch_size=16)
    hf = hf_clip(text, vision, projection_dim=8, seed=4)
    hf.save_pretrained(tmp_path / "hf")
    images = write_images(tmp_path)
    printed = run_zero_shot(tmp_path / "hf", images, "cat,dog", "a photo of a {}.")
    pixels = clip_image_processor(32)(images=[Image.open(p) for p in images],
                                      return_tensors="pt")["pixel_values"]
    ids = CLIPTokenizer()(["a photo of a cat.", "a photo of a dog."], context_length=16)
    with torch.no_grad():
        logits = hf(input_ids=torch.from_numpy(ids), pixel_values=pixels).logits_per_image
    for path, row in zip(images, logits.softmax(dim=-1).numpy()):
        assert [printed[str(path)][label] for label in ("cat", "dog")] == pytest.approx(
            row.tolist(), abs=6e-5)

"""minivlm.pretrained.load_pretrained for ViT, Swin and Swin-V2: the committed transformers
fixtures (no torch needed), live comparisons with transformers on drawn configurations, F16/BF16 and sharded
checkpoints, and the errors for checkpoints that do not fit."""
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minivlm as mv
from minivlm.io import load_safetensors, save_safetensors
from minivlm.models import SwinTransformer, SwinTransformerV2, ViT
from minivlm.pretrained import ARCHITECTURES, load_pretrained
from minivlm.testing import assert_close

FIXTURES = Path(__file__).with_name("fixtures")
LIVE = settings(max_examples=min(6, settings.default.max_examples), deadline=None)


def expected_outputs(name):
    return dict(np.load(FIXTURES / name / "expected.npz"))


# --- the committed fixtures ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 1e-4)])
def test_vit_fixture_matches_transformers(dtype, rtol):
    expected = expected_outputs("vit_tiny")
    model = load_pretrained(FIXTURES / "vit_tiny", dtype=dtype)
    assert isinstance(model, ViT) and not model.training
    pixels = mv.tensor(expected["pixels"].astype(dtype))
    assert_close(model.forward_features(pixels), expected["last_hidden_state"], rtol=rtol)
    assert_close(model(pixels), expected["logits"], rtol=rtol)
    other_size = mv.tensor(expected["pixels_other_size"].astype(dtype))
    assert_close(model.forward_features(other_size, interpolate_pos_encoding=True),
                 expected["last_hidden_state_other_size"], rtol=rtol)


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 1e-4)])
def test_swin_fixture_matches_transformers(dtype, rtol):
    expected = expected_outputs("swin_tiny")
    model = load_pretrained(FIXTURES / "swin_tiny", dtype=dtype)
    assert isinstance(model, SwinTransformer) and not model.training
    pixels = mv.tensor(expected["pixels"].astype(dtype))
    assert_close(model.forward_features(pixels), expected["last_hidden_state"], rtol=rtol)
    assert_close(model(pixels), expected["logits"], rtol=rtol)


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 1e-4)])
def test_swinv2_fixture_matches_transformers(dtype, rtol):
    """Swinv2Model's last_hidden_state and pooler_output (the mean token), and the logits."""
    expected = expected_outputs("swinv2_tiny")
    model = load_pretrained(FIXTURES / "swinv2_tiny", dtype=dtype)
    assert type(model) is SwinTransformerV2 and not model.training
    assert model.config.pretrained_window_sizes == (0, 4, 0)
    pixels = mv.tensor(expected["pixels"].astype(dtype))
    features = model.forward_features(pixels)
    assert_close(features, expected["last_hidden_state"], rtol=rtol)
    assert_close(features.mean(dim=1), expected["pooler_output"], rtol=rtol)
    assert_close(model(pixels), expected["logits"], rtol=rtol)


@pytest.mark.parametrize("name", ["vit_tiny", "swin_tiny", "swinv2_tiny"])
def test_save_pretrained_writes_what_load_pretrained_and_transformers_read(name, tmp_path):
    """A fixture loaded, saved by minivlm and read back: by minivlm (exactly the same model) and
    by transformers' *ForImageClassification (the fixture's logits)."""
    expected = expected_outputs(name)
    model = load_pretrained(FIXTURES / name, dtype="float64")
    labels = "abcde"[:expected["logits"].shape[-1]]
    mv.save_pretrained(model, tmp_path, {"id2label": dict(enumerate(labels))})
    pixels = mv.tensor(expected["pixels"].astype("float64"))
    np.testing.assert_array_equal(load_pretrained(tmp_path, dtype="float64")(pixels).numpy(),
                                  model(pixels).numpy())
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    theirs_class = {"vit_tiny": transformers.ViTForImageClassification,
                    "swin_tiny": transformers.SwinForImageClassification,
                    "swinv2_tiny": transformers.Swinv2ForImageClassification}[name]
    theirs = theirs_class.from_pretrained(tmp_path).double().eval()
    assert theirs.config.id2label[2] == "c" and theirs.config.num_labels == len(labels)
    with torch.no_grad():
        logits = theirs(pixel_values=torch.from_numpy(expected["pixels"].astype("float64")))
    assert_close(logits.logits.numpy(), expected["logits"], rtol=1e-10)


@pytest.mark.parametrize("name", ["vit_tiny", "swin_tiny"])
def test_half_precision_checkpoints_load(name, tmp_path):
    """F16 and BF16 copies of a fixture load as their values widened to float32 (F16 exactly;
    BF16 within its 8-bit mantissa) and give nearly the same outputs."""
    checkpoint = load_safetensors(FIXTURES / name / "model.safetensors")
    expected = expected_outputs(name)
    pixels = mv.tensor(expected["pixels"])
    for precision, (stored, bfloat16, rtol) in {
            "F16": ({k: v.astype(np.float16) for k, v in checkpoint.items()}, (), 1e-2),
            "BF16": (checkpoint, tuple(checkpoint), 5e-2)}.items():
        directory = tmp_path / precision
        directory.mkdir()
        shutil.copy(FIXTURES / name / "config.json", directory)
        save_safetensors(stored, directory / "model.safetensors", bfloat16=bfloat16)
        model = load_pretrained(directory)
        hf_name = name.replace("_tiny", ".") + "embeddings.patch_embeddings.projection.weight"
        loaded = model.patch_embed.weight.numpy()
        assert loaded.dtype == np.float32
        if precision == "F16":
            np.testing.assert_array_equal(loaded, checkpoint[hf_name].astype(np.float16))
        else:
            np.testing.assert_allclose(loaded, checkpoint[hf_name], rtol=2 ** -8)
            assert not np.array_equal(loaded, checkpoint[hf_name])
        assert_close(model.forward_features(pixels), expected["last_hidden_state"], rtol=rtol)


def test_a_sharded_checkpoint_loads(tmp_path):
    checkpoint = load_safetensors(FIXTURES / "swin_tiny" / "model.safetensors")
    names = sorted(checkpoint)
    shards = {"model-00001-of-00002.safetensors": names[::2],
              "model-00002-of-00002.safetensors": names[1::2]}
    for shard, shard_names in shards.items():
        save_safetensors({n: checkpoint[n] for n in shard_names}, tmp_path / shard)
    weight_map = {n: shard for shard, shard_names in shards.items() for n in shard_names}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    shutil.copy(FIXTURES / "swin_tiny" / "config.json", tmp_path)
    expected = expected_outputs("swin_tiny")
    model = load_pretrained(tmp_path, dtype="float64")
    assert_close(model(mv.tensor(expected["pixels"].astype("float64"))), expected["logits"],
                 rtol=1e-10)


# --- live: transformers on drawn configurations ------------------------------------------------

@st.composite
def hf_vit_configs(draw):
    """Keyword arguments of a tiny transformers ViTConfig, and whether it gets a classifier."""
    heads = draw(st.integers(1, 3))
    patch = draw(st.integers(1, 4))
    return dict(image_size=patch * draw(st.integers(1, 4)), patch_size=patch,
                num_channels=draw(st.integers(1, 3)), hidden_size=heads * draw(st.integers(2, 4)),
                num_hidden_layers=draw(st.integers(1, 2)), num_attention_heads=heads,
                intermediate_size=draw(st.integers(1, 9)),
                hidden_act=draw(st.sampled_from(["gelu", "gelu_new", "relu", "quick_gelu"])),
                layer_norm_eps=draw(st.sampled_from([1e-12, 1e-6])), qkv_bias=draw(st.booleans()),
                num_labels=draw(st.integers(1, 4))), draw(st.booleans())


@st.composite
def hf_swin_configs(draw):
    """Keyword arguments of a tiny transformers SwinConfig (every stage at least as large as the
    window, as transformers needs), and whether it gets a classifier."""
    stages = draw(st.integers(1, 3))
    window = draw(st.integers(1, 3))
    patch = draw(st.integers(1, 3))
    smallest_first_side = window * 2 ** (stages - 1)
    first_side = draw(st.integers(smallest_first_side, smallest_first_side + 6))
    image = first_side * patch - draw(st.integers(0, patch - 1))  # padded up to whole patches
    heads = draw(st.integers(1, 2))
    return dict(image_size=image, patch_size=patch, num_channels=draw(st.integers(1, 3)),
                embed_dim=2 * heads, depths=[draw(st.integers(1, 2)) for _ in range(stages)],
                num_heads=[heads * 2 ** i for i in range(stages)], window_size=window,
                mlp_ratio=draw(st.sampled_from([1.0, 2.0])), qkv_bias=draw(st.booleans()),
                hidden_act=draw(st.sampled_from(["gelu", "relu"])),
                layer_norm_eps=draw(st.sampled_from([1e-5, 1e-6])),
                num_labels=draw(st.integers(1, 4))), draw(st.booleans())


@st.composite
def hf_swinv2_configs(draw):
    """Keyword arguments of a tiny transformers Swinv2Config whose stages halve exactly (its
    windows are fixed from the configured size: see SwinTransformerV2) and whose last stage may be
    smaller than the window, pre-training windows among them, and whether it gets a classifier."""
    stages, window, patch = (draw(st.integers(1, 3)) for _ in range(3))
    last_side = draw(st.integers(1, window + 2))
    heads = draw(st.integers(1, 2))
    return dict(image_size=last_side * 2 ** (stages - 1) * patch, patch_size=patch,
                num_channels=draw(st.integers(1, 3)), embed_dim=2 * heads,
                depths=[draw(st.integers(1, 2)) for _ in range(stages)],
                num_heads=[heads * 2 ** i for i in range(stages)], window_size=window,
                pretrained_window_sizes=[draw(st.sampled_from([0, 2, 5])) for _ in range(stages)],
                mlp_ratio=draw(st.sampled_from([1.0, 2.0])), qkv_bias=draw(st.booleans()),
                hidden_act=draw(st.sampled_from(["gelu", "relu"])),
                layer_norm_eps=draw(st.sampled_from([1e-5, 1e-6])),
                num_labels=draw(st.integers(1, 4))), draw(st.booleans())


def check_against_transformers(hf_model, pixels):
    """Save a random transformers model, load it with minivlm in float64, and compare
    last_hidden_state (and logits when it has a classifier)."""
    torch = pytest.importorskip("torch")
    classifier = hasattr(hf_model, "classifier")
    backbone = getattr(hf_model, hf_model.base_model_prefix) if classifier else hf_model
    with tempfile.TemporaryDirectory() as directory:
        hf_model.save_pretrained(directory)
        model = load_pretrained(directory, dtype="float64")
    hf_model.double()
    with torch.no_grad():
        hidden = backbone(torch.from_numpy(pixels)).last_hidden_state.numpy()
        logits = hf_model(torch.from_numpy(pixels)).logits.numpy() if classifier else None
    assert_close(model.forward_features(mv.tensor(pixels)), hidden, rtol=1e-10)
    if classifier:
        assert_close(model(mv.tensor(pixels)), logits, rtol=1e-10)


def check_drawn_configuration(config, seed, family):
    """A transformers model of `family` ("ViT", "Swin", "Swinv2") with a drawn configuration,
    its head or not, every parameter drawn: check_against_transformers."""
    transformers = pytest.importorskip("transformers")
    from make_vision_fixtures import randomize
    kwargs, classifier = config
    hf_class = getattr(transformers, f"{family}ForImageClassification" if classifier
                       else f"{family}Model")
    pixels = np.random.default_rng(seed).standard_normal(
        (2, kwargs["num_channels"], kwargs["image_size"], kwargs["image_size"]))
    hf_config = getattr(transformers, f"{family}Config")(**kwargs)
    check_against_transformers(randomize(hf_class(hf_config), seed), pixels)


@LIVE
@given(config=hf_vit_configs(), seed=st.integers(0, 2**16))
def test_vit_matches_transformers_on_drawn_configurations(config, seed):
    check_drawn_configuration(config, seed, "ViT")


@LIVE
@given(config=hf_swin_configs(), seed=st.integers(0, 2**16))
def test_swin_matches_transformers_on_drawn_configurations(config, seed):
    check_drawn_configuration(config, seed, "Swin")


@LIVE
@given(config=hf_swinv2_configs(), seed=st.integers(0, 2**16))
def test_swinv2_matches_transformers_on_drawn_configurations(config, seed):
    check_drawn_configuration(config, seed, "Swinv2")


# --- errors ---------------------------------------------------------------------------------------

def fixture_copy(tmp_path, name, edit_checkpoint=None, edit_config=None):
    """A copy of a fixture directory with its checkpoint and/or config changed."""
    checkpoint = load_safetensors(FIXTURES / name / "model.safetensors")
    config = json.loads((FIXTURES / name / "config.json").read_text())
    if edit_checkpoint:
        edit_checkpoint(checkpoint)
    if edit_config:
        edit_config(config)
    save_safetensors(checkpoint, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_missing_extra_and_misshaped_tensors_are_all_listed_in_one_error(tmp_path):
    def edit(checkpoint):
        del checkpoint["vit.layernorm.bias"]
        del checkpoint["vit.encoder.layer.1.attention.attention.key.weight"]
        checkpoint["vit.encoder.layer.0.extra.weight"] = np.zeros(2, np.float32)
        checkpoint["vit.encoder.layer.2.layernorm_before.weight"] = np.zeros(16, np.float32)
        checkpoint["classifier.bias"] = np.zeros(4, np.float32)
    with pytest.raises(ValueError) as error:
        load_pretrained(fixture_copy(tmp_path, "vit_tiny", edit))
    message = str(error.value)
    assert "no entry in the name table: encoder.layer.0.extra.weight" in message  # "vit." gone
    assert "missing tensors: encoder.layer.1.attention.attention.key.weight, layernorm.bias" \
        in message
    assert "the model does not have: encoder.layer.2.layernorm_before.weight" in message
    assert "classifier.bias has shape (4,) in the checkpoint but (3,) in the model" in message


def test_known_unused_entries_are_ignored(tmp_path):
    """Older Swin checkpoints store relative_position_index (Swin-V2's the coordinate table too);
    ViTModel stores a tanh pooler."""
    def add_index(checkpoint):
        name = "swin.encoder.layers.0.blocks.0.attention.self.relative_position_index"
        checkpoint[name] = np.zeros(81, np.int64)

    def add_v2_buffers(checkpoint):
        prefix = "swinv2.encoder.layers.0.blocks.0.attention.self."
        checkpoint[prefix + "relative_position_index"] = np.zeros((9, 9), np.int64)
        checkpoint[prefix + "relative_coords_table"] = np.zeros((1, 5, 5, 2), np.float32)

    def add_pooler(checkpoint):
        checkpoint["pooler.dense.weight"] = np.zeros((16, 16), np.float32)
        checkpoint["pooler.dense.bias"] = np.zeros(16, np.float32)
    for name, edit in [("swin_tiny", add_index), ("vit_tiny", add_pooler),
                       ("swinv2_tiny", add_v2_buffers)]:
        (tmp_path / name).mkdir()
        expected = expected_outputs(name)
        model = load_pretrained(fixture_copy(tmp_path / name, name, edit), dtype="float64")
        assert_close(model(mv.tensor(expected["pixels"].astype("float64"))), expected["logits"],
                     rtol=1e-10)


def test_unknown_model_type_lists_the_supported_ones(tmp_path):
    def edit(config):
        config["model_type"] = "convnext"
    with pytest.raises(ValueError, match="model_type 'convnext' is not supported; supported: "
                                         + ", ".join(sorted(ARCHITECTURES))):
        load_pretrained(fixture_copy(tmp_path, "vit_tiny", edit_config=edit))


def test_missing_files_say_what_is_needed(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained(tmp_path)
    shutil.copy(FIXTURES / "vit_tiny" / "config.json", tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no model.safetensors \(found: config.json, "
                                                r"pytorch_model.bin\).*never pickled"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["swin_tiny", "swinv2_tiny"])
def test_swin_with_absolute_position_embeddings_is_refused(name, tmp_path):
    def edit(config):
        config["use_absolute_embeddings"] = True
    with pytest.raises(ValueError, match="use_absolute_embeddings=true are not supported"):
        load_pretrained(fixture_copy(tmp_path, name, edit_config=edit))

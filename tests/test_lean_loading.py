"""Loading without initialising, through memory maps: nn.init.no_init, io.open_safetensors and
its LazyArrays, load_pretrained's every value from the file, and its peak memory."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minivlm as mv
from minivlm import io, nn
from minivlm.models import ViT
from minivlm.models.clip import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from minivlm.models.llama import LlamaConfig, LlamaForCausalLM
from minivlm.models.llava import LlavaConfig, LlavaForConditionalGeneration, LlavaForScoring
from minivlm.models.lm import CausalLM, LMConfig, MaskedLM
from minivlm.models.resnet import small_resnet
from minivlm.models.swin import SwinConfig, SwinTransformer, SwinTransformerV2, SwinV2Config
from minivlm.models.vit import ViTConfig
from minivlm.pretrained import ARCHITECTURES, load_clip, load_pretrained, save_pretrained
from minivlm.pretrained.clip import save_clip

from test_io import BAD_FILES, state_dicts

REPO = Path(__file__).resolve().parent.parent
PIXELS = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
IDS = np.array([[1, 5, 3, 10, 2], [4, 4, 9, 0, 7]])


def tiny_clip():
    return CLIP(CLIPConfig(embed_dim=6, vision=CLIPVisionConfig(
        image_resolution=8, layers=2, width=8, patch_size=4, heads=2), text=CLIPTextConfig(
        context_length=5, vocab_size=11, width=8, layers=2, heads=2)))


def tiny_llava(text_config):
    """A VLM of a 2-block ViT (4 patches of 8² pixels) and `text_config`'s decoder; id 10 is the
    image token."""
    return LlavaForConditionalGeneration(LlavaConfig(
        vision_config=CLIPVisionConfig(image_resolution=8, layers=2, width=8, patch_size=4,
                                       heads=2),
        text_config=text_config, image_token_id=10))


TINY_LLAMA = LlamaConfig(vocab_size=11, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8)
VLM_IDS = np.array([[1, 10, 10, 10, 10, 3, 2], [10, 10, 10, 10, 4, 9, 0]])   # 4 image tokens


# model_type: (a small model, its outputs on fixed inputs)
SMALL_MODELS = {
    "vit": (lambda: ViT(ViTConfig(image_size=8, patch_size=4, hidden_size=8, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=12, num_classes=3)),
            lambda model: [model(mv.tensor(PIXELS))]),
    "swin": (lambda: SwinTransformer(SwinConfig(image_size=8, patch_size=1, embed_dim=4,
                                                depths=(2, 1), num_heads=(1, 2), window_size=4,
                                                num_classes=3)),
             lambda model: [model(mv.tensor(PIXELS))]),
    "swinv2": (lambda: SwinTransformerV2(SwinV2Config(image_size=8, patch_size=1, embed_dim=4,
                                                      depths=(2, 1), num_heads=(1, 2),
                                                      window_size=4, num_classes=3)),
               lambda model: [model(mv.tensor(PIXELS))]),
    "minivlm_resnet": (lambda: small_resnet(num_classes=3, width=4),
                       lambda model: [model(mv.tensor(PIXELS))]),
    "clip": (tiny_clip, lambda model: [model.encode_image(PIXELS), model.encode_text(IDS),
                                       model(PIXELS, IDS)[0]]),
    "gpt2": (lambda: CausalLM(LMConfig("causal", vocab_size=11, context_length=8, width=8,
                                       layers=2, heads=2)),
             lambda model: [model(IDS)]),
    "minivlm_masked_lm": (lambda: MaskedLM(LMConfig("mlm", vocab_size=11, context_length=8,
                                                    width=8, layers=2, heads=2)),
                          lambda model: [model(IDS)]),
    "llama": (lambda: LlamaForCausalLM(LlamaConfig(vocab_size=11, hidden_size=8,
                                                   intermediate_size=12, num_hidden_layers=2,
                                                   num_attention_heads=2, num_key_value_heads=1,
                                                   max_position_embeddings=8)),
              lambda model: [model(IDS)]),
    "llava": (lambda: tiny_llava(TINY_LLAMA), lambda model: [model(VLM_IDS, PIXELS)]),
    "minivlm_llava": (lambda: tiny_llava(LMConfig("causal", vocab_size=11, context_length=8,
                                                  width=8, layers=2, heads=2)),
                      lambda model: [model(VLM_IDS, PIXELS)]),
    "minivlm_llava_scoring": (lambda: LlavaForScoring(tiny_llava(TINY_LLAMA).config),
                              lambda model: [model(VLM_IDS, PIXELS)]),
}


@pytest.fixture
def poisoned_empty(monkeypatch):
    """numpy.empty handing out memory whose every byte is 0xFF (NaN in a float, -1 in an int),
    as uninitialised memory may hold: a value nobody wrote cannot pass for one that was."""
    empty = np.empty

    def poisoned(*args, **kwargs):
        array = empty(*args, **kwargs)
        array.reshape(-1, order="A").view(np.uint8).fill(0xFF)
        return array
    monkeypatch.setattr(np, "empty", poisoned)


def redrawn(model, seed=0):
    """`model` with every tensor of its state dict drawn anew in [0.5, 1.5) (integers in
    [2, 9)), so that no value is what a fresh model or uninitialised memory holds."""
    rng = np.random.default_rng(seed)
    for tensor in model.state_dict(keep_vars=True).values():
        values = rng.uniform(0.5, 1.5, tensor.shape) if tensor.dtype.kind == "f" \
            else rng.integers(2, 9, tensor.shape)
        tensor.array[...] = values
    return model.eval()


def saved_model(model_type, directory):
    model = redrawn(SMALL_MODELS[model_type][0]())
    save_pretrained(model, directory)
    return model


def outputs(model_type, model):
    with mv.no_grad():
        return [output.numpy() for output in SMALL_MODELS[model_type][1](model)]


# --- nn.init.no_init ---------------------------------------------------------------------------

def test_no_init_writes_nothing_and_draws_nothing(poisoned_empty):
    mv.manual_seed(0)
    expected = mv.randn(3).numpy()
    mv.manual_seed(0)
    with nn.init.no_init():
        layer = nn.Linear(4, 3)
        norm = nn.LayerNorm(3)
        weight = nn.Parameter(mv.empty(2, 2))
        assert nn.init.normal_(weight) is weight
    for tensor in (layer.weight, layer.bias, norm.weight, norm.bias, weight):
        assert np.isnan(tensor.numpy()).all()
    np.testing.assert_array_equal(mv.randn(3).numpy(), expected)   # the generator did not move
    assert (np.abs(nn.Linear(4, 3).weight.numpy()) <= 0.5).all()   # initialised again after


def test_no_init_ends_with_its_block_even_on_an_error():
    with pytest.raises(RuntimeError, match="inside"):
        with nn.init.no_init():
            raise RuntimeError("inside")
    assert (nn.init.ones_(nn.Parameter(mv.zeros(2))).numpy() == 1).all()
    with nn.init.no_init():
        with nn.init.no_init():
            pass
        assert (nn.init.ones_(nn.Parameter(mv.zeros(2))).numpy() == 0).all()


def test_every_architecture_has_a_small_model_here():
    assert SMALL_MODELS.keys() == ARCHITECTURES.keys(), \
        "add a small model of each new architecture to SMALL_MODELS"


# --- load_pretrained: every value from the file --------------------------------------------------

@pytest.mark.parametrize("mmap", [False, True], ids=["copy", "mmap"])
@pytest.mark.parametrize("model_type", sorted(SMALL_MODELS))
def test_every_value_comes_from_the_checkpoint(model_type, mmap, tmp_path, poisoned_empty):
    """Built under no_init on poisoned memory, the loaded model holds exactly the saved values:
    every parameter and buffer (the buffers its constructor computes too), and so its outputs."""
    original = saved_model(model_type, tmp_path)
    assert_same_model(model_type, load_pretrained(tmp_path, mmap=mmap), original)


def assert_same_model(model_type, loaded, original):
    """The same state, buffers (non-persistent ones too) and outputs, bit for bit."""
    state = loaded.state_dict()
    assert list(state) == list(original.state_dict())
    for name, tensor in original.state_dict().items():
        np.testing.assert_array_equal(state[name].numpy(), tensor.numpy(), strict=True,
                                      err_msg=name)
    buffers = dict(loaded.named_buffers())
    for name, buffer in original.named_buffers():
        np.testing.assert_array_equal(buffers[name].numpy(), buffer.numpy(), strict=True)
    for ours, expected in zip(outputs(model_type, loaded), outputs(model_type, original)):
        np.testing.assert_array_equal(ours, expected, strict=True)


def test_an_openai_named_clip_file_loads_every_value_too(tmp_path, poisoned_empty):
    original = redrawn(tiny_clip())
    save_clip(original, tmp_path / "clip.safetensors")
    assert_same_model("clip", load_clip(tmp_path / "clip.safetensors"), original)


@pytest.mark.parametrize("model_type", sorted(SMALL_MODELS))
def test_a_missing_tensor_is_the_clear_error_not_garbage(model_type, tmp_path):
    saved_model(model_type, tmp_path)
    checkpoint = io.load_safetensors(tmp_path / "model.safetensors")
    missing = sorted(checkpoint)[0]
    del checkpoint[missing]
    io.save_safetensors(checkpoint, tmp_path / "model.safetensors")
    with pytest.raises(io.CheckpointError, match=f"missing tensors: {missing}$"):
        load_pretrained(tmp_path)


def test_loading_draws_no_random_numbers(tmp_path):
    saved_model("clip", tmp_path)
    mv.manual_seed(0)
    expected = mv.randn(3).numpy()
    mv.manual_seed(0)
    load_pretrained(tmp_path)
    np.testing.assert_array_equal(mv.randn(3).numpy(), expected)


def test_mmap_keeps_float32_tensors_as_read_only_maps_of_the_file(tmp_path):
    saved_model("gpt2", tmp_path)
    mapped, copied = load_pretrained(tmp_path, mmap=True), load_pretrained(tmp_path)
    weight = mapped.blocks[0].linear1.weight   # transposed from GPT-2's Conv1D: a view still
    assert maps_a_file(weight.array) and not weight.array.flags.writeable
    assert not maps_a_file(copied.blocks[0].linear1.weight.array)
    with pytest.raises(ValueError, match="read-only"):
        weight.array[0, 0] = 0
    as_float64 = load_pretrained(tmp_path, dtype="float64", mmap=True)
    assert not maps_a_file(as_float64.blocks[0].linear1.weight.array)   # converted: a copy
    np.testing.assert_array_equal(outputs("gpt2", mapped), outputs("gpt2", copied))


def maps_a_file(array):
    while array is not None:
        if isinstance(array, np.memmap):
            return True
        array = array.base
    return False


def test_half_precision_files_are_widened_tensor_by_tensor(tmp_path):
    original = saved_model("clip", tmp_path)
    stored = {name: array.astype(np.float16)
              for name, array in io.load_safetensors(tmp_path / "model.safetensors").items()}
    io.save_safetensors(stored, tmp_path / "model.safetensors")
    loaded = load_pretrained(tmp_path, mmap=True)
    weight = loaded.visual.conv1.weight
    assert weight.dtype == np.float32 and weight.array.flags.writeable   # F16: copied, widened
    np.testing.assert_array_equal(
        weight.numpy(), original.visual.conv1.weight.numpy().astype(np.float16))


def shard(directory, groups):
    """Split directory's model.safetensors into shard files of the given name groups."""
    checkpoint = io.load_safetensors(directory / "model.safetensors")
    (directory / "model.safetensors").unlink()
    weight_map = {}
    for number, names in enumerate(groups):
        file = f"model-{number}.safetensors"
        io.save_safetensors({name: checkpoint[name] for name in names}, directory / file)
        weight_map.update(dict.fromkeys(names, file))
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def test_a_sharded_checkpoint_loads_shard_by_shard(tmp_path, poisoned_empty):
    original = saved_model("clip", tmp_path)
    names = sorted(io.read_safetensors_header(tmp_path / "model.safetensors")[0])
    shard(tmp_path, [names[::3], names[1::3], names[2::3]])
    assert_same_model("clip", load_pretrained(tmp_path), original)


def test_a_tensor_in_two_shards_or_a_broken_index_is_a_clear_error(tmp_path):
    saved_model("gpt2", tmp_path)
    names = sorted(io.read_safetensors_header(tmp_path / "model.safetensors")[0])
    shard(tmp_path, [names[:3], names[2:]])
    with pytest.raises(io.CheckpointError, match=f"another shard holds too: {names[2]}$"):
        load_pretrained(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text('{"weights": {}}')
    with pytest.raises(io.CheckpointError, match="not a shard index with a weight_map"):
        load_pretrained(tmp_path)


# --- io: lazy arrays -----------------------------------------------------------------------------

@pytest.fixture
def small_blocks(monkeypatch):
    """copy_to maps 8 bytes at a time (whole rows, at least one): every block boundary is hit."""
    monkeypatch.setattr(io, "_BLOCK_BYTES", 8)


@given(tensors=state_dicts, bfloat16=st.booleans())
def test_stored_tensors_read_what_load_safetensors_reads(tmp_path_factory, tensors, bfloat16):
    path = tmp_path_factory.mktemp("lazy") / "t.safetensors"
    io.save_safetensors(tensors, path, bfloat16=[   # float64 would overflow to inf: not those
        name for name, array in tensors.items() if bfloat16 and array.dtype in (np.float32,
                                                                                 np.float16)])
    expected, lazy = io.load_safetensors(path), io.open_safetensors(path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(io, "_BLOCK_BYTES", 8)   # see small_blocks
        read = {name: np.asarray(tensor) for name, tensor in lazy.items()}
    assert list(lazy) == list(expected)
    for name, array in expected.items():
        assert lazy[name].shape == array.shape and lazy[name].dtype == array.dtype
        np.testing.assert_array_equal(read[name], array, strict=True)
        mapped = lazy[name].mapped()
        if lazy[name].stored_dtype in ("BF16", "BOOL"):
            assert mapped is None
        else:
            np.testing.assert_array_equal(mapped, array, strict=True)
            assert not mapped.flags.writeable or mapped.size == 0


def test_transposed_and_concatenated_are_read_straight_into_place(tmp_path, small_blocks):
    rng = np.random.default_rng(0)
    parts = {name: rng.standard_normal((rows, 3)).astype(np.float32)
             for name, rows in (("q", 2), ("k", 3), ("v", 1))}
    io.save_safetensors(parts, tmp_path / "t.safetensors", bfloat16=["k"])
    expected, lazy = io.load_safetensors(tmp_path / "t.safetensors"), \
        io.open_safetensors(tmp_path / "t.safetensors")
    stacked = io.Concatenated([lazy["q"], lazy["k"].T.T, expected["v"]])   # arrays mix in
    destination = np.zeros((6, 3))
    io.copy_into(destination, stacked)
    np.testing.assert_array_equal(destination, np.concatenate(list(expected.values())))
    transposed = np.zeros((3, 6), np.float32)
    io.copy_into(transposed, stacked.T)
    np.testing.assert_array_equal(transposed, np.concatenate(list(expected.values())).T)
    np.testing.assert_array_equal(lazy["q"].T.mapped(), expected["q"].T)
    assert stacked.mapped() is None and stacked.T.mapped() is None


def test_shapes_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match=r"shapes \[\(2, 3\), \(2, 4\)\]"):
        io.Concatenated([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match=r"values of shape \(2, 3\) into an array of shape "
                                         r"\(3, 2\)"):
        io.copy_into(np.zeros((3, 2)), np.zeros((2, 3)))


def test_blocks_go_to_the_destination_one_at_a_time(tmp_path, monkeypatch):
    """What a CuPy destination receives through asarray: blocks of at most _BLOCK_BYTES (of
    whole rows) from the file, never the whole tensor at once."""
    monkeypatch.setattr(io, "_BLOCK_BYTES", 32)
    values = np.arange(21, dtype=np.float32).reshape(7, 3)
    io.save_safetensors({"w": values}, tmp_path / "t.safetensors")
    received = []

    def asarray(block):
        received.append(block.nbytes)
        return np.asarray(block)
    destination = np.zeros((7, 3), np.float32)
    io.copy_into(destination, io.open_safetensors(tmp_path / "t.safetensors")["w"], asarray)
    np.testing.assert_array_equal(destination, values)
    assert received == [24, 24, 24, 12]   # 2 rows of 12 bytes per 32-byte block


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_are_refused_before_anything_is_mapped(tmp_path, case):
    content, message = BAD_FILES[case]
    (tmp_path / "bad.safetensors").write_bytes(content)
    with pytest.raises(io.CheckpointError, match=message):
        io.open_safetensors(tmp_path / "bad.safetensors")


# --- peak memory ---------------------------------------------------------------------------------

PEAK = textwrap.dedent("""
    import gc, json, sys
    from pathlib import Path
    import minivlm as mv
    from minivlm import io
    io._BLOCK_BYTES = 1 << 20
    def kib(field):
        line = next(l for l in Path("/proc/self/status").read_text().splitlines()
                    if l.startswith(field + ":"))
        return int(line.split()[1])
    gc.collect()
    before = kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    model = mv.load_pretrained(sys.argv[1], mmap=sys.argv[2] == "mmap")
    print(json.dumps((kib("VmHWM") - before) * 1024))
""")


def peak_bytes(directory, mode):
    """The rise of the peak resident memory over loading, in a fresh process (1 MiB blocks)."""
    result = subprocess.run([sys.executable, "-c", PEAK, str(directory), mode], cwd=REPO,
                            env={"PYTHONPATH": str(REPO), "MALLOC_MMAP_THRESHOLD_": "65536"},
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc")
def test_loading_peaks_at_the_models_size_not_the_file_twice(tmp_path):
    """A 76 MB CLIP (its q, k, v stacked, its projections transposed while loading): F32 and
    BF16 files peak within 10 % of the float32 model (+ 4 MiB of blocks), not at twice it;
    mmap=True copies only the stacked in_proj tensors."""
    mv.manual_seed(0)
    with nn.init.no_init():   # the values do not matter here
        model = CLIP(CLIPConfig(embed_dim=256, vision=CLIPVisionConfig(
            image_resolution=32, layers=4, width=256, patch_size=8, heads=4), text=CLIPTextConfig(
            width=256, layers=4, heads=4)))
    for tensor in model.state_dict(keep_vars=True).values():
        tensor.array[...] = 0.5
    size = sum(tensor.array.nbytes for tensor in model.state_dict().values())
    in_proj = sum(tensor.array.nbytes for name, tensor in model.state_dict().items()
                  if "in_proj" in name)
    save_pretrained(model, tmp_path / "f32")
    del model
    copy = peak_bytes(tmp_path / "f32", "copy")
    assert size < copy <= 1.1 * size + 4 * 2 ** 20, (copy, size)
    mapped = peak_bytes(tmp_path / "f32", "mmap")
    assert in_proj <= mapped <= in_proj + 0.05 * size, (mapped, in_proj, size)
    checkpoint = io.load_safetensors(tmp_path / "f32" / "model.safetensors")
    (tmp_path / "bf16").mkdir()
    (tmp_path / "bf16" / "config.json").write_text((tmp_path / "f32" / "config.json").read_text())
    io.save_safetensors(checkpoint, tmp_path / "bf16" / "model.safetensors",
                        bfloat16=list(checkpoint))
    del checkpoint
    bf16 = peak_bytes(tmp_path / "bf16", "copy")
    assert size < bf16 <= 1.1 * size + 4 * 2 ** 20, (bf16, size)

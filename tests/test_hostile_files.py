"""Checkpoint files and model directories made by a careless or hostile hand: every reader gives a
value or a clean CheckpointError, never waits, never allocates more than the file's real size
allows, and never leaves the model directory. Each case of issue 17 is an example here; the
hypothesis fuzzers below vary zip structures, .npy headers, shard names and config.json values
(test_io.py fuzzes safetensors headers and bytes)."""
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import minivlm as mv
from minivlm import io
from minivlm.models.lm import LMConfig, build_model
from minivlm.models.resnet import small_resnet
from minivlm.pretrained import load_pretrained, save_pretrained

FIXTURES = Path(__file__).with_name("fixtures")
ROOT = Path(__file__).resolve().parent.parent
READERS = {"safetensors": io.load_safetensors, "npz": io.load_npz, "json": io.read_json}
# the peak resident memory (KiB) of this process since its exec: VmHWM, as ru_maxrss keeps the
# parent's peak across fork and exec (a subprocess of a large pytest would report pytest's)
PEAK_RESIDENT_KIB = ("next(int(line.split()[1]) for line in open('/proc/self/status') "
                     "if line.startswith('VmHWM'))")


def within_seconds(seconds, function, *args):
    """function(*args) in a thread: its result or exception, or a failure when it waits on."""
    outcome = {}

    def call():
        try:
            outcome["value"] = function(*args)
        except BaseException as error:   # handed to the test
            outcome["error"] = error
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{function.__name__} still waiting after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# --- what is not a regular file ------------------------------------------------------------------

@pytest.mark.parametrize("reader", READERS)
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path, reader):
    fifo = tmp_path / f"model.{reader}"
    os.mkfifo(fifo)
    with pytest.raises(io.CheckpointError, match="is a FIFO, not a regular file"):
        within_seconds(10, READERS[reader], fifo)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("device, kind", [("/dev/zero", "character device"),
                                          ("/dev/null", "character device")])
def test_a_device_is_refused_without_reading_it(reader, device, kind):
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    with pytest.raises(io.CheckpointError, match=f"{device}: is a {kind}"):
        within_seconds(10, READERS[reader], device)


@pytest.mark.parametrize("reader", READERS)
def test_a_directory_is_refused(tmp_path, reader):
    with pytest.raises(io.CheckpointError, match="is a directory, not a regular file"):
        READERS[reader](tmp_path)


def test_a_model_directory_whose_config_is_a_fifo_is_refused(tmp_path):
    shutil.copytree(FIXTURES / "vit_tiny", tmp_path / "model")
    (tmp_path / "model" / "config.json").unlink()
    os.mkfifo(tmp_path / "model" / "config.json")
    with pytest.raises(io.CheckpointError, match="config.json: is a FIFO"):
        within_seconds(10, load_pretrained, tmp_path / "model")


# --- duplicate keys --------------------------------------------------------------------------

def raw_safetensors(header_text, buffer):
    header = header_text.encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + buffer


def test_a_safetensors_header_with_a_key_twice_is_refused(tmp_path):
    """json keeps the last of two equal keys: an F32 entry would silently become I32."""
    entry = '{{"dtype": "{}", "shape": [2], "data_offsets": [0, 8]}}'
    path = tmp_path / "twice.safetensors"
    path.write_bytes(raw_safetensors(f'{{"w": {entry.format("F32")}, '
                                     f'"w": {entry.format("I32")}}}', bytes(8)))
    with pytest.raises(io.CheckpointError, match="a JSON object holds the key 'w' twice"):
        io.load_safetensors(path)


def test_a_key_twice_in_a_nested_object_or_in_config_json_is_refused(tmp_path):
    path = tmp_path / "nested.safetensors"
    path.write_bytes(raw_safetensors('{"__metadata__": {"a": "1", "a": "2"}}', b""))
    with pytest.raises(io.CheckpointError, match="holds the key 'a' twice"):
        io.load_safetensors(path)
    shutil.copytree(FIXTURES / "vit_tiny", tmp_path / "model")
    config = (tmp_path / "model" / "config.json").read_text()
    (tmp_path / "model" / "config.json").write_text(config.replace(
        "{", '{"hidden_size": 7, ', 1))
    with pytest.raises(io.CheckpointError, match="config.json: a JSON object holds the key "
                                                 "'hidden_size' twice"):
        load_pretrained(tmp_path / "model")


# --- .npz archives -------------------------------------------------------------------------------

def npz_bytes(members, compression=zipfile.ZIP_STORED, flag_bits=0):
    """An .npz of {member name: bytes}, each member's bytes as given, `flag_bits` set in its
    headers (0x1: "encrypted")."""
    stream = BytesIO()
    with zipfile.ZipFile(stream, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data, compress_type=compression)
    content = bytearray(stream.getvalue())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):   # local, central
        start = content.find(signature)
        while start >= 0:
            content[start + offset] |= flag_bits
            start = content.find(signature, start + 4)
    return bytes(content)


def npy_bytes(array=None, header=None):
    """An .npy file: `array`'s, or the given header dict over no data."""
    if header is None:
        stream = BytesIO()
        np.lib.format.write_array(stream, array, allow_pickle=False)
        return stream.getvalue()
    text = repr(header).encode("latin1")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def test_an_encrypted_member_is_refused(tmp_path):
    path = tmp_path / "locked.npz"
    path.write_bytes(npz_bytes({"w.npy": npy_bytes(np.ones(3))}, flag_bits=0x1))
    with pytest.raises(io.CheckpointError, match="member 'w.npy' is encrypted"):
        io.load_npz(path)


def test_an_npy_header_declaring_four_tebibytes_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.npz"
    header = {"descr": "<f4", "fortran_order": False, "shape": (2 ** 40,)}
    path.write_bytes(npz_bytes({"w.npy": npy_bytes(header=header)}))
    with pytest.raises(io.CheckpointError, match=r"shape \(1099511627776,\) of float32 needs "
                                                 r"4398046511104 bytes but the member holds 0"):
        io.load_npz(path)


def test_a_zip_bomb_is_refused_before_expanding(tmp_path):
    path = tmp_path / "bomb.npz"
    path.write_bytes(npz_bytes({"w.npy": npy_bytes(np.zeros(2_000_000, np.float32))},
                               zipfile.ZIP_DEFLATED))
    assert path.stat().st_size < 80_000 / 10   # 8 MB of zeros in a few kB
    tracemalloc.start()
    try:
        with pytest.raises(io.CheckpointError, match="expand to 8000128 bytes, more than 100 "
                                                     "times the file's"):
            io.load_npz(path)
        assert tracemalloc.get_traced_memory()[1] < 1_000_000
    finally:
        tracemalloc.stop()


def test_compressed_npz_within_bounds_loads(tmp_path):
    values = {"a": np.random.default_rng(0).standard_normal((3, 4)), "b": np.arange(5)}
    np.savez_compressed(tmp_path / "fine.npz", **values)
    loaded = io.load_npz(tmp_path / "fine.npz")
    for name, array in values.items():
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].flags.writeable


@pytest.mark.parametrize("members, message", [
    ({"w.npy": b"", "w.npy ": b""}, "is not an .npy array"),
    ({"w.npy": npy_bytes(np.ones(2)), "x.txt": b"hello"}, "member 'x.txt' is not an .npy"),
    ({"w.npy": npy_bytes(header={"descr": "|O", "fortran_order": False, "shape": (1,)})},
     "holds Python objects"),
    ({"w.npy": npy_bytes(np.ones(4))[:-8]}, "needs 32 bytes but the member holds 24"),
])
def test_bad_npz_members_are_named(tmp_path, members, message):
    path = tmp_path / "bad.npz"
    path.write_bytes(npz_bytes(members))
    with pytest.raises(io.CheckpointError, match=message):
        io.load_npz(path)


def test_a_member_name_twice_is_refused(tmp_path):
    stream = BytesIO()
    with zipfile.ZipFile(stream, "w") as archive, pytest.warns(UserWarning, match="Duplicate"):
        archive.writestr("w.npy", npy_bytes(np.ones(1)))
        archive.writestr("w.npy", npy_bytes(np.zeros(1)))
    (tmp_path / "twice.npz").write_bytes(stream.getvalue())
    with pytest.raises(io.CheckpointError, match="member 'w.npy' appears twice"):
        io.load_npz(tmp_path / "twice.npz")


# --- shards ------------------------------------------------------------------------------------

def sharded_copy(tmp_path, weight_map_of):
    """vit_tiny with its tensors in two shards and an index; weight_map_of(names) -> the map."""
    directory = tmp_path / "sharded"
    directory.mkdir(parents=True)
    shutil.copy(FIXTURES / "vit_tiny" / "config.json", directory)
    tensors = io.load_safetensors(FIXTURES / "vit_tiny" / "model.safetensors")
    names = sorted(tensors)
    io.save_safetensors({n: tensors[n] for n in names[:5]}, directory / "part-1.safetensors")
    io.save_safetensors({n: tensors[n] for n in names[5:]}, directory / "part-2.safetensors")
    weight_map = weight_map_of(names)
    (directory / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": weight_map}))
    return directory


def two_shards(names):
    return {n: "part-1.safetensors" if i < 5 else "part-2.safetensors"
            for i, n in enumerate(names)}


def test_a_sharded_directory_loads(tmp_path):
    model = load_pretrained(sharded_copy(tmp_path, two_shards))
    reference = load_pretrained(FIXTURES / "vit_tiny")
    for name, value in reference.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name].numpy(), value.numpy())


@pytest.mark.parametrize("shard", ["/etc/passwd", "../outside.safetensors",
                                   "sub/../../outside.safetensors", "..", "",
                                   "C:\\models\\x.safetensors", "\\\\server\\x.safetensors"])
def test_a_shard_path_that_leaves_the_model_directory_is_refused(tmp_path, shard):
    io.save_safetensors({"decoy": np.zeros(1)}, tmp_path / "outside.safetensors")
    directory = sharded_copy(tmp_path, lambda names: {**two_shards(names), names[0]: shard})
    read = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(io, "load_safetensors", lambda path: read.append(path) or {})
        with pytest.raises(io.CheckpointError, match=re.escape(f"shard {shard!r} is not a file "
                                                               f"name inside the model "
                                                               f"directory")):
            load_pretrained(directory)
    assert read == []


def test_shards_that_disagree_with_their_index_are_named(tmp_path):
    directory = sharded_copy(tmp_path, lambda names: {**two_shards(names),
                                                      names[0]: "part-2.safetensors"})
    with pytest.raises(io.CheckpointError, match="part-1.safetensors: holds '.*', which "
                                                 "model.safetensors.index.json places in "
                                                 "part-2.safetensors"):
        load_pretrained(directory)
    directory = sharded_copy(tmp_path / "more", lambda names: {**two_shards(names),
                                                               "ghost": "part-1.safetensors"})
    with pytest.raises(io.CheckpointError, match="lists tensors that no shard holds: ghost"):
        load_pretrained(directory)
    directory = sharded_copy(tmp_path / "absent", lambda names: {**two_shards(names),
                                                                 "ghost": "part-3.safetensors"})
    with pytest.raises(io.CheckpointError, match="lists the shard 'part-3.safetensors', which "
                                                 ".* does not hold"):
        load_pretrained(directory)


# --- config.json, field by field -------------------------------------------------------------

FAMILIES = {   # model directory: (a size field, the section the fuzzer edits or None)
    "vit_tiny": ("hidden_size", None), "swin_tiny": ("embed_dim", None),
    "clip_tiny": ("vision_config.hidden_size", "text_config"), "gpt2": ("n_embd", None),
    "masked_lm": ("width", None), "resnet": ("resnet.width", "resnet"),
    "llama_tiny": ("hidden_size", None),
}


@pytest.fixture(scope="module")
def model_directories(tmp_path_factory):
    """{name: model directory} of every family: the fixtures, and tiny models saved here."""
    root = tmp_path_factory.mktemp("models")
    mv.manual_seed(0)
    for name, model in [("gpt2", build_model(LMConfig("causal", 40, 8, 8, 2, 2))),
                        ("masked_lm", build_model(LMConfig("mlm", 40, 8, 8, 2, 2))),
                        ("resnet", small_resnet(3, width=4))]:
        save_pretrained(model, root / name)
    return {name: FIXTURES / name if name.endswith("_tiny") else root / name
            for name in FAMILIES}


def edited_copy(tmp_path, source, field, value):
    """A copy of the model directory `source` with config.json's `field` (a.b for a nested one)
    set to `value`."""
    directory = tmp_path / source.name
    shutil.copytree(source, directory)
    config = json.loads((directory / "config.json").read_text())
    *sections, name = field.split(".")
    target = config
    for section in sections:
        target = target.setdefault(section, {})
    target[name] = value
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("family, field, value, expected", [
    ("vit_tiny", "layer_norm_eps", "1e-12", "layer_norm_eps must be a finite number above 0"),
    ("vit_tiny", "layer_norm_eps", float("nan"), "layer_norm_eps must be a finite number"),
    ("vit_tiny", "hidden_size", "big", "hidden_size must be an integer of at least 1"),
    ("vit_tiny", "hidden_size", True, "hidden_size must be an integer"),
    ("vit_tiny", "patch_size", 0, "patch_size must be an integer of at least 1"),
    ("vit_tiny", "num_attention_heads", 0, "num_attention_heads must be an integer"),
    ("vit_tiny", "num_hidden_layers", 10 ** 9, "num_hidden_layers must be an integer of at "
                                               "least 1 and at most"),
    ("vit_tiny", "qkv_bias", "yes", "qkv_bias must be true or false"),
    ("swin_tiny", "depths", [1, "two"], "depths must be a list of integers"),
    ("swin_tiny", "mlp_ratio", 0.0, "mlp_ratio must be a finite number above 0"),
    ("swin_tiny", "num_heads", 2, "num_heads must be a list of integers"),
    ("clip_tiny", "text_config", "oops", "text_config must be a JSON object"),
    ("clip_tiny", "vision_config.patch_size", 5, "vision_config.image_size 32 is not a "
                                                 "multiple of vision_config.patch_size 5"),
    ("clip_tiny", "text_config.eos_token_id", [2], "text_config.eos_token_id must be an "
                                                   "integer"),
    ("clip_tiny", "model_type", ["clip"], "model_type \\['clip'\\] is not supported"),
    ("gpt2", "n_embd", "8", "n_embd must be an integer of at least 1"),
    ("gpt2", "n_layer", -1, "n_layer must be an integer of at least 1"),
    ("gpt2", "layer_norm_epsilon", 1e-6, "layer_norm_epsilon=1e-06 is not supported"),
    ("masked_lm", "dropout", 1.5, "dropout must be a finite number at least 0.0 and below 1.0"),
    ("masked_lm", "objective", "gpt", "LMConfig: objective must be one of"),
    ("masked_lm", "vocab_size", None, "vocab_size must be an integer"),
    ("resnet", "resnet", None, "resnet.block is missing"),
    ("resnet", "resnet.block", "Transformer", "resnet.block must be one of 'BasicBlock', "
                                              "'Bottleneck'"),
    ("resnet", "resnet.layers", [1, 1, 1, 10 ** 6], "resnet.layers must be a list of "
                                                    "integers of at least 1 adding up to"),
    ("llama_tiny", "rms_norm_eps", "1e-6", "rms_norm_eps must be a finite number above 0"),
    ("llama_tiny", "num_key_value_heads", 0, "num_key_value_heads must be an integer of at "
                                             "least 1"),
    ("llama_tiny", "num_hidden_layers", 10 ** 9, "num_hidden_layers must be an integer of at "
                                                 "least 1 and at most"),
    ("llama_tiny", "rope_parameters", [10000.0], "rope_parameters must be a JSON object"),
    ("llama_tiny", "rope_parameters.rope_theta", -1.0, "rope_parameters.rope_theta must be a "
                                                       "finite number above 0"),
    ("llama_tiny", "eos_token_id", "</s>", "eos_token_id must be a token id"),
    ("llama_tiny", "bos_token_id", -1, "bos_token_id must be an integer of at least 0"),
    ("llama_tiny", "tie_word_embeddings", "false", "tie_word_embeddings must be true or false"),
])
def test_a_bad_config_value_is_one_error_naming_the_field(tmp_path, model_directories, family,
                                                          field, value, expected):
    with pytest.raises(io.CheckpointError, match=f"config.json: {expected}") as error:
        load_pretrained(edited_copy(tmp_path, model_directories[family], field, value))
    assert "\n" not in str(error.value)


def test_a_config_whose_layers_have_no_inputs_is_reported_as_not_fitting(tmp_path,
                                                                         model_directories):
    """mlp_ratio 0.001 makes MLPs of 0 hidden units: a Linear of 0 inputs, as torch builds."""
    directory = edited_copy(tmp_path, model_directories["swin_tiny"], "mlp_ratio", 1e-3)
    with pytest.raises(io.CheckpointError, match="does not fit SwinTransformer"):
        load_pretrained(directory)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_config_for_a_model_far_larger_than_its_checkpoint_costs_no_memory(
        tmp_path, model_directories, family):
    """A width of 20000 makes 1.6 GB matrices: built without initialising them, compared
    with the checkpoint's shapes before a byte of it is written."""
    directory = edited_copy(tmp_path, model_directories[family], FAMILIES[family][0], 20_000)
    code = ("import sys; from minivlm.pretrained import load_pretrained\n"
            "try: load_pretrained(sys.argv[1])\n"
            "except ValueError as error: print(type(error).__name__, repr(str(error)))\n"
            f"print({PEAK_RESIDENT_KIB})")
    result = subprocess.run([sys.executable, "-c", code, str(directory)], capture_output=True,
                            text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            timeout=300)
    message, peak_kib = result.stdout.strip().splitlines()
    assert message.startswith("CheckpointError") and ("does not fit" in message
                                                      or "larger than the memory" in message)
    assert int(peak_kib) < 1_000_000, f"peak resident memory {int(peak_kib) // 1024} MiB"


# --- stale temporaries -------------------------------------------------------------------------

def test_the_temporary_of_a_killed_save_is_removed_by_the_next_save(tmp_path):
    target = tmp_path / "model.safetensors"
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from minivlm import io\n"
        "with io.atomic_write(sys.argv[1]) as f:\n"
        "    f.write(b'half a checkpoint'); f.flush(); print('writing', flush=True)\n"
        "    time.sleep(300)"), str(target)], stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert writer.stdout.readline() == "writing\n"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    (stale,) = tmp_path.glob(".model.safetensors.*.tmp")
    assert stale.name.startswith(f".model.safetensors.{writer.pid}-")
    alive = tmp_path / f".model.safetensors.{os.getpid()}-0000.tmp"   # a save under way here
    alive.write_bytes(b"")
    other = tmp_path / f".other.safetensors.{writer.pid}-0000.tmp"    # another file's
    other.write_bytes(b"")
    io.save({"w": np.ones(2)}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [alive.name, other.name, "model.safetensors"])


def test_save_pretrained_removes_stale_temporaries_of_its_files(tmp_path):
    model = load_pretrained(FIXTURES / "vit_tiny")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    for name in ("model.safetensors", "config.json"):
        (tmp_path / f".{name}.{gone}-beef.tmp").write_bytes(b"x" * 100)
    save_pretrained(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


# --- fuzzers -------------------------------------------------------------------------------------

def only_checkpoint_errors(reader, path, *args):
    """reader(path) gives a value or CheckpointError; anything else fails."""
    try:
        return reader(path, *args)
    except io.CheckpointError:
        return None


npy_headers = st.fixed_dictionaries({
    "descr": st.sampled_from(["<f4", "<i8", "|b1", "|O", ">f2", "<U3", "V4", "<c8", "x"])
    | st.text(st.characters(max_codepoint=255), max_size=4) | st.integers(),
    "fortran_order": st.booleans() | st.integers(-1, 2) | st.none(),
    "shape": st.lists(st.integers(-2, 2 ** 62), max_size=4).map(tuple) | st.integers(-1, 9)
    | st.none()})
members = st.dictionaries(
    st.sampled_from(["a.npy", "b.npy", "c", "d.npy/e.npy", "../f.npy", ".npy"]),
    st.one_of(st.binary(max_size=64), npy_headers.map(lambda h: npy_bytes(header=h)),
              st.just(npy_bytes(np.arange(6.0).reshape(2, 3)))), max_size=3)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(members=members, compression=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
       flag_bits=st.sampled_from([0, 0x1, 0x8]), mutations=st.lists(
           st.tuples(st.integers(0, 2 ** 16), st.integers(0, 255)), max_size=3),
       cut=st.none() | st.integers(0, 2 ** 16))
def test_fuzz_npz_archives_only_raise_checkpoint_errors_and_stay_small(
        tmp_path_factory, members, compression, flag_bits, mutations, cut):
    content = bytearray(npz_bytes(members, compression, flag_bits))
    for position, value in mutations:
        content[position % len(content)] = value
    path = tmp_path_factory.getbasetemp() / "fuzz.npz"
    path.write_bytes(bytes(content[:cut]))
    tracemalloc.start()
    try:
        only_checkpoint_errors(io.load_npz, path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000 + 200 * len(content)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats()
    | st.text(max_size=6), lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3), max_leaves=6)
sizes = st.integers(-2, 8) | st.sampled_from([0, 1, 2 ** 31, 10 ** 6, 10 ** 12])


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow,
                                                  HealthCheck.function_scoped_fixture])
@given(family=st.sampled_from(sorted(FAMILIES)), data=st.data())
def test_fuzz_config_values_load_or_name_config_json(tmp_path, model_directories, family,
                                                     data):
    source = model_directories[family]
    config = json.loads((source / "config.json").read_text())
    section = FAMILIES[family][1]
    target = config[section] if section and data.draw(st.booleans()) else config
    name = data.draw(st.sampled_from(sorted(target)), label="field")
    target[name] = data.draw(json_values | sizes, label="value")
    directory = tmp_path / f"{family}-{data.draw(st.integers(0, 10 ** 9))}"
    shutil.copytree(source, directory)
    (directory / "config.json").write_text(json.dumps(config))
    try:
        load_pretrained(directory)
    except io.CheckpointError as error:
        assert str(error).startswith(str(directory)), error
    finally:
        shutil.rmtree(directory)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shard=st.text(st.sampled_from("./\\:aC-_"), max_size=12))
def test_fuzz_shard_names_never_leave_the_directory(tmp_path, shard):
    directory = sharded_copy(tmp_path / str(time.monotonic_ns()),
                             lambda names: {**two_shards(names), names[0]: shard})
    read = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(io, "load_safetensors", lambda path: read.append(Path(path)) or {})
        only_checkpoint_errors(load_pretrained, directory)
    for path in read:
        assert os.path.abspath(path).startswith(str(directory) + os.sep), path

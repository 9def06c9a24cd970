"""Checkpoint files: round trips, the safetensors package and torch as oracles, a fuzzed reader."""

import json
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import minivlm as mv
from minivlm import io

DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
          np.uint64, np.uint32, np.uint16, np.uint8, np.bool_]
NAMES = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)


@st.composite
def arrays(draw):
    """Arrays of every supported dtype, 0-d and empty included, NaN and inf included."""
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    return draw(hnp.arrays(dtype, shape))


state_dicts = st.dictionaries(NAMES.filter(lambda n: n != "__metadata__"), arrays(), max_size=5)


def assert_same_arrays(actual, expected):
    assert list(actual) == list(expected)
    for name in expected:
        assert actual[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(actual[name], expected[name], strict=True)


# ----------------------------------------------------------------------------- round trips

@given(tensors=state_dicts, suffix=st.sampled_from([".safetensors", ".npz"]))
def test_save_then_load_gives_the_same_arrays(tmp_path_factory, tensors, suffix):
    path = tmp_path_factory.mktemp("rt") / f"model{suffix}"
    io.save(tensors, path)
    assert_same_arrays(io.load(path), tensors)


@given(tensors=state_dicts)
def test_npz_files_agree_with_numpy_both_ways(tmp_path_factory, tensors):
    directory = tmp_path_factory.mktemp("npz")
    io.save_npz(tensors, directory / "ours.npz")
    with np.load(directory / "ours.npz", allow_pickle=False) as theirs:
        assert_same_arrays({name: theirs[name] for name in theirs.files}, tensors)
    keyword_safe = {f"k{i}": array for i, array in enumerate(tensors.values())}   # np.savez takes **kwargs
    np.savez(directory / "theirs.npz", **keyword_safe)
    assert_same_arrays(io.load_npz(directory / "theirs.npz"), keyword_safe)


@given(metadata=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3))
def test_safetensors_metadata_round_trips(tmp_path_factory, metadata):
    path = tmp_path_factory.mktemp("md") / "m.safetensors"
    io.save_safetensors({"w": np.ones(2, np.float32)}, path, metadata=metadata)
    assert io.read_safetensors_metadata(path) == metadata


def test_save_accepts_minivlm_tensors_and_parameters(tmp_path):
    weight, bias = np.arange(6, dtype=np.float32).reshape(2, 3), np.array([0.5, -1.0], np.float32)
    for suffix in (".safetensors", ".npz"):
        io.save({"w": mv.Parameter(weight), "b": mv.tensor(bias)}, tmp_path / f"m{suffix}")
        assert_same_arrays(io.load(tmp_path / f"m{suffix}"), {"w": weight, "b": bias})


def test_bytes_on_disk_match_the_format_by_hand(tmp_path):
    path = tmp_path / "m.safetensors"
    io.save_safetensors({"a": np.array([1.0, -2.0], np.float32), "b": np.array([[7]], np.int64)}, path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert header == {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                      "b": {"dtype": "I64", "shape": [1, 1], "data_offsets": [8, 16]}}
    assert raw[8 + n:] == struct.pack("<2f", 1.0, -2.0) + struct.pack("<q", 7)


def test_big_endian_arrays_are_stored_little_endian(tmp_path):
    values = np.array([1.5, -3.25], dtype=">f4")
    io.save_safetensors({"x": values}, tmp_path / "m.safetensors")
    assert (tmp_path / "m.safetensors").read_bytes().endswith(struct.pack("<2f", 1.5, -3.25))
    np.testing.assert_array_equal(io.load(tmp_path / "m.safetensors")["x"], values)


# ----------------------------------------------------------------------------- oracles

@given(tensors=state_dicts)
def test_agrees_with_the_safetensors_package_both_ways(tmp_path_factory, tensors):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    directory = tmp_path_factory.mktemp("st")
    io.save_safetensors(tensors, directory / "ours.safetensors")
    theirs = safetensors_numpy.load_file(str(directory / "ours.safetensors"))
    assert_same_arrays({k: theirs[k] for k in tensors}, tensors)
    safetensors_numpy.save_file(tensors, str(directory / "theirs.safetensors"), metadata={"by": "them"})
    loaded = io.load_safetensors(directory / "theirs.safetensors")
    assert_same_arrays({k: loaded[k] for k in tensors}, tensors)
    assert io.read_safetensors_metadata(directory / "theirs.safetensors") == {"by": "them"}


def test_bfloat16_widening_matches_torch_for_every_bit_pattern():
    torch = pytest.importorskip("torch")
    bits = np.arange(2**16, dtype=np.uint16)
    expected = torch.from_numpy(bits.view(np.int16)).view(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(io.bfloat16_to_float32(bits).view(np.uint32), expected.view(np.uint32))


def assert_bfloat16_rounding_matches_torch(x):
    torch = pytest.importorskip("torch")
    ours = io.float32_to_bfloat16(x)
    theirs = torch.from_numpy(x.reshape(-1)).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert ours.shape == x.shape
    is_nan = np.isnan(x.reshape(-1))
    np.testing.assert_array_equal(ours.reshape(-1)[~is_nan], theirs[~is_nan])
    assert np.isnan(io.bfloat16_to_float32(ours.reshape(-1)[is_nan])).all()   # torch's NaN bits differ


def test_bfloat16_rounding_matches_torch_for_every_kind_of_lower_half():
    """Every upper half combined with lower halves just below, at and above the tie."""
    upper = np.arange(2**16, dtype=np.uint32) << 16
    lower = np.array([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF], np.uint32)
    assert_bfloat16_rounding_matches_torch((upper[:, None] | lower).view(np.float32))


@given(x=hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=2, max_side=6)))
def test_bfloat16_rounding_matches_torch(x):
    assert_bfloat16_rounding_matches_torch(x)


def test_bfloat16_ties_round_to_even():
    # 1 + 2**-8 lies halfway between bf16 neighbours 1 and 1 + 2**-7: goes to 1 (even);
    # 1 + 3 * 2**-8 lies halfway between 1 + 2**-7 and 1 + 2**-6: goes to 1 + 2**-6 (even)
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8)], np.float32)
    np.testing.assert_array_equal(io.bfloat16_to_float32(io.float32_to_bfloat16(x)),
                                  np.array([1.0, 1 + 2**-6, -1.0], np.float32))


def test_bf16_files_agree_with_torch_safetensors(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    values = torch.linspace(-3, 3, 12).reshape(3, 4) / 7
    safetensors_torch.save_file({"w": values.to(torch.bfloat16)}, str(tmp_path / "theirs.safetensors"))
    np.testing.assert_array_equal(io.load(tmp_path / "theirs.safetensors")["w"],
                                  values.to(torch.bfloat16).float().numpy())
    io.save_safetensors({"w": values.numpy()}, tmp_path / "ours.safetensors", bfloat16=["w"])
    theirs = safetensors_torch.load_file(str(tmp_path / "ours.safetensors"))["w"]
    assert theirs.dtype == torch.bfloat16
    assert torch.equal(theirs, values.to(torch.bfloat16))


# ----------------------------------------------------------------------------- bad files

def safetensors_bytes(header, buffer=b""):
    """A safetensors file made by hand, byte by byte, as the format describes."""
    header_bytes = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(header_bytes)) + header_bytes + buffer


F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
BAD_FILES = {
    "too short": (b"\x01\x00", "too short"),
    "header past the end": (struct.pack("<Q", 1000) + b"{}", "runs past the end"),
    "not JSON": (safetensors_bytes(b"{not json"), "not valid UTF-8 JSON"),
    "not UTF-8": (safetensors_bytes(b'{"\xff": 1}'), "not valid UTF-8 JSON"),
    "deeply nested": (safetensors_bytes(b"[" * 100_000), "not valid UTF-8 JSON"),
    "not an object": (safetensors_bytes([1, 2]), "must be a JSON object"),
    "unknown dtype": (safetensors_bytes({"w": {**F32_2, "dtype": "F128"}}, bytes(8)), "unknown dtype"),
    "negative dimension": (safetensors_bytes({"w": {**F32_2, "shape": [-2]}}, bytes(8)), "non-negative ints"),
    "too many dimensions": (safetensors_bytes({"w": {**F32_2, "shape": [1] * 33, "data_offsets": [0, 4]}},
                                              bytes(4)), "at most 32"),
    "float dimension": (safetensors_bytes({"w": {**F32_2, "shape": [2.0]}}, bytes(8)), "non-negative ints"),
    "huge shape": (safetensors_bytes({"w": {**F32_2, "shape": [0, 2**40, 2**40], "data_offsets": [0, 0]}}),
                   "too large"),
    "missing field": (safetensors_bytes({"w": {"dtype": "F32", "shape": [2]}}, bytes(8)), "must have dtype"),
    "reversed offsets": (safetensors_bytes({"w": {**F32_2, "data_offsets": [8, 0]}}, bytes(8)), "begin <= end"),
    "wrong size": (safetensors_bytes({"w": {**F32_2, "shape": [3]}}, bytes(8)), "needs 12"),
    "past the buffer": (safetensors_bytes({"w": F32_2}, bytes(4)), "run past the end"),
    "overlap": (safetensors_bytes({"a": F32_2, "b": {**F32_2, "data_offsets": [4, 12]}}, bytes(12)), "overlap"),
    "gap": (safetensors_bytes({"a": {**F32_2, "data_offsets": [4, 12]}}, bytes(12)), "belong to no tensor"),
    "trailing bytes": (safetensors_bytes({"a": F32_2}, bytes(12)), "after the last tensor"),
    "bad metadata": (safetensors_bytes({"__metadata__": {"a": 1}}), "__metadata__ must map str to str"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_raise_a_checkpoint_error_naming_file_and_problem(tmp_path, case):
    content, message = BAD_FILES[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(io.CheckpointError, match=message) as error:
        io.load(path)
    assert str(path) in str(error.value)
    assert isinstance(error.value, ValueError)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """One directory for the fuzz tests, whose examples overwrite one file."""
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def valid_file(scratch):
    path = scratch / "valid.safetensors"
    io.save_safetensors({"a": np.arange(3, dtype=np.float32), "b": np.array([[True, False]]),
                         "c": np.zeros((0, 2), np.int64), "d": np.array(7, np.uint16)},
                        path, metadata={"k": "v"}, bfloat16=["a"])
    return path.read_bytes()


def load_or_checkpoint_error(path, content):
    """Loading must succeed or raise CheckpointError: any other exception fails the test."""
    path.write_bytes(content)
    try:
        io.load_safetensors(path)
    except io.CheckpointError:
        pass


@settings(max_examples=150)
@given(data=st.data())
def test_fuzz_mutated_and_truncated_files_only_raise_checkpoint_errors(scratch, valid_file, data):
    content = bytearray(valid_file)
    for _ in range(data.draw(st.integers(0, 4))):
        content[data.draw(st.integers(0, len(content) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.none() | st.integers(0, len(content) - 1))
    content = content[:cut]
    load_or_checkpoint_error(scratch / "mutated.safetensors", bytes(content))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=6),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12)
entries = st.fixed_dictionaries({
    "dtype": st.sampled_from(["F32", "BF16", "BOOL", "U8", "I64", "X9"]) | json_values,
    "shape": st.lists(st.integers(-2, 2**62), max_size=3) | json_values,
    "data_offsets": st.lists(st.integers(-4, 40), min_size=2, max_size=2) | json_values,
})
headers = st.dictionaries(st.text(max_size=6), entries | json_values, max_size=4) | json_values


@settings(max_examples=100)
@given(header=headers, buffer=st.binary(max_size=40))
def test_fuzz_random_headers_only_raise_checkpoint_errors(scratch, header, buffer):
    load_or_checkpoint_error(scratch / "random.safetensors", safetensors_bytes(header, buffer))


def test_bool_bytes_other_than_one_read_as_true(tmp_path):
    path = tmp_path / "b.safetensors"
    path.write_bytes(safetensors_bytes({"m": {"dtype": "BOOL", "shape": [3], "data_offsets": [0, 3]}},
                                       b"\x00\x01\x07"))
    mask = io.load(path)["m"]
    assert mask.dtype == np.bool_ and mask.view(np.uint8).tolist() == [0, 1, 1]   # canonical bytes


def test_npz_with_pickled_objects_is_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(io.CheckpointError, match="obj.npz"):
        io.load(tmp_path / "obj.npz")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"\x93NUMPY not a zip"])
def test_broken_npz_raises_a_checkpoint_error(tmp_path, content):
    (tmp_path / "bad.npz").write_bytes(content)
    with pytest.raises(io.CheckpointError, match="bad.npz"):
        io.load(tmp_path / "bad.npz")


def test_truncated_npz_raises_a_checkpoint_error(tmp_path):
    io.save_npz({"w": np.ones((4, 4))}, tmp_path / "m.npz")
    raw = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "m.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(io.CheckpointError, match="m.npz"):
        io.load(tmp_path / "m.npz")


# ----------------------------------------------------------------------------- bad input

def test_unsupported_dtype_names_the_tensor(tmp_path):
    with pytest.raises(ValueError, match=r"'z'.*complex128"):
        io.save({"z": np.zeros(2, complex)}, tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match=r"\['o'\]"):
        io.save({"o": np.array([None])}, tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


def test_non_array_values_name_the_key(tmp_path):
    with pytest.raises(TypeError, match=r"'w'.*list"):
        io.save({"w": [1.0, 2.0]}, tmp_path / "m.safetensors")


def test_bfloat16_only_for_float_tensors_that_exist(tmp_path):
    with pytest.raises(ValueError, match=r"\['nope'\]"):
        io.save_safetensors({"w": np.ones(2)}, tmp_path / "m.safetensors", bfloat16=["nope"])
    with pytest.raises(ValueError, match="'i'.*BF16"):
        io.save_safetensors({"i": np.ones(2, np.int32)}, tmp_path / "m.safetensors", bfloat16=["i"])


def test_unknown_suffix_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"\.pt.*\.safetensors, \.npz"):
        io.save({}, tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"\.bin"):
        io.load(tmp_path / "m.bin")


def test_missing_file_is_file_not_found(tmp_path):
    for suffix in (".safetensors", ".npz"):
        with pytest.raises(FileNotFoundError):
            io.load(tmp_path / f"absent{suffix}")


# ----------------------------------------------------------------------------- atomic writes

def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"old contents")
    with pytest.raises(RuntimeError, match="crash"):
        with io.atomic_write(path) as f:
            f.write(b"half a checkpoint")
            raise RuntimeError("crash")
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["m.safetensors"]


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_save_that_fails_before_the_rename_leaves_the_old_checkpoint(tmp_path, monkeypatch, suffix):
    path = tmp_path / f"m{suffix}"
    io.save({"w": np.zeros(3, np.float32)}, path)

    def disk_failure(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", disk_failure)
    with pytest.raises(OSError, match="disk full"):
        io.save({"w": np.ones(1000, np.float32)}, path)
    monkeypatch.undo()
    assert_same_arrays(io.load(path), {"w": np.zeros(3, np.float32)})
    assert os.listdir(tmp_path) == [path.name]


def test_save_replaces_an_existing_checkpoint(tmp_path):
    path = tmp_path / "m.npz"
    io.save({"w": np.zeros(3)}, path)
    io.save({"v": np.ones(2)}, path)
    assert_same_arrays(io.load(path), {"v": np.ones(2)})

"""Checkpoint files with NumPy only: safetensors and .npz, never pickle, never torch.

    save(state_dict, "model.safetensors")      # or "model.npz": the suffix picks the format
    state_dict = load("model.safetensors")     # {name: np.ndarray}

Every writer goes through `atomic_write`: the bytes go to a hidden temporary file in the same
directory, which is then renamed over the target, so a crash never leaves half a checkpoint.

The safetensors layout (https://github.com/huggingface/safetensors):

    8 bytes   N, the header length, a little-endian u64
    N bytes   JSON {name: {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
                    "__metadata__": {str: str}}           (padded with spaces)
    the rest  the byte buffer; offsets count from its start; the tensors tile it exactly

The reader checks everything before it reads a byte of data: a file that is truncated, has a
header length past its end, a header that is not JSON or holds a key twice, an unknown dtype, a
negative dimension, offsets out of range, overlapping, leaving gaps, or not matching shape x
itemsize -- each raises `CheckpointError` (a ValueError) naming the file and what is wrong. `load`
reads each tensor into a freshly allocated, writable array (no memory map is kept open).

Loading a model needs less: `open_safetensors` checks the header the same way and reads
nothing; its tensors (`LazyArray`s) are copied one at a time straight into the arrays that
hold them, through a memory map of a few MiB of the file at a time (numpy.memmap), so that
memory never holds the file twice:

    tensors = open_safetensors("model.safetensors")    # {name: StoredTensor}, nothing read
    tensors["w"].copy_to(weight)                        # F32, F16, BF16 -> weight's dtype
    tensors["w"].mapped()                               # or: a read-only map of the file

Every reader opens its file with `open_regular`, which refuses FIFOs and devices without waiting
(a FIFO would block the open, /dev/zero be read without end), and bounds every size the file
declares by the file's real size before it allocates: a safetensors header and its offsets; an
.npz member's sizes, its .npy header's shape, and the expansion of a compressed member (a zip
bomb). `read_json` does the same for JSON files (config.json), refusing duplicate keys.

A save killed before its rename leaves its temporary file (named with the saving process's id);
the next save of the same file removes those whose process is gone.

BF16 has no NumPy dtype. Reading widens it to float32 exactly (the 16 bits become the high
half of a float32). Writing narrows float32 with round-to-nearest-even, as torch does; pass
the names to store as BF16 in `save_safetensors(..., bfloat16=names)`.
"""

import collections
import contextlib
import json
import math
import os
import secrets
import stat
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

_MAX_HEADER_BYTES = 100_000_000     # the limit of the reference implementation
_MAX_NDIM = 32                      # NumPy 1's limit on array dimensions (NumPy 2 allows 64)
_MAX_JSON_BYTES = 100_000_000       # config.json, model.safetensors.index.json
_MAX_EXPANSION = 100                # how much larger than the file an .npz's members may be

# safetensors dtype name -> the NumPy dtype of its bytes on disk (little-endian)
_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_STORED_AS = {**_DTYPES, "BF16": np.dtype("<u2"), "BOOL": np.dtype("u1")}
_READ_AS = {**_DTYPES, "BF16": np.dtype("float32")}    # BF16 is widened to float32 on reading
_BLOCK_BYTES = 8 * 2 ** 20   # how much of a file LazyArray.copy_to maps at a time


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: names the file and what is wrong with it."""

    def __init__(self, path, problem):
        super().__init__(f"{os.fspath(path)}: {problem}")


# ----------------------------------------------------------------------------- bfloat16

def bfloat16_to_float32(bits):
    """uint16 BF16 bit patterns (any shape) -> float32 array of the same shape, exactly."""
    widened = np.asarray(bits, dtype=np.uint16).astype(np.uint32)
    widened <<= 16
    return widened.view(np.float32)


def float32_to_bfloat16(x):
    """float32 array -> uint16 BF16 bit patterns, rounding to nearest, ties to even.

    NaN becomes the quiet NaN 0x7FC0 (as in torch); values beyond the BF16 range become inf.
    """
    x = np.asarray(x, dtype=np.float32, order="C")
    bits = x.view(np.uint32)
    lowest_kept_bit = (bits >> 16) & 1
    rounded = ((bits + 0x7FFF + lowest_kept_bit) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


# ----------------------------------------------------------------------------- writing

@contextlib.contextmanager
def atomic_write(path):
    """Open a temporary file beside `path` for binary writing; rename it to `path` on success.

    On any exception the temporary file is removed and `path` is left as it was. The temporary
    name holds the process id: the temporaries of earlier saves of `path` whose process is gone
    (killed before its rename) are removed first.
    """
    path = Path(path)
    remove_stale_temporaries(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(path):
    """Remove the temporary files that atomic_write left beside `path` in processes that are
    gone: `.NAME.PID-TOKEN.tmp` with no process PID (on POSIX, where that can be asked)."""
    if os.name != "posix":
        return
    for temporary in path.parent.glob(f".{glob_escape(path.name)}.*-*.tmp"):
        pid = temporary.name[len(path.name) + 2:].partition("-")[0]
        if pid.isdigit() and not _running(int(pid)):
            temporary.unlink(missing_ok=True)


def glob_escape(name):
    """`name` with the characters glob treats specially ([, *, ?) matching only themselves."""
    return "".join(f"[{c}]" if c in "[*?" else c for c in name)


def _running(pid):
    try:
        os.kill(pid, 0)     # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True         # it does, as another user's
    return True


def _as_numpy(name, value):
    """A NumPy array, or a minivlm Tensor (anything with `.numpy()`), -> np.ndarray."""
    if not isinstance(name, str):
        raise TypeError(f"tensor names must be str, got {name!r} ({type(name).__name__})")
    if hasattr(value, "numpy"):
        value = value.numpy()
    if not isinstance(value, (np.ndarray, np.generic)):
        raise TypeError(f"{name!r}: expected a NumPy array or a Tensor, got {type(value).__name__}")
    return np.asarray(value)


def _safetensors_dtype(name, array, bfloat16):
    if name in bfloat16:
        if array.dtype.kind != "f":
            raise ValueError(f"{name!r}: only float tensors can be stored as BF16, got {array.dtype}")
        return "BF16"
    dtype = _NAMES.get(array.dtype.newbyteorder("<"))
    if dtype is None:
        raise ValueError(f"{name!r}: dtype {array.dtype} cannot be stored in safetensors; "
                         f"supported: {', '.join(str(d) for d in _NAMES)}")
    return dtype


def save_safetensors(tensors, path, metadata=None, *, bfloat16=()):
    """Write {name: array or Tensor} to a .safetensors file, tensors in the dict's order.

    metadata: optional {str: str}, stored as "__metadata__".
    bfloat16: names of float tensors to store as BF16 (rounded from float32 to nearest even).
    """
    if "__metadata__" in tensors:
        raise ValueError("'__metadata__' is reserved by safetensors and cannot name a tensor")
    missing = set(bfloat16) - set(tensors)
    if missing:
        raise ValueError(f"bfloat16 names tensors that are not being saved: {sorted(missing)}")
    header, buffers, offset = {}, [], 0
    if metadata:
        bad = {k: v for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))}
        if bad:
            raise TypeError(f"metadata keys and values must be str; not so for {bad!r}")
        header["__metadata__"] = dict(metadata)
    for name, value in tensors.items():
        array = _as_numpy(name, value)
        dtype = _safetensors_dtype(name, array, bfloat16)
        stored = float32_to_bfloat16(array) if dtype == "BF16" else array
        stored = np.ascontiguousarray(stored, dtype=_STORED_AS[dtype]).reshape(-1).view(np.uint8)
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + stored.nbytes]}
        buffers.append(stored)
        offset += stored.nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)   # keep the byte buffer 8-byte aligned
    with atomic_write(path) as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for stored in buffers:
            f.write(stored)


def save_npz(tensors, path):
    """Write {name: array or Tensor} to an uncompressed .npz file (no object arrays, no pickle).

    The archive is what np.savez writes: one NAME.npy member per array, readable by np.load.
    """
    arrays = {name: _as_numpy(name, value) for name, value in tensors.items()}
    objects = [name for name, array in arrays.items() if array.dtype.hasobject]
    if objects:
        raise ValueError(f"object arrays would need pickle and cannot be saved: {objects}")
    with atomic_write(path) as f, zipfile.ZipFile(f, "w") as archive:
        for name, array in arrays.items():
            with archive.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


# ----------------------------------------------------------------------------- reading

_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def open_regular(path):
    """`path` opened for binary reading, or a CheckpointError, before reading a byte, for what
    is not a regular file: the open of a FIFO would wait for a writer, a device such as
    /dev/zero would be read without end."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))   # a FIFO: no wait
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "special file")
            raise CheckpointError(path, f"is a {kind}, not a regular file")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


class _DuplicateKey(ValueError):
    pass


def _object_of_unique_keys(pairs):
    """json's object_pairs_hook: the dict, or _DuplicateKey (json alone keeps the last value)."""
    counts = collections.Counter(key for key, _ in pairs)
    twice = [key for key, count in counts.items() if count > 1]
    if twice:
        raise _DuplicateKey(twice[0])
    return dict(pairs)


def parse_json(path, data):
    """JSON text or UTF-8 bytes (of the file `path`) -> its value; a CheckpointError for what is
    not JSON and for an object that holds a key twice."""
    try:
        return json.loads(data, object_pairs_hook=_object_of_unique_keys)
    except _DuplicateKey as error:
        raise CheckpointError(path, f"a JSON object holds the key {error.args[0]!r:.100} twice")
    except (ValueError, RecursionError) as error:   # UnicodeDecodeError is a ValueError
        raise CheckpointError(path, f"is not valid UTF-8 JSON: {error}") from None


def read_json(path, limit=_MAX_JSON_BYTES):
    """The value of a JSON file (at most `limit` bytes, a regular file, no duplicate keys)."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise CheckpointError(path, f"is {size} bytes, more than the {limit} a JSON file of "
                                        f"a model directory may have")
        return parse_json(path, f.read())


def read_safetensors_header(path):
    """Read and validate a safetensors header without reading any tensor data.

    Returns (entries, metadata, data_start): entries maps each name to (dtype name, shape,
    (begin, end)) in file order; metadata is the "__metadata__" dict ({} if absent);
    data_start is the file offset of the byte buffer.
    """
    with open_regular(path) as f:
        file_size = os.fstat(f.fileno()).st_size
        if file_size < 8:
            raise CheckpointError(path, f"file is {file_size} bytes, too short for the 8-byte header length")
        (header_size,) = struct.unpack("<Q", f.read(8))
        if header_size > min(file_size - 8, _MAX_HEADER_BYTES):
            raise CheckpointError(path, f"header length {header_size} runs past the end of the "
                                        f"{file_size}-byte file (or exceeds {_MAX_HEADER_BYTES})")
        header = _parse_header_json(path, f.read(header_size))
    metadata = _check_metadata(path, header.pop("__metadata__", {}))
    entries = {name: _check_entry(path, name, entry) for name, entry in header.items()}
    _check_tiling(path, entries, buffer_size=file_size - 8 - header_size)
    return entries, metadata, 8 + header_size


def read_safetensors_metadata(path):
    """The "__metadata__" {str: str} of a safetensors file ({} if it has none)."""
    return read_safetensors_header(path)[1]


def load_safetensors(path):
    """Read a .safetensors file -> {name: np.ndarray} (BF16 widened to float32)."""
    entries, _, data_start = read_safetensors_header(path)
    tensors = {}
    with open_regular(path) as f:
        for name, (dtype, shape, (begin, end)) in entries.items():
            f.seek(data_start + begin)
            raw = np.empty(end - begin, dtype=np.uint8)
            if f.readinto(raw) != raw.nbytes:
                raise CheckpointError(path, f"{name!r}: file ended while reading its data")
            tensors[name] = _decode(raw.view(_STORED_AS[dtype]).reshape(shape), dtype)
    return tensors


def _decode(stored, dtype):
    if dtype == "BF16":
        return bfloat16_to_float32(stored)
    if dtype == "BOOL":
        return stored.astype(bool)     # any non-zero byte is True
    return stored


def _parse_header_json(path, header_bytes):
    header = parse_json(path, header_bytes)
    if not isinstance(header, dict):
        raise CheckpointError(path, f"header must be a JSON object, got {type(header).__name__}")
    return header


def _check_metadata(path, metadata):
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(path, f"__metadata__ must map str to str, got {metadata!r:.200}")
    return metadata


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_entry(path, name, entry):
    """One header entry -> (dtype, shape, (begin, end)), with shape x itemsize == end - begin."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise CheckpointError(path, f"{name!r}: entry must have dtype, shape and data_offsets, "
                                    f"got {entry!r:.200}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _STORED_AS:
        raise CheckpointError(path, f"{name!r}: unknown dtype {dtype!r:.50}; "
                                    f"supported: {', '.join(_STORED_AS)}")
    if (not isinstance(shape, list) or len(shape) > _MAX_NDIM
            or not all(_is_int(d) and d >= 0 for d in shape)):
        raise CheckpointError(path, f"{name!r}: shape must be a list of at most {_MAX_NDIM} non-negative ints, "
                                    f"got {shape!r:.200}")
    itemsize = _STORED_AS[dtype].itemsize
    if math.prod(d for d in shape if d) * itemsize > sys.maxsize:
        raise CheckpointError(path, f"{name!r}: shape {shape} is too large for an array")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(path, f"{name!r}: data_offsets must be [begin, end] with "
                                    f"0 <= begin <= end, got {offsets!r:.200}")
    nbytes = math.prod(shape) * itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise CheckpointError(path, f"{name!r}: data_offsets {offsets} hold {offsets[1] - offsets[0]} "
                                    f"bytes but {dtype} {shape} needs {nbytes}")
    return dtype, tuple(shape), tuple(offsets)


def _check_tiling(path, entries, buffer_size):
    """The tensors must cover the byte buffer exactly: in range, no overlap, no gap."""
    end_of_previous, previous = 0, None
    for name, (_, _, (begin, end)) in sorted(entries.items(), key=lambda item: item[1][2]):
        if end > buffer_size:
            raise CheckpointError(path, f"{name!r}: data_offsets [{begin}, {end}] run past the "
                                        f"end of the {buffer_size}-byte data buffer")
        if begin < end_of_previous:
            raise CheckpointError(path, f"{name!r}: data_offsets [{begin}, {end}] overlap {previous!r}")
        if begin > end_of_previous:
            raise CheckpointError(path, f"bytes [{end_of_previous}, {begin}) of the data buffer "
                                        f"belong to no tensor")
        end_of_previous, previous = end, name
    if end_of_previous != buffer_size:
        raise CheckpointError(path, f"{buffer_size - end_of_previous} bytes after the last tensor "
                                    f"belong to no tensor")


def load_npz(path):
    """Read an .npz file -> {name: np.ndarray}; pickled objects are refused.

    Each member must be an .npy array, stored or compressed, not encrypted, its name unique; its
    sizes are checked before anything is allocated (see the module's docstring). Anything else
    raises CheckpointError.
    """
    with open_regular(path) as f:
        try:
            with zipfile.ZipFile(f) as archive:
                members = _npz_members(path, archive, os.fstat(f.fileno()).st_size)
                return {name: _read_npy(path, archive, info) for name, info in members.items()}
        except CheckpointError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error,
                NotImplementedError) as error:
            raise CheckpointError(path, f"not an .npz archive readable without pickle: "
                                        f"{error}") from None


def _npz_members(path, archive, file_size):
    """{array name: ZipInfo} of an archive, each member checked against the file's size."""
    members = {}
    for info in archive.infolist():
        where = f"member {info.filename!r:.100}"
        if info.flag_bits & 0x1:
            raise CheckpointError(path, f"{where} is encrypted")
        if not info.filename.endswith(".npy"):
            raise CheckpointError(path, f"{where} is not an .npy array")
        if info.filename[:-4] in members:
            raise CheckpointError(path, f"{where} appears twice")
        if info.compress_size > file_size or (info.compress_type == zipfile.ZIP_STORED
                                              and info.file_size != info.compress_size):
            raise CheckpointError(path, f"{where} declares {info.compress_size} stored bytes "
                                        f"for {info.file_size}, in a file of {file_size}")
        members[info.filename[:-4]] = info
    expanded = sum(info.file_size for info in members.values())
    if expanded > _MAX_EXPANSION * file_size:
        raise CheckpointError(path, f"its members expand to {expanded} bytes, more than "
                                    f"{_MAX_EXPANSION} times the file's {file_size} (a zip bomb?)")
    return members


_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}


def _read_npy(path, archive, info):
    """One .npy member -> a writable array, its header's shape checked against the member's
    size before the array is allocated."""
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in _NPY_HEADERS:
            raise CheckpointError(path, f"{info.filename!r}: .npy format version {version} is "
                                        f"not supported (1.0 and 2.0 are)")
        shape, fortran_order, dtype = _NPY_HEADERS[version](f)
        if dtype.hasobject:
            raise CheckpointError(path, f"{info.filename!r} holds Python objects, which would "
                                        f"need pickle")
        nbytes = math.prod(shape) * dtype.itemsize
        if f.tell() + nbytes != info.file_size:
            raise CheckpointError(path, f"{info.filename!r}: shape {shape} of {dtype} needs "
                                        f"{nbytes} bytes but the member holds "
                                        f"{info.file_size - f.tell()}")
        array = np.empty(math.prod(shape), dtype=dtype)
        if f.readinto(array.view(np.uint8)) != nbytes:
            raise CheckpointError(path, f"{info.filename!r}: member ended early")
        return array.reshape(shape, order="F" if fortran_order else "C")


# ----------------------------------------------------------------------------- reading lazily

def open_safetensors(path):
    """The tensors of a .safetensors file, checked as load_safetensors checks them but not read:
    {name: StoredTensor} in file order."""
    entries, _, data_start = read_safetensors_header(path)
    return {name: StoredTensor(path, dtype, shape, data_start + begin)
            for name, (dtype, shape, (begin, _)) in entries.items()}


def copy_into(destination, values, asarray=np.asarray):
    """Write `values` (an array or a LazyArray of destination's shape) into `destination`, cast
    to its dtype. asarray turns each host array into one of the destination's kind (for a CuPy
    destination: cupy.asarray, which sends it to the GPU)."""
    if tuple(values.shape) != tuple(destination.shape):
        raise ValueError(f"cannot copy values of shape {tuple(values.shape)} into an array of "
                         f"shape {tuple(destination.shape)}")
    if isinstance(values, LazyArray):
        values.copy_to(destination, asarray)
    else:
        destination[...] = asarray(values)


class LazyArray:
    """An array whose values stay in the file until they are copied where they belong.

    shape, ndim and dtype (the dtype the values read as) are known at once.
    copy_to(destination, asarray) writes the values into an existing array of the same shape
    (see copy_into); mapped() is a read-only memory map of the file where it holds the values
    as they are (else None); numpy.asarray(lazy) reads them into a new array. Transposing (.T)
    and stacking (Concatenated) are lazy too, so a checkpoint can be rearranged before a byte
    of it is read."""

    ndim = property(lambda self: len(self.shape))
    T = property(lambda self: Transposed(self))

    def mapped(self):
        return None

    def __array__(self, dtype=None, copy=None):
        if copy is False:
            raise ValueError("a LazyArray is read into a new array: it cannot be had without "
                             "a copy")
        values = np.empty(self.shape, self.dtype)
        self.copy_to(values)
        return values if dtype is None else values.astype(dtype, copy=False)


class StoredTensor(LazyArray):
    """One tensor of a safetensors file (dtype: its safetensors name; offset: where its bytes
    begin in the file), read a few MiB of rows at a time through numpy.memmap."""

    def __init__(self, path, dtype, shape, offset):
        self.path, self.stored_dtype = os.fspath(path), dtype   # a str: memmap resolves a Path
        self.shape, self.offset = shape, offset
        self.dtype = _READ_AS[dtype]

    def __repr__(self):
        return f"StoredTensor({self.path!r}, {self.stored_dtype}, {self.shape})"

    def copy_to(self, destination, asarray=np.asarray):
        for index, stored in self._blocks():
            destination[index] = asarray(_decode(stored, self.stored_dtype))

    def mapped(self):
        """A read-only array over the file's bytes, for the dtypes NumPy reads as they are."""
        if self.dtype != _STORED_AS[self.stored_dtype]:
            return None
        if 0 in self.shape:
            return np.empty(self.shape, self.dtype)
        return np.asarray(self._map(0, self.shape))

    def _map(self, skip, shape):
        with open_regular(self.path) as f:   # (still a regular file: not swapped for a FIFO)
            return np.memmap(f, _STORED_AS[self.stored_dtype], mode="r",
                             offset=self.offset + skip, shape=shape)

    def _blocks(self):
        """(index, stored values) that cover the tensor: _BLOCK_BYTES of whole rows each."""
        if 0 in self.shape:
            return
        if not self.shape:
            yield ..., self._map(0, ())
            return
        row_bytes = math.prod(self.shape[1:]) * _STORED_AS[self.stored_dtype].itemsize
        rows_per_block = max(1, _BLOCK_BYTES // row_bytes)
        for first in range(0, self.shape[0], rows_per_block):
            rows = min(rows_per_block, self.shape[0] - first)
            yield (slice(first, first + rows),
                   self._map(first * row_bytes, (rows, *self.shape[1:])))


class Transposed(LazyArray):
    """source.T, read straight into the destination's transpose."""

    def __init__(self, source):
        self.source, self.shape, self.dtype = source, tuple(source.shape[::-1]), source.dtype

    T = property(lambda self: self.source)

    def copy_to(self, destination, asarray=np.asarray):
        copy_into(destination.T, self.source, asarray)

    def mapped(self):
        source = self.source.mapped()
        return None if source is None else source.T


class Concatenated(LazyArray):
    """Arrays or LazyArrays stacked along the first axis (numpy.concatenate), each read straight
    into its rows of the destination."""

    def __init__(self, parts):
        trailing = {tuple(part.shape[1:]) for part in parts}
        if not parts or len(trailing) != 1 or any(part.ndim == 0 for part in parts):
            raise ValueError(f"cannot concatenate arrays of shapes "
                             f"{[tuple(part.shape) for part in parts]} along the first axis")
        self.parts = parts
        self.shape = (sum(part.shape[0] for part in parts), *trailing.pop())
        self.dtype = np.result_type(*(part.dtype for part in parts))

    def copy_to(self, destination, asarray=np.asarray):
        first = 0
        for part in self.parts:
            copy_into(destination[first:first + part.shape[0]], part, asarray)
            first += part.shape[0]


# ----------------------------------------------------------------------------- by suffix

_FORMATS = {".safetensors": (save_safetensors, load_safetensors), ".npz": (save_npz, load_npz)}


def _format(path):
    suffix = Path(path).suffix
    if suffix not in _FORMATS:
        raise ValueError(f"{os.fspath(path)}: unknown checkpoint suffix {suffix!r}; "
                         f"use one of {', '.join(_FORMATS)}")
    return _FORMATS[suffix]


def save(state_dict, path):
    """Save {name: np.ndarray or Tensor} atomically; the suffix (.safetensors or .npz) picks the format."""
    _format(path)[0](state_dict, path)


def load(path):
    """Load a .safetensors or .npz checkpoint -> {name: np.ndarray}."""
    return _format(path)[1](path)

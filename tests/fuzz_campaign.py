"""A fuzzing campaign over minivlm's readers, larger than the suite's hypothesis fuzzers and run
outside it (it takes minutes):

    PYTHONPATH=. python tests/fuzz_campaign.py --files 2000

Each worker process makes hostile inputs of one kind from a seeded generator and reads each one:
safetensors files with mutated bytes or random headers, .npz archives of random members (random
.npy headers, flags, compression, zip bombs, cut or mutated bytes), config.json values and
shard names of model directories, and FIFOs and devices. It counts clean errors (CheckpointError)
and values, and reports any other exception and any read that takes longer than --timeout
seconds (a hang), with the worker's peak resident memory.
"""
import argparse
import io as stdio
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import traceback
import warnings
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from minivlm import io
from minivlm.models.lm import LMConfig, build_model
from minivlm.pretrained import load_pretrained, save_pretrained

FIXTURES = Path(__file__).with_name("fixtures")
HOSTILE_NUMBERS = [0, -1, 1, 2, 3, 7, 2 ** 31, 2 ** 40, 10 ** 6, 10 ** 12, 1.5, 1e-300, 1e300,
                   float("nan"), float("inf"), -float("inf"), True, False, None, "12", "", [],
                   [1, 2], {}, {"a": 1}]


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang


def random_json(rng, depth=0):
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.choice(HOSTILE_NUMBERS)
    if kind == 1:
        return rng.randint(-2 ** 70, 2 ** 70)
    if kind == 2:
        return "".join(rng.choice("aF3_.\\/\"\u00e9") for _ in range(rng.randrange(6)))
    if kind == 3:
        return rng.choice([None, True, 0.5, -3])
    if kind in (4, 5):
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {random_json_key(rng): random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def random_json_key(rng):
    return rng.choice(["w", "b", "dtype", "shape", "data_offsets", "__metadata__", "x" * 3])


def mutated(rng, content):
    content = bytearray(content)
    for _ in range(rng.randrange(5)):
        if content:
            content[rng.randrange(len(content))] = rng.randrange(256)
    if content and rng.random() < 0.3:
        content = content[:rng.randrange(len(content))]
    return bytes(content)


# --- the kinds of input: each returns (path, reader) ---------------------------------------------

def safetensors_bytes(rng):
    tensors = {f"t{i}": np.asarray(np.random.default_rng(rng.randrange(9)).standard_normal(
        rng.choice([(), (0,), (3,), (2, 3)])), dtype=rng.choice(["<f4", "<f2", "<i8", "|u1"]))
        for i in range(rng.randrange(1, 4))}
    path = Path(tempfile.mkdtemp()) / "x.safetensors"
    io.save_safetensors(tensors, path, metadata={"k": "v"})
    content = path.read_bytes()
    shutil.rmtree(path.parent)
    return content


def safetensors_mutated(rng, directory):
    path = directory / "mutated.safetensors"
    path.write_bytes(mutated(rng, safetensors_bytes(rng)))
    return path, io.load_safetensors


def safetensors_header(rng, directory):
    entries = []
    for _ in range(rng.randrange(4)):
        entry = {"dtype": rng.choice(["F32", "BF16", "I64", "BOOL", "X", 3]),
                 "shape": [rng.choice([0, 1, 2, 3, 2 ** 40, -1]) for _ in range(rng.randrange(3))],
                 "data_offsets": [rng.choice([0, 4, 8, 2 ** 62, -4]) for _ in range(2)]}
        entries.append((random_json_key(rng), entry if rng.random() < 0.7 else random_json(rng)))
    text = "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in entries) + "}"
    header = text.encode()
    header += b" " * (-len(header) % 8)
    size = len(header) if rng.random() < 0.9 else rng.choice([0, 2 ** 63, len(header) + 9])
    path = directory / "header.safetensors"
    path.write_bytes(struct.pack("<Q", size) + header + bytes(rng.randrange(40)))
    return path, io.load_safetensors


def npy_member(rng):
    choice = rng.randrange(4)
    if choice == 0:
        stream = stdio.BytesIO()
        np.lib.format.write_array(stream, np.arange(rng.randrange(8), dtype=np.float32))
        return stream.getvalue()
    if choice == 1:
        header = {"descr": rng.choice(["<f4", "|O", ">i8", "<U2", "V3", "x", 5]),
                  "fortran_order": rng.choice([True, False, 1, None]),
                  "shape": tuple(rng.choice([0, 1, 3, 2 ** 40, -1])
                                 for _ in range(rng.randrange(3)))}
        text = repr(header).encode() + b"\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + bytes(rng.randrange(16))
    if choice == 2:
        stream = stdio.BytesIO()
        np.lib.format.write_array(stream, np.zeros(rng.choice([10, 10 ** 6, 3 * 10 ** 6]),
                                                   np.float32))
        return stream.getvalue()   # (deflated: a small bomb)
    return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))


def npz_archive(rng, directory):
    stream = stdio.BytesIO()
    compression = rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
    with zipfile.ZipFile(stream, "w", compression) as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")   # zipfile warns of a name twice, and writes it
        for _ in range(rng.randrange(4)):
            name = rng.choice(["a.npy", "b.npy", "a.npy", "c.txt", "../d.npy", "e"])
            archive.writestr(name, npy_member(rng))
    content = bytearray(stream.getvalue())
    if rng.random() < 0.2:   # mark the members encrypted
        for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            start = content.find(signature)
            while start >= 0:
                content[start + offset] |= 1
                start = content.find(signature, start + 4)
    path = directory / "archive.npz"
    path.write_bytes(mutated(rng, content) if rng.random() < 0.5 else bytes(content))
    return path, io.load_npz


MODEL_DIRECTORIES = {}


def model_directory(name, root):
    """vit_tiny, swin_tiny, clip_tiny, llama_tiny, or a tiny gpt2 saved once in `root`."""
    if name not in MODEL_DIRECTORIES:
        if name == "gpt2":
            save_pretrained(build_model(LMConfig("causal", 40, 8, 8, 2, 2)), root / "gpt2")
            MODEL_DIRECTORIES[name] = root / "gpt2"
        else:
            MODEL_DIRECTORIES[name] = FIXTURES / name
    return MODEL_DIRECTORIES[name]


def config_value(rng, directory):
    source = model_directory(rng.choice(["vit_tiny", "swin_tiny", "clip_tiny", "gpt2",
                                         "llama_tiny"]),
                             directory.parent)
    target = directory / "model"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    for _ in range(rng.randrange(1, 3)):
        nested = [value for value in config.values() if isinstance(value, dict) and value]
        section = rng.choice(nested) if nested and rng.random() < 0.5 else config
        section[rng.choice(sorted(section))] = rng.choice(HOSTILE_NUMBERS + [random_json(rng)])
    (target / "config.json").write_text(json.dumps(config))
    return target, load_pretrained


def shard_name(rng, directory):
    target = directory / "sharded"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    shutil.copy(FIXTURES / "vit_tiny" / "config.json", target)
    shutil.copy(FIXTURES / "vit_tiny" / "model.safetensors", target / "part.safetensors")
    names = io.read_safetensors_header(target / "part.safetensors")[0]
    shard = "".join(rng.choice(["..", "/", "\\", "part.safetensors", "C:", ".", "a", "/etc/passwd"])
                    for _ in range(rng.randrange(1, 4)))
    weight_map = {name: "part.safetensors" for name in names}
    weight_map[rng.choice(sorted(names))] = shard
    (target / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return target, load_pretrained


def special_file(rng, directory):
    fifo = directory / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    path = rng.choice([str(fifo), "/dev/zero", "/dev/null", "/dev/urandom", str(directory)])
    return Path(path), rng.choice([io.load_safetensors, io.load_npz, io.read_json])


KINDS = {"safetensors-mutated": safetensors_mutated, "safetensors-header": safetensors_header,
         "npz-archive": npz_archive, "config-value": config_value, "shard-name": shard_name,
         "fifo-or-device": special_file}


def peak_resident_kib():
    """The peak resident memory of this process since its exec (Linux's VmHWM: ru_maxrss would
    include the parent's peak, kept across fork and exec)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))


def worker(kind, seed, files, timeout):
    """Read `files` inputs of `kind`: prints one JSON line of counts."""
    rng = random.Random(seed)
    signal.signal(signal.SIGALRM, _alarm)
    counts, others = Counter(), {}
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch) / "work"
        directory.mkdir()
        for _ in range(files):
            path, reader = KINDS[kind](rng, directory)
            signal.alarm(timeout)
            try:
                reader(path)
                counts["value"] += 1
            except io.CheckpointError:
                counts["clean error"] += 1
            except Hang:
                counts["hang"] += 1
            except Exception as error:   # a finding: anything but CheckpointError
                counts["other"] += 1
                where = traceback.extract_tb(error.__traceback__)[-1]
                others.setdefault(type(error).__name__,
                                  f"{error}"[:200] + f" ({where.filename}:{where.lineno})")
            finally:
                signal.alarm(0)
    peak_mib = peak_resident_kib() / 1024
    print(json.dumps({"kind": kind, "files": files, **counts, "others": others,
                      "peak_mib": round(peak_mib)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000, help="inputs of each kind")
    parser.add_argument("--timeout", type=int, default=20, help="seconds a read may take")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker[0], int(args.worker[1]), args.files, args.timeout)
    totals = Counter()
    for kind in KINDS:
        files = args.files if kind != "fifo-or-device" else min(args.files, 100)
        result = subprocess.run([sys.executable, __file__, "--worker", kind, str(args.seed),
                                 "--files", str(files), "--timeout", str(args.timeout)],
                                capture_output=True, text=True)
        line = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else \
            json.dumps({"kind": kind, "crashed": result.returncode, "stderr": result.stderr[-500:]})
        print(line, flush=True)
        totals.update({k: v for k, v in json.loads(line).items() if isinstance(v, int)
                       and k != "peak_mib"})
    print("total:", dict(totals))


if __name__ == "__main__":
    main()

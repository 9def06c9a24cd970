"""Loading real checkpoints: minivlm's load_pretrained against transformers' from_pretrained.

    PYTHONPATH=. python -m benchmarks.loading                  # every case, 3 runs each
    PYTHONPATH=. python -m benchmarks.loading --only clip_f32 --runs 5

The checkpoints are made here, by transformers with random weights (torch seed 0), in a
temporary directory: CLIP ViT-B/32 (transformers' CLIPConfig defaults, 151 M parameters) saved
in F32 and in F16, and a SmolLM2-135M-shaped llama (hidden 576, 30 layers, 9 heads, 3 key-value
heads, MLP 1536, vocabulary 49,152, tied embeddings) in F32 and in BF16.

Each row runs in a fresh subprocess per run: it imports its library, makes the input (one
224×224 image of normal noise; for the llama 16 token ids), loads and runs a tiny model of the
same family once (a warm-up, so that neither library's one-time costs count: transformers
imports its modeling code on first use; both times are in the JSON, import_s and warm_up_s),
multiplies two 512² matrices (BLAS has its buffers), collects garbage, reads its resident set
size (VmRSS), resets the kernel's high-water mark (writing 5 to /proc/self/clear_refs), and then
times the first result: load, then encode the image (the llama: one forward of the 16 tokens).
It reports the load time, the time to the first result (wall-clock, and the process's CPU
time: user + system, which other processes on a shared machine disturb less) and the peak
memory over it: VmHWM minus the VmRSS read before, every page whoever mapped it (anonymous
memory and the file's mapped pages alike). As in run.py, glibc's mmap threshold is fixed at
64 KiB so that freed arrays leave the process at once, and both libraries get one thread
(--threads). The files were just written, so both read them from
the page cache: cold-cache reads from disk are not measured. minivlm loads float32 (its
default) and transformers is asked for dtype=torch.float32 too, so both give float32 results;
"check" is the relative difference of minivlm's first result from transformers'.

Rows per checkpoint: minivlm copying every tensor into its parameter (load_pretrained's
default), minivlm with mmap=True where the file holds float32 (tensors stay read-only maps of
the file; stacked ones, CLIP's in_proj, are still copied), and transformers. Targets (issue 18):
time to first result ≤ transformers'; peak ≤ 1.1 × the model's float32 size, and ≤ transformers'
with mmap=True (transformers maps the file lazily too).

Results go to benchmarks/results/loading-<date>.md and .json.
"""
import argparse
import datetime
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.run import RESULTS, REPO, _status_kib, machine, save

TARGET_MEMORY = 1.1          # × the model's float32 size
CASES = {   # name: (model type, file dtype, description)
    "clip_f32": ("clip", "F32", "CLIP ViT-B/32, F32 file"),
    "clip_f16": ("clip", "F16", "CLIP ViT-B/32, F16 file"),
    "llama_f32": ("llama", "F32", "SmolLM2-135M-shaped llama, F32 file"),
    "llama_bf16": ("llama", "BF16", "SmolLM2-135M-shaped llama, BF16 file"),
}
TOKENS = 16


# --- the checkpoints -----------------------------------------------------------------------------

def make_checkpoint(case, directory, tiny=False):
    """Write the case's model directory with transformers (random weights, torch seed 0); tiny:
    a model of the same family and input shapes, 1 layer, 8 wide (for the warm-up)."""
    import torch
    import transformers
    model_type, file_dtype, _ = CASES[case]
    torch.manual_seed(0)
    small = dict(hidden_size=8, intermediate_size=16, num_hidden_layers=1) if tiny else {}
    if model_type == "clip":
        heads = dict(num_attention_heads=2) if tiny else {}
        model = transformers.CLIPModel(transformers.CLIPConfig(
            text_config={**small, **heads}, vision_config={**small, **heads},
            projection_dim=8 if tiny else 512))
    else:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{
            **dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                   num_attention_heads=9, num_key_value_heads=3), **small,
            **(dict(num_attention_heads=2, num_key_value_heads=1) if tiny else {}),
            "vocab_size": 49152, "max_position_embeddings": 8192, "rope_theta": 100000.0,
            "rms_norm_eps": 1e-5, "tie_word_embeddings": True}))
    dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[file_dtype]
    model.to(dtype).save_pretrained(directory)


def float32_bytes(directory):
    """The model's size in float32: 4 bytes per element of its floating-point tensors."""
    from minivlm import io
    files = sorted(Path(directory).glob("*.safetensors"))
    return sum(4 * math.prod(shape) for path in files
               for dtype, shape, _ in io.read_safetensors_header(path)[0].values()
               if dtype in ("F32", "F16", "BF16", "F64"))


# --- one measurement (in a fresh subprocess) -----------------------------------------------------

def model_input(model_type):
    """One 224×224 image (1, 3, 224, 224) for CLIP, 16 token ids (1, 16) for the llama."""
    rng = np.random.default_rng(0)
    if model_type == "clip":
        return rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    return rng.integers(0, 49152, size=(1, TOKENS))


def minivlm_first_result(model_type, mode):
    """directory -> (seconds to load, the first result as a NumPy array), to be timed."""
    import minivlm as mv
    inputs = model_input(model_type)

    def first_result(directory):
        start = time.perf_counter()
        model = mv.load_pretrained(directory, mmap=mode == "mmap")
        loaded = time.perf_counter() - start
        with mv.no_grad():
            output = model.encode_image(inputs) if model_type == "clip" else model(inputs)
        return loaded, output.numpy()
    return first_result


def transformers_first_result(model_type):
    """directory -> (seconds to load, the first result as a NumPy array), to be timed."""
    import torch
    import transformers
    torch.set_grad_enabled(False)
    inputs = torch.from_numpy(model_input(model_type))
    model_class = transformers.CLIPModel if model_type == "clip" else \
        transformers.LlamaForCausalLM

    def first_result(directory):
        start = time.perf_counter()
        model = model_class.from_pretrained(directory, dtype=torch.float32)
        loaded = time.perf_counter() - start
        if model_type == "clip":
            output = model.get_image_features(pixel_values=inputs).pooler_output
        else:
            output = model(input_ids=inputs).logits
        return loaded, output.numpy()
    return first_result


def probe(case, library, mode, directory, result_path, threads):
    """Run in the subprocess: time and peak memory of the first result (after the library's
    imports and a warm-up on the tiny model of the case's family); saves the result."""
    start = time.perf_counter()
    import threadpoolctl
    threadpoolctl.threadpool_limits(threads)
    model_type = CASES[case][0]
    if library == "minivlm":
        first_result = minivlm_first_result(model_type, mode)
    else:
        import torch
        torch.set_num_threads(threads)
        first_result = transformers_first_result(model_type)
    imported = time.perf_counter()
    first_result(Path(directory).parent / f"{case}-tiny")
    warmed_up = time.perf_counter()
    warm = np.ones((512, 512), dtype=np.float32)
    warm @ warm
    gc.collect()
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")   # the high-water mark starts again here
    start_first, start_cpu = time.perf_counter(), time.process_time()
    load_s, output = first_result(directory)
    first_s, first_cpu_s = time.perf_counter() - start_first, time.process_time() - start_cpu
    peak = (_status_kib("VmHWM") - before) * 1024
    np.save(result_path, output)
    return {"load_s": load_s, "first_s": first_s, "first_cpu_s": first_cpu_s,
            "peak_bytes": peak, "import_s": imported - start, "warm_up_s": warmed_up - imported}


def measure(case, library, mode, directory, result_path, threads):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-m", "benchmarks.loading", "--probe", case,
                             library, mode, str(directory), str(result_path),
                             "--threads", str(threads)],
                            cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"probe {case}/{library}/{mode} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.splitlines()[-1])


# --- the suite -----------------------------------------------------------------------------------

def rows_of(case):
    """(library, mode) of each row of a case: minivlm's modes, then transformers."""
    modes = ["copy", "mmap"] if CASES[case][1] == "F32" else ["copy"]
    return [("minivlm", mode) for mode in modes] + [("transformers", "lazy")]


def run_case(case, runs, threads, scratch, log):
    """Every row of one case, `runs` rounds of fresh subprocesses, rows alternating."""
    directory = scratch / case
    make_checkpoint(case, directory)
    make_checkpoint(case, scratch / f"{case}-tiny", tiny=True)
    rows = rows_of(case)
    measured = {row: [] for row in rows}
    for run in range(runs):
        for library, mode in rows:
            result_path = scratch / f"{case}-{library}-{mode}.npy"
            measured[(library, mode)].append(
                measure(case, library, mode, directory, result_path, threads))
            log(f"  {case} {library} {mode} run {run + 1}: {measured[(library, mode)][-1]}")
    theirs = np.load(scratch / f"{case}-transformers-lazy.npy").astype(np.float64)
    report = {"case": case, "description": CASES[case][2],
              "float32_bytes": float32_bytes(directory), "rows": []}
    for (library, mode), results in measured.items():
        row = {"library": library, "mode": mode, "runs": results}
        if results:
            row.update({key: statistics.median(r[key] for r in results)
                        for key in ("load_s", "first_s", "first_cpu_s", "peak_bytes")})
            ours = np.load(scratch / f"{case}-{library}-{mode}.npy").astype(np.float64)
            row["check"] = float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))
        report["rows"].append(row)
    return report


# --- the report ----------------------------------------------------------------------------------

COLUMNS = ["checkpoint", "library", "load ms", "first result ms", "vs transformers",
           "first result CPU ms", "CPU vs transformers", "peak MiB", "× float32 size",
           "memory target", "check"]


def row_cells(case, row, theirs):
    name = f"{case['description']} ({case['float32_bytes'] / 2 ** 20:.0f} MiB as float32)"
    library = row["library"] if row["library"] == "transformers" else \
        f"minivlm ({'mmap=True' if row['mode'] == 'mmap' else row['mode']})"
    size_ratio = row["peak_bytes"] / case["float32_bytes"]
    if row["library"] == "transformers":
        target = "—"
    elif row["mode"] == "mmap":
        met = row["peak_bytes"] <= theirs["peak_bytes"]
        target = f"≤ transformers' {'✓' if met else '✗'}"
    else:
        target = f"≤ {TARGET_MEMORY} × {'✓' if size_ratio <= TARGET_MEMORY else '✗'}"
    def versus(key):
        ratio = row[key] / theirs[key]
        return "—" if row["library"] == "transformers" else \
            f"{ratio:.2f} {'✓' if ratio <= 1 else '✗'}"
    return [name, library, f"{row['load_s'] * 1e3:.0f}", f"{row['first_s'] * 1e3:.0f}",
            versus("first_s"), f"{row['first_cpu_s'] * 1e3:.0f}", versus("first_cpu_s"),
            f"{row['peak_bytes'] / 2 ** 20:.0f}", f"{size_ratio:.2f}", target,
            "—" if row["library"] == "transformers" else f"{row['check']:.1e}"]


def markdown(report):
    lines = [f"# Loading checkpoints: minivlm vs transformers, CPU — {report['date']}", "",
             f"Command: `{report['command']}`", "",
             f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; "
             f"NumPy {report['machine']['numpy']}; torch {report['machine'].get('torch')}; "
             f"transformers {report['transformers']}; {report['threads']} thread(s) each.",
             f"Load average (1 min) before / after: {report['load_before'][0]:.1f} / "
             f"{report['load_after'][0]:.1f}.",
             f"Median of {report['runs']} fresh subprocesses per row (see benchmarks/loading.py):"
             f" first result = load + encode one 224×224 image (llama: one forward of "
             f"{TOKENS} tokens), wall-clock and process CPU time (user + system: less "
             f"sensitive to other processes on a shared machine); peak = VmHWM over it minus "
             f"VmRSS before; vs transformers = time to first result / transformers' (target ≤ "
             f"1); memory target ≤ "
             f"{TARGET_MEMORY} × the float32 size, ≤ transformers' with mmap=True; check = "
             f"‖minivlm − transformers‖ / ‖transformers‖ of the first result.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for case in report["cases"]:
        theirs = next(r for r in case["rows"] if r["library"] == "transformers")
        lines += ["| " + " | ".join(row_cells(case, row, theirs)) + " |" for row in case["rows"]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description="load_pretrained vs from_pretrained (CPU)")
    parser.add_argument("--only", action="append", choices=sorted(CASES),
                        help="run only this checkpoint (repeatable)")
    parser.add_argument("--runs", type=int, default=3, help="subprocesses per row (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS / torch threads (1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--probe", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(*args.probe, threads=args.threads)))
        return

    import transformers
    load_before = os.getloadavg()
    description = machine()
    with tempfile.TemporaryDirectory(prefix="minivlm-loading-") as scratch:
        cases = [run_case(case, args.runs, args.threads, Path(scratch), print)
                 for case in (args.only or CASES)]
    report = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(["python -m benchmarks.loading",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "machine": description, "transformers": transformers.__version__,
              "threads": args.threads, "runs": args.runs, "load_before": load_before,
              "load_after": os.getloadavg(), "cases": cases}
    stem = save(report, args.out, "loading", markdown)
    print()
    print(markdown(report))
    print(f"written: {stem}.md, {stem}.json")


if __name__ == "__main__":
    main()

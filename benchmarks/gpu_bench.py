"""GPU benchmark: training steps in minivlm on CuPy and in torch CUDA eager, float32, TF32 off.

Workloads (benchmarks/workloads.py, gpu_workloads): the ViT-B/16 training step (batch 32, 224²,
AdamW) and the CLIP ViT-B/32 training step (batch 128 pairs, AdamW), torch starting from minivlm's
initial weights. Each round times, one after the other, a minivlm step, a torch step and a minivlm
step with the fused kernels of minivlm/functional/kernels.py turned off (MINIVLM_FUSED_KERNELS=0),
each ending in loss.item(), which waits for the GPU. Reported: medians, minivlm / torch, what the
fused kernels gain, minivlm's achieved FLOP/s against CuPy's float32 GEMM rate (8192²), and the
peak GPU memory each library holds (CuPy's memory pool, torch's caching allocator: weights,
gradients, optimizer state and activations).

    CUPY_TF32=0 PYTHONPATH=. python benchmarks/gpu_bench.py --out "$OUT"
    PYTHONPATH=. python benchmarks/gpu_bench.py --smoke   # this script's logic: CPU, tiny models
"""
import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.run import RESULTS, relative_difference, write_atomically
from minivlm import backend
from benchmarks.workloads import clip_training, gpu_workloads, vit_training


class Device:
    """Where each library runs, and how to wait for it and read its memory."""

    def __init__(self, smoke):
        os.environ.setdefault("CUPY_TF32", "0")  # read when CuPy loads, later: full float32 GEMMs
        self.smoke = smoke
        self.minivlm, self.torch = ("numpy", "cpu") if smoke else ("cupy", "cuda")
        if not smoke:
            import torch
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False

    def describe(self):
        import torch
        description = {"python": platform.python_version(), "numpy": np.__version__,
                       "torch": torch.__version__, "CUPY_TF32": os.environ.get("CUPY_TF32"),
                       "smoke": self.smoke}
        if not self.smoke:
            import cupy
            properties = cupy.cuda.runtime.getDeviceProperties(0)
            description.update(
                gpu=properties["name"].decode(), cupy=cupy.__version__,
                cuda_runtime=cupy.cuda.runtime.runtimeGetVersion(),
                torch_cuda=torch.version.cuda,
                torch_allow_tf32=(torch.backends.cuda.matmul.allow_tf32,
                                  torch.backends.cudnn.allow_tf32))
        return description

    def gemm_rate(self, n=8192, repeats=5):
        """float32 matrix-multiply FLOP/s of CuPy (NumPy with --smoke), best of `repeats`."""
        xp = np if self.smoke else backend.module("cupy")
        n = 1024 if self.smoke else n
        a = xp.asarray(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
        best = float("inf")
        for _ in range(repeats + 1):
            self.synchronize()
            start = time.perf_counter()
            a @ a
            self.synchronize()
            best = min(best, time.perf_counter() - start)
        return 2 * n ** 3 / best

    def synchronize(self):
        if not self.smoke:
            import cupy
            import torch
            cupy.cuda.Device().synchronize()
            torch.cuda.synchronize()

    def reset_memory(self):
        """Empty CuPy's pool and torch's cache and peak counters."""
        gc.collect()
        if not self.smoke:
            import cupy
            import torch
            cupy.get_default_memory_pool().free_all_blocks()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_memory(self):
        """(minivlm, torch) bytes held at the peak: CuPy's pool never gives memory back by itself,
        so its size is the high-water mark since reset_memory; torch's peak reserved."""
        if self.smoke:
            return None, None
        import cupy
        import torch
        return cupy.get_default_memory_pool().total_bytes(), torch.cuda.max_memory_reserved()


def _timed(step, device):
    device.synchronize()
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def _without_fused_kernels(step):
    def unfused():
        os.environ["MINIVLM_FUSED_KERNELS"] = "0"
        try:
            return step()
        finally:
            del os.environ["MINIVLM_FUSED_KERNELS"]
    return unfused


def run_workload(workload, device, repeats, log):
    device.reset_memory()
    ours, model = workload.minivlm(device.minivlm)
    theirs = workload.torch(device.torch, model)
    steps = {"minivlm": ours, "torch": theirs, "minivlm_unfused": _without_fused_kernels(ours)}
    first = {name: step() for name, step in steps.items()}  # warm-up (and kernel compilation)
    for step in steps.values():
        step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(_timed(step, device))
    memory = device.peak_memory()
    median = {name: statistics.median(t) for name, t in times.items()}
    row = {"name": workload.name, "description": workload.description, "flops": workload.flops,
           "times_s": times, "median_s": median, "first_losses": first,
           "check": relative_difference(first["minivlm"], first["torch"]),
           "peak_bytes": {"minivlm": memory[0], "torch": memory[1]}}
    log(f"  {workload.name}: minivlm {median['minivlm'] * 1e3:.1f} ms, torch "
        f"{median['torch'] * 1e3:.1f} ms, without fused kernels "
        f"{median['minivlm_unfused'] * 1e3:.1f} ms")
    del ours, theirs, steps, model
    return row


COLUMNS = ["workload", "minivlm ms", "torch ms", "ratio", "unfused ms", "kernel gain",
           "GFLOP/s", "% GEMM", "minivlm GiB", "torch GiB", "check"]


def row_cells(row, rate):
    median, peak = row["median_s"], row["peak_bytes"]

    def gib(value):
        return "—" if value is None else f"{value / 2 ** 30:.2f}"

    return [row["name"], f"{median['minivlm'] * 1e3:.1f}", f"{median['torch'] * 1e3:.1f}",
            f"{median['minivlm'] / median['torch']:.2f}", f"{median['minivlm_unfused'] * 1e3:.1f}",
            f"{median['minivlm_unfused'] / median['minivlm']:.2f}×",
            f"{row['flops'] / median['minivlm'] / 1e9:.0f}",
            f"{100 * row['flops'] / median['minivlm'] / rate:.0f}",
            gib(peak["minivlm"]), gib(peak["torch"]), f"{row['check']:.1e}"]


def markdown(report):
    lines = [f"# minivlm (CuPy) vs torch (CUDA eager), float32, TF32 off — {report['date']}", "",
             f"Command: `{report['command']}`", "",
             "Device: " + ", ".join(f"{k} {v}" for k, v in report["device"].items()), "",
             f"Float32 GEMM rate: {report['gemm_rate_flops'] / 1e12:.2f} TFLOP/s. Median of "
             f"{report['repeats']} rounds after two warm-ups; ratio = minivlm / torch (the step "
             f"ends in loss.item()); unfused = minivlm with MINIVLM_FUSED_KERNELS=0, kernel gain = "
             f"unfused / fused; GiB = peak GPU memory held; check = relative difference of the "
             f"first losses (same initial weights).", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row_cells(row, report["gemm_rate_flops"])) + " |"
              for row in report["rows"]]
    lines += ["", "Workloads:"] + [f"- {row['name']}: {row['description']}, "
                                   f"{row['flops'] / 1e12:.2f} TFLOP per step"
                                   for row in report["rows"]]
    return "\n".join(lines) + "\n"


def smoke_workloads():
    """Tiny stand-ins for gpu_workloads(), to run this script's logic on the CPU."""
    from benchmarks.workloads import small_clip_config
    from minivlm.models import ViTConfig
    return [vit_training(ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=64, num_classes=5),
                         batch=4, name="vit_smoke"),
            clip_training(small_clip_config(), batch=4, name="clip_smoke")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", action="append", metavar="NAME", help="only this workload")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or RESULTS),
                        help="results folder (default: $OUT, else benchmarks/results)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny models on the CPU: checks this script, measures nothing")
    args = parser.parse_args(argv)

    device = Device(args.smoke)
    workloads = smoke_workloads() if args.smoke else gpu_workloads()
    if args.only:
        workloads = [w for w in workloads if w.name in args.only]
    print("float32 GEMM rate ...", flush=True)
    rate = device.gemm_rate()
    rows = []
    for workload in workloads:
        print(f"{workload.name}: {workload.description} ...", flush=True)
        rows.append(run_workload(workload, device, args.repeats, lambda s: print(s, flush=True)))
    report = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(["python benchmarks/gpu_bench.py", *(argv or sys.argv[1:])]),
              "device": device.describe(), "repeats": args.repeats, "gemm_rate_flops": rate,
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / ("gpu-smoke" if args.smoke else "gpu")
    write_atomically(stem.with_suffix(".json"), json.dumps(report, indent=1))
    write_atomically(stem.with_suffix(".md"), markdown(report))
    print()
    print(markdown(report))
    print(f"written: {stem}.md, {stem}.json")


if __name__ == "__main__":
    main()

"""The benchmark suite: every workload in minivlm and in torch, alternating, in one run.

    PYTHONPATH=. python -m benchmarks                     # the CPU suite, all workloads
    PYTHONPATH=. python benchmarks/run.py --only vit_train --repeats 9
    PYTHONPATH=. python -m benchmarks --quick             # 2 repeats, 1 step per memory probe

For each workload: both steps are built (torch loads minivlm's initial weights where it can) and
run once as a warm-up, whose results are compared ("check": ‖ours − theirs‖ / ‖theirs‖); then
`repeats` rounds, each timing one minivlm step and then one torch step (garbage collected before
each), so that both see the same machine load. (A workload without a torch side times minivlm
alone — generation with the KV cache off, against the cached row — and a step of minutes may
cap its rounds and skip its warm-up; see Workload.) The table gives the medians, their ratio against
the target (training ≤ 1.0, inference ≤ 0.9), minivlm's achieved GFLOP/s (analytic FLOPs, see
workloads.py) and its share of the float32 GEMM rate that NumPy reaches in the same run (2048²,
best of 3, measured before and after the workloads), and the peak memory of each library.

Peak memory: each library runs the workload in a fresh subprocess (`--probe`), which builds the
step, collects garbage, multiplies two 512² matrices once (so both BLAS libraries have their
thread pools and buffers), reads its resident set size (VmRSS), resets the kernel's high-water
mark (writing 5 to /proc/self/clear_refs), runs the step (twice, once with --quick) and reads the
high-water mark (VmHWM). The rise is the step's memory: activations, gradients, optimizer state,
temporaries and allocator overhead; weights and inputs (the same bytes in both) are excluded.
The kernel counts every page, whoever allocated it (NumPy, OpenBLAS, torch's allocator, MKL,
oneDNN), which tracemalloc or torch's allocator statistics would not. glibc's mmap threshold is
fixed at 64 KiB in the probes (MALLOC_MMAP_THRESHOLD_) so that freed arrays leave the process at
once in both libraries and the high-water mark is that of live memory, not of heap fragmentation.

Results go to benchmarks/results/<suite>-<date>.md and .json (with the machine: CPU, cores,
BLAS and its kernel from threadpoolctl, versions, load average before and after).
"""
import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.timing import gemm_rate, timed

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
TARGET_RATIO = {"training": 1.0, "inference": 0.9, "generation": 1.0}
TARGET_GEMM_SHARE = 0.6
TARGET_MEMORY_RATIO = 1.3


def torch_available():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


# --- the machine -------------------------------------------------------------------------------

def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device_name="cpu"):
    """The description that goes with the numbers."""
    import scipy
    import threadpoolctl
    description = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "blas": [{key: pool.get(key) for key in ("internal_api", "version", "architecture",
                                                  "num_threads", "threading_layer", "filepath")}
                 for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"],
    }
    if torch_available():
        import torch
        config = torch.__config__.show()
        description["torch"] = torch.__version__
        description["torch_threads"] = torch.get_num_threads()
        settings = config.replace(",", " ").split()
        description["torch_blas"] = next((part.split("=", 1)[1] for part in settings
                                          if part.startswith("BLAS_INFO=")), "unknown")
        description["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return description


# --- peak memory (in a fresh subprocess per library and workload) --------------------------------

def _status_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def limit_threads(threads):
    """Use `threads` threads in NumPy's BLAS (and any OpenMP pool) and in torch."""
    import threadpoolctl
    threadpoolctl.threadpool_limits(threads)  # stays in force: never restored
    if torch_available():
        import torch
        torch.set_num_threads(threads)


def probe_memory(name, library, steps):
    """Run in the subprocess: the rise of the peak RSS over the RSS after setup (bytes)."""
    from benchmarks.workloads import cpu_workloads
    workload = _by_name(cpu_workloads(), [name])[0]
    if library == "minivlm":
        step, model = workload.minivlm("numpy")
        warm = np.ones((512, 512), dtype=np.float32)
        warm @ warm
    else:
        import torch
        step = workload.torch("cpu", None)
        warm = torch.ones(512, 512)
        warm @ warm
    gc.collect()
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again from here
    for _ in range(steps):
        step()
    return (_status_kib("VmHWM") - before) * 1024


def measure_memory(name, library, steps, threads=None):
    """Peak memory of one library on one workload, from a fresh `--probe` subprocess."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    thread_args = ["--threads", str(threads)] if threads else []
    result = subprocess.run([sys.executable, "-m", "benchmarks.run", "--probe", name, library,
                             "--probe-steps", str(steps), *thread_args],
                            cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"memory probe {name}/{library} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.splitlines()[-1])["peak_bytes"]


# --- timing --------------------------------------------------------------------------------------

def relative_difference(ours, theirs):
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


def time_workload(workload, repeats, with_torch):
    """Warm up both steps, then alternate them `repeats` times: the wall-clock times (s), the
    process CPU times (s; with several threads they include threads waiting for each other)
    and the check."""
    ours, model = workload.minivlm("numpy")
    theirs = workload.torch("cpu", model) if with_torch and workload.torch else None
    first_ours = ours() if workload.warmup else None
    check = None
    if theirs is not None:
        first_theirs = theirs()
        if first_ours is not None and first_theirs is not None:
            check = relative_difference(first_ours, first_theirs)
    times, cpu_times = {"minivlm": [], "torch": []}, {"minivlm": [], "torch": []}
    for _ in range(min(repeats, workload.repeats or repeats)):
        for library, step in (("minivlm", ours), ("torch", theirs)):
            if step is None:
                continue
            gc.collect()
            cpu_start = time.process_time()
            times[library].append(timed(step))
            cpu_times[library].append(time.process_time() - cpu_start)
    return times, cpu_times, check


def _by_name(workloads, names):
    if not names:
        return workloads
    known = {w.name: w for w in workloads}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; known: {', '.join(known)}")
    return [known[n] for n in names]


def run_suite(workloads, repeats, memory_steps, with_torch, threads=None, log=print):
    rates = [gemm_rate()]
    rows = []
    for workload in workloads:
        log(f"{workload.name}: {workload.description} ...")
        times, cpu_times, check = time_workload(workload, repeats, with_torch)
        row = {"name": workload.name, "kind": workload.kind, "description": workload.description,
               "flops": workload.flops, "times_s": times, "cpu_times_s": cpu_times, "check": check,
               "median_s": {lib: statistics.median(t) for lib, t in times.items() if t},
               "target": workload.target or TARGET_RATIO[workload.kind], "tokens": workload.tokens}
        if memory_steps and workload.torch:    # a minivlm-alone row compares within minivlm
            libraries = ("minivlm", "torch") if with_torch else ("minivlm",)
            row["peak_bytes"] = {lib: measure_memory(workload.name, lib, memory_steps, threads)
                                 for lib in libraries}
        rows.append(row)
        log(format_row(row, max(rates)))
    rates.append(gemm_rate())
    return rows, rates


# --- the report --------------------------------------------------------------------------------

COLUMNS = ["workload", "kind", "minivlm ms", "torch ms", "ratio", "target", "GFLOP/s",
           "% GEMM", "minivlm MiB", "torch MiB", "mem ratio", "check"]


def row_cells(row, rate):
    median = row["median_s"]
    ours, theirs = median.get("minivlm"), median.get("torch")
    ratio = ours / theirs if theirs else None
    achieved = row["flops"] / ours
    peak = row.get("peak_bytes", {})
    mem_ratio = peak["minivlm"] / peak["torch"] if peak.get("torch") else None

    def fmt(value, spec):
        return "—" if value is None else format(value, spec)

    target = row.get("target") or TARGET_RATIO[row["kind"]]
    met = "" if ratio is None else (" ✓" if ratio <= target else " ✗")
    target_text = "—" if ratio is None else f"≤ {target:.3g}{met}"
    return [row["name"], row["kind"], fmt(ours * 1e3, ".0f"), fmt(theirs and theirs * 1e3, ".0f"),
            fmt(ratio, ".2f"), target_text, fmt(achieved / 1e9, ".1f"),
            fmt(100 * achieved / rate, ".0f"),
            fmt(peak.get("minivlm") and peak["minivlm"] / 2 ** 20, ".0f"),
            fmt(peak.get("torch") and peak["torch"] / 2 ** 20, ".0f"), fmt(mem_ratio, ".2f"),
            fmt(row["check"], ".1e")]


def format_row(row, rate):
    return "  " + "  ".join(f"{c}: {v}" for c, v in zip(COLUMNS, row_cells(row, rate)))


def markdown(report):
    rate = report["gemm_rate_flops"]
    lines = [f"# minivlm vs torch, CPU — {report['date']}", "",
             f"Command: `{report['command']}`", "",
             f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; "
             f"NumPy {report['machine']['numpy']} with "
             + ", ".join(f"{p['internal_api']} {p['version']} ({p['architecture']}, "
                         f"{p['num_threads']} threads)" for p in report["machine"]["blas"])
             + (f"; torch {report['machine']['torch']} ({report['machine']['torch_blas']}, "
                f"{report['machine']['torch_threads']} threads, "
                f"{report['machine']['torch_cpu_capability']})" if "torch" in report["machine"] else
                "; torch not installed"),
             f"Load average (1 min) before / after: {report['load_before'][0]:.1f} / "
             f"{report['load_after'][0]:.1f} on {report['machine']['cores']} cores.",
             f"NumPy float32 GEMM 2048²: {rate / 1e9:.1f} GFLOP/s (best of the runs before and "
             f"after: " + ", ".join(f"{r / 1e9:.1f}" for r in report["gemm_rates_flops"]) + ").",
             f"Median of {report['repeats']} alternating repeats after one warm-up each; ratio = "
             f"minivlm / torch; % GEMM = minivlm's GFLOP/s over the GEMM rate (target ≥ "
             f"{TARGET_GEMM_SHARE:.0%}); MiB = peak memory of the step (see benchmarks/run.py), "
             f"target ratio ≤ {TARGET_MEMORY_RATIO}; check = relative difference of the first "
             f"results (same initial weights; — where the torch side has its own).", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row_cells(row, rate)) + " |" for row in report["rows"]]
    lines += ["", "Workloads:"] + [f"- {row['name']}: {row['description']}, "
                                   f"{row['flops'] / 1e9:.1f} GFLOP per step"
                                   for row in report["rows"]]
    return "\n".join(lines + generation_lines(report["rows"])) + "\n"


def generation_lines(rows):
    """Tokens per second of the generation workloads (minivlm / transformers), and what the KV
    cache gains (the cached batch-1 time against the uncached one)."""
    rows = [row for row in rows if row.get("tokens")]
    lines = [f"- {row['name']}: " + ", ".join(
        f"{library} {row['tokens'] / median:.1f} tokens/s"
        for library, median in row["median_s"].items()) for row in rows]
    by_name = {row["name"]: row["median_s"]["minivlm"] for row in rows}
    if {"llama_generate_b1", "llama_generate_nocache"} <= set(by_name):
        lines.append(f"- KV cache on vs off (minivlm, batch 1): "
                     f"{by_name['llama_generate_nocache'] / by_name['llama_generate_b1']:.1f}× "
                     f"faster (target ≥ 5×)")
    return ["", "Generation (tokens generated per second of the whole call, prompt included):",
            *lines] if lines else []


def write_atomically(path, text):
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def save(report, out_dir):
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"cpu-{report['date'].replace(':', '').replace(' ', '-')}"
    write_atomically(stem.with_suffix(".json"), json.dumps(report, indent=1))
    write_atomically(stem.with_suffix(".md"), markdown(report))
    return stem


def main(argv=None):
    parser = argparse.ArgumentParser(description="minivlm vs torch benchmark suite (CPU)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this workload (repeatable)")
    parser.add_argument("--repeats", type=int, help="timed rounds per workload (default 5)")
    parser.add_argument("--quick", action="store_true",
                        help="2 repeats and 1 step per memory probe")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    parser.add_argument("--no-torch", action="store_true", help="minivlm only")
    parser.add_argument("--threads", type=int,
                        help="threads for NumPy's BLAS and for torch (default: their own choice)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    parser.add_argument("--probe", nargs=2, metavar=("NAME", "LIBRARY"), help=argparse.SUPPRESS)
    parser.add_argument("--probe-steps", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.threads:
        limit_threads(args.threads)
    if args.probe:
        print(json.dumps({"peak_bytes": probe_memory(*args.probe, args.probe_steps)}))
        return

    from benchmarks.workloads import cpu_workloads
    workloads = _by_name(cpu_workloads(), args.only)
    if args.list:
        for w in workloads:
            print(f"{w.name:12s} {w.kind:9s} {w.description}, {w.flops / 1e9:.1f} GFLOP")
        return
    repeats = args.repeats or (2 if args.quick else 5)
    memory_steps = 0 if args.no_memory else (1 if args.quick else 2)
    with_torch = not args.no_torch and torch_available()
    if not with_torch:
        print("torch is not installed (or --no-torch): minivlm only")

    load_before = os.getloadavg()
    description = machine()
    rows, rates = run_suite(workloads, repeats, memory_steps, with_torch, args.threads)
    report = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(["python -m benchmarks",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "machine": description, "load_before": load_before, "load_after": os.getloadavg(),
              "repeats": repeats, "memory_steps": memory_steps, "threads": args.threads,
              "gemm_rates_flops": rates, "gemm_rate_flops": max(rates), "rows": rows}
    stem = save(report, args.out)
    print()
    print(markdown(report))
    print(f"written: {stem}.md, {stem}.json")


if __name__ == "__main__":
    main()

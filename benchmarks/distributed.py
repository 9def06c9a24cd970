"""Data-parallel train-clip on this machine: its throughput on 1 and 2 ranks, and the all-reduce
of the model's gradient against MPI's own all-reduce of the same bytes.

    PYTHONPATH=. python -m benchmarks.distributed              # launches mpiexec itself
    PYTHONPATH=. python -m benchmarks.distributed --steps 40 --repeats 50

Throughput: `mpiexec -n R` (R = 1, 2) trains train-clip's default run (the tiny CLIP on 32×32
shapes, global batch 128; recipes.clip.train, as the command does) for --steps steps with one
BLAS thread per rank; images/s over the steps after the first --warmup, from the seconds that
metrics.jsonl gives each step. Scaling efficiency = images/s on R ranks / (R × images/s on one).
The time every rank spends drawing the whole global batch (recipes.clip.training_batch) is timed
too: each rank draws all of it and keeps its shard.

All-reduce (2 ranks): distributed.average_gradients on the model's gradient (the parameters
flattened into 25 MiB buckets: one all-reduce here) against mpi4py's Allreduce of a preallocated
float32 buffer of the same bytes, medians of --repeats. Bandwidth is given as NCCL's "bus
bandwidth", bytes × 2(N − 1)/N / seconds: the bytes each rank sends and receives in a ring.

Results go to benchmarks/results/distributed-<date>.md and .json, with the load average.
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.run import RESULTS, machine
from benchmarks.timing import timed

REPO = Path(__file__).resolve().parent.parent


def throughput_job(steps, warmup):
    """Rank side: train-clip's default run for `steps` steps -> {images_per_s, batch_s} (rank 0)."""
    from minivlm import distributed
    from minivlm.recipes import clip
    from minivlm.recipes.common import read_metrics
    from minivlm.tokenizers import CLIPTokenizer
    config = clip.TrainConfig(steps=steps)
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "run"
        clip.train(config, out=out, save_every=steps + 1)
        seconds = [m["seconds"] for m in read_metrics(out)] if distributed.is_main() else []
    seen, tokenizer = config.pairs()[0], CLIPTokenizer()
    batch_s = statistics.median(timed(lambda: clip.training_batch(config, step, seen, tokenizer))
                                for step in range(5))
    if distributed.is_main():
        measured = steps - warmup
        return {"ranks": distributed.world_size(), "steps": measured,
                "step_s": (seconds[-1] - seconds[warmup - 1]) / measured,
                "images_per_s": config.batch_size * measured / (seconds[-1] - seconds[warmup - 1]),
                "batch_s": batch_s}


def allreduce_job(repeats):
    """Rank side: the model's gradient averaged by minivlm, and MPI's Allreduce of its bytes."""
    from mpi4py import MPI

    import minivlm as mv
    from minivlm import distributed
    from minivlm.models.clip import CLIP
    from minivlm.recipes.clip import TrainConfig
    mv.manual_seed(0)
    params = list(CLIP(TrainConfig().model).parameters())
    for param in params:
        param.grad = mv.randn(*param.shape)
    count = sum(param.numel() for param in params)
    buffer, result = np.ones(count, np.float32), np.empty(count, np.float32)

    def median_time(fn):
        times = []
        for _ in range(repeats):
            MPI.COMM_WORLD.Barrier()
            times.append(timed(fn))
        return statistics.median(times)

    ours = median_time(lambda: distributed.average_gradients(params))
    theirs = median_time(lambda: MPI.COMM_WORLD.Allreduce(buffer, result))
    if distributed.is_main():
        return {"ranks": distributed.world_size(), "parameters": len(params), "bytes": 4 * count,
                "buckets": len(distributed.buckets([p.grad for p in params])),
                "minivlm_s": ours, "mpi_s": theirs}


JOBS = {"throughput": throughput_job, "allreduce": allreduce_job}


def launch(ranks, job, *args):
    """Run `job` on `ranks` ranks under mpiexec -> what rank 0 returned."""
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or "mpiexec"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [mpiexec, "-n", str(ranks), sys.executable, "-m", "mpi4py", "-m",
               "benchmarks.distributed", "--job", job, *map(str, args)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            check=True, timeout=1800)
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(throughput, allreduce, load):
    """The markdown table of the results."""
    one = throughput[0]["images_per_s"]
    lines = ["| ranks | images/s | ms per step | efficiency | drawing the global batch, ms |",
             "|---|---|---|---|---|"]
    lines += [f"| {t['ranks']} | {t['images_per_s']:.0f} | {1000 * t['step_s']:.0f} | "
              f"{t['images_per_s'] / (t['ranks'] * one):.2f} | {1000 * t['batch_s']:.1f} |"
              for t in throughput]
    ring = 2 * (allreduce["ranks"] - 1) / allreduce["ranks"] * allreduce["bytes"]
    lines += ["", "| all-reduce of the gradient | bytes | buckets | ms | bus GB/s |",
              "|---|---|---|---|---|",
              f"| minivlm average_gradients | {allreduce['bytes']:,} | {allreduce['buckets']} | "
              f"{1000 * allreduce['minivlm_s']:.2f} | {ring / allreduce['minivlm_s'] / 1e9:.2f} |",
              f"| mpi4py Allreduce, same bytes | {allreduce['bytes']:,} | 1 | "
              f"{1000 * allreduce['mpi_s']:.2f} | {ring / allreduce['mpi_s'] / 1e9:.2f} |",
              "", f"load average (1 min) before and after: {load[0]:.2f}, {load[1]:.2f}"]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--job", choices=JOBS, help=argparse.SUPPRESS)   # the ranks' side
    args = parser.parse_args(argv)
    if args.job is not None:
        with threadpool_limits(1, user_api="blas"):
            result = (throughput_job(args.steps, args.warmup) if args.job == "throughput"
                      else allreduce_job(args.repeats))
        if result is not None:
            print(json.dumps(result))
        return
    load = [os.getloadavg()[0]]
    throughput = [launch(ranks, "throughput", "--steps", args.steps, "--warmup", args.warmup)
                  for ranks in (1, 2)]
    allreduce = launch(2, "allreduce", "--repeats", args.repeats)
    load.append(os.getloadavg()[0])
    table = report(throughput, allreduce, load)
    print(table)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"distributed-{stamp}.md").write_text(
        f"`PYTHONPATH=. python -m benchmarks.distributed --steps {args.steps} --warmup "
        f"{args.warmup} --repeats {args.repeats}`\n\n{table}\n")
    (RESULTS / f"distributed-{stamp}.json").write_text(json.dumps(
        {"machine": machine(), "load": load, "throughput": throughput, "allreduce": allreduce},
        indent=2))


if __name__ == "__main__":
    main()

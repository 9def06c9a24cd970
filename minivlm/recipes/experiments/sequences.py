"""`minivlm experiment sequences`: the slide "Three Ways of Processing Sequences" measured. One
layer each of an RNN (nn.RNN), a 1D convolution (nn.Conv1d, kernel 3, padded to keep the length)
and self-attention (nn.MultiheadAttention, one head), all mapping a sequence of N vectors of
width D to N vectors of width D, on one task: a sequence of random vectors (batch 1).

    receptive field   |∂ output_t / ∂ input_s| for every t, s (float64, one backward per t): which
                      inputs each output "sees" after one layer
    sequential steps  how many steps must run one after another: the RNN's loop runs N (step t
                      needs h_{t−1}), the convolution and attention are one batched product each
    time              the forward's wall time as N grows (the best of --repeats)
    memory            the peak bytes NumPy allocates during the forward (tracemalloc), the graph's
                      saved arrays included: attention's N×N scores against the others' N×D

The slide's +/−: the RNN sees the whole sequence (+) but is sequential (−); the convolution is
parallel (+) but sees k inputs (−); attention sees everything in parallel (+ +) but its memory
grows as N² (−).
"""
import math
import time
import tracemalloc

import numpy as np

from ... import autograd, nn
from ...plots import plot_sequences
from ...progress import progress
from ..common import Run, UsageError, positive, seeded_rng, write_results

COMMAND = "experiment sequences"
MODELS = ("RNN", "Conv1d", "self-attention")


def layers(width, kernel_size):
    """The three one-layer models, each (1, N, width) -> (1, N, width)."""
    rnn = nn.RNN(width, width, batch_first=True)
    conv = nn.Conv1d(width, width, kernel_size, padding=kernel_size // 2)
    attention = nn.MultiheadAttention(width, 1, batch_first=True)
    return {"RNN": (rnn, lambda x: rnn(x)[0]),
            "Conv1d": (conv, lambda x: conv(x.transpose(1, 2)).transpose(1, 2)),
            "self-attention": (attention,
                               lambda x: attention(x, x, x, need_weights=False)[0])}


def receptive_field(forward, inputs):
    """|∂ output_t / ∂ input_s| summed over the features: (N, N), row t, column s.
    inputs (1, N, D) float64."""
    x = autograd.tensor(inputs, requires_grad=True)
    output = forward(x)
    rows = []
    for t in range(inputs.shape[1]):
        x.grad = None
        output[0, t].sum().backward(retain_graph=True)
        rows.append(np.abs(np.asarray(x.grad.array[0])).sum(axis=1))
    return np.stack(rows)


def seen(field):
    """How many inputs each output depends on: (N, N) -> (N,)."""
    return (field > 0).sum(axis=1)


def forward_seconds(forward, x, repeats):
    """The best wall time of `repeats` forwards."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        forward(x)
        best = min(best, time.perf_counter() - start)
    return best


def forward_peak_bytes(forward, x):
    """The most bytes allocated at once during a forward that keeps its graph (what a training
    step holds until backward), over what was allocated before it."""
    tracemalloc.start()
    try:
        output = forward(x)
        peak = tracemalloc.get_traced_memory()[1]
        del output
        return peak
    finally:
        tracemalloc.stop()


def sequential_steps(name, length):
    """Steps that must run one after another: the RNN's recurrence (F.rnn's loop) has one per
    position; the convolution's and attention's outputs are all computed at once."""
    return length if name == "RNN" else 1


def growth(lengths, values):
    """The exponent b of values ≈ a·N^b between the two longest sequences."""
    return math.log(values[-1] / values[-2]) / math.log(lengths[-1] / lengths[-2])


def add_arguments(parser):
    parser.add_argument("--lengths", type=positive(int), nargs="+",
                        default=[64, 128, 256, 512, 1024, 2048, 4096],
                        help="sequence lengths N for time and memory (default 64 ... 4096)")
    parser.add_argument("--field-length", type=positive(int), default=16,
                        help="N of the receptive-field maps (default 16)")
    parser.add_argument("--width", type=positive(int), default=32,
                        help="D, every layer's input and output width (default 32)")
    parser.add_argument("--kernel-size", type=positive(int), default=3,
                        help="the convolution's kernel, odd (default 3)")
    parser.add_argument("--repeats", type=positive(int), default=3,
                        help="forwards timed per length, the best kept (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/sequences",
                        help="directory for results.json, metrics.jsonl and sequences.png "
                             "(default runs/sequences)")


def run(args):
    if args.kernel_size % 2 == 0:
        raise UsageError(f"--kernel-size must be odd (padded to keep the length), got "
                         f"{args.kernel_size}")
    lengths = sorted(set(args.lengths))
    if len(lengths) < 2:
        raise UsageError(f"--lengths needs two different lengths to measure growth, got "
                         f"{args.lengths}")
    experiment = Run.start(args.out, COMMAND, {k: v for k, v in vars(args).items()
                                               if k not in ("command", "experiment")})
    autograd.manual_seed(args.seed)
    models = layers(args.width, args.kernel_size)
    rng = seeded_rng(args.seed, 0)

    fields = {}
    for name, (module, forward) in models.items():
        module.to("float64")
        fields[name] = receptive_field(forward, rng.standard_normal(
            (1, args.field_length, args.width)))
        module.to("float32")

    scaling = {name: [] for name in models}
    grid = [(n, name) for n in lengths for name in models]
    for step, (length, name) in enumerate(progress(grid, desc="sequences", unit="run"), 1):
        x = autograd.tensor(rng.standard_normal((1, length, args.width)).astype(np.float32),
                            requires_grad=True)
        forward = models[name][1]
        record = {"N": length, "sequential_steps": sequential_steps(name, length),
                  "forward_seconds": forward_seconds(forward, x, args.repeats),
                  "peak_bytes": forward_peak_bytes(forward, x)}
        scaling[name].append(record)
        experiment.log(step, model=name, **record)

    results = summarise(fields, scaling, lengths)
    write_results(experiment.directory, results)
    plot_sequences(fields, lengths,
                   {name: [r["forward_seconds"] for r in rows] for name, rows in scaling.items()},
                   {name: [r["peak_bytes"] for r in rows] for name, rows in scaling.items()},
                   experiment.directory / "sequences.png")
    print(table(results))
    print(results["conclusion"])


def summarise(fields, scaling, lengths):
    """results.json: per model its receptive field and its measurements per N, and the
    conclusion."""
    models = {}
    for name, field in fields.items():
        rows = scaling[name]
        models[name] = {
            "receptive_field": field.tolist(),
            "inputs_seen_by_last_output": int(seen(field)[-1]),
            "inputs_seen_by_middle_output": int(seen(field)[len(field) // 2]),
            "inputs_seen_mean": float(seen(field).mean()),
            "scaling": rows,
            "time_growth": growth(lengths, [r["forward_seconds"] for r in rows]),
            "memory_growth": growth(lengths, [r["peak_bytes"] for r in rows])}
    results = {"field_length": len(next(iter(fields.values()))), "lengths": lengths,
               "models": models}
    results["conclusion"] = conclusion(results)
    return results


def table(results):
    """The receptive fields, then time and memory per N, one column per model."""
    models = results["models"]
    lines = [f"{'after one layer':<34}" + "".join(f"{name:>18}" for name in models)]
    for label, key in (("inputs the last output sees", "inputs_seen_by_last_output"),
                       ("inputs the middle output sees", "inputs_seen_by_middle_output")):
        lines.append(f"{label + ' (of ' + str(results['field_length']) + ')':<34}"
                     + "".join(f"{m[key]:>18}" for m in models.values()))
    lines.append(f"{'N':>6}" + "".join(f"{name + ' steps/ms/MiB':>36}" for name in models))
    for i, length in enumerate(results["lengths"]):
        cells = [m["scaling"][i] for m in models.values()]
        lines.append(f"{length:>6}" + "".join(
            f"{c['sequential_steps']:>16}{1e3 * c['forward_seconds']:>10.2f}"
            f"{c['peak_bytes'] / 2 ** 20:>10.2f}" for c in cells))
    lines.append(f"{'N^b':>6}" + "".join(f"{'b:':>16}{m['time_growth']:>10.2f}"
                                        f"{m['memory_growth']:>10.2f}" for m in models.values()))
    return "\n".join(lines)


def conclusion(results):
    """One sentence tying each measured number to the slide's + and −."""
    rnn, conv, attention = (results["models"][name] for name in MODELS)
    n, longest = results["field_length"], results["lengths"][-1]
    last = {name: m["scaling"][-1] for name, m in results["models"].items()}
    mib = {name: r["peak_bytes"] / 2 ** 20 for name, r in last.items()}
    ms = {name: 1e3 * r["forward_seconds"] for name, r in last.items()}
    return (f"After one layer the RNN's last state sees {rnn['inputs_seen_by_last_output']} of "
            f"{n} inputs (+ long sequences) but needs {last['RNN']['sequential_steps']} "
            f"sequential steps at N={longest} ({ms['RNN']:.1f} ms against the convolution's "
            f"{ms['Conv1d']:.1f}: − not parallel); the convolution's outputs see "
            f"{conv['inputs_seen_by_middle_output']} inputs (− long sequences) in one step "
            f"(+ parallel); attention's see all {attention['inputs_seen_by_last_output']} in one "
            f"step (+ +) but its memory grows as N^{attention['memory_growth']:.1f} against "
            f"N^{rnn['memory_growth']:.1f} and N^{conv['memory_growth']:.1f}: "
            f"{mib['self-attention']:.0f} MiB at N={longest}, "
            f"{mib['self-attention'] / mib['RNN']:.0f}× the RNN's (− memory).")

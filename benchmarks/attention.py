"""Multi-head self-attention, forward + backward, in minivlm and in torch on the same machine.

The workload is one ViT-B/16 attention layer: batch 32, 197 tokens, width 768, 12 heads, float32,
need_weights=False (the fused attention path). The two libraries run alternately, each repeat
timing one forward+backward; the medians are printed with their ratio (minivlm / torch, target
<= 1.0) and the achieved FLOP/s of each, next to the machine's float32 matrix-multiply rate.

    PYTHONPATH=. python benchmarks/attention.py [--batch 32 --tokens 197 --width 768 --heads 12]
    PYTHONPATH=. python benchmarks/attention.py --threads 1  # the same thread count for both
    PYTHONPATH=. python benchmarks/attention.py --profile    # where minivlm's time goes (cProfile)
"""
import argparse
import cProfile
import pstats
import statistics

import numpy as np

import minivlm as mv
from benchmarks.timing import gemm_rate, timed
from minivlm.nn.attention import MultiheadAttention


def attention_flops(batch, tokens, width, heads):
    """Multiply-adds ×2 of forward + backward (backward = 2 × forward): four width×width
    projections and the two tokens×tokens products per head."""
    projections = 4 * 2 * batch * tokens * width * width
    scores_and_mix = 2 * 2 * batch * tokens * tokens * width
    return 3 * (projections + scores_and_mix)


def minivlm_step(args, x, grad):
    """One forward+backward of minivlm's MultiheadAttention, as a closure."""
    layer = MultiheadAttention(args.width, args.heads, batch_first=True)
    inputs = mv.tensor(x, requires_grad=True)

    def step():
        layer.zero_grad()
        inputs.grad = None
        y, _ = layer(inputs, inputs, inputs, need_weights=False)
        y.backward(mv.tensor(grad))
    return step


def torch_step(args, x, grad):
    import torch
    layer = torch.nn.MultiheadAttention(args.width, args.heads, batch_first=True)
    inputs = torch.tensor(x, requires_grad=True)
    grad = torch.tensor(grad)

    def step():
        layer.zero_grad()
        inputs.grad = None
        y, _ = layer(inputs, inputs, inputs, need_weights=False)
        y.backward(grad)
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=197)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="threads for NumPy's BLAS and for torch "
                        "(default: each library's own choice)")
    parser.add_argument("--profile", action="store_true", help="cProfile minivlm's step instead")
    args = parser.parse_args()
    if args.threads:
        import threadpoolctl
        import torch
        threadpoolctl.threadpool_limits(args.threads)
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    shape = (args.batch, args.tokens, args.width)
    x = rng.standard_normal(shape, dtype=np.float32)
    grad = rng.standard_normal(shape, dtype=np.float32)
    ours = minivlm_step(args, x, grad)
    if args.profile:
        ours()  # warm up
        cProfile.runctx("ours()", globals(), {"ours": ours}, "/tmp/attention.prof")
        pstats.Stats("/tmp/attention.prof").sort_stats("tottime").print_stats(15)
        return
    theirs = torch_step(args, x, grad)
    ours(), theirs()  # warm up both

    times = {"minivlm": [], "torch": []}
    for _ in range(args.repeats):
        times["minivlm"].append(timed(ours))
        times["torch"].append(timed(theirs))

    import torch
    flops = attention_flops(args.batch, args.tokens, args.width, args.heads)
    print(f"multi-head self-attention forward+backward: batch {args.batch}, {args.tokens} tokens, "
          f"width {args.width}, {args.heads} heads, float32; median of {args.repeats}; "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"float32 matmul rate (NumPy BLAS): {gemm_rate() / 1e9:.1f} GFLOP/s")
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, median in medians.items():
        print(f"{name:8s} {median * 1e3:8.1f} ms   {flops / median / 1e9:6.1f} GFLOP/s")
    print(f"ratio minivlm / torch: {medians['minivlm'] / medians['torch']:.2f} (target <= 1.0)")


if __name__ == "__main__":
    main()

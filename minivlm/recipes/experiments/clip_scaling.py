"""`minivlm experiment clip-scaling`: the slide "Experiments and Results (Scaling)": "ViT's scale
well with compute + data; ResNets... not so much" (the CLIP paper plots zero-shot error against
model compute for its ResNets, Figure 9, and linear-probe scores against GFLOPs per image for
ResNets and ViTs, Figure 10).

In miniature: train-clip's task with CLIP's ModifiedResNet and with its Vision Transformer as
the image encoder, each at three widths, beside the same text Transformer, on the same data for
the same steps; zero-shot top-1 on the seen and on the held-out colour-shape pairs (prompt "a
photo of a {colour} {shape}", chance 2.1 %) against the training compute, counted analytically:
3 × (forward FLOPs of one image and one caption, minivlm.flops) × the pairs seen.

    minivlm experiment clip-scaling                  # writes runs/clip-scaling/
"""
import time

import numpy as np

from ... import plots
from ...autograd import tensor
from ...flops import count_flops
from ...models.clip import CLIPConfig, CLIPVisionConfig
from ...tokenizers import CLIPTokenizer
from .. import clip
from ..common import (add_seed_and_out, check_out_directory, positive, write_metrics,
                      write_results)

NAME = "clip-scaling"
FIGURE = "clip_scaling.png"
IMAGE_SIZE = 32
# the image encoders, by family and width: ResNets of one block per stage (the attention pool's
# heads by OpenAI's rule), ViTs of two layers on 8×8 patches with 32-wide heads
ENCODERS = {
    "ResNet": {width: CLIPVisionConfig(IMAGE_SIZE, (1, 1, 1, 1), width, None)
               for width in (4, 8, 16)},
    "ViT": {width: CLIPVisionConfig(IMAGE_SIZE, 2, width, 8, heads=width // 32)
            for width in (32, 64, 128)},
}


def add_arguments(parser):
    parser.add_argument("--steps", type=positive(int), default=300,
                        help="optimizer steps for every model (default %(default)s)")
    parser.add_argument("--batch-size", type=positive(int), default=64,
                        help="image-caption pairs per step (default %(default)s)")
    parser.add_argument("--images-per-pair", type=positive(int), default=clip.TEST_PER_PAIR,
                        help="new images of each colour-shape pair the zero-shot accuracy is "
                             "measured on (default %(default)s)")
    add_seed_and_out(parser, NAME)


def clip_with(vision):
    """train-clip's tiny CLIP with `vision` as its image encoder."""
    config = clip.shapes_clip_config(IMAGE_SIZE)
    return CLIPConfig(config.embed_dim, vision, config.text)


def flops_per_pair(model, config):
    """(image encoder, whole model) forward FLOPs of one image and one caption."""
    pixels = tensor(np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32))
    ids = CLIPTokenizer()([clip.caption("red", "circle")], context_length=config.context_length)
    return count_flops(model.visual, pixels), count_flops(model, pixels, ids)


def train_and_test(config, images_per_pair):
    """A CLIP trained by train-clip's loop -> (its losses, a dict of its size, compute, time and
    zero-shot accuracies on images_per_pair new images of each pair)."""
    start = time.monotonic()
    model, losses = clip.train(config)
    seconds = time.monotonic() - start
    image_flops, pair_flops = flops_per_pair(model, config)
    seen, held_out = clip.zero_shot_accuracies(model, config, images_per_pair)
    return losses, {"parameters": model.visual.num_parameters(),
                    "image_flops": image_flops, "pair_flops": pair_flops,
                    "train_flops": 3 * pair_flops * config.steps * config.batch_size,
                    "train_seconds": round(seconds, 1), "final_loss": float(np.mean(losses[-50:])),
                    "zero_shot_seen": seen, "zero_shot_held_out": held_out}


def run(args):
    out = check_out_directory(args.out)
    results, metrics = {family: {} for family in ENCODERS}, []
    print(f"{'image encoder':<16} {'parameters':>10} {'MFLOPs/image':>12} "
          f"{'training TFLOPs':>15} {'zero-shot seen':>14} {'held-out':>8}")
    for family, widths in ENCODERS.items():
        for width, vision in widths.items():
            config = clip.TrainConfig(model=clip_with(vision), steps=args.steps,
                                      batch_size=args.batch_size, seed=args.seed)
            losses, r = train_and_test(config, args.images_per_pair)
            results[family][width] = r
            metrics += [{"family": family, "width": width, "step": step, "loss": loss}
                        for step, loss in enumerate(losses, 1)]
            write_metrics(out, metrics)
            print(f"{family + f' width {width}':<16} {r['parameters']:>10,} "
                  f"{r['image_flops'] / 1e6:>12.2f} {r['train_flops'] / 1e12:>15.3f} "
                  f"{100 * r['zero_shot_seen']:>13.1f}% {100 * r['zero_shot_held_out']:>7.1f}%")
    write_results(out, {"settings": {name: getattr(args, name) for name in
                                     ("steps", "batch_size", "images_per_pair", "seed")},
                        "results": results})
    plot(results, out / FIGURE, args)
    print(f"conclusion: {conclusion(results)}")
    print(f"results.json, metrics.jsonl and {FIGURE} in {out}")
    return 0


def plot(results, path, args):
    """Zero-shot top-1 (seen and held-out pairs) against training compute, one line per family
    and pair set, each point labelled with its width."""
    series, labels = {}, {}
    for family, by_width in results.items():
        compute = [r["train_flops"] for r in by_width.values()]
        for pairs, key in (("seen", "zero_shot_seen"), ("held-out", "zero_shot_held_out")):
            name = f"{family}, {pairs} pairs"
            series[name] = (compute, [r[key] for r in by_width.values()])
            labels[name] = [f"w{width}" for width in by_width]
    plots.plot_lines(series, path, "training compute (FLOPs, log scale)",
                     f"CLIP zero-shot vs compute ({args.steps} steps of {args.batch_size} pairs)",
                     ylabel="zero-shot top-1 (%)", point_labels=labels)


def conclusion(results):
    """How each family's zero-shot accuracy changes from its narrowest to its widest encoder,
    and which leads with the most compute, in one sentence."""
    parts = []
    for family, by_width in results.items():
        first, *_, last = by_width.values()
        parts.append(f"{family} {100 * first['zero_shot_seen']:.1f} → "
                     f"{100 * last['zero_shot_seen']:.1f} % seen, "
                     f"{100 * first['zero_shot_held_out']:.1f} → "
                     f"{100 * last['zero_shot_held_out']:.1f} % held-out over "
                     f"{last['train_flops'] / first['train_flops']:.1f}× the compute")
    resnet, vit = (list(results[family].values())[-1]["zero_shot_held_out"]
                   for family in ("ResNet", "ViT"))
    if vit == resnet:
        verdict = "the widest ViT and ResNet tie on held-out pairs"
    else:
        verdict = f"on held-out pairs the widest {'ViT' if vit > resnet else 'ResNet'} leads"
    return "; ".join(parts + [verdict])

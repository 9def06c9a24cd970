"""`minivlm experiment vit-vs-resnet`: the slides "Vision Transformer (ViT) vs ResNets". Trained
on ImageNet (1.2M images) ViTs do worse than ResNets, pre-trained on ImageNet-21k (14M) they
match them, on JFT-300M they overtake: without the convolution's bias towards local features a
ViT needs more data.

In miniature: a ViT and a ResNet of about the same compute (FLOPs per image, minivlm.flops)
learn train-vision's task (which of 6 shapes) from the first 1k, 4k, 16k or 64k images of one
fixed pool of built-in images, with the same budget at every size (the same number of steps of
the same batch size: a small subset is repeated for many epochs, the largest is not seen once),
and are tested on the same 2,000 new images.

    minivlm experiment vit-vs-resnet                 # writes runs/vit-vs-resnet/

The pool is stored as 8-bit pixels, as image files hold them (64k images: 201 MB), and so is the
test set; every subset is a prefix of the pool, so the larger ones hold the smaller.
"""
import time

import numpy as np

from ... import plots
from ...autograd import manual_seed, tensor
from ...data.shapes import make_shapes
from ...flops import count_flops
from .. import vision
from ..common import (EVAL_STREAM, TRAIN_STREAM, UsageError, add_seed_and_out,
                      check_out_directory, positive, seeded_rng, write_metrics, write_results)

NAME = "vit-vs-resnet"
FIGURE = "vit_vs_resnet.png"
# two classifiers of about 5 MFLOPs per 32×32 image (printed by the experiment)
MODELS = {
    "ViT": vision.ClassifierConfig("vit", options=dict(
        patch_size=4, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=64)),
    "ResNet": vision.ClassifierConfig("resnet", options=dict(width=6, layers=(1, 1, 1, 1))),
}
POOL_CHUNK = 4096               # images drawn at a time while filling the pool


def add_arguments(parser):
    parser.add_argument("--sizes", type=positive(int), nargs="+",
                        default=[1024, 4096, 16384, 65536],
                        help="training-set sizes (default %(default)s)")
    parser.add_argument("--steps", type=positive(int), default=300,
                        help="optimizer steps at every size (default %(default)s)")
    parser.add_argument("--batch-size", type=positive(int), default=64,
                        help="images per step (default %(default)s)")
    parser.add_argument("--test-images", type=positive(int), default=2000,
                        help="new images the accuracy is measured on (default %(default)s)")
    add_seed_and_out(parser, NAME)


# --- data -------------------------------------------------------------------------------------

def to_bytes(images):
    """Pixels in [0, 1] (float) -> uint8, as an image file stores them."""
    return np.round(images * 255).astype(np.uint8)


def model_input(pixels):
    """uint8 pixels -> the classifiers' float32 input (vision.normalize)."""
    return vision.normalize(pixels.astype(np.float32) / 255)


def image_pool(n, config, rng):
    """n images as uint8 (n, 3, S, S) and their labels (n,) for config.target, drawn
    POOL_CHUNK at a time (float32 pixels of 64k images would take 805 MB at once)."""
    images, labels = [], []
    for start in range(0, n, POOL_CHUNK):
        chunk, chunk_labels, _ = make_shapes(min(POOL_CHUNK, n - start), config.image_size,
                                             seed=int(rng.integers(2 ** 63)))
        images.append(to_bytes(chunk))
        labels.append(chunk_labels[config.target])
    return np.concatenate(images), np.concatenate(labels)


def subset_batches(images, labels, size, batch_size, seed):
    """step -> (input, labels): epochs over the first `size` images of the pool, each epoch in
    its own random order, batch_size images per step (an epoch's last, partial batch dropped)."""
    steps_per_epoch = size // batch_size

    def batch(step):
        epoch, index = divmod(step, steps_per_epoch)
        order = seeded_rng(seed, TRAIN_STREAM, size, epoch).permutation(size)
        chosen = order[index * batch_size:(index + 1) * batch_size]
        return model_input(images[chosen]), labels[chosen]

    return batch


# --- the experiment ---------------------------------------------------------------------------

def flops_per_image(config):
    """The forward FLOPs of one image through the classifier of `config`."""
    pixels = tensor(np.zeros((1, 3, config.image_size, config.image_size), np.float32))
    return count_flops(vision.build_model(config), pixels)


def train_and_test(config, batches, steps, batch_size, seed, test):
    """A fresh classifier trained on `batches` -> (held-out accuracy, losses, seconds)."""
    manual_seed(seed)
    model = vision.build_model(config)
    start = time.monotonic()
    losses = vision.train(model, config, steps, batch_size, seed=seed, batches=batches)
    seconds = time.monotonic() - start
    accuracy, _ = vision.evaluate(model, *test, len(config.classes))
    return accuracy, losses, seconds


def run(args):
    sizes = sorted(set(args.sizes))
    if sizes[0] < args.batch_size:
        raise UsageError(f"--sizes {sizes[0]} is smaller than --batch-size {args.batch_size}")
    out = check_out_directory(args.out)
    config = next(iter(MODELS.values()))
    images, labels = image_pool(sizes[-1], config, seeded_rng(args.seed, TRAIN_STREAM))
    test_images, test_labels = image_pool(args.test_images, config,
                                          seeded_rng(args.seed, EVAL_STREAM))
    test = (model_input(test_images), test_labels)
    flops = {name: flops_per_image(model) for name, model in MODELS.items()}
    print("forward MFLOPs per image: " + ", ".join(f"{name} {f / 1e6:.2f}"
                                                  for name, f in flops.items()))
    accuracy, seconds, metrics = {name: [] for name in MODELS}, {name: 0.0 for name in MODELS}, []
    for size in sizes:
        for name, model_config in MODELS.items():
            batches = subset_batches(images, labels, size, args.batch_size, args.seed)
            score, losses, took = train_and_test(model_config, batches, args.steps,
                                                 args.batch_size, args.seed, test)
            accuracy[name].append(score)
            seconds[name] += took
            metrics += [{"model": name, "size": size, "step": step, "loss": loss}
                        for step, loss in enumerate(losses, 1)]
            write_metrics(out, metrics)
        print(f"{size:>7,} images ({args.steps * args.batch_size / size:6.1f} epochs): "
              + "   ".join(f"{name} {100 * accuracy[name][-1]:5.1f} %" for name in MODELS))
    results = {"settings": {name: getattr(args, name)
                            for name in ("steps", "batch_size", "test_images", "seed")},
               "sizes": sizes, "epochs": [args.steps * args.batch_size / n for n in sizes],
               "flops_per_image": flops, "accuracy": accuracy,
               "train_seconds": {name: round(s, 1) for name, s in seconds.items()}}
    write_results(out, results)
    plots.plot_lines({f"{name} ({flops[name] / 1e6:.1f} MFLOPs/image)": (sizes, accuracy[name])
                      for name in MODELS}, out / FIGURE, "training images (log scale)",
                     f"6 shapes, {args.steps} steps of {args.batch_size} at every size")
    print(f"conclusion: {conclusion(sizes, accuracy)}")
    print(f"results.json, metrics.jsonl and {FIGURE} in {out}")
    return 0


def conclusion(sizes, accuracy):
    """Whether and where the ViT overtakes the ResNet, in one sentence."""
    gaps = [100 * (vit - resnet) for vit, resnet in zip(accuracy["ViT"], accuracy["ResNet"])]
    where = [size for size, gap in zip(sizes, gaps) if gap > 0]
    spread = f"ViT − ResNet from {gaps[0]:+.1f} points at {sizes[0]:,} images to " \
             f"{gaps[-1]:+.1f} at {sizes[-1]:,}"
    if not where:
        return f"the ViT is ahead of the ResNet at no size ({spread}): it does not overtake at " \
               f"this scale"
    return f"the ViT is ahead at {', '.join(f'{n:,}' for n in where)} images ({spread})"

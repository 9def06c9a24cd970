"""`minivlm train-clip`: train a small CLIP from scratch on the built-in captioned shapes, then
evaluate it as the CLIP paper does (zero-shot, linear probe, few-shot) and draw the figures.

The slides' recipe on a toy world: each image shows one shape of one colour and size at one of
nine places, captioned like "a small red circle in the top left". Some colour–shape pairs never
appear in training (minivlm.data.shapes.split_pairs); zero-shot classification with prompts
"a photo of a {colour} {shape}" then asks whether the model composes words it met separately.

    minivlm train-clip                           # about 5 minutes on 2 CPU cores
    minivlm train-clip --resume runs/clip        # continue an interrupted run
    minivlm zero-shot --model runs/clip --image a.png --labels "red circle,blue square"

    config = TrainConfig(steps=200, batch_size=32)
    model, losses = train(config, out="runs/tiny")         # a run directory (recipes.common)
    results = evaluate(model, config)                      # zero-shot, linear probe, few-shot
    report(results, config)
    write_figures("runs/tiny", model, config)               # PNG figures

The run directory is a Hugging Face CLIPModel directory (transformers' CLIPModel.from_pretrained
reads it), with the resume state, metrics.jsonl, results.json and the figures beside it.

Captions are tokenized by OpenAI's CLIPTokenizer, so the model reads the ids the real CLIP reads
and any prompt tokenizes (unknown words fall back to byte pieces); a context of 16 tokens holds
the longest caption (13 with a prefix and the start and end tokens). Training captions vary as
web alt-text does: each drops its size word and its position phrase with probability
`caption_dropout` each, and begins with one of CAPTION_PREFIXES ("a photo of a red ring"), so
short prompts such as "a photo of a red circle" read like training text -- only the colour-shape
pairing is new for a held-out pair.

The training data is a pure function of (seed, step) -- step s draws its images and caption
variations from a generator seeded with (seed, s) -- and CLIP draws no random numbers while
training (it has no dropout), so a run resumed from its last checkpoint gives the same losses,
bit for bit, as one never interrupted.

`mpiexec -n N python -m minivlm train-clip` trains on N ranks: each takes n/N of the batch of n
and compares its images with the texts of all ranks and its texts with all images
(minivlm.losses.gathered_clip_loss), so the losses and gradients are those of one process with
the whole batch (to float rounding).
"""
import dataclasses
import time
from pathlib import Path

import numpy as np

from .. import distributed, plots
from ..autograd import manual_seed
from ..data.shapes import (COLOURS, POSITIONS, SHAPES, SIZES, colour_shape_pairs, make_shapes,
                           split_pairs)
from ..eval import (IMAGENET_TEMPLATES, accuracy, confusion_matrix, encode_images, encode_texts,
                    few_shot_accuracies, fit_linear_probe, l2_normalize, zero_shot_classifier,
                    zero_shot_logits)
from ..losses import gathered_clip_loss
from ..models.clip import CLIP, CLIPConfig, clip_config
from ..nn import evaluating
from ..optim import cosine_schedule
from ..pretrained import load_pretrained
from ..tokenizers import CLIPTokenizer
from .common import (EVAL_STREAM, TRAIN_STREAM, Run, UsageError, adamw, check_resume_flags, fit,
                     positive, read_metrics, read_results, saved_settings, seeded_rng,
                     write_results)

COMMAND = "train-clip"
PROMPT = "a photo of a {}"             # the zero-shot prompt; {} is "red circle"
CAPTION_PREFIXES = ("", "a photo of ", "a picture of ", "an image of ")
PROBE_TRAIN_PER_PAIR, PROBE_VAL_PER_PAIR, TEST_PER_PAIR = 32, 8, 50   # images per pair
FIGURES = ("loss.png", "similarity.png", "confusion.png", "few_shot.png")


def shapes_clip_config(image_size=32, context_length=16):
    """The "tiny" CLIP (minivlm.models.clip) for image_size × image_size shapes and captions of
    at most context_length tokens."""
    config = clip_config("tiny")
    config.vision = dataclasses.replace(config.vision, image_resolution=image_size)   # checked
    config.text = dataclasses.replace(config.text, context_length=context_length)
    return config


@dataclasses.dataclass
class TrainConfig:
    """Everything that decides a training run's losses; saved in its checkpoint."""
    model: CLIPConfig = dataclasses.field(default_factory=shapes_clip_config)
    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3                   # peak learning rate, after a linear warm-up
    warmup_steps: int = 100
    weight_decay: float = 0.1          # on matrices only (not gains, biases, logit_scale)
    max_grad_norm: float = 1.0
    held_out_pairs: int = 8            # colour-shape pairs never shown in training
    caption_dropout: float = 0.5       # probability of dropping the size word, the position phrase
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = CLIPConfig(**self.model)
        positive = {name: getattr(self, name) for name in ("steps", "batch_size", "lr")}
        if not all(value > 0 for value in positive.values()):
            raise ValueError(f"TrainConfig: steps, batch_size and lr must be > 0, got {positive}")
        if not 0 <= self.caption_dropout <= 1:
            raise ValueError(f"TrainConfig: caption_dropout must lie in [0, 1], got "
                             f"{self.caption_dropout}")

    @property
    def image_size(self):
        return self.model.vision.image_resolution

    @property
    def context_length(self):
        return self.model.text.context_length

    def pairs(self):
        """(seen, held_out) colour-shape pairs: training draws only the seen ones."""
        return split_pairs(self.held_out_pairs, seed=self.seed)


# --- data -------------------------------------------------------------------------------------

def caption(colour, shape, size=None, position=None):
    """'a [size ]colour shape[ in the position]': the dataset's caption, with parts left out."""
    words = ["a", size, colour, shape] + (["in the", position] if position else [])
    return " ".join(word for word in words if word)


def training_captions(labels, dropout, rng):
    """The batch's captions from its labels, varied as web alt-text varies: each size word and
    each position phrase is left out with probability `dropout`, and each caption gets one of
    CAPTION_PREFIXES at random ("a photo of a red ring"). dropout=0 and the prefix "" give the
    dataset's own captions."""
    n = len(labels["shape"])
    keep_size, keep_position = rng.random((2, n)) >= dropout
    prefixes = rng.integers(len(CAPTION_PREFIXES), size=n)
    colours = list(COLOURS)
    return [CAPTION_PREFIXES[prefixes[i]]
            + caption(colours[labels["colour"][i]], SHAPES[labels["shape"][i]],
                      SIZES[labels["size"][i]] if keep_size[i] else None,
                      POSITIONS[labels["position"][i]] if keep_position[i] else None)
            for i in range(n)]


def training_batch(config, step, pairs, tokenizer):
    """The images (B, 3, R, R) and caption token ids (B, context_length) of step `step`: a pure
    function of (config.seed, step), drawn from `pairs` only."""
    rng = seeded_rng(config.seed, TRAIN_STREAM, step)
    images, labels, _ = make_shapes(config.batch_size, config.image_size,
                                    seed=int(rng.integers(2 ** 63)), pairs=pairs)
    captions = training_captions(labels, config.caption_dropout, rng)
    return images, tokenizer(captions, context_length=config.context_length)


def labelled_images(pairs, per_pair, image_size, rng):
    """per_pair images of each colour-shape pair -> (images (P·per_pair, 3, R, R), labels): label
    = the pair's index in colour_shape_pairs(), the zero-shot and probe classes."""
    classes = {pair: i for i, pair in enumerate(colour_shape_pairs())}
    images = [make_shapes(per_pair, image_size, seed=int(rng.integers(2 ** 63)), pairs=[pair])[0]
              for pair in pairs]
    return np.concatenate(images), np.repeat([classes[pair] for pair in pairs], per_pair)


# --- training ---------------------------------------------------------------------------------

def make_optimizer(model, config):
    """AdamW as the CLIP paper (β₂ = 0.98, ε = 1e-6); weight decay on matrices only."""
    return adamw(model, config.lr, config.weight_decay, betas=(0.9, 0.98), eps=1e-6)


def train(config=None, out=None, resume=None, stop_at=None, save_every=250):
    """Train a CLIP on captioned shapes, or resume a run -> (model, losses of every step).

    out: the run directory, written every `save_every` steps and at the end (None: nothing is
    written). resume: a run directory to continue, with the TrainConfig saved in it (`config`,
    when given, must equal it). stop_at: end this call after that many steps in all, as an
    interruption would, with a checkpoint there."""
    if resume is not None:
        run = Run.resume(resume, COMMAND)
        saved = TrainConfig(**run.settings)
        if config is not None and config != saved:
            raise ValueError(f"train: the run {resume} was saved with {saved}, which differs "
                             f"from the config given, {config}")
        config, model = saved, load_pretrained(resume)
    else:
        config = config or TrainConfig()
        run = Run.start(out, COMMAND, dataclasses.asdict(config))
        manual_seed(config.seed)
        model = CLIP(config.model)
    optimizer = make_optimizer(model, config)
    run.restore(optimizer)
    schedule = cosine_schedule(optimizer, min(config.warmup_steps, config.steps), config.steps)
    schedule.load_state_dict({"last_epoch": run.step, "base_lrs": schedule.base_lrs})
    seen, _ = config.pairs()
    tokenizer = CLIPTokenizer()

    def loss_of_step(step):
        """The contrastive loss of this rank's (image, caption) pairs of step `step` against the
        whole batch."""
        images, ids = distributed.shard(*training_batch(config, step, seen, tokenizer))
        return gathered_clip_loss(*model.embed(images, ids), model.logit_scale)

    stop = config.steps if stop_at is None else min(stop_at, config.steps)
    losses = fit(model, optimizer, schedule, loss_of_step, run, stop, config.seed,
                 config.max_grad_norm, after_update=model.clamp_logit_scale_,
                 save_every=save_every, unit="img", scale=config.batch_size)
    return model, losses


# --- evaluation -------------------------------------------------------------------------------

def pair_names(pairs):
    return [f"{colour} {shape}" for colour, shape in pairs]


def evaluate(model, config):
    """The CLIP paper's evaluations on new images -> dict of results.

    Zero-shot top-1/top-5 with PROMPT for images of the seen and of the held-out pairs, each
    choosing among all colour-shape pairs (chance 1/#pairs), and for the held-out images choosing
    among the held-out pairs only; zero-shot top-1 with the 80 ImageNet templates ensembled; the
    linear probe and k-shot probes (k = 1 ... 16) over all pairs, on L2-normalised image
    embeddings; the zero-shot confusion counts over all pairs."""
    with evaluating(model):
        all_pairs = colour_shape_pairs()
        held_out = np.array([all_pairs.index(pair) for pair in config.pairs()[1]])
        rng = seeded_rng(config.seed, EVAL_STREAM)
        (train_x, train_y), (val_x, val_y), (test_x, test_y) = (
            labelled_images(all_pairs, n, config.image_size, rng)
            for n in (PROBE_TRAIN_PER_PAIR, PROBE_VAL_PER_PAIR, TEST_PER_PAIR))
        train_x, val_x, test_x = (l2_normalize(encode_images(model, images))
                                  for images in (train_x, val_x, test_x))
        is_held_out = np.isin(test_y, held_out)

        def zero_shot(templates):
            classifier = zero_shot_classifier(model, CLIPTokenizer(), pair_names(all_pairs),
                                              templates)
            return zero_shot_logits(test_x, classifier)

        logits, ensembled = zero_shot((PROMPT,)), zero_shot(IMAGENET_TEMPLATES)
        probe = fit_linear_probe(train_x, train_y, val_x, val_y, len(all_pairs))
        return {
            "zero_shot_seen": accuracy(logits[~is_held_out], test_y[~is_held_out], (1, 5)),
            "zero_shot_held_out": accuracy(logits[is_held_out], test_y[is_held_out], (1, 5)),
            "zero_shot_held_out_among_held_out": accuracy(
                logits[is_held_out][:, held_out],
                np.searchsorted(held_out, test_y[is_held_out]))[0],
            "zero_shot_all": accuracy(logits, test_y)[0],
            "ensemble_seen": accuracy(ensembled[~is_held_out], test_y[~is_held_out])[0],
            "ensemble_held_out": accuracy(ensembled[is_held_out], test_y[is_held_out])[0],
            "confusion": confusion_matrix(test_y, logits.argmax(axis=1), len(all_pairs)),
            "linear_probe": probe.score(test_x, test_y),
            "linear_probe_l2": probe.l2,
            "few_shot": few_shot_accuracies(train_x, train_y, val_x, val_y, test_x, test_y,
                                            num_classes=len(all_pairs), seed=config.seed),
        }


def report(results, config):
    """Print the results of `evaluate` as a short table."""
    seen, held_out = config.pairs()
    n_pairs = len(seen) + len(held_out)
    print(f"zero-shot, prompt {PROMPT.format('{colour} {shape}')!r}, choosing among all "
          f"{n_pairs} pairs (chance {100 / n_pairs:.1f} %):")
    for name, count, key in (("seen", len(seen), "zero_shot_seen"),
                             ("held-out", len(held_out), "zero_shot_held_out")):
        top1, top5 = results[key]
        print(f"  {name:>8} pairs ({count:2d}): top-1 {100 * top1:5.1f} %   "
              f"top-5 {100 * top5:5.1f} %")
    print(f"  held-out images choosing among the {len(held_out)} held-out pairs only: "
          f"top-1 {100 * results['zero_shot_held_out_among_held_out']:5.1f} % (chance "
          f"{100 / len(held_out):.1f} %)")
    print(f"  all pairs: top-1 {100 * results['zero_shot_all']:5.1f} %")
    print(f"  the 80 ImageNet templates ensembled: seen top-1 "
          f"{100 * results['ensemble_seen']:5.1f} %, held-out top-1 "
          f"{100 * results['ensemble_held_out']:5.1f} %")
    print(f"linear probe on frozen image embeddings, all {n_pairs} pairs: top-1 "
          f"{100 * results['linear_probe']:5.1f} % (L2 λ = {results['linear_probe_l2']:.3g})")
    shots = "   ".join(f"{k}: {100 * a:5.1f} %" for k, a in results["few_shot"].items())
    print(f"few-shot linear probes (k examples per pair): {shots}")


def write_figures(out, model, config):
    """loss.png, similarity.png, confusion.png and few_shot.png in the run directory `out`,
    from its metrics.jsonl and results.json (and the model, for the similarities)."""
    out = Path(out)
    all_pairs = colour_shape_pairs()
    seen, held_out = config.pairs()
    plots.plot_loss([m["loss"] for m in read_metrics(out)], out / "loss.png")
    results = read_results(out)

    shown = held_out[:4] + seen[:8 - min(4, len(held_out))]
    images, _ = labelled_images(shown, 1, config.image_size,
                                seeded_rng(config.seed, EVAL_STREAM, 1))
    ids = CLIPTokenizer()([PROMPT.format(name) for name in pair_names(shown)],
                          context_length=config.context_length)
    similarity = l2_normalize(encode_texts(model, ids)) @ l2_normalize(
        encode_images(model, images)).T                           # (texts, images)
    labels = [PROMPT.format(name) + (" *" if pair in held_out else "")
              for name, pair in zip(pair_names(shown), shown)]
    plots.plot_similarity(similarity, images, labels, out / "similarity.png",
                          title="cosine similarity (* = pair held out of training)")

    names = [name + (" *" if pair in held_out else "")
             for name, pair in zip(pair_names(all_pairs), all_pairs)]
    plots.plot_confusion(np.asarray(results["confusion"]), names, out / "confusion.png",
                         title="zero-shot confusion matrix (* = held out of training)")
    few_shot = {int(k): accuracy for k, accuracy in results["few_shot"].items()}
    plots.plot_few_shot(few_shot, out / "few_shot.png",
                        zero_shot=results["zero_shot_all"], linear_probe=results["linear_probe"])


# --- the command: minivlm train-clip --------------------------------------------------------------

def add_arguments(parser):
    default = TrainConfig()
    parser.add_argument("--steps", type=positive(int), default=None,
                        help=f"optimizer steps (default {default.steps})")
    parser.add_argument("--batch-size", type=positive(int), default=None,
                        help=f"image-caption pairs per step (default {default.batch_size})")
    parser.add_argument("--image-size", type=positive(int), default=None,
                        help=f"image side in pixels, a multiple of the patch size "
                             f"{default.model.vision.patch_size} (default {default.image_size})")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"seed of the weights, the data and the held-out pairs "
                             f"(default {default.seed})")
    parser.add_argument("--out", default=None,
                        help="the run directory: the model, metrics, results and figures "
                             "(default runs/clip)")
    parser.add_argument("--resume", default=None, metavar="DIR",
                        help="continue the run saved in DIR, with its settings, writing there")


def config_from_args(args):
    """A TrainConfig from the command line's flags (those left out keep their defaults)."""
    flags = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed}
    config = TrainConfig(**{name: value for name, value in flags.items() if value is not None})
    if args.image_size is not None:
        patch_size = config.model.vision.patch_size
        if args.image_size % patch_size:
            raise UsageError(f"--image-size {args.image_size} is not a multiple of the patch "
                             f"size {patch_size}")
        config.model = shapes_clip_config(args.image_size, config.context_length)
    return config


def run(args):
    if args.resume is not None:
        config = TrainConfig(**saved_settings(args.resume, COMMAND))
        check_resume_flags(args, {"steps": config.steps, "batch_size": config.batch_size,
                                  "seed": config.seed, "image_size": config.image_size})
    else:
        config = config_from_args(args)
    out = Path(args.resume or args.out or "runs/clip")
    start = time.monotonic()
    model, losses = train(config, out=None if args.resume else out, resume=args.resume)
    if not distributed.is_main():
        return 0                     # rank 0 alone evaluates and writes
    print(f"trained {len(losses)} steps in {time.monotonic() - start:.0f} s; loss "
          f"{np.mean(losses[-50:]):.4f} (mean of the last 50 steps); model in {out}")
    start = time.monotonic()
    results = evaluate(model, config)
    report(results, config)
    write_results(out, results)
    write_figures(out, model, config)
    print(f"evaluated in {time.monotonic() - start:.0f} s; results.json and figures in {out}: "
          f"{', '.join(FIGURES)}")
    return 0

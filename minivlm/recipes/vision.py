"""`minivlm train-vision`: train a small ViT, Swin or ResNet classifier on the built-in coloured
shapes.

    minivlm train-vision --model vit|swin|resnet [--target shape|colour|size|position]

    config = ClassifierConfig("swin", target="colour")     # the model's defaults: MODEL_OPTIONS
    minivlm.manual_seed(0)
    model = build_model(config)
    losses = train(model, config, steps=300, batch_size=64, lr=1e-3, seed=0)
    images, labels = held_out_set(config, 1000, seed=0)
    accuracy, per_class = evaluate(model, images, labels, len(config.classes))
    minivlm.save_pretrained(model, "runs/vision-swin", labels_config(config))

The classes are the values of one label of `make_shapes`: its 6 shapes by default. Every step
draws a fresh batch, a pure function of (seed, step), so no image is seen twice; the held-out
images come from a separate stream of the same seed. The models read pixels mapped from [0, 1]
to [-1, 1] (`normalize`). Training is AdamW in float32 with a linear warm-up over the first 10 %
of the steps, then cosine decay to lr/10; weight decay on matrices only; gradients clipped to
norm 1. The run directory is a Hugging Face ViTForImageClassification or
SwinForImageClassification directory (minivlm's own layout for the ResNet) whose id2label names
the classes, with the resume state, metrics.jsonl, results.json and loss.png beside it.

`mpiexec -n N python -m minivlm train-vision ...` trains on N ranks, each on n/N images of every
batch of n (recipes.common). The ViT and Swin then compute what one process computes (to
rounding); the ResNet's batch norm normalises over each rank's images, as PyTorch's DDP without
SyncBatchNorm.
"""
import dataclasses
from pathlib import Path

import numpy as np

from .. import distributed, plots
from .. import functional as F
from ..autograd import manual_seed, tensor
from ..data.shapes import COLOURS, POSITIONS, SHAPES, SIZES, make_shapes
from ..eval import confusion_matrix
from ..models.resnet import small_resnet
from ..models.swin import SwinConfig, SwinTransformer
from ..models.vit import ViT, ViTConfig
from ..nn import evaluating
from ..optim import cosine_schedule
from ..pretrained import load_pretrained
from .common import (EVAL_STREAM, TRAIN_STREAM, Run, UsageError, adamw, check_resume_flags, fit,
                     positive, read_metrics, saved_settings, seeded_rng, write_results)

COMMAND = "train-vision"

TARGETS = {"shape": SHAPES, "colour": tuple(COLOURS), "size": SIZES, "position": POSITIONS}
PIXEL_MEAN = PIXEL_STD = 0.5            # [0, 1] -> [-1, 1], as Hugging Face's ViTImageProcessor

# Each architecture's hyperparameters (beside image size and classes) for 32×32 images, and the
# steps of its default run: a minute or two on two CPU cores, to over 90 % held-out accuracy on
# shapes. The ViT, without the convolutions' and the windows' bias towards local features, needs
# the most steps.
MODEL_OPTIONS = {
    "vit": dict(patch_size=4, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                intermediate_size=128),
    "swin": dict(patch_size=4, embed_dim=48, depths=(2, 2), num_heads=(3, 6), window_size=4),
    "resnet": dict(width=16, layers=(1, 1, 1, 1)),
}
DEFAULT_STEPS = {"vit": 600, "swin": 300, "resnet": 150}
MODELS = tuple(MODEL_OPTIONS)


@dataclasses.dataclass
class ClassifierConfig:
    """What rebuilds a classifier (saved in the run's settings).

    options: the architecture's hyperparameters (ViTConfig's, SwinConfig's or small_resnet's
    arguments); those not given take their value from MODEL_OPTIONS[model]."""
    model: str = "vit"
    target: str = "shape"
    image_size: int = 32
    options: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.model not in MODEL_OPTIONS:
            raise ValueError(f"ClassifierConfig: model must be one of {MODELS}, got "
                             f"{self.model!r}")
        if self.target not in TARGETS:
            raise ValueError(f"ClassifierConfig: target must be one of {tuple(TARGETS)}, "
                             f"got {self.target!r}")
        unknown = self.options.keys() - MODEL_OPTIONS[self.model].keys()
        if unknown:
            raise ValueError(f"ClassifierConfig: unknown {self.model} option(s) "
                             f"{sorted(unknown)}; valid ones are "
                             f"{sorted(MODEL_OPTIONS[self.model])}")
        options = {**MODEL_OPTIONS[self.model], **self.options}
        self.options = {name: tuple(value) if isinstance(value, list) else value   # from JSON
                        for name, value in options.items()}

    @property
    def classes(self):
        """The class names, in label order."""
        return TARGETS[self.target]


def build_model(config):
    """A freshly initialised classifier: images (B, 3, S, S) -> logits (B, len(config.classes))."""
    num_classes, size = len(config.classes), config.image_size
    if config.model == "vit":
        return ViT(ViTConfig(image_size=size, num_classes=num_classes, **config.options))
    if config.model == "swin":
        return SwinTransformer(SwinConfig(image_size=size, num_classes=num_classes,
                                          **config.options))
    return small_resnet(num_classes, **config.options)


# --- data -------------------------------------------------------------------------------------

def normalize(images):
    """Pixels in [0, 1] -> the models' input, (images − PIXEL_MEAN) / PIXEL_STD: centred pixels
    make the first steps of training (the ViT's above all) much faster."""
    return (images - PIXEL_MEAN) / PIXEL_STD


def _draw(config, n, rng):
    """n normalized images (n, 3, S, S) and their labels (n,) for config.target."""
    images, labels, _ = make_shapes(n, config.image_size, seed=int(rng.integers(2 ** 63)))
    return normalize(images), labels[config.target]


def training_batch(config, batch_size, step, seed=0):
    """The images and labels of training step `step`: a pure function of (seed, step)."""
    return _draw(config, batch_size, seeded_rng(seed, TRAIN_STREAM, step))


def held_out_set(config, n, seed=0):
    """n images and labels that training with the same seed never draws."""
    return _draw(config, n, seeded_rng(seed, EVAL_STREAM))


# --- training and evaluation ------------------------------------------------------------------

def train(model, config, steps, batch_size=64, lr=1e-3, weight_decay=0.05, seed=0,
          max_grad_norm=1.0, run=None, save_every=250):
    """Train `model` on batches of config.target for `steps` steps -> the loss of every step.

    Batch `step` is training_batch(config, batch_size, step, seed), so a model built after
    minivlm.manual_seed(s) and trained with the same arguments always ends the same. run: the
    Run to log to and checkpoint in, every `save_every` steps and at the end (recipes.common;
    None: in memory)."""
    run = run or Run(None, COMMAND, {})
    optimizer = adamw(model, lr, weight_decay)
    run.restore(optimizer)
    schedule = cosine_schedule(optimizer, warmup_steps=steps // 10, total_steps=steps,
                               min_lr=lr / 10)
    schedule.load_state_dict({"last_epoch": run.step, "base_lrs": schedule.base_lrs})

    def loss_of_step(step):
        images, labels = distributed.shard(*training_batch(config, batch_size, step, seed))
        return F.cross_entropy(model(tensor(images)), tensor(labels))

    return fit(model, optimizer, schedule, loss_of_step, run, steps, seed, max_grad_norm,
               save_every=save_every, unit="img", scale=batch_size)


def predict(model, images, batch_size=250):
    """The predicted class of each image (N, 3, S, S) -> int64 (N,), in eval mode (batch norm
    uses its running statistics); the model's training flag is restored after."""
    with evaluating(model):
        predictions = [model(tensor(images[i:i + batch_size])).numpy().argmax(axis=1)
                       for i in range(0, len(images), batch_size)]
    return np.concatenate(predictions)


def evaluate(model, images, labels, num_classes):
    """(overall accuracy, per-class accuracy (num_classes,)) of the model's predictions for
    images (N, 3, S, S) as held_out_set gives them, labels (N,); a class with no image gets NaN."""
    counts = confusion_matrix(labels, predict(model, images), num_classes)
    per_class_total = counts.sum(axis=1)
    with np.errstate(invalid="ignore"):
        per_class = np.diag(counts) / per_class_total
    return float(np.trace(counts) / per_class_total.sum()), per_class


def labels_config(config):
    """The config.json entries that name the classes (Hugging Face's id2label, label2id)."""
    return {"id2label": {str(i): name for i, name in enumerate(config.classes)},
            "label2id": {name: i for i, name in enumerate(config.classes)}}


# --- the command: minivlm train-vision ----------------------------------------------------------

def add_arguments(parser):
    parser.add_argument("--model", choices=MODELS, default=None,
                        help="the architecture (default vit); sizes in "
                             "minivlm.recipes.vision.MODEL_OPTIONS")
    parser.add_argument("--target", choices=tuple(TARGETS), default=None,
                        help="the label to classify (default: shape)")
    parser.add_argument("--steps", type=positive(int), default=None,
                        help="optimizer steps (default: "
                             + ", ".join(f"{n} for {m}" for m, n in DEFAULT_STEPS.items()) + ")")
    parser.add_argument("--batch-size", type=positive(int), default=None,
                        help="images per step (default: 64)")
    parser.add_argument("--lr", type=positive(float), default=None,
                        help="peak learning rate of AdamW (default: 1e-3)")
    parser.add_argument("--image-size", type=positive(int), default=None,
                        help="image side in pixels (default: 32)")
    parser.add_argument("--held-out", type=positive(int), default=1000,
                        help="held-out images the accuracy is measured on (default: %(default)s)")
    parser.add_argument("--out", default=None,
                        help="the run directory (default runs/vision-MODEL)")
    parser.add_argument("--resume", default=None, metavar="DIR",
                        help="continue the run saved in DIR, with its settings, writing there")
    parser.add_argument("--seed", type=int, default=None, help="(default 0)")


TRAINING_FLAGS = ("steps", "batch_size", "lr", "seed")


def settings_from_args(args):
    """The run's settings: the classifier's config and the training flags, defaults filled."""
    model = args.model or "vit"
    try:
        config = ClassifierConfig(model, args.target or "shape", args.image_size or 32)
        build_model(config)   # e.g. an image size that the patch size does not divide
    except ValueError as error:
        raise UsageError(str(error)) from None
    given = {name: getattr(args, name) for name in TRAINING_FLAGS}
    defaults = {"steps": DEFAULT_STEPS[model], "batch_size": 64, "lr": 1e-3, "seed": 0}
    return {"classifier": dataclasses.asdict(config),
            **{name: defaults[name] if value is None else value for name, value in given.items()}}


def resumed_settings(args):
    """The saved run's settings; the flags given must agree with them."""
    settings = saved_settings(args.resume, COMMAND)
    classifier = settings["classifier"]
    check_resume_flags(args, {**{name: settings[name] for name in TRAINING_FLAGS},
                              **{name: classifier[name]
                                 for name in ("model", "target", "image_size")}})
    return settings


def run(args):
    if args.resume is not None:
        settings = resumed_settings(args)
        training_run = Run.resume(args.resume, COMMAND)
        config = ClassifierConfig(**settings["classifier"])
        model = load_pretrained(args.resume)
    else:
        settings = settings_from_args(args)
        config = ClassifierConfig(**settings["classifier"])
        training_run = Run.start(args.out or f"runs/vision-{config.model}", COMMAND, settings)
        manual_seed(settings["seed"])
        model = build_model(config)
    training_run.extra_config = labels_config(config)
    print(f"{config.model}: {model.num_parameters():,} parameters, {len(config.classes)} classes "
          f"({config.target}), options {config.options}")
    train(model, config, settings["steps"], settings["batch_size"], settings["lr"],
          seed=settings["seed"], run=training_run)
    if not distributed.is_main():
        return 0                     # rank 0 alone evaluates and writes

    images, labels = held_out_set(config, args.held_out, seed=settings["seed"])
    accuracy, per_class = evaluate(model, images, labels, len(config.classes))
    print(f"held-out accuracy per class ({args.held_out} new images):")
    name_width = max(map(len, config.classes))
    for name, class_accuracy, count in zip(config.classes, per_class,
                                           np.bincount(labels, minlength=len(config.classes))):
        print(f"  {name:<{name_width}}  {class_accuracy:6.1%}  of {count}")
    print(f"held-out accuracy: {accuracy:.1%} (chance {1 / len(config.classes):.1%})")
    out = training_run.directory
    write_results(out, {"held_out_images": args.held_out, "accuracy": accuracy,
                        "per_class": {name: None if np.isnan(value) else value
                                      for name, value in zip(config.classes, per_class)}})
    plots.plot_loss([m["loss"] for m in read_metrics(out)], out / "loss.png",
                    title=f"{config.model} cross-entropy ({config.target})")
    print(f"saved the model, metrics.jsonl, results.json and loss.png in {out}")
    return 0

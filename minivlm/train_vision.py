"""Train a small ViT, Swin or ResNet classifier on the built-in coloured shapes.

    python -m minivlm train-vision --model vit|swin|resnet [--target shape|colour|size|position]

    config = VisionConfig("swin", target="colour")         # the model's defaults: MODEL_OPTIONS
    minivlm.manual_seed(0)
    model = build_model(config)
    losses = train(model, config, steps=300, batch_size=64, lr=1e-3, seed=0)
    images, labels = held_out_set(config, 1000, seed=0)
    accuracy, per_class = evaluate(model, images, labels, len(config.classes))
    save_checkpoint(model, config, "runs/vision-swin")      # model.safetensors + config.json
    model, config = load_checkpoint("runs/vision-swin")

The classes are the values of one label of `make_shapes`: its 6 shapes by default. Every step
draws a fresh batch, a pure function of (seed, step), so no image is seen twice; the held-out
images come from a separate stream of the same seed. The models read pixels mapped from [0, 1]
to [-1, 1] (`normalize`). Training is AdamW in float32 with a linear
warm-up over the first 10 % of the steps, then cosine decay to lr/10; weight decay on matrices
only; gradients clipped to norm 1.
"""
import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from . import io
from . import functional as F
from .autograd import manual_seed, no_grad, tensor
from .data.shapes import COLOURS, POSITIONS, SHAPES, SIZES, make_shapes
from .eval import confusion_matrix
from .models.resnet import small_resnet
from .models.swin import SwinConfig, SwinTransformer
from .models.vit import ViT, ViTConfig
from .optim import AdamW, clip_grad_norm_, cosine_schedule, decay_matrices_only
from .progress import progress

TARGETS = {"shape": SHAPES, "colour": tuple(COLOURS), "size": SIZES, "position": POSITIONS}
TRAIN_STREAM, HELD_OUT_STREAM = 0, 1    # keep training and held-out images apart
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
class VisionConfig:
    """What rebuilds a classifier: saved as config.json beside its weights.

    options: the architecture's hyperparameters (ViTConfig's, SwinConfig's or small_resnet's
    arguments); those not given take their value from MODEL_OPTIONS[model]."""
    model: str = "vit"
    target: str = "shape"
    image_size: int = 32
    options: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.model not in MODEL_OPTIONS:
            raise ValueError(f"VisionConfig: model must be one of {MODELS}, got {self.model!r}")
        if self.target not in TARGETS:
            raise ValueError(f"VisionConfig: target must be one of {tuple(TARGETS)}, "
                             f"got {self.target!r}")
        unknown = self.options.keys() - MODEL_OPTIONS[self.model].keys()
        if unknown:
            raise ValueError(f"VisionConfig: unknown {self.model} option(s) {sorted(unknown)}; "
                             f"valid ones are {sorted(MODEL_OPTIONS[self.model])}")
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


def _draw(config, n, seed, stream, index):
    """n normalized images (n, 3, S, S) and their labels (n,) for config.target, drawn from the
    generator of (seed, stream, index)."""
    draw_seed = int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])
    images, labels, _ = make_shapes(n, config.image_size, seed=draw_seed)
    return normalize(images), labels[config.target]


def training_batch(config, batch_size, step, seed=0):
    """The images and labels of training step `step`: a pure function of (seed, step)."""
    return _draw(config, batch_size, seed, TRAIN_STREAM, step)


def held_out_set(config, n, seed=0):
    """n images and labels that training with the same seed never draws."""
    return _draw(config, n, seed, HELD_OUT_STREAM, 0)


# --- training and evaluation ------------------------------------------------------------------

def make_optimizer(params, lr, weight_decay):
    """AdamW with weight decay on matrices only (not on biases and norm gains)."""
    return AdamW(decay_matrices_only(params), lr=lr, weight_decay=weight_decay)


def train(model, config, steps, batch_size=64, lr=1e-3, weight_decay=0.05, seed=0,
          max_grad_norm=1.0):
    """Train `model` on batches of config.target for `steps` steps -> the loss of every step.

    Batch `step` is training_batch(config, batch_size, step, seed), so a model built after
    minivlm.manual_seed(s) and trained with the same arguments always ends the same."""
    params = list(model.parameters())
    optimizer = make_optimizer(params, lr, weight_decay)
    schedule = cosine_schedule(optimizer, warmup_steps=steps // 10, total_steps=steps,
                               min_lr=lr / 10)
    model.train()
    losses = []
    bar = progress(range(steps), desc="train-vision", unit="img", scale=batch_size)
    for step in bar:
        images, labels = training_batch(config, batch_size, step, seed)
        loss = F.cross_entropy(model(tensor(images)), tensor(labels))
        optimizer.zero_grad()
        loss.backward()
        clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set(loss=losses[-1])
    return losses


def predict(model, images, batch_size=250):
    """The predicted class of each image (N, 3, S, S) -> int64 (N,), in eval mode (batch norm
    uses its running statistics); the model's training flag is restored after."""
    was_training = model.training
    model.eval()
    with no_grad():
        predictions = [model(tensor(images[i:i + batch_size])).numpy().argmax(axis=1)
                       for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return np.concatenate(predictions)


def evaluate(model, images, labels, num_classes):
    """(overall accuracy, per-class accuracy (num_classes,)) of the model's predictions for
    images (N, 3, S, S) as held_out_set gives them, labels (N,); a class with no image gets NaN."""
    counts = confusion_matrix(labels, predict(model, images), num_classes)
    per_class_total = counts.sum(axis=1)
    with np.errstate(invalid="ignore"):
        per_class = np.diag(counts) / per_class_total
    return float(np.trace(counts) / per_class_total.sum()), per_class


# --- checkpoints ------------------------------------------------------------------------------

def save_checkpoint(model, config, directory):
    """Write model.safetensors and config.json into `directory` (each to a temporary name, then
    renamed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    io.save(model.state_dict(), directory / "model.safetensors")
    with io.atomic_write(directory / "config.json") as f:
        f.write(json.dumps(dataclasses.asdict(config), indent=2).encode("utf-8"))


def load_checkpoint(directory):
    """(model, config) saved by `save_checkpoint`."""
    directory = Path(directory)
    config = VisionConfig(**json.loads((directory / "config.json").read_text(encoding="utf-8")))
    model = build_model(config)
    model.load_state_dict(io.load(directory / "model.safetensors"))
    return model, config


# --- the command: python -m minivlm train-vision ------------------------------------------------

def positive(kind):
    """An argparse type: `kind` (int or float) that must be > 0."""
    def parse(text):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    parse.__name__ = kind.__name__   # argparse names the type in "invalid int value" errors
    return parse


def add_arguments(parser):
    parser.add_argument("--model", choices=MODELS, default="vit",
                        help="the architecture; sizes in minivlm.train_vision.MODEL_OPTIONS")
    parser.add_argument("--target", choices=tuple(TARGETS), default="shape",
                        help="the label to classify (default: %(default)s)")
    parser.add_argument("--steps", type=positive(int), default=None,
                        help="optimizer steps (default: "
                             + ", ".join(f"{n} for {m}" for m, n in DEFAULT_STEPS.items()) + ")")
    parser.add_argument("--batch-size", type=positive(int), default=64,
                        help="images per step (default: %(default)s)")
    parser.add_argument("--lr", type=positive(float), default=1e-3,
                        help="peak learning rate of AdamW (default: %(default)s)")
    parser.add_argument("--image-size", type=positive(int), default=32,
                        help="image side in pixels (default: %(default)s)")
    parser.add_argument("--held-out", type=positive(int), default=1000,
                        help="held-out images the accuracy is measured on (default: %(default)s)")
    parser.add_argument("--out", default=None,
                        help="checkpoint directory (default runs/vision-MODEL)")
    parser.add_argument("--seed", type=int, default=0)


def run(args):
    manual_seed(args.seed)
    try:
        config = VisionConfig(args.model, args.target, args.image_size)
        model = build_model(config)
    except ValueError as error:    # e.g. an image size that the patch size does not divide
        raise SystemExit(f"train-vision: {error}") from None
    print(f"{args.model}: {model.num_parameters():,} parameters, {len(config.classes)} classes "
          f"({args.target}), options {config.options}")
    train(model, config, args.steps or DEFAULT_STEPS[args.model], args.batch_size, args.lr,
          seed=args.seed)

    images, labels = held_out_set(config, args.held_out, seed=args.seed)
    accuracy, per_class = evaluate(model, images, labels, len(config.classes))
    print(f"held-out accuracy per class ({args.held_out} new images):")
    name_width = max(map(len, config.classes))
    for name, class_accuracy, count in zip(config.classes, per_class,
                                           np.bincount(labels, minlength=len(config.classes))):
        print(f"  {name:<{name_width}}  {class_accuracy:6.1%}  of {count}")
    print(f"held-out accuracy: {accuracy:.1%} (chance {1 / len(config.classes):.1%})")
    out = Path(args.out or f"runs/vision-{args.model}")
    save_checkpoint(model, config, out)
    print(f"saved model.safetensors, config.json in {out}")
    return 0

"""`minivlm experiment clip-text-encoders`: CLIP's pseudocode reads "text_encoder - CBOW or Text
Transformer". This trains one CLIP with each text encoder on the same data for the same steps,
and measures what the choice changes.

Data: each batch is half train-clip's captioned single shapes (seen colour-shape pairs only) and
half two-shape images (minivlm.data.side_by_side), each beside its mirror image, so that "a red
circle left of a blue square" and "a blue square left of a red circle" meet in one batch and the
contrastive loss rewards reading the word order.

Measured on new images: zero-shot top-1 among all 48 colour-shape pairs with the prompt "a photo
of a {colour} {shape}", for the seen and the held-out pairs (as train-clip); and two choices
between two captions of a two-shape image that only word order decides (chance 50 %): the true
caption against the swap of its objects ("a blue square left of a red circle"), and against the
swap of its colours ("a red square left of a blue circle"). CBOW gives each of these pairs of
captions exactly the same embedding, so it scores exactly 50 % on them (a tie counts one half):
by construction, whatever it learns.

    minivlm experiment clip-text-encoders            # writes runs/clip-text-encoders/
"""
import dataclasses
import time
from pathlib import Path

import numpy as np

from ... import plots
from ...data.side_by_side import draw_object_pairs, make_side_by_side, relation_caption
from ...eval import encode_images, encode_texts, l2_normalize
from ...models.text import TEXT_ENCODERS
from ...nn import evaluating
from ...tokenizers import CLIPTokenizer
from .. import clip
from ..common import (EVAL_STREAM, TRAIN_STREAM, UsageError, add_seed_and_out,
                      check_out_directory, positive, seeded_rng, write_metrics, write_results)

NAME = "clip-text-encoders"
FIGURE = "clip_text_encoders.png"
TWO_SHAPES_STREAM = 2           # a spawn key beside train-clip's own streams
TESTS = ("zero-shot seen", "zero-shot held-out", "objects swapped", "colours swapped")


def add_arguments(parser):
    parser.add_argument("--steps", type=positive(int), default=1000,
                        help="optimizer steps for each encoder (default %(default)s)")
    parser.add_argument("--batch-size", type=positive(int), default=128,
                        help="image-caption pairs per step, a multiple of 4: half single "
                             "shapes, half two-shape images and their mirrors (default "
                             "%(default)s)")
    parser.add_argument("--test-images", type=positive(int), default=1000,
                        help="two-shape images of each word-order test (default %(default)s)")
    parser.add_argument("--images-per-pair", type=positive(int), default=clip.TEST_PER_PAIR,
                        help="new images of each colour-shape pair the zero-shot accuracy is "
                             "measured on (default %(default)s)")
    add_seed_and_out(parser, NAME)


# --- data -------------------------------------------------------------------------------------

def two_shape_batch(config, step, n, tokenizer):
    """n two-shape images of seen pairs and their captions (n/2 drawn, each with its mirror) for
    step `step` -> (images (n, 3, R, R), token ids (n, context_length))."""
    rng = seeded_rng(config.seed, TRAIN_STREAM, step, TWO_SHAPES_STREAM)
    left, right = draw_object_pairs(n // 2, config.pairs()[0], rng)
    left, right = left + right, right + left                     # each image and its mirror
    images = make_side_by_side(left, right, config.image_size, seed=int(rng.integers(2 ** 63)))
    captions = [relation_caption(a, b) for a, b in zip(left, right)]
    return images, tokenizer(captions, context_length=config.context_length)


def mixed_batches(config, tokenizer):
    """step -> (images, ids): config.batch_size / 2 of train-clip's single shapes, then as many
    two-shape images with their mirrors."""
    half = dataclasses.replace(config, batch_size=config.batch_size // 2)
    seen = config.pairs()[0]

    def batch(step):
        single = clip.training_batch(half, step, seen, tokenizer)
        double = two_shape_batch(config, step, config.batch_size // 2, tokenizer)
        return tuple(np.concatenate(parts) for parts in zip(single, double))

    return batch


# --- evaluation -------------------------------------------------------------------------------

def caption_choice(model, images, true_ids, other_ids):
    """The fraction of images whose true caption is more similar to them than the other one
    (cosine similarity; a tie counts one half). The two sets of captions are encoded in
    separate calls of the same shapes, so equal token bags give bit-equal embeddings."""
    image = l2_normalize(encode_images(model, images))
    true, other = (l2_normalize(encode_texts(model, ids)) for ids in (true_ids, other_ids))
    true_score, other_score = (image * true).sum(axis=1), (image * other).sum(axis=1)
    return float(np.mean((true_score > other_score) + 0.5 * (true_score == other_score)))


def word_order_tests(model, config, n, tokenizer):
    """(objects swapped, colours swapped): caption_choice on n new two-shape images of seen
    pairs, the true caption "a red circle left of a blue square" against "a blue square left of
    a red circle" and against "a red square left of a blue circle"."""
    rng = seeded_rng(config.seed, EVAL_STREAM, TWO_SHAPES_STREAM)
    left, right = draw_object_pairs(n, config.pairs()[0], rng)
    images = make_side_by_side(left, right, config.image_size, seed=int(rng.integers(2 ** 63)))

    def ids(pairs):
        return tokenizer([relation_caption(a, b) for a, b in pairs],
                         context_length=config.context_length)

    true = ids(zip(left, right))
    swapped_objects = ids(zip(right, left))
    swapped_colours = ids(((a[0], b[1]), (b[0], a[1])) for a, b in zip(left, right))
    with evaluating(model):
        return (caption_choice(model, images, true, swapped_objects),
                caption_choice(model, images, true, swapped_colours))


# --- the experiment ---------------------------------------------------------------------------

def run(args):
    if args.batch_size % 4:
        raise UsageError(f"--batch-size {args.batch_size} is not a multiple of 4 (half single "
                         f"shapes, half two-shape images and their mirrors)")
    out = check_out_directory(args.out)
    tokenizer, results, metrics = CLIPTokenizer(), {}, []
    for encoder in TEXT_ENCODERS:
        config = clip.TrainConfig(model=clip.shapes_clip_config(text_encoder=encoder),
                                  steps=args.steps, batch_size=args.batch_size, seed=args.seed)
        start = time.monotonic()
        model, losses = clip.train(config, batches=mixed_batches(config, tokenizer))
        seconds = time.monotonic() - start
        metrics += [{"encoder": encoder, "step": step, "loss": loss}
                    for step, loss in enumerate(losses, 1)]
        write_metrics(out, metrics)
        seen, held_out = clip.zero_shot_accuracies(model, config, args.images_per_pair)
        objects, colours = word_order_tests(model, config, args.test_images, tokenizer)
        results[encoder] = {"parameters": model.text.num_parameters(),
                            "train_seconds": round(seconds, 1),
                            "final_loss": float(np.mean(losses[-50:])),
                            "zero_shot_seen": seen, "zero_shot_held_out": held_out,
                            "objects_swapped": objects, "colours_swapped": colours}
    write_results(out, {"settings": vars_of(args), "results": results})
    report(results, out)
    return 0


def vars_of(args):
    """The experiment's settings from the command line (JSON-able)."""
    return {name: getattr(args, name)
            for name in ("steps", "batch_size", "test_images", "images_per_pair", "seed")}


def report(results, out):
    """The table, the figure and the one-line conclusion."""
    keys = ("zero_shot_seen", "zero_shot_held_out", "objects_swapped", "colours_swapped")
    print(f"{'text encoder':<13} {'parameters':>10} " + " ".join(f"{t:>18}" for t in TESTS))
    for encoder, r in results.items():
        print(f"{encoder:<13} {r['parameters']:>10,} "
              + " ".join(f"{100 * r[key]:>17.1f}%" for key in keys))
    print("chance: 2.1 % for zero-shot (48 pairs), 50 % for the two word-order tests")
    plots.plot_bars({encoder: [r[key] for key in keys] for encoder, r in results.items()},
                    TESTS, Path(out) / FIGURE, "CLIP's text encoder: Transformer or CBOW",
                    chance=[1 / 48, 1 / 48, 0.5, 0.5])
    transformer, cbow = results["transformer"], results["cbow"]
    print(f"conclusion: on single shapes CBOW scores {100 * cbow['zero_shot_seen']:.1f} % / "
          f"{100 * cbow['zero_shot_held_out']:.1f} % (seen / held-out) against the "
          f"Transformer's {100 * transformer['zero_shot_seen']:.1f} % / "
          f"{100 * transformer['zero_shot_held_out']:.1f} %; on captions that only word order "
          f"tells apart it scores {100 * cbow['objects_swapped']:.1f} % and "
          f"{100 * cbow['colours_swapped']:.1f} % (chance, by construction), the Transformer "
          f"{100 * transformer['objects_swapped']:.1f} % (objects swapped) and "
          f"{100 * transformer['colours_swapped']:.1f} % (colours swapped)")
    print(f"results.json, metrics.jsonl and {FIGURE} in {out}")

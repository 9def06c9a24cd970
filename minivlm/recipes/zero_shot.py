"""`minivlm zero-shot`: classify images with a CLIP checkpoint and label names.

    minivlm zero-shot --model clip-vit-base-patch32 --image cat.jpg dog.jpg \\
        --labels "cat,dog,car" --template "a photo of a {}."
    minivlm zero-shot --model runs/clip --image a.png --labels "red circle,blue square"

The slide "Create dataset classifier from label text": each label becomes a caption from the
template, each caption a text embedding; an image's label probabilities are the softmax of
exp(logit_scale) times its cosine similarity with each caption (exp(logit_scale) = 100 for
OpenAI's models). --model takes a Hugging Face CLIP directory (train-clip's run directory is
one) or an OpenAI-named .safetensors file (see minivlm.pretrained.clip).
"""
from pathlib import Path

from .. import functional as F
from ..autograd import no_grad
from ..pretrained import load_clip, normalizes_images
from ..preprocess import load_images
from ..tokenizers import CLIPTokenizer
from .common import UsageError


def add_arguments(parser):
    parser.add_argument("--model", required=True,
                        help="a Hugging Face CLIP directory (train-clip's output is one) or an "
                             "OpenAI-named .safetensors file")
    parser.add_argument("--image", required=True, nargs="+", help="image files to classify")
    parser.add_argument("--labels", required=True, help='comma-separated label names, "cat,dog"')
    parser.add_argument("--template", default="a photo of a {}.",
                        help='the caption of a label, {} standing for it (default: "%(default)s")')


def caption_ids(captions, context_length):
    """The captions' token ids (M, context_length); a UsageError names one that does not fit."""
    tokenizer = CLIPTokenizer()
    for caption in captions:
        tokens = len(tokenizer.encode(caption)) + 2   # with the start and end tokens
        if tokens > context_length:
            raise UsageError(f"the caption {caption!r} is {tokens} tokens long, more than the "
                             f"model's text context of {context_length}: shorten the label or "
                             f"the --template")
    return tokenizer.tokenize(captions, context_length=context_length)


def label_probabilities(model, pixels, captions):
    """(N, 3, R, R) images and M captions -> NumPy (N, M): each image's softmax over captions."""
    ids = caption_ids(captions, model.config.text.context_length)
    with no_grad():
        logits_per_image, _ = model(pixels, ids)
    return F.softmax(logits_per_image, dim=-1).numpy()


def run(args):
    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    if not labels:
        raise UsageError(f"--labels {args.labels!r} names no label")
    if "{}" not in args.template:
        raise UsageError(f"--template {args.template!r} has no {{}} for the label")
    model = load_clip(args.model)
    normalize = not Path(args.model).is_dir() or normalizes_images(args.model)
    pixels = load_images(args.image, model.config.vision.image_resolution, normalize)
    captions = [args.template.format(label) for label in labels]
    probabilities = label_probabilities(model, pixels, captions)
    width = max(map(len, labels))
    for path, row in zip(args.image, probabilities):
        print(path)
        for i in row.argsort()[::-1]:
            print(f"  {labels[i]:<{width}}  {row[i]:.4f}")
    return 0

"""`minivlm chat`: ask a vision–language model about an image; the answer streams as it comes.

    minivlm chat --model runs/vlm/instruct --image scene.png "What colour is the circle?"
    minivlm chat --model runs/vlm/instruct --image scene.png       # questions from the prompt

--model takes train-vlm's instruct (or pretrain) directory, or a Hugging Face `llava` one with a
byte-level BPE tokenizer.json. The question goes into the lecture's template, as in instruction
tuning (data.instructions); with no question, each line typed at the prompt is one, until an
empty line or the end of the input.
"""
import sys

import numpy as np

from ..autograd import manual_seed
from ..models.llava import LlavaForConditionalGeneration
from ..pretrained import normalizes_images
from ..preprocess import load_images
from .common import UsageError, positive
from .generate import TextStreamer, load_decoder
from .vlm import instruction_prompt


def add_arguments(parser):
    parser.add_argument("question", nargs="?", default=None,
                        help="what to ask; without it, questions are read from the prompt")
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="a VLM directory (train-vlm's instruct directory, or a llava one)")
    parser.add_argument("--image", required=True, help="the image file to ask about")
    parser.add_argument("--max-new-tokens", type=positive(int), default=48,
                        help="the longest answer in tokens (default %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="0 (the default): the likeliest token each step; above 0: sample")
    parser.add_argument("--seed", type=int, default=0, help="the sampling seed (default 0)")


def questions(args):
    """The question given, or the lines typed at the prompt."""
    if args.question is not None:
        yield args.question
        return
    while True:
        if sys.stdin.isatty():
            print("> ", end="", flush=True)
        line = sys.stdin.readline().strip()
        if not line:
            return
        yield line


def run(args):
    if args.temperature < 0:
        raise UsageError(f"--temperature must be >= 0, got {args.temperature}")
    model, tokenizer, eos = load_decoder(args.model)
    if not isinstance(model, LlavaForConditionalGeneration):
        raise UsageError(f"{args.model} holds a {type(model).__name__}, not a vision-language "
                         f"model (train-vlm's instruct directory is one)")
    size = model.config.vision_config.image_resolution
    pixels = load_images([args.image], size, normalizes_images(args.model))
    manual_seed(args.seed)
    for question in questions(args):
        ids = instruction_prompt(tokenizer, question, model.config.image_seq_length)
        streamer = TextStreamer(tokenizer, skip_ids=eos)
        model.generate(np.asarray([ids]), pixel_values=pixels,
                       max_new_tokens=args.max_new_tokens, do_sample=args.temperature > 0,
                       temperature=args.temperature or 1.0, eos_token_id=eos or None,
                       streamer=streamer)
        streamer([], final=True)
        print()
    return 0

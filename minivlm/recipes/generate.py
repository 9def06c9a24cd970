"""`minivlm generate`: continue a prompt with any decoder directory, printing tokens as they come.

    minivlm generate --model SmolLM2-135M "Gravity is" --max-new-tokens 40
    minivlm generate --model runs/lm-causal "<s>the red circle" --temperature 0.8 --top-k 20

--model takes a Hugging Face `llama` or `gpt2` directory (train-lm's causal run directory is
one) holding config.json, model.safetensors and tokenizer.json, a byte-level BPE as GPT-2 and
SmolLM2 ship it, read with minivlm's own BPE code (special tokens written in the prompt map to
their ids). Greedy by default; --temperature above 0 samples, from the top-k / top-p tokens
when those are given, reproducibly for a --seed. Generation stops at config.json's
eos_token_id.
"""
import codecs
from pathlib import Path

import numpy as np

from ..autograd import manual_seed, tensor
from ..pretrained import load_pretrained, read_config
from ..tokenizers import BPETokenizer
from ..tokenizers.bpe import token_bytes
from .common import CommandError, UsageError, positive

TOKENIZER_FILE = "tokenizer.json"


def add_arguments(parser):
    parser.add_argument("prompt", help="the text to continue")
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="a llama or gpt2 model directory with its tokenizer.json")
    parser.add_argument("--max-new-tokens", type=positive(int), default=50,
                        help="the most tokens to add (default %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="0 (the default): the likeliest token each step; above 0: sample "
                             "from softmax(logits / temperature)")
    parser.add_argument("--top-k", type=positive(int), default=None,
                        help="sample among the k likeliest tokens only")
    parser.add_argument("--top-p", type=float, default=None,
                        help="sample among the fewest likeliest tokens holding probability p")
    parser.add_argument("--seed", type=int, default=0, help="the sampling seed (default 0)")


def check_arguments(args):
    if args.temperature < 0:
        raise UsageError(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UsageError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.temperature == 0 and (args.top_k is not None or args.top_p is not None):
        raise UsageError("--top-k and --top-p shape sampling: give a --temperature above 0 too")


def load_decoder(directory):
    """(model, tokenizer, eos ids) of a decoder directory; a clear error for anything else."""
    model = load_pretrained(directory)
    if not hasattr(model, "generate"):
        raise UsageError(f"{directory} holds a {type(model).__name__}, which does not generate "
                         f"text (a decoder directory is a llama or gpt2 one)")
    path = Path(directory) / TOKENIZER_FILE
    if not path.is_file():
        raise CommandError(f"{directory} holds no {TOKENIZER_FILE}, the tokenizer of the model")
    tokenizer = BPETokenizer.load(path)
    eos = read_config(directory).get("eos_token_id")
    return model, tokenizer, [] if eos is None else np.atleast_1d(eos).tolist()


class TextStreamer:
    """Prints the new text as token ids come in: each token's bytes go through an incremental
    UTF-8 decoder, which holds back a character whose bytes are still coming."""

    def __init__(self, tokenizer, skip_ids):
        self.tokenizer, self.skip_ids = tokenizer, set(skip_ids)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def __call__(self, ids, final=False):
        data = token_bytes(self.tokenizer.vocab, [i for i in np.asarray(ids).tolist()
                                                  if i not in self.skip_ids])
        print(self.decoder.decode(data, final=final), end="", flush=True)


def run(args):
    check_arguments(args)
    model, tokenizer, eos = load_decoder(args.model)
    ids = tokenizer.encode(args.prompt)
    if not ids:
        raise UsageError("the prompt is empty: give some text to continue")
    if max(ids) >= model.get_input_embeddings().num_embeddings:
        raise CommandError(f"{TOKENIZER_FILE} gives id {max(ids)}, past the model's "
                           f"{model.get_input_embeddings().num_embeddings} token embeddings")
    manual_seed(args.seed)
    streamer = TextStreamer(tokenizer, skip_ids=eos)
    print(args.prompt, end="", flush=True)
    model.generate(tensor(np.asarray([ids])).array, args.max_new_tokens,
                   do_sample=args.temperature > 0, temperature=args.temperature or 1.0,
                   top_k=args.top_k, top_p=args.top_p, eos_token_id=eos or None,
                   streamer=streamer)
    streamer([], final=True)
    print()
    return 0

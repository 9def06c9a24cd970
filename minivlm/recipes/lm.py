"""`minivlm train-lm`: a byte-level BPE tokenizer and a small GPT-style (causal) or RoBERTa-style
(masked) language model, trained on the built-in corpus.

    minivlm train-lm --objective causal|mlm

    tokenizer = BPETokenizer.train(sentences, vocab_size=1024)
    model = build_model(LMConfig("causal", tokenizer.vocab_size))
    losses = train(model, tokenizer, token_stream(sentences, tokenizer), steps=800,
                   batch_size=32, lr=3e-3)
    loss = evaluate(model, consecutive_windows(token_stream(held_out, tokenizer),
                                               window_length(model.config)), tokenizer)

Step s trains on windows at offsets drawn from a generator seeded with (seed, s), masked (for
the masked LM) by the same generator, so the run resumes exactly. The run directory is a
Hugging Face GPT-2 directory for the causal LM (minivlm's own layout for the masked LM) with
tokenizer.json, the resume state, metrics.jsonl, results.json and loss.png beside it.
"""
import dataclasses
import math
from pathlib import Path

import numpy as np

from .. import distributed, plots
from ..autograd import manual_seed, tensor
from ..data.text import corpus
from ..models.lm import (IGNORE_INDEX, OBJECTIVES, LMConfig, build_model, fill_mask, lm_loss,
                         mask_tokens)
from ..nn import evaluating
from ..optim import cosine_schedule
from ..pretrained import load_pretrained
from ..tokenizers import BPETokenizer
from .common import (EVAL_STREAM, TRAIN_STREAM, Run, UsageError, adamw, check_resume_flags, fit,
                     positive, read_metrics, saved_settings, seeded_rng, write_results)

COMMAND = "train-lm"
TOKENIZER_FILE = "tokenizer.json"


# --- data -------------------------------------------------------------------------------------

def token_stream(sentences, tokenizer):
    """All sentences as one 1-D host id array: <s> s1 </s> <s> s2 </s> ..."""
    ids = []
    for sentence in sentences:
        ids += [tokenizer.bos_id, *tokenizer.encode(sentence), tokenizer.eos_id]
    return np.asarray(ids)


def random_windows(stream, batch_size, length, rng):
    """batch_size windows of `length` consecutive ids, from random offsets: (batch_size, length)."""
    if len(stream) < length:
        raise ValueError(f"the token stream ({len(stream)} ids) is shorter than one window "
                         f"({length} ids)")
    starts = rng.integers(0, len(stream) - length + 1, size=batch_size)
    return stream[starts[:, None] + np.arange(length)]


def consecutive_windows(stream, length):
    """The stream cut into non-overlapping windows, the incomplete last one dropped: (n, length)."""
    n = len(stream) // length
    return stream[:n * length].reshape(n, length)


def inputs_and_targets(windows, objective, tokenizer, rng):
    """A batch of token windows -> (inputs, targets) for the objective: the causal LM reads
    windows[:, :-1] and predicts windows[:, 1:]; the masked LM reads masked windows."""
    if objective == "causal":
        return windows[:, :-1], windows[:, 1:]
    return mask_tokens(windows, tokenizer, rng)


def window_length(config):
    """Tokens per training window: the context, plus one for the causal LM's last target."""
    return config.context_length + (config.objective == "causal")


def held_out_sentences(train_sentences, seed, n=1000):
    """Up to n sentences from another draw of the corpus that are not among train_sentences."""
    seen = set(train_sentences)
    return [s for s in corpus(n, seed=seed + 1) if s not in seen]


# --- training and evaluation ------------------------------------------------------------------

def train(model, tokenizer, stream, steps, batch_size, lr, weight_decay=0.1, max_grad_norm=1.0,
          seed=0, run=None):
    """AdamW on random windows of `stream` -> the loss of every step: linear warm-up over the
    first 10 % of the steps, then cosine decay to lr/10; weight decay on matrices only
    (nanoGPT); gradients clipped to norm 1. run: the Run to log to and checkpoint in
    (recipes.common; None: in memory)."""
    run = run or Run(None, COMMAND, {})
    optimizer = adamw(model, lr, weight_decay, betas=(0.9, 0.95))
    run.restore(optimizer)
    schedule = cosine_schedule(optimizer, warmup_steps=steps // 10, total_steps=steps,
                               min_lr=lr / 10)
    schedule.load_state_dict({"last_epoch": run.step, "base_lrs": schedule.base_lrs})
    length = window_length(model.config)

    def loss_of_step(step):
        rng = seeded_rng(seed, TRAIN_STREAM, step)
        inputs, targets = inputs_and_targets(random_windows(stream, batch_size, length, rng),
                                             model.config.objective, tokenizer, rng)
        # the rank's summed token losses over its share of the batch's token count, so that the
        # mean over the ranks is the batch's mean (the masked LM's ranks mask different counts)
        share = int((targets != IGNORE_INDEX).sum()) / distributed.world_size()
        inputs, targets = distributed.shard(inputs, targets)
        return lm_loss(model(tensor(inputs)), tensor(targets), reduction="sum") / share

    return fit(model, optimizer, schedule, loss_of_step, run, steps, seed, max_grad_norm,
               unit="tok", scale=batch_size * length)


def evaluate(model, windows, tokenizer, batch_size=64, seed=0):
    """Mean loss (nats per predicted token) over windows (n, window_length). The masked LM's
    masks are drawn from a generator seeded with `seed`, so two evaluations compare."""
    rng = seeded_rng(seed, EVAL_STREAM)
    total, count = 0.0, 0
    with evaluating(model):
        for i in range(0, len(windows), batch_size):
            inputs, targets = inputs_and_targets(windows[i:i + batch_size], model.config.objective,
                                                 tokenizer, rng)
            total += lm_loss(model(tensor(inputs)), tensor(targets), reduction="sum").item()
            count += int((targets != IGNORE_INDEX).sum())
    return total / count


# --- the command: minivlm train-lm --------------------------------------------------------------

# The masked LM learns from the 15 % of tokens it masks: it needs about twice the steps.
DEFAULT_STEPS = {"causal": 800, "mlm": 1600}
DEFAULTS = dict(batch_size=32, seq_len=32, width=64, layers=2, heads=4, lr=3e-3,
                vocab_size=1024, sentences=20000, seed=0)


def add_arguments(parser):
    parser.add_argument("--objective", choices=OBJECTIVES, default=None,
                        help="causal: predict the next token (GPT, the default); mlm: fill in "
                             "masked tokens (RoBERTa)")
    defaults = ", ".join(f"{steps} {objective}" for objective, steps in DEFAULT_STEPS.items())
    parser.add_argument("--steps", type=positive(int), default=None,
                        help=f"optimizer steps (default: {defaults})")
    for flag, kind, help_text in [
            ("--batch-size", int, "windows per step"),
            ("--seq-len", int, "tokens per window (the context)"),
            ("--width", int, "model width D"), ("--layers", int, "Transformer blocks"),
            ("--heads", int, "attention heads"), ("--lr", float, "peak learning rate (AdamW)"),
            ("--vocab-size", int, "BPE vocabulary size when the tokenizer is trained"),
            ("--sentences", int, "training sentences drawn from the built-in corpus")]:
        default = DEFAULTS[flag[2:].replace("-", "_")]
        parser.add_argument(flag, type=positive(kind), default=None,
                            help=f"{help_text} (default {default})")
    parser.add_argument("--tokenizer", default=None, metavar="FILE",
                        help="a tokenizer.json to use instead of training one")
    parser.add_argument("--temperature", type=positive(float), default=0.8,
                        help="sampling temperature of the samples shown (default %(default)s)")
    parser.add_argument("--top-k", type=positive(int), default=20,
                        help="sample among the k likeliest (default %(default)s)")
    parser.add_argument("--out", default=None, help="the run directory (default runs/lm-OBJECTIVE)")
    parser.add_argument("--resume", default=None, metavar="DIR",
                        help="continue the run saved in DIR, with its settings, writing there")
    parser.add_argument("--seed", type=int, default=None, help="(default 0)")


SETTINGS = ("objective", "steps", *DEFAULTS)


def settings_from_args(args):
    """The run's settings: every flag of SETTINGS, defaults filled in."""
    objective = args.objective or "causal"
    defaults = {**DEFAULTS, "objective": objective, "steps": DEFAULT_STEPS[objective]}
    settings = {name: defaults[name] if getattr(args, name) is None else getattr(args, name)
                for name in SETTINGS}
    if settings["width"] % settings["heads"]:
        raise UsageError(f"--width {settings['width']} is not divisible by --heads "
                         f"{settings['heads']}")
    return settings


def resumed_settings(args):
    """The saved run's settings; the flags given must agree with them."""
    settings = saved_settings(args.resume, COMMAND)
    check_resume_flags(args, {name: settings[name] for name in SETTINGS})
    return settings


def run(args):
    if args.resume is not None:
        settings = resumed_settings(args)
        training_run = Run.resume(args.resume, COMMAND)
        tokenizer = BPETokenizer.load(Path(args.resume) / TOKENIZER_FILE)
        model = load_pretrained(args.resume)
    else:
        settings = settings_from_args(args)
        training_run = Run.start(args.out or f"runs/lm-{settings['objective']}", COMMAND,
                                 settings)
        tokenizer = tokenizer_for(args.tokenizer, train_sentences(settings),
                                  settings["vocab_size"])
        if training_run.directory is not None:      # rank 0 alone writes
            tokenizer.save(training_run.directory / TOKENIZER_FILE)
        manual_seed(settings["seed"])
        model = build_model(LMConfig(settings["objective"], tokenizer.vocab_size,
                                     settings["seq_len"], settings["width"], settings["layers"],
                                     settings["heads"]))
    if settings["objective"] == "causal":   # config.json's ids, as GPT-2's: `minivlm generate`
        training_run.extra_config.update(bos_token_id=tokenizer.bos_id,
                                         eos_token_id=tokenizer.eos_id)
    print(f"{settings['objective']} LM: {model.num_parameters():,} parameters, {model.config}")
    sentences = train_sentences(settings)
    train(model, tokenizer, token_stream(sentences, tokenizer), settings["steps"],
          settings["batch_size"], settings["lr"], seed=settings["seed"], run=training_run)
    if not distributed.is_main():
        return 0                     # rank 0 alone evaluates and writes

    held_out = held_out_sentences(sentences, seed=settings["seed"])
    windows = consecutive_windows(token_stream(held_out, tokenizer), window_length(model.config))
    loss = evaluate(model, windows, tokenizer)
    predicted = "next-token" if settings["objective"] == "causal" else "masked-token"
    print(f"held-out ({len(held_out)} sentences not seen in training): {predicted} loss "
          f"{loss:.4f} nats, perplexity {math.exp(loss):.3f}")
    out = training_run.directory
    write_results(out, {"held_out_sentences": len(held_out), "loss": loss,
                        "perplexity": math.exp(loss)})
    plots.plot_loss([m["loss"] for m in read_metrics(out)], out / "loss.png",
                    title=f"{settings['objective']} LM cross-entropy")
    print(f"saved the model, tokenizer.json, metrics.jsonl, results.json and loss.png in {out}")
    if settings["objective"] == "causal":
        show_samples(model, tokenizer, held_out[:5], args.temperature, args.top_k)
    else:
        show_filled_masks(model, tokenizer, held_out[:5])
    return 0


def train_sentences(settings):
    return corpus(settings["sentences"], seed=settings["seed"])


def tokenizer_for(path, sentences, vocab_size):
    """The tokenizer saved at `path`, or (path None) a new one trained on `sentences`."""
    if path is not None:
        print(f"tokenizer: loaded {path}")
        return BPETokenizer.load(path)
    tokenizer = BPETokenizer.train(sentences, vocab_size)
    print(f"tokenizer: trained on {len(sentences)} sentences, vocabulary {tokenizer.vocab_size}")
    return tokenizer


def show_samples(model, tokenizer, sentences, temperature, top_k):
    """Print each sentence's first half (at most half the context) and the model's sampled
    continuation, which fills the rest of the context at most."""
    print(f"samples (temperature {temperature}, top-k {top_k}): prompt | continuation")
    context = model.config.context_length
    for sentence in sentences:
        words = sentence.split()
        prompt = " ".join(words[:max(1, len(words) // 2)])
        prompt_ids = np.asarray([[tokenizer.bos_id, *tokenizer.encode(prompt)][:context // 2]])
        ids = model.generate(tensor(prompt_ids).array, context - prompt_ids.shape[1],
                             do_sample=True, temperature=temperature, top_k=top_k,
                             eos_token_id=tokenizer.eos_id)
        continuation = tensor(ids).tolist()[0][prompt_ids.shape[1]:]
        if tokenizer.eos_id in continuation:
            continuation = continuation[:continuation.index(tokenizer.eos_id)]
        print(f"  {tokenizer.decode(prompt_ids[0, 1:].tolist())} |{tokenizer.decode(continuation)}")


def show_filled_masks(model, tokenizer, sentences):
    """Hide the last word of each sentence that is a single token behind <mask>; print the
    model's guess beside the hidden word."""
    print("fill-mask: masked sentence -> filled (hidden word)")
    for sentence in sentences:
        if len(tokenizer.encode(sentence)) + 2 > model.config.context_length:
            continue                                        # with <s> and </s> it does not fit
        words = sentence.split(" ")
        bare = [word.rstrip(".?,") for word in words]
        single = [i for i in range(1, len(words)) if len(tokenizer.encode(" " + bare[i])) == 1]
        if not single:
            continue
        i = single[-1]
        masked = " ".join(words[:i] + ["<mask>" + words[i][len(bare[i]):]] + words[i + 1:])
        print(f"  {masked} -> {fill_mask(model, tokenizer, masked)} ({bare[i]})")

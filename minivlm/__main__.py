"""The command line: `minivlm COMMAND --help` (or `python -m minivlm COMMAND --help`).

Each command is a module of minivlm.recipes with `add_arguments(parser)` and `run(args)`; this
file only names them and turns errors into one line on stderr,

    minivlm COMMAND: error: <what was wrong and what to do>

with exit status 2 for bad arguments and 1 for failures (MINIVLM_DEBUG=1 shows the traceback).
Under `mpiexec -n N` every rank runs the command (minivlm.distributed): rank 0 alone prints, and
an error on any rank, named `rank R of N: ...`, ends the whole job instead of leaving the other
ranks waiting for it.
Every command takes `--threads N`, the BLAS threads it may use (default 1): on the small
matrices of these models OpenBLAS's threads cost more than they give (train-clip --steps 40 on
2 idle cores: 35 s with one thread, 78 s with two).
"""
import argparse
import importlib
import os
import sys
import traceback
import warnings

from . import distributed

COMMANDS = {
    "info": ("info", "versions, backend, BLAS threads and GPU"),
    "train-lm": ("lm", "train a small causal or masked language model on the built-in corpus"),
    "train-clip": ("clip", "train a small CLIP from scratch on the built-in captioned shapes"),
    "zero-shot": ("zero_shot", "classify images with a CLIP checkpoint and label names"),
    "generate": ("generate", "continue a prompt with a llama or gpt2 decoder directory"),
    "train-vision": ("vision", "train a small ViT, Swin or ResNet classifier on the built-in "
                               "shapes"),
    "train-vlm": ("train_vlm", "train a LLaVA-style vision-language model in stages on built-in scenes"),
    "chat": ("chat", "ask a vision-language model about an image"),
    "experiment": ("experiment", "measure one of the lecture's claims (minivlm experiment --help "
                                 "lists them)"),
}


class CommandParser(argparse.ArgumentParser):
    """argparse, with its errors on one line: `minivlm COMMAND: error: ...`, exit status 2."""

    def error(self, message):
        name = " ".join(["minivlm", *self.prog.split()[1:]])   # "minivlm" or "minivlm COMMAND"
        self.exit(2, f"{name}: error: {message} ({name} --help lists the arguments)\n")


def build_parser():
    parser = CommandParser(prog="minivlm", description="Train, evaluate and use minivlm's "
                           "models; `minivlm COMMAND --help` describes one command.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=CommandParser)
    parser.commands = {}
    for name, (module_name, help_text) in COMMANDS.items():
        sub = parser.commands[name] = commands.add_parser(name, help=help_text,
                                                          description=help_text)
        sub.add_argument("--threads", type=_threads, default=1,
                         help="BLAS threads for matrix products (default 1)")
        _recipe(module_name).add_arguments(sub)
    return parser


def main(argv=None):
    """Run one command -> its exit status (0 success, 1 failure, 2 bad arguments)."""
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as stop:   # --help, or a bad argument (already printed)
        return stop.code
    from threadpoolctl import threadpool_limits

    from .recipes.common import UsageError
    try:
        if not distributed.is_main():
            sys.stdout = open(os.devnull, "w", encoding="utf-8")   # rank 0 alone prints
        with threadpool_limits(args.threads, user_api="blas"), warnings.catch_warnings():
            # NumPy's overflow warnings: a run that diverges is stopped with one line instead
            warnings.simplefilter("ignore", RuntimeWarning)
            return _recipe(COMMANDS[args.command][0]).run(args) or 0
    except KeyboardInterrupt as stop:   # Ctrl-C; in training, after saving its step
        print(f"minivlm {args.command}: {str(stop) or 'interrupted'}", file=sys.stderr)
        return 130
    except Exception as error:
        status = 2 if isinstance(error, UsageError) else 1
        if os.environ.get("MINIVLM_DEBUG") != "1":
            print(f"minivlm {args.command}: error: {_rank()}{_one_line(error)}", file=sys.stderr)
        elif distributed.launched_size() == 1:
            raise
        else:
            traceback.print_exc()
        distributed.abort(status)    # the other ranks would wait for this one forever
        return status


def _recipe(module_name):
    return importlib.import_module(f"minivlm.recipes.{module_name}")


def _threads(text):
    threads = int(text)
    if threads < 1:
        raise ValueError(text)
    return threads


_threads.__name__ = "positive int"   # argparse: "invalid positive int value: '0'"


def _rank():
    """'rank R of N: ' on a rank of a job of several, so that an error says where it happened."""
    try:
        return f"rank {distributed.rank()} of {distributed.world_size()}: " \
            if distributed.world_size() > 1 else ""
    except RuntimeError:   # MPI itself is what failed: its message says so
        return ""


def _one_line(error):
    """The error's message on one line (the lines of a list joined by "; "); for an unexpected
    kind of error, its type and where to look."""
    first, *rest = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
    message = " ".join(filter(None, [first, "; ".join(rest)])) or type(error).__name__
    if isinstance(error, (ValueError, OSError, RuntimeError)) \
            or type(error).__module__.startswith("minivlm"):
        return message
    return f"{type(error).__name__}: {message} (an internal error: MINIVLM_DEBUG=1 shows where)"


if __name__ == "__main__":
    sys.exit(main())

"""The command line: `python -m minivlm COMMAND --help`.

Each command lives beside the code it drives, in a module with `add_arguments(parser)` and
`run(args)`; this file only names them. Every command takes `--threads N`, the BLAS threads it
may use (default 1): on the small matrices of these models OpenBLAS's threads cost more than they
give (train-clip --steps 40 on 2 idle cores: 35 s with one thread, 78 s with two).
"""
import argparse
import importlib
import sys

from threadpoolctl import threadpool_limits

COMMANDS = {
    "info": ("minivlm.info", "versions, backend, BLAS threads and GPU"),
    "train-lm": ("minivlm.models.lm", "train a small causal or masked language model on the built-in corpus"),
    "train-clip": ("minivlm.train_clip", "train a small CLIP from scratch on the built-in captioned shapes"),
    "zero-shot": ("minivlm.zero_shot_cli", "classify images with a CLIP checkpoint and label names"),
    "train-vision": ("minivlm.train_vision", "train a small ViT, Swin or ResNet classifier on the built-in shapes"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minivlm", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(module_name=module_name)
        sub.add_argument("--threads", type=int, default=1,
                         help="BLAS threads for matrix products (default 1)")
        importlib.import_module(module_name).add_arguments(sub)
    args = parser.parse_args(argv)
    with threadpool_limits(args.threads, user_api="blas"):
        return importlib.import_module(args.module_name).run(args)


if __name__ == "__main__":
    sys.exit(main())

"""The command line: `python -m minivlm COMMAND --help`.

Each command lives beside the code it drives, in a module with `add_arguments(parser)` and
`run(args)`; this file only names them, so `python -m minivlm info` imports nothing heavy.
"""
import argparse
import importlib
import sys

COMMANDS = {
    "info": ("minivlm.info", "versions, backend, BLAS threads and GPU"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minivlm", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(module_name=module_name)
        importlib.import_module(module_name).add_arguments(sub)
    args = parser.parse_args(argv)
    return importlib.import_module(args.module_name).run(args)


if __name__ == "__main__":
    sys.exit(main())

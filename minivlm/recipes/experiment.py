"""`minivlm experiment NAME`: the lecture's claims measured, one module of
minivlm.recipes.experiments per experiment, each with `add_arguments(parser)` and `run(args)`.
Every experiment writes results.json, metrics.jsonl and a figure into --out."""
import importlib

EXPERIMENTS = {}   # name -> (module in minivlm.recipes.experiments, one-line help)


def add_arguments(parser):
    experiments = parser.add_subparsers(dest="experiment", required=True, metavar="NAME",
                                        parser_class=type(parser))
    for name, (module_name, help_text) in EXPERIMENTS.items():
        sub = experiments.add_parser(name, help=help_text, description=help_text)
        _experiment(module_name).add_arguments(sub)


def run(args):
    return _experiment(EXPERIMENTS[args.experiment][0]).run(args)


def _experiment(module_name):
    return importlib.import_module(f"minivlm.recipes.experiments.{module_name}")

"""`minivlm experiment NAME`: the lecture's claims measured, one module of
minivlm.recipes.experiments per experiment, each with `add_arguments(parser)` and `run(args)`.
Every experiment writes results.json, metrics.jsonl and a figure into --out."""
import importlib

EXPERIMENTS = {   # name -> (module in minivlm.recipes.experiments, one-line help)
    "model-sizes": ("model_sizes", "the lecture's table of Transformer sizes (Transformer-Base "
                                   "... Gopher) counted from minivlm's own models' shapes"),
    "sequences": ("sequences", "three ways of processing sequences (RNN, 1D convolution, "
                               "self-attention): receptive field, sequential steps, time, memory"),
    "clip-text-encoders": ("clip_text_encoders", "CLIP with a Transformer or a bag of words "
                                                 "(CBOW) reading the captions: zero-shot and "
                                                 "word order"),
    "vit-vs-resnet": ("vit_vs_resnet", "a ViT and a ResNet of similar compute trained on 1k to "
                                       "64k images: which needs more data"),
    "clip-scaling": ("clip_scaling", "CLIP with ResNet and ViT image encoders of three widths: "
                                     "zero-shot accuracy against training compute"),
}


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

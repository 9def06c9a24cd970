"""`minivlm train-vlm`, the command: stages 1 and 2 (recipes/vlm.py) by default or with
--stage pretrain|instruct, alignment tuning of the stage-2 model (recipes/alignment.py) with
--stage reward|ppo|dpo. Every VLMSettings and AlignmentSettings field is a flag.

    minivlm train-vlm                       # stages 1 and 2, from nothing, into runs/vlm
    minivlm train-vlm --stage reward        # then the reward model, PPO and DPO
    minivlm train-vlm --stage ppo
    minivlm train-vlm --stage dpo --loss-type ipo --out runs/vlm
"""
import dataclasses
from pathlib import Path

from .. import distributed
from ..losses import DPO_LOSSES
from . import alignment, vlm
from .common import UsageError, positive, share


def add_arguments(parser):
    parser.add_argument("--clip", default=None, metavar="DIR",
                        help="a CLIP model directory (train-clip's) for the vision tower; "
                             "default: trained here, in OUT/clip")
    parser.add_argument("--lm", default=None, metavar="DIR",
                        help="a decoder directory with a tokenizer.json that has an <image> "
                             "token; default: a Llama-style decoder trained here, in OUT/lm")
    parser.add_argument("--stage", choices=vlm.STAGES + alignment.STAGES, default=None,
                        help="run this stage only (the ones it starts from must be in OUT); "
                             "default: pretrain and instruct. reward, ppo, dpo: alignment "
                             "tuning of the instruct model")
    parser.add_argument("--out", default="runs/vlm",
                        help="the run directory, continued where it holds runs "
                             "(default: %(default)s)")
    add_settings(parser, vlm.VLMSettings())
    add_settings(parser.add_argument_group("alignment tuning (--stage reward, ppo, dpo)"),
                 alignment.AlignmentSettings())


def add_settings(parser, defaults):
    """A flag for each field of the settings dataclass `defaults` (--lm-width for lm_width)."""
    for field in dataclasses.fields(defaults):
        flag = "--" + field.name.replace("_", "-")
        help = f"(default {getattr(defaults, field.name)})"
        if field.name == "loss_type":
            parser.add_argument(flag, choices=DPO_LOSSES, default=None, help=help)
            continue
        kind = (int if field.name in ("seed", "vision_feature_layer") else share
                if field.name in ("imperfect_answers", "label_smoothing")
                else positive(field.type))
        parser.add_argument(flag, type=kind, default=None, help=help)


def settings_from_args(args, kind=vlm.VLMSettings):
    """The `kind` settings dataclass from the flags given (the defaults for the others)."""
    return kind(**{f.name: getattr(args, f.name) for f in dataclasses.fields(kind)
                   if getattr(args, f.name, None) is not None})


def run(args):
    if distributed.world_size() > 1:
        raise UsageError(f"train-vlm runs in one process, not on {distributed.world_size()} "
                         f"ranks (train-clip, train-vision and train-lm run data parallel)")
    settings, out = settings_from_args(args), Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a directory")
    if args.stage in alignment.STAGES:
        align = settings_from_args(args, alignment.AlignmentSettings).check()
        return alignment.run_stage(args.stage, out, settings, align)
    out.mkdir(parents=True, exist_ok=True)
    return vlm.train_stages(settings, out, args.stage, args.clip, args.lm)

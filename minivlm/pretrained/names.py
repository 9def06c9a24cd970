"""The renaming machinery of checkpoint loading, and its one error report.

A name table maps a checkpoint's names to minivlm's, one entry per module:

    "encoder.layer.{i}.attention.output.dense": "blocks.{i}.attn.proj"

where {i} and {j} stand for layer numbers and a module's name stands for its .weight and .bias.
A name mapped to None is a known checkpoint entry that minivlm does not use. The same table,
inverted, names minivlm's tensors for saving and for error messages.

An `Architecture` says how to read and write one checkpoint family (one config.json
`model_type`); the families live in vision.py, clip.py and lm.py, the registry in __init__.py.
"""
import dataclasses
import functools
import re
from typing import Callable

from .. import io


@dataclasses.dataclass(frozen=True)
class Architecture:
    """How to read and write one config.json `model_type`.

    model_class: the minivlm Module; config_from_json(config_json, checkpoint) -> its config;
    config_to_json(model) -> the config.json dict; names: the name table (None: the checkpoint
    uses minivlm's own names); prefix: the backbone's prefix in *ForImageClassification /
    *LMHeadModel checkpoints ("vit."), removed before the table is applied and added back on
    saving where the checkpoint has a head (the `unprefixed` names, which have none);
    prepare / unprepare: checkpoint -> checkpoint steps a renaming cannot do (stacking q, k, v;
    transposing), run before the table on loading and after it on saving; build(config) -> the
    model (default model_class(config))."""
    model_type: str
    model_class: type
    config_from_json: Callable
    config_to_json: Callable
    names: dict | None = None
    prefix: str = ""
    unprefixed: tuple = ()
    prepare: Callable | None = None
    unprepare: Callable | None = None
    build: Callable | None = None

    def build_model(self, config):
        return (self.build or self.model_class)(config)

    def to_minivlm(self, checkpoint):
        """{checkpoint name: array} -> ({minivlm name: array}, names with no table entry)."""
        checkpoint = strip_prefix(checkpoint, self.prefix)
        if self.prepare is not None:
            checkpoint = self.prepare(checkpoint)
        return translate(checkpoint, self.minivlm_name)

    def to_checkpoint(self, state):
        """{minivlm name: array} -> {checkpoint name: array}, what to_minivlm reads back."""
        checkpoint = {self.checkpoint_name(name): array for name, array in state.items()}
        if self.unprepare is not None:
            checkpoint = self.unprepare(checkpoint)
        if not any(self._is_head(name) for name in checkpoint):
            return checkpoint   # a bare backbone (ViTModel, GPT2Model) is saved without prefix
        return {name if self._is_head(name) else self.prefix + name: array
                for name, array in checkpoint.items()}

    def minivlm_name(self, name):
        return name if self.names is None else rename(name, self.names)

    def checkpoint_name(self, name):
        """A minivlm name in the checkpoint's spelling (before unprepare and the prefix)."""
        return name if self.names is None else rename(name, _inverse(self.names))

    def _is_head(self, name):
        return name.split(".")[0] in self.unprefixed


@functools.lru_cache(maxsize=None)
def _pattern(template):
    """A name-table entry as a regex: {i} matches a layer number, and a trailing .weight or .bias
    may follow."""
    body = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>\\d+)", re.escape(template))
    return re.compile(body + r"(?P<leaf>\.weight|\.bias)?")


def rename(name, table):
    """`name` translated by `table` ({source: target}), None where the entry's target is None;
    KeyError when no entry matches."""
    for source, target in table.items():
        match = _pattern(source).fullmatch(name)
        if match and target is None:
            return None
        if match:
            numbers = {k: v for k, v in match.groupdict().items() if k != "leaf"}
            return target.format(**numbers) + (match["leaf"] or "")
    raise KeyError(name)


def rename_leading(name, table):
    """`name` with its leading part translated by `table` ({source: target}); None where the
    entry's target is None; KeyError when no entry matches (as `rename`)."""
    for source, target in table.items():
        if name == source or name.startswith(source + "."):
            return None if target is None else target + name[len(source):]
    raise KeyError(name)


@functools.lru_cache(maxsize=None)
def _inverse_items(items):
    return {target: source for source, target in items if target is not None}


def _inverse(table):
    return _inverse_items(tuple(table.items()))


def translate(checkpoint, rename_one):
    """{name: array} -> ({rename_one(name): array}, the names rename_one raises KeyError for);
    a name renamed to None is known and dropped."""
    state, unknown = {}, []
    for name, array in checkpoint.items():
        try:
            target = rename_one(name)
        except KeyError:
            unknown.append(name)
            continue
        if target is not None:
            state[target] = array
    return state, unknown


def strip_prefix(checkpoint, prefix):
    """The checkpoint with `prefix` removed from the names that have it."""
    if not prefix:
        return checkpoint
    stripped = {name.removeprefix(prefix): array for name, array in checkpoint.items()}
    if len(stripped) != len(checkpoint):
        raise ValueError(f"the checkpoint holds some tensors both with and without the prefix "
                         f"{prefix!r}")
    return stripped


def check_compatible(model, state, unknown, checkpoint_name, source):
    """Raise one io.CheckpointError for `source` listing every unknown, missing, unexpected and
    mis-shaped tensor, under the checkpoint's names (checkpoint_name: minivlm name -> that
    name); return quietly when `state` ({minivlm name: array}) fits `model` exactly."""
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    problems = []
    if unknown:
        problems.append(f"tensors with no entry in the name table: {', '.join(unknown)}")
    missing = [checkpoint_name(name) for name in expected if name not in state]
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    unexpected = [checkpoint_name(name) for name in state if name not in expected]
    if unexpected:
        problems.append(f"tensors the model does not have: {', '.join(unexpected)}")
    problems += [f"{checkpoint_name(name)} has shape {tuple(array.shape)} in the checkpoint but "
                 f"{expected[name]} in the model"
                 for name, array in state.items()
                 if name in expected and tuple(array.shape) != expected[name]]
    if problems:
        raise io.CheckpointError(source, f"does not fit {type(model).__name__}:\n  "
                                         + "\n  ".join(problems))

"""Hugging Face checkpoints into minivlm models, with NumPy only (no torch, never pickle).

    model = load_pretrained("path/to/swin-tiny-patch4-window7-224")   # a local HF directory

A checkpoint directory holds config.json and model.safetensors (or shards listed in
model.safetensors.index.json), in F32, F16 or BF16. The config's `model_type` picks an entry of
`ARCHITECTURES`; each entry has ONE name table, Hugging Face name -> minivlm name, where {i} and
{j} stand for layer numbers and a module's name stands for its .weight and .bias. A name mapped
to None is a known checkpoint entry that minivlm does not use.

Another architecture registers itself by adding an `Architecture` to `ARCHITECTURES`.
"""
import collections
import dataclasses
import functools
import json
import re
from pathlib import Path

from . import io
from .models import clip_pretrained
from .models.clip import CLIP
from .models.swin import SwinConfig, SwinTransformer
from .models.vit import ViT, ViTConfig

Architecture = collections.namedtuple(
    "Architecture", ["config_from_hf", "build", "names", "prefix", "prepare"],
    defaults=("", None))
Architecture.__doc__ = """How to load one Hugging Face model_type.
config_from_hf(hf_config: dict, checkpoint: dict) -> config; build(config) -> Module;
names: the name table; prefix: the backbone's prefix in *ForImageClassification checkpoints
("vit."), removed before the table is applied; prepare: None, or checkpoint -> checkpoint run
after the prefix is removed and before the table (e.g. to stack q, k, v into one tensor)."""

VIT_NAMES = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection": "patch_embed",
    "encoder.layer.{i}.layernorm_before": "blocks.{i}.norm1",
    "encoder.layer.{i}.attention.attention.query": "blocks.{i}.attn.q",
    "encoder.layer.{i}.attention.attention.key": "blocks.{i}.attn.k",
    "encoder.layer.{i}.attention.attention.value": "blocks.{i}.attn.v",
    "encoder.layer.{i}.attention.output.dense": "blocks.{i}.attn.proj",
    "encoder.layer.{i}.layernorm_after": "blocks.{i}.norm2",
    "encoder.layer.{i}.intermediate.dense": "blocks.{i}.mlp.fc1",
    "encoder.layer.{i}.output.dense": "blocks.{i}.mlp.fc2",
    "layernorm": "norm",
    "classifier": "head",
    "pooler.dense": None,  # ViTModel's tanh pooler; ViT's head reads the class token itself
}

SWIN_NAMES = {
    "embeddings.patch_embeddings.projection": "patch_embed",
    "embeddings.norm": "patch_norm",
    "encoder.layers.{i}.blocks.{j}.layernorm_before": "stages.{i}.blocks.{j}.norm1",
    "encoder.layers.{i}.blocks.{j}.attention.self.query": "stages.{i}.blocks.{j}.attn.q",
    "encoder.layers.{i}.blocks.{j}.attention.self.key": "stages.{i}.blocks.{j}.attn.k",
    "encoder.layers.{i}.blocks.{j}.attention.self.value": "stages.{i}.blocks.{j}.attn.v",
    "encoder.layers.{i}.blocks.{j}.attention.self.relative_position_bias_table":
        "stages.{i}.blocks.{j}.attn.relative_position_bias_table",
    "encoder.layers.{i}.blocks.{j}.attention.self.relative_position_index": None,  # from M alone
    "encoder.layers.{i}.blocks.{j}.attention.output.dense": "stages.{i}.blocks.{j}.attn.proj",
    "encoder.layers.{i}.blocks.{j}.layernorm_after": "stages.{i}.blocks.{j}.norm2",
    "encoder.layers.{i}.blocks.{j}.intermediate.dense": "stages.{i}.blocks.{j}.mlp.fc1",
    "encoder.layers.{i}.blocks.{j}.output.dense": "stages.{i}.blocks.{j}.mlp.fc2",
    "encoder.layers.{i}.downsample.norm": "stages.{i}.downsample.norm",
    "encoder.layers.{i}.downsample.reduction": "stages.{i}.downsample.reduction",
    "layernorm": "norm",
    "classifier": "head",
}


def _config_from_hf(config_class, hf_config, **values):
    """config_class filled from the HF config's entries of the same names (missing: defaults)."""
    fields = {f.name for f in dataclasses.fields(config_class)}
    return config_class(**{k: v for k, v in hf_config.items() if k in fields}, **values)


def _num_classes(checkpoint):
    """The classifier's output size, 0 for a checkpoint without one (ViTModel, SwinModel)."""
    weight = checkpoint.get("classifier.weight")
    return 0 if weight is None else weight.shape[0]


def vit_config(hf_config, checkpoint):
    return _config_from_hf(ViTConfig, hf_config, num_classes=_num_classes(checkpoint))


def swin_config(hf_config, checkpoint):
    if hf_config.get("use_absolute_embeddings"):
        raise ValueError("Swin checkpoints with use_absolute_embeddings=true are not supported")
    return _config_from_hf(SwinConfig, hf_config, num_classes=_num_classes(checkpoint))


ARCHITECTURES = {
    "vit": Architecture(vit_config, ViT, VIT_NAMES, prefix="vit."),
    "swin": Architecture(swin_config, SwinTransformer, SWIN_NAMES, prefix="swin."),
    "clip": Architecture(clip_pretrained.config_from_hf, CLIP, clip_pretrained.HF_NAMES,
                         prepare=clip_pretrained.prepare_hf),
}


# --- names -------------------------------------------------------------------------------------

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


def _inverse(table):
    return {target: source for source, target in table.items() if target is not None}


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


def to_minivlm_state_dict(checkpoint, architecture):
    """{Hugging Face name: array} -> ({minivlm name: array}, names with no entry in the table)."""
    return translate(checkpoint, lambda name: rename(name, architecture.names))


def to_hf_state_dict(model, model_type):
    """A model's parameters under the Hugging Face names of `model_type` (without the
    *ForImageClassification prefix): {name: array}. load_pretrained reads them back."""
    inverse = _inverse(ARCHITECTURES[model_type].names)
    return {rename(name, inverse): tensor.numpy() for name, tensor in model.state_dict().items()}


def _strip_prefix(checkpoint, prefix):
    stripped = {name.removeprefix(prefix): array for name, array in checkpoint.items()}
    if len(stripped) != len(checkpoint):
        raise ValueError(f"the checkpoint holds some tensors both with and without the prefix "
                         f"{prefix!r}")
    return stripped


def check_compatible(model, state, unknown, architecture):
    """One ValueError listing every unknown, missing, unexpected and mis-shaped tensor (with
    Hugging Face names), or nothing when `state` fits `model` exactly."""
    expected = {name: tensor.shape for name, tensor in model.state_dict().items()}
    inverse = _inverse(architecture.names)
    problems = []
    if unknown:
        problems.append(f"tensors with no entry in the name table: {', '.join(unknown)}")
    missing = [rename(name, inverse) for name in expected if name not in state]
    if missing:
        problems.append(f"missing tensors: {', '.join(missing)}")
    unexpected = [rename(name, inverse) for name in state if name not in expected]
    if unexpected:
        problems.append(f"tensors the model does not have: {', '.join(unexpected)}")
    problems += [f"{rename(name, inverse)} has shape {tuple(array.shape)} in the checkpoint but "
                 f"{tuple(expected[name])} in the model"
                 for name, array in state.items()
                 if name in expected and tuple(array.shape) != tuple(expected[name])]
    if problems:
        raise ValueError(f"the checkpoint does not fit {type(model).__name__}:\n  "
                         + "\n  ".join(problems))


# --- files -------------------------------------------------------------------------------------

def read_config(directory):
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} holds no config.json (a Hugging Face checkpoint "
                                f"directory needs config.json and model.safetensors)")
    return json.loads(path.read_text())


def read_checkpoint(directory):
    """{name: np.ndarray} from model.safetensors or from the shards its index lists."""
    directory = Path(directory)
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        return io.load_safetensors(single)
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {name: array for shard in shards
                for name, array in io.load_safetensors(directory / shard).items()}
    found = ", ".join(sorted(p.name for p in directory.iterdir())) or "nothing"
    raise FileNotFoundError(f"{directory} holds no model.safetensors (found: {found}); "
                            f"minivlm reads safetensors only, never pickled .bin files")


def load_pretrained(directory, dtype="float32"):
    """The minivlm model of a local Hugging Face checkpoint directory, in eval mode, with its
    parameters in `dtype`. The model is chosen by config.json's model_type (ARCHITECTURES)."""
    hf_config = read_config(directory)
    model_type = hf_config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"{directory}: model_type {model_type!r} is not supported; supported: "
                         f"{', '.join(sorted(ARCHITECTURES))}")
    architecture = ARCHITECTURES[model_type]
    checkpoint = _strip_prefix(read_checkpoint(directory), architecture.prefix)
    if architecture.prepare is not None:
        checkpoint = architecture.prepare(checkpoint)
    model = architecture.build(architecture.config_from_hf(hf_config, checkpoint)).to(dtype)
    state, unknown = to_minivlm_state_dict(checkpoint, architecture)
    check_compatible(model, state, unknown, architecture)
    model.load_state_dict(state)
    return model.eval()

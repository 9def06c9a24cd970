"""Model directories: config.json + model.safetensors, read and written with NumPy only (no
torch, never pickle).

    model = load_pretrained("path/to/swin-tiny-patch4-window7-224")   # a local directory
    save_pretrained(model, "runs/my-model")                           # the same layout

A directory holds config.json and model.safetensors (or shards listed in
model.safetensors.index.json), in F32, F16 or BF16. config.json's `model_type` picks an
`Architecture` (names.py) from `ARCHITECTURES`: Hugging Face's layout where transformers has the
model (clip, vit, swin, gpt2: transformers' from_pretrained reads what save_pretrained writes),
minivlm's own names otherwise (minivlm_resnet, minivlm_masked_lm). One module per family
(vision.py, clip.py, lm.py) holds its name table and config conversions; another family
registers itself by adding its Architectures to FAMILIES.
"""
import json
from pathlib import Path

from .. import io
from . import clip, llama, lm, vision
from .names import check_compatible

FAMILIES = (vision, clip, lm, llama)
ARCHITECTURES = {a.model_type: a for family in FAMILIES for a in family.ARCHITECTURES}


def read_config(directory):
    """config.json of a model directory, as a dict."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} holds no config.json (a model directory needs "
                                f"config.json and model.safetensors)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise io.CheckpointError(path, f"is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise io.CheckpointError(path, f"must hold a JSON object, not {type(config).__name__}")
    return config


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


def architecture_of(config_json, where):
    model_type = config_json.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"{where}: model_type {model_type!r} is not supported; supported: "
                         f"{', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[model_type]


def load_pretrained(directory, dtype="float32"):
    """The minivlm model of a model directory, in eval mode, with its parameters in `dtype`.
    A checkpoint that does not fit raises one io.CheckpointError listing every unknown, missing,
    unexpected and mis-shaped tensor."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory (a model directory holds "
                                f"config.json and model.safetensors)")
    config_json = read_config(directory)
    architecture = architecture_of(config_json, directory)
    checkpoint = read_checkpoint(directory)
    state, unknown = architecture.to_minivlm(checkpoint)
    model = architecture.build_model(architecture.config_from_json(config_json, checkpoint))
    model.to(dtype)
    check_compatible(model, state, unknown, architecture.checkpoint_name, directory)
    model.load_state_dict(state)
    return model.eval()


def load_clip(path, dtype="float32", config=None):
    """CLIP from a Hugging Face CLIP directory or an OpenAI-named .safetensors file, in eval
    mode, its parameters in `dtype` (config: see pretrained.clip.load_openai)."""
    path = Path(path)
    if path.is_file():
        return clip.load_openai(path, dtype, config)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such CLIP checkpoint (a Hugging Face directory or "
                                f"an OpenAI-named .safetensors file)")
    model_type = read_config(path).get("model_type")
    if model_type != "clip":
        raise ValueError(f"{path}: expected a Hugging Face config with model_type 'clip', got "
                         f"{model_type!r}")
    return load_pretrained(path, dtype)


def save_pretrained(model, directory, extra_config=None, metadata=None):
    """Write `model` as a model directory that load_pretrained reads back: config.json (with the
    entries of `extra_config` added, e.g. id2label) and model.safetensors (with `metadata`, str
    to str), each to a temporary name and then renamed. For clip, vit, swin and gpt2 it is
    Hugging Face's layout."""
    architecture = architecture_for(model)
    config_json = {**architecture.config_to_json(model), **(extra_config or {})}
    checkpoint = architecture.to_checkpoint({name: tensor.numpy() for name, tensor
                                             in model.state_dict().items()})
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    io.save_safetensors(checkpoint, directory / "model.safetensors", 
                         metadata={"format": "pt", **(metadata or {})})
    with io.atomic_write(directory / "config.json") as f:
        f.write(json.dumps(config_json, indent=2).encode("utf-8"))
    return directory


def architecture_for(model):
    """The Architecture that saves `model` (by its class)."""
    for architecture in ARCHITECTURES.values():
        if type(model) is architecture.model_class:
            return architecture
    known = sorted({a.model_class.__name__ for a in ARCHITECTURES.values()})
    raise TypeError(f"save_pretrained: no model directory layout for {type(model).__name__}; "
                    f"known: {', '.join(known)}")


def to_hf_state_dict(model, model_type):
    """A model's parameters under the checkpoint names of `model_type` (without the
    *ForImageClassification prefix): {name: array}. load_pretrained reads them back."""
    architecture = ARCHITECTURES[model_type]
    return {architecture.checkpoint_name(name): tensor.numpy()
            for name, tensor in model.state_dict().items()}

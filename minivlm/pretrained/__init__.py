"""Model directories: config.json + model.safetensors, read and written with NumPy only (no
torch, never pickle).

    model = load_pretrained("path/to/swin-tiny-patch4-window7-224")   # a local directory
    save_pretrained(model, "runs/my-model")                           # the same layout

A directory holds config.json and model.safetensors (or shards listed in
model.safetensors.index.json), in F32, F16 or BF16. config.json's `model_type` picks an
`Architecture` (names.py) from `ARCHITECTURES`: Hugging Face's layout where transformers has the
model (clip, vit, swin, gpt2, llama, llava: transformers' from_pretrained reads what
save_pretrained writes), minivlm's own names otherwise (minivlm_resnet, minivlm_masked_lm,
minivlm_llava). One module per family (vision.py, clip.py, lm.py, llama.py, llava.py) holds its
name table and config conversions; another family registers itself by adding its Architectures
to FAMILIES.

Loading draws no random weights (the model is built under nn.init.no_init: names.empty_model)
and reads each tensor once, straight into the parameter that holds it (io.open_safetensors), so
that memory peaks at the model's size; with mmap=True the tensors stored in the model's dtype
stay read-only maps of the file, read as they are used.
"""
import json
from pathlib import Path

from .. import io
from . import clip, llama, llava, lm, vision
from .names import check_compatible, empty_model, load_state

FAMILIES = (vision, clip, lm, llama, llava)
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
    """{name: io.StoredTensor} (nothing read yet) of model.safetensors, or of the shards its
    index lists, shard after shard."""
    directory = Path(directory)
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        return io.open_safetensors(single)
    if index.is_file():
        checkpoint = {}
        for shard in _shards(index):
            tensors = io.open_safetensors(directory / shard)
            repeated = sorted(tensors.keys() & checkpoint.keys())
            if repeated:
                raise io.CheckpointError(directory / shard, f"holds tensors another shard holds "
                                                            f"too: {', '.join(repeated)}")
            checkpoint.update(tensors)
        return checkpoint
    found = ", ".join(sorted(p.name for p in directory.iterdir())) or "nothing"
    raise FileNotFoundError(f"{directory} holds no model.safetensors (found: {found}); "
                            f"minivlm reads safetensors only, never pickled .bin files")


def _shards(index):
    """The shard file names of a model.safetensors.index.json, each once, in order."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return sorted(set(weight_map.values()))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError,
            AttributeError) as error:
        raise io.CheckpointError(index, f"is not a shard index with a weight_map of tensor "
                                        f"names to files ({type(error).__name__}: {error})"
                                 ) from None


def write_preprocessor_config(directory, image_size, normalize):
    """preprocessor_config.json as Hugging Face's CLIPImageProcessor reads it: resize the
    shortest side to image_size, centre crop, and normalise with CLIP's mean and std or (for
    models trained on pixels in [0, 1], as minivlm's built-in images are) not."""
    from ..preprocess import MEAN, STD           # (preprocess imports PIL: not at import time)
    config = {"image_processor_type": "CLIPImageProcessor", "do_resize": True,
              "size": {"shortest_edge": image_size}, "do_center_crop": True,
              "crop_size": {"height": image_size, "width": image_size}, "do_rescale": True,
              "rescale_factor": 1 / 255, "do_normalize": normalize, "resample": 3,
              "image_mean": list(MEAN), "image_std": list(STD)}
    with io.atomic_write(Path(directory) / "preprocessor_config.json") as f:
        f.write(json.dumps(config, indent=2).encode("utf-8"))


def normalizes_images(directory):
    """Whether the model of `directory` reads CLIP-normalised pixels: its
    preprocessor_config.json's do_normalize (true without one, as Hugging Face's CLIPs)."""
    path = Path(directory) / "preprocessor_config.json"
    return json.loads(path.read_text()).get("do_normalize", True) if path.is_file() else True


def architecture_of(config_json, where):
    model_type = config_json.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"{where}: model_type {model_type!r} is not supported; supported: "
                         f"{', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[model_type]


def load_pretrained(directory, dtype="float32", mmap=False):
    """The minivlm model of a model directory, in eval mode, with its parameters in `dtype`.
    A checkpoint that does not fit raises one io.CheckpointError listing every unknown, missing,
    unexpected and mis-shaped tensor. mmap=True keeps the tensors the file holds in `dtype` as
    read-only maps of it (for inference: nothing is read until used; see names.load_state)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory (a model directory holds "
                                f"config.json and model.safetensors)")
    config_json = read_config(directory)
    architecture = architecture_of(config_json, directory)
    checkpoint = read_checkpoint(directory)
    state, unknown = architecture.to_minivlm(checkpoint)
    config = architecture.config_from_json(config_json, checkpoint)
    model = empty_model(lambda: architecture.build_model(config), dtype)
    check_compatible(model, state, unknown, architecture.checkpoint_name, directory)
    load_state(model, state, mmap)
    return model.eval()


def load_clip(path, dtype="float32", config=None, mmap=False):
    """CLIP from a Hugging Face CLIP directory or an OpenAI-named .safetensors file, in eval
    mode, its parameters in `dtype` (config: see pretrained.clip.load_openai; mmap: see
    load_pretrained)."""
    path = Path(path)
    if path.is_file():
        return clip.load_openai(path, dtype, config, mmap)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such CLIP checkpoint (a Hugging Face directory or "
                                f"an OpenAI-named .safetensors file)")
    model_type = read_config(path).get("model_type")
    if model_type != "clip":
        raise ValueError(f"{path}: expected a Hugging Face config with model_type 'clip', got "
                         f"{model_type!r}")
    return load_pretrained(path, dtype, mmap)


def save_pretrained(model, directory, extra_config=None, metadata=None):
    """Write `model` as a model directory that load_pretrained reads back: config.json (with the
    entries of `extra_config` added, e.g. id2label) and model.safetensors (with `metadata`, str
    to str), each to a temporary name and then renamed. For clip, vit, swin, gpt2, llama and
    llava it is Hugging Face's layout."""
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
    """The Architecture that saves `model` (by its class, and its `saves` test)."""
    for architecture in ARCHITECTURES.values():
        if architecture.can_save(model):
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

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
from pathlib import Path, PurePosixPath, PureWindowsPath

from .. import io
from . import clip, llama, llava, lm, vision
from .names import check_compatible, empty_model, load_state

FAMILIES = (vision, clip, lm, llama, llava)
ARCHITECTURES = {a.model_type: a for family in FAMILIES for a in family.ARCHITECTURES}


def read_config(directory):
    """config.json of a model directory, as a dict."""
    path = Path(directory) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{directory} holds no config.json (a model directory needs "
                                f"config.json and model.safetensors)")
    config = io.read_json(path)
    if not isinstance(config, dict):
        raise io.CheckpointError(path, f"must hold a JSON object, not {type(config).__name__}")
    return config


def read_checkpoint(directory):
    """{name: io.StoredTensor} (nothing read yet) of model.safetensors, or of the shards its
    index lists (read_shards)."""
    directory = Path(directory)
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.exists():
        return io.open_safetensors(single)
    if index.exists():
        return read_shards(directory, index)
    found = ", ".join(sorted(p.name for p in directory.iterdir())) or "nothing"
    raise FileNotFoundError(f"{directory} holds no model.safetensors (found: {found}); "
                            f"minivlm reads safetensors only, never pickled .bin files")


def read_shards(directory, index):
    """{name: io.StoredTensor} of the shards `index` lists: each tensor in one shard, the one the
    index places it in, and every tensor the index lists held by a shard."""
    weight_map = read_weight_map(index)
    shards = {}
    for shard in sorted(set(weight_map.values())):
        if not (directory / shard).exists():
            raise io.CheckpointError(index, f"lists the shard {shard!r:.100}, which "
                                            f"{directory} does not hold")
        shards[shard] = io.open_safetensors(directory / shard)
    checkpoint = {}
    for shard, tensors in shards.items():
        repeated = sorted(tensors.keys() & checkpoint.keys())
        if repeated:
            raise io.CheckpointError(directory / shard, f"holds tensors another shard holds "
                                                        f"too: {', '.join(repeated)}")
        checkpoint.update(tensors)
    for shard, tensors in shards.items():
        misplaced = [name for name in tensors if weight_map.get(name) != shard]
        if misplaced:
            raise io.CheckpointError(directory / shard, f"holds {misplaced[0]!r:.100}, which "
                                     f"{index.name} places in {weight_map.get(misplaced[0])}")
    missing = sorted(weight_map.keys() - checkpoint.keys())
    if missing:
        raise io.CheckpointError(index, f"lists tensors that no shard holds: {', '.join(missing)}")
    return checkpoint


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
    config = io.read_json(path) if path.is_file() else {}
    if not isinstance(config, dict) or not isinstance(config.get("do_normalize", True), bool):
        raise io.CheckpointError(path, "is not a preprocessor config whose do_normalize is true "
                                       "or false")
    return config.get("do_normalize", True)


def read_weight_map(index):
    """The weight_map {tensor name: shard file} of a model.safetensors.index.json, each shard a
    relative path that stays in the model directory (no absolute path, no ..: a hostile index
    would read other files). (A shard may be a symbolic link, as the Hugging Face cache makes
    them.)"""
    weight_map = io.read_json(index)
    weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str)
                                                   for v in weight_map.values()):
        raise io.CheckpointError(index, "is not a shard index with a weight_map of tensor names "
                                        "to files")
    for shard in set(weight_map.values()):
        parts = PurePosixPath(shard).parts
        if not parts or PurePosixPath(shard).is_absolute() or PureWindowsPath(shard).anchor \
                or ".." in parts or "\\" in shard:
            raise io.CheckpointError(index, f"shard {shard!r:.100} is not a file name inside "
                                            f"the model directory")
    return weight_map


def architecture_of(config_json, path):
    """The Architecture of config.json's model_type (the file at `path`)."""
    model_type = config_json.get("model_type")
    if not isinstance(model_type, str) or model_type not in ARCHITECTURES:
        raise io.CheckpointError(path, f"model_type {model_type!r:.100} is not supported; "
                                       f"supported: {', '.join(sorted(ARCHITECTURES))}")
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
    architecture = architecture_of(config_json, directory / "config.json")
    checkpoint = read_checkpoint(directory)
    state, unknown = architecture.to_minivlm(checkpoint)
    model = build_from_config(architecture, config_json, checkpoint, directory / "config.json",
                              dtype)
    check_compatible(model, state, unknown, architecture.checkpoint_name, directory)
    load_state(model, state, mmap)
    return model.eval()


def build_from_config(architecture, config_json, checkpoint, path, dtype):
    """The model config.json (at `path`) describes, in `dtype`, not initialised (names.empty_model:
    the checkpoint will fill it, and NumPy has not touched its memory until then, so a config
    whose model does not fit the checkpoint costs no memory). A bad value raises one
    CheckpointError naming the field."""
    try:
        config = architecture.config_from_json(config_json, checkpoint)
        return empty_model(lambda: architecture.build_model(config), dtype)
    except ValueError as error:   # fields.ConfigError, or the model's own checks
        raise io.CheckpointError(path, str(error)) from None
    except MemoryError:
        raise io.CheckpointError(path, "describes a model larger than the memory") from None


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

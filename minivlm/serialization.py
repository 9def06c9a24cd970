"""minivlm.save and minivlm.load, with torch's names, for state dicts: files of named tensors in
safetensors (or .npz, by the suffix), never a pickle. torch.save pickles whole objects; minivlm
saves {name: tensor} dicts only (model.state_dict()), and load refuses pickles by their bytes."""
import os
from pathlib import Path

from . import backend, io
from .autograd import Tensor, tensor

_SAFETENSORS_START, _ZIP_START = b"{", b"PK\x03\x04"


def save(obj, f):
    """Write a state dict {name: Tensor or array} to `f` (safetensors; .npz by the suffix)."""
    if not isinstance(obj, dict) or not all(isinstance(name, str) and
                                            (isinstance(value, Tensor) or backend.is_array(value))
                                            for name, value in obj.items()):
        raise TypeError(f"minivlm.save writes state dicts ({{name: tensor}}) to safetensors; it "
                        f"does not pickle objects as torch.save does (got {type(obj).__name__}): "
                        f"save model.state_dict()")
    path = Path(os.fspath(f))
    (io.save_npz if path.suffix == ".npz" else io.save_safetensors)(obj, path)


def load(f, map_location=None, weights_only=True):
    """A state dict {name: Tensor} from a safetensors or .npz file (on `map_location`'s backend,
    'cpu'/'cuda'); a pickle (torch's .pt/.pth/.bin) is refused, never unpickled."""
    path = Path(os.fspath(f))
    with open(path, "rb") as file:
        start = file.read(9)
    if start[8:9] == _SAFETENSORS_START:
        arrays = io.load_safetensors(path)
    elif start[:4] == _ZIP_START and path.suffix == ".npz":
        arrays = io.load_npz(path)
    else:
        raise io.CheckpointError(path, "is not a safetensors or .npz file; minivlm never loads "
                                       "pickles (torch's .pt, .pth, .bin): convert it once where "
                                       "torch is installed, with safetensors.torch.save_file")
    device = None if map_location is None else backend.canonical_name(str(map_location))
    return {name: tensor(array, device=device) for name, array in arrays.items()}

"""minivlm: a tiny autograd engine over NumPy or CuPy, and every layer from attention to CLIP.

Its top-level names are torch's, so that `import minivlm as torch` runs most PyTorch code:
creating tensors (tensor, zeros, arange, randn, ...), the ops (cat, stack, matmul, where,
einsum, ...), dtypes (float32, int64, bool, ...), no_grad, manual_seed, save/load of state
dicts, and the cuda namespace."""
from . import backend, cuda, functional
from .autograd import (Function, Generator, Parameter, Tensor, arange, empty, empty_like,
                       enable_grad, from_numpy, full, full_like, inference_mode, is_grad_enabled,
                       is_tensor, manual_seed, no_grad, numel, ones, ones_like, rand, rand_like,
                       randint, randn, randn_like, randperm, set_grad_enabled, tensor, zeros,
                       zeros_like)
from .backend import finfo, iinfo
from .functional import (abs, amax, amin, argmax, argmin, argsort, cat, chunk, clamp, clone, cos,
                         einsum, exp, flatten, gather, log, logsumexp, matmul, max, mean,
                         meshgrid, min, multinomial, norm, permute, pow, relu, reshape, sigmoid,
                         sin, softmax, sort, split, sqrt, squeeze, stack, sum, tanh, topk,
                         transpose, tril, triu, unbind, unsqueeze, var, where)
from .serialization import load, save

# dtypes by torch's names (NumPy's dtype names, which NumPy and CuPy arrays compare equal to)
float16 = half = "float16"
bfloat16 = "bfloat16"           # a name only: NumPy and CuPy hold no bfloat16 (backend.dtype)
float32 = float = "float32"
float64 = double = "float64"
int8, uint8, int16 = "int8", "uint8", "int16"
int32 = int = "int32"
int64 = long = "int64"
bool = "bool"


def get_default_dtype():
    return float32


def device(type, index=None):
    """A device by torch's names ('cpu', 'cuda', 'cuda:0'), as minivlm's backend name."""
    return backend.canonical_name(str(type).split(":")[0])


from .pretrained import load_pretrained, save_pretrained  # noqa: E402  (after the torch names)

try:   # einops on minivlm tensors, and `from einops.layers.minivlm import Rearrange`
    import einops as _einops  # noqa: F401
except ImportError:
    pass
else:
    from . import einops_backend  # noqa: F401

__version__ = "0.1.0"

"""minivlm: a tiny autograd engine over NumPy or CuPy, and every layer from attention to CLIP."""
from . import backend, functional
from .autograd import (Function, Parameter, Tensor, arange, empty, full, is_grad_enabled,
                       manual_seed, no_grad, ones, ones_like, rand, randint, randn, tensor, zeros,
                       zeros_like)

from .pretrained import load_pretrained, save_pretrained

__version__ = "0.1.0"

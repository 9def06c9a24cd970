"""Layers with learnable parameters, built on minivlm.functional (torch.nn names).

`minivlm.nn.functional` is minivlm.functional itself (as torch.nn.functional), and
`minivlm.nn.utils` holds clip_grad_norm_, so `import torch.nn.functional as F` ports as
`import minivlm.nn.functional as F`.
"""
import sys

from .. import functional
from ..autograd import Parameter
from . import init, utils
from .module import (Identity, Module, ModuleDict, ModuleList, ParameterDict, ParameterList,
                     RemovableHandle, Sequential, evaluating)
from .layers import (GELU, MLP, Dropout, Embedding, Flatten, LayerNorm, Linear, LogSoftmax,
                     QuickGELU, ReLU, RMSNorm, Sigmoid, SiLU, Softmax, Tanh)
from .attention import (Attention, MaskedSelfAttention, MultiheadAttention, SelfAttention,
                        attention_memory, causal_mask)
from .cache import KVCache
from .transformer import (CoAttentionBlock, CrossAttentionBlock, Transformer, TransformerBlock,
                          TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
                          TransformerEncoderLayer)
from .positional import (LearnedPositionalEmbedding, RotaryEmbedding, SinusoidalPositionalEncoding,
                         sinusoidal_table)
from .conv import AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv1d, Conv2d, MaxPool2d

sys.modules[__name__ + ".functional"] = functional   # `import minivlm.nn.functional as F`

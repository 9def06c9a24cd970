"""Layers with learnable parameters, built on minivlm.functional (torch.nn names)."""
from ..autograd import Parameter
from . import init
from .module import Identity, Module, ModuleList, Sequential, evaluating
from .layers import (GELU, MLP, Dropout, Embedding, LayerNorm, Linear, QuickGELU, ReLU, RMSNorm,
                     SiLU)
from .attention import (Attention, MaskedSelfAttention, MultiheadAttention, SelfAttention,
                        attention_memory, causal_mask)
from .cache import KVCache
from .transformer import (CoAttentionBlock, CrossAttentionBlock, Transformer, TransformerBlock,
                          TransformerDecoder, TransformerDecoderLayer, TransformerEncoder,
                          TransformerEncoderLayer)
from .positional import (LearnedPositionalEmbedding, RotaryEmbedding, SinusoidalPositionalEncoding,
                         sinusoidal_table)
from .conv import AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv2d, MaxPool2d

"""Tokenizers: byte-level BPE you train yourself, and OpenAI CLIP's tokenizer."""
from .bpe import BPETokenizer
from .clip import CLIPTokenizer

__all__ = ["BPETokenizer", "CLIPTokenizer"]

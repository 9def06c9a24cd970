"""The models, built from minivlm.nn: from minivlm.models import ViT, SwinTransformer, ..."""
from .swin import SwinConfig, SwinTransformer, swin_t
from .vit import ViT, ViTConfig, vit_b16, vit_b32, vit_l16

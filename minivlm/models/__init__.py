"""The models, built from minivlm.nn: from minivlm.models import ViT, SwinTransformer, CLIP, ..."""
from .clip import CLIP, CLIPConfig, CLIPVisionConfig, clip_config
from .llama import LlamaConfig, LlamaForCausalLM
from .lm import CausalLM, LMConfig, MaskedLM
from .resnet import ModifiedResNet, ResNet, resnet18, resnet50, small_resnet
from .swin import SwinConfig, SwinTransformer, swin_t
from .text import CLIPTextConfig, TextTransformer
from .vit import ViT, ViTConfig, vit_b16, vit_b32, vit_l16

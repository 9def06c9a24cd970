"""Image classifiers: Hugging Face `vit`, `swin` and `swinv2` directories (ViTModel,
ViTForImageClassification, SwinModel, SwinForImageClassification, Swinv2Model,
Swinv2ForImageClassification), and minivlm's own ResNet.

The Hugging Face configs use the names of minivlm's ViTConfig and SwinConfig, so a config is
read and written field by field; the classifier's size comes from its weight (0 without one).
"""
import dataclasses

from ..models.resnet import ResNet
from ..models.swin import SwinConfig, SwinTransformer, SwinTransformerV2, SwinV2Config
from ..models.vit import ViT, ViTConfig
from .fields import MISSING, ConfigError, Fields
from .names import Architecture

VIT_NAMES = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection": "patch_embed",
    "encoder.layer.{i}.layernorm_before": "blocks.{i}.norm1",
    "encoder.layer.{i}.attention.attention.query": "blocks.{i}.attn.q",
    "encoder.layer.{i}.attention.attention.key": "blocks.{i}.attn.k",
    "encoder.layer.{i}.attention.attention.value": "blocks.{i}.attn.v",
    "encoder.layer.{i}.attention.output.dense": "blocks.{i}.attn.proj",
    "encoder.layer.{i}.layernorm_after": "blocks.{i}.norm2",
    "encoder.layer.{i}.intermediate.dense": "blocks.{i}.mlp.fc1",
    "encoder.layer.{i}.output.dense": "blocks.{i}.mlp.fc2",
    "layernorm": "norm",
    "classifier": "head",
    "pooler.dense": None,  # ViTModel's tanh pooler; ViT's head reads the class token itself
}

SWIN_NAMES = {
    "embeddings.patch_embeddings.projection": "patch_embed",
    "embeddings.norm": "patch_norm",
    "encoder.layers.{i}.blocks.{j}.layernorm_before": "stages.{i}.blocks.{j}.norm1",
    "encoder.layers.{i}.blocks.{j}.attention.self.query": "stages.{i}.blocks.{j}.attn.q",
    "encoder.layers.{i}.blocks.{j}.attention.self.key": "stages.{i}.blocks.{j}.attn.k",
    "encoder.layers.{i}.blocks.{j}.attention.self.value": "stages.{i}.blocks.{j}.attn.v",
    "encoder.layers.{i}.blocks.{j}.attention.self.relative_position_bias_table":
        "stages.{i}.blocks.{j}.attn.relative_position_bias_table",
    "encoder.layers.{i}.blocks.{j}.attention.self.relative_position_index": None,  # from M alone
    "encoder.layers.{i}.blocks.{j}.attention.output.dense": "stages.{i}.blocks.{j}.attn.proj",
    "encoder.layers.{i}.blocks.{j}.layernorm_after": "stages.{i}.blocks.{j}.norm2",
    "encoder.layers.{i}.blocks.{j}.intermediate.dense": "stages.{i}.blocks.{j}.mlp.fc1",
    "encoder.layers.{i}.blocks.{j}.output.dense": "stages.{i}.blocks.{j}.mlp.fc2",
    "encoder.layers.{i}.downsample.norm": "stages.{i}.downsample.norm",
    "encoder.layers.{i}.downsample.reduction": "stages.{i}.downsample.reduction",
    "layernorm": "norm",
    "classifier": "head",
}

# Swin-V2: V1's names, the bias table replaced by the temperature and the position-bias MLP
_V2_ATTENTION = "encoder.layers.{i}.blocks.{j}.attention.self."
SWINV2_NAMES = {
    **{name: target for name, target in SWIN_NAMES.items() if "relative_position" not in name},
    _V2_ATTENTION + "logit_scale": "stages.{i}.blocks.{j}.attn.logit_scale",
    _V2_ATTENTION + "continuous_position_bias_mlp.0": "stages.{i}.blocks.{j}.attn.cpb_mlp.0",
    _V2_ATTENTION + "continuous_position_bias_mlp.2": "stages.{i}.blocks.{j}.attn.cpb_mlp.2",
    _V2_ATTENTION + "relative_coords_table": None,      # buffers, built from the window alone
    _V2_ATTENTION + "relative_position_index": None,
}


def _config_from_json(config_class, config_json, checkpoint, layers):
    """config_class filled from the config's entries of the same names (missing: defaults), each
    checked (fields.py; `layers`: the layer counts), the classifier's size from its weight."""
    values = Fields(config_json, checkpoint).of(config_class, layers=layers)
    weight = checkpoint.get("classifier.weight")
    values["num_classes"] = 0 if weight is None or not weight.ndim else weight.shape[0]
    return config_class(**values)


def _classifier_json(model, model_type, name):
    """config.json of a ViT or Swin: its config's fields, and the class that holds a head."""
    fields = {k: v for k, v in dataclasses.asdict(model.config).items() if k != "num_classes"}
    head = "ForImageClassification" if model.config.num_classes else "Model"
    labels = {str(i): f"LABEL_{i}" for i in range(model.config.num_classes)}
    return {"model_type": model_type, "architectures": [name + head], **fields,
            "id2label": labels, "label2id": {v: int(k) for k, v in labels.items()}}


def _swin_config(config_class):
    """config_json, checkpoint -> a config_class (SwinConfig or SwinV2Config), each field
    checked."""
    def config_from_json(config_json, checkpoint):
        if Fields(config_json).boolean("use_absolute_embeddings", False):
            raise ConfigError("Swin checkpoints with use_absolute_embeddings=true are not "
                              "supported")
        return _config_from_json(config_class, config_json, checkpoint, layers=("depths",))
    return config_from_json


def _resnet_config(config_json, checkpoint):
    """ResNet's arguments, minivlm's `resnet` entry of config.json, each checked."""
    resnet = Fields(config_json, checkpoint).section("resnet")
    return dict(block=resnet.choice("block", MISSING, ("BasicBlock", "Bottleneck")),
                layers=list(resnet.integers("layers", maximum=resnet.most_layers)),
                num_classes=resnet.integer("num_classes"), width=resnet.integer("width", 64),
                small_images=resnet.boolean("small_images", False),
                in_channels=resnet.integer("in_channels", 3))


ARCHITECTURES = [
    Architecture("vit", ViT, lambda c, ckpt: _config_from_json(ViTConfig, c, ckpt,
                                                               layers=("num_hidden_layers",)),
                 lambda model: _classifier_json(model, "vit", "ViT"),
                 names=VIT_NAMES, prefix="vit.", unprefixed=("classifier",)),
    Architecture("swin", SwinTransformer, _swin_config(SwinConfig),
                 lambda model: _classifier_json(model, "swin", "Swin"),
                 names=SWIN_NAMES, prefix="swin.", unprefixed=("classifier",)),
    Architecture("swinv2", SwinTransformerV2, _swin_config(SwinV2Config),
                 lambda model: _classifier_json(model, "swinv2", "Swinv2"),
                 names=SWINV2_NAMES, prefix="swinv2.", unprefixed=("classifier",)),
    # torchvision's names; Hugging Face's ResNet is another network (its own stem and names)
    Architecture("minivlm_resnet", ResNet, _resnet_config,
                 lambda model: {"model_type": "minivlm_resnet", "resnet": model.config},
                 build=ResNet.from_config),
]

"""CLIP checkpoints: Hugging Face `clip` directories (CLIPModel) and OpenAI-named state dicts in
safetensors, with NumPy only (no torch, never pickle).

    model = load_openai("ViT-B-32.safetensors")    # OpenAI's state dict names, in safetensors
    save_clip(model, "my-clip.safetensors")        # OpenAI's names, the config in the metadata
    model = load_pretrained("clip-vit-base-patch32")   # a Hugging Face directory (config.json,
    save_pretrained(model, "my-clip")              # model.safetensors in F32, F16 or BF16)

(minivlm.pretrained.load_clip reads either kind.)

One name table per format, each mapping the checkpoint's names to minivlm's:

- OPENAI_NAMES, by leading name: OpenAI keeps the text encoder at the top level of its CLIP
  (token_embedding, transformer.resblocks.*, ...), minivlm under `text.`; `visual.*` is the same.
  The config is the one save_clip stores in the file's metadata, or else comes from the
  tensors' shapes, as OpenAI's build_model infers it.
- HF_NAMES, in names.py's notation ({i} a layer number; a module's name stands for its
  .weight and .bias). Two steps come first that a renaming cannot do (prepare_hf): each
  attention's q_proj, k_proj and v_proj are stacked into one in_proj, as torch's
  MultiheadAttention holds them, and the two projections are transposed (Hugging Face's
  Linear weight is (embed_dim, width); OpenAI's matrix, used as x @ proj, is (width, embed_dim)).
  unprepare_hf undoes both for saving, so transformers' CLIPModel.from_pretrained reads what
  minivlm writes.
"""
import dataclasses
import json
import re
from pathlib import Path

from .. import io
from ..backend import xp_of
from ..models.clip import CLIP, CLIPConfig, CLIPVisionConfig
from ..models.text import CLIPTextConfig
from .names import Architecture, check_compatible, rename_leading, translate

OPENAI_NAMES = {  # OpenAI's leading name -> minivlm's
    "visual": "visual",
    "token_embedding": "text.token_embedding",
    "positional_embedding": "text.positional_embedding",
    "transformer": "text.transformer",
    "ln_final": "text.ln_final",
    "text_projection": "text.text_projection",
    "logit_scale": "logit_scale",
    "input_resolution": None,  # scalars OpenAI's released files keep beside the weights
    "context_length": None,
    "vocab_size": None,
}


def _encoder_names(hf_encoder, transformer):
    """The name table of a Hugging Face CLIPEncoder -> OpenAI's Transformer."""
    layer, block = f"{hf_encoder}.layers.{{i}}", f"{transformer}.resblocks.{{i}}"
    return {
        f"{layer}.layer_norm1": f"{block}.ln_1",
        f"{layer}.self_attn.in_proj.weight": f"{block}.attn.in_proj_weight",  # q, k, v stacked
        f"{layer}.self_attn.in_proj.bias": f"{block}.attn.in_proj_bias",
        f"{layer}.self_attn.out_proj": f"{block}.attn.out_proj",
        f"{layer}.layer_norm2": f"{block}.ln_2",
        f"{layer}.mlp.fc1": f"{block}.mlp.c_fc",
        f"{layer}.mlp.fc2": f"{block}.mlp.c_proj",
    }


HF_NAMES = {
    "text_model.embeddings.token_embedding": "text.token_embedding",
    "text_model.embeddings.position_embedding.weight": "text.positional_embedding",
    "text_model.embeddings.position_ids": None,  # arange(L), stored by older versions
    **_encoder_names("text_model.encoder", "text.transformer"),
    "text_model.final_layer_norm": "text.ln_final",
    "text_projection.weight": "text.text_projection",  # transposed by prepare_hf
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding": "visual.conv1",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.embeddings.position_ids": None,
    "vision_model.pre_layrnorm": "visual.ln_pre",  # sic, Hugging Face's spelling
    **_encoder_names("vision_model.encoder", "visual.transformer"),
    "vision_model.post_layernorm": "visual.ln_post",
    "visual_projection.weight": "visual.proj",  # transposed by prepare_hf
    "logit_scale": "logit_scale",
}
HF_TRANSPOSED = ("text_projection.weight", "visual_projection.weight")
_HF_QUERY = re.compile(r"(?P<attention>.+\.self_attn)\.q_proj\.(?P<leaf>weight|bias)")
_HF_IN_PROJ = re.compile(r"(?P<attention>.+\.self_attn)\.in_proj\.(?P<leaf>weight|bias)")

# Hugging Face's defaults (transformers' CLIPTextConfig / CLIPVisionConfig) for entries a
# config.json leaves out
HF_TEXT_DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048,
                        num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77,
                        hidden_act="quick_gelu", layer_norm_eps=1e-5, eos_token_id=49407)
HF_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                          num_attention_heads=12, num_channels=3, image_size=224, patch_size=32,
                          hidden_act="quick_gelu", layer_norm_eps=1e-5)
HF_LEGACY_EOS_TOKEN_ID = 2  # transformers reads the feature at argmax(ids) for this value
HF_LOGIT_SCALE_INIT = 2.6592  # ln(1/0.07), transformers' default; the weights hold the value
CONFIG_METADATA_KEY = "minivlm_config"


# --- loading and saving ------------------------------------------------------------------------

def load_openai(path, dtype="float32", config=None):
    """CLIP from an OpenAI-named .safetensors file, in eval mode, its parameters in `dtype`.
    config: a CLIPConfig to use instead of the file's (e.g. when its heads do not follow
    OpenAI's width // 64). A file that does not fit raises one io.CheckpointError listing the
    tensors with no name-table entry and every missing, unexpected and mis-shaped one."""
    checkpoint = io.load_safetensors(path)
    model = CLIP(config or config_from_openai(checkpoint, io.read_safetensors_metadata(path)))
    model.to(dtype)
    state, unknown = translate(checkpoint, lambda name: rename_leading(name, OPENAI_NAMES))
    openai_names = {minivlm: openai for openai, minivlm in OPENAI_NAMES.items() if minivlm}
    check_compatible(model, state, unknown, lambda name: rename_leading(name, openai_names),
                     path)
    model.load_state_dict(state)
    return model.eval()


def save_clip(model, path):
    """Write a CLIP's tensors under OpenAI's names to a safetensors file, with its config as JSON
    in the metadata (so load_clip needs no shape inference and keeps heads, activation, ...)."""
    names = {minivlm: openai for openai, minivlm in OPENAI_NAMES.items() if minivlm is not None}
    state = {rename_leading(name, names): tensor for name, tensor in model.state_dict().items()}
    metadata = {CONFIG_METADATA_KEY: json.dumps(dataclasses.asdict(model.config))}
    io.save_safetensors(state, path, metadata=metadata)


# --- names -------------------------------------------------------------------------------------

def prepare_hf(checkpoint):
    """Stack each attention's q_proj, k_proj, v_proj (weights (E, E), biases (E,)) into in_proj
    ((3E, E), (3E,)), and transpose the projections (so errors show their shapes transposed);
    other tensors pass through. An attention missing one of q, k, v keeps the others as they are
    (they are then reported as unknown)."""
    prepared = dict(checkpoint)
    for match in filter(None, map(_HF_QUERY.fullmatch, checkpoint)):
        attention, leaf = match["attention"], match["leaf"]
        parts = [f"{attention}.{p}_proj.{leaf}" for p in "qkv"]
        if all(part in prepared for part in parts):
            q_k_v = [prepared.pop(part) for part in parts]
            prepared[f"{attention}.in_proj.{leaf}"] = xp_of(*q_k_v).concatenate(q_k_v)
    for name in HF_TRANSPOSED:
        if name in prepared:
            prepared[name] = prepared[name].T
    return prepared


def unprepare_hf(checkpoint):
    """The inverse of prepare_hf: each in_proj split into q_proj, k_proj, v_proj, the
    projections transposed back."""
    unprepared = {}
    for name, array in checkpoint.items():
        match = _HF_IN_PROJ.fullmatch(name)
        if match:
            for part, piece in zip("qkv", xp_of(array).split(array, 3)):
                unprepared[f"{match['attention']}.{part}_proj.{match['leaf']}"] = piece
        else:
            unprepared[name] = array.T if name in HF_TRANSPOSED else array
    return unprepared


# --- configs -----------------------------------------------------------------------------------

def config_from_json(hf_config, checkpoint=None):
    """A CLIPConfig from a Hugging Face CLIP config.json (a dict). Entries it leaves out take
    transformers' defaults; text_config_dict / vision_config_dict override text_config /
    vision_config, as in transformers. (`checkpoint` is unused: Architecture.config_from_json's
    signature.)"""
    if hf_config.get("model_type") != "clip":
        raise ValueError(f"expected a Hugging Face config with model_type 'clip', got "
                         f"{hf_config.get('model_type')!r}")
    text = {**HF_TEXT_DEFAULTS, **(hf_config.get("text_config") or {}),
            **(hf_config.get("text_config_dict") or {})}
    vision = {**HF_VISION_DEFAULTS, **(hf_config.get("vision_config") or {}),
              **(hf_config.get("vision_config_dict") or {})}
    if vision["num_channels"] != 3:
        raise ValueError(f"CLIP images have 3 channels; this config has num_channels="
                         f"{vision['num_channels']}")
    eos_token_id = text["eos_token_id"]
    return CLIPConfig(
        embed_dim=hf_config.get("projection_dim", 512),
        vision=CLIPVisionConfig(image_resolution=vision["image_size"],
                                layers=vision["num_hidden_layers"], width=vision["hidden_size"],
                                patch_size=vision["patch_size"],
                                heads=vision["num_attention_heads"],
                                mlp_width=vision["intermediate_size"],
                                activation=vision["hidden_act"],
                                layer_norm_eps=vision["layer_norm_eps"]),
        text=CLIPTextConfig(context_length=text["max_position_embeddings"],
                            vocab_size=text["vocab_size"], width=text["hidden_size"],
                            layers=text["num_hidden_layers"], heads=text["num_attention_heads"],
                            mlp_width=text["intermediate_size"], activation=text["hidden_act"],
                            layer_norm_eps=text["layer_norm_eps"],
                            eos_token_id=None if eos_token_id == HF_LEGACY_EOS_TOKEN_ID
                            else eos_token_id))


def config_to_json(model):
    """The Hugging Face CLIPModel config.json of a CLIP with a Vision Transformer (Hugging Face's
    CLIP has no ResNet image encoder: save those with save_clip)."""
    config = model.config
    vision, text = config.vision, config.text
    if vision.is_resnet:
        raise ValueError("a CLIP with a ModifiedResNet image encoder has no Hugging Face layout "
                         "(transformers' CLIPModel holds a Vision Transformer); save it with "
                         "minivlm.pretrained.clip.save_clip (OpenAI's names) instead")
    eos_token_id = HF_LEGACY_EOS_TOKEN_ID if text.eos_token_id is None else text.eos_token_id
    return {
        "model_type": "clip", "architectures": ["CLIPModel"], "projection_dim": config.embed_dim,
        "logit_scale_init_value": HF_LOGIT_SCALE_INIT,
        "text_config": dict(
            vocab_size=text.vocab_size, hidden_size=text.width,
            intermediate_size=text.mlp_width or 4 * text.width, num_hidden_layers=text.layers,
            num_attention_heads=text.heads, max_position_embeddings=text.context_length,
            hidden_act=text.activation, layer_norm_eps=text.layer_norm_eps,
            eos_token_id=eos_token_id, projection_dim=config.embed_dim),
        "vision_config": dict(
            hidden_size=vision.width, intermediate_size=vision.mlp_width or 4 * vision.width,
            num_hidden_layers=vision.layers, num_attention_heads=vision.heads, num_channels=3,
            image_size=vision.image_resolution, patch_size=vision.patch_size,
            hidden_act=vision.activation, layer_norm_eps=vision.layer_norm_eps,
            projection_dim=config.embed_dim),
    }


def config_from_openai(checkpoint, metadata=None):
    """A CLIPConfig for an OpenAI-named checkpoint: the one save_clip stored in the metadata, or
    else inferred from the shapes as OpenAI's build_model does. Shapes do not give the number of
    heads; OpenAI's rule is width // 64 (text and ViT) and 32·width // 64 (ResNet). OpenAI's
    models use QuickGELU, layer norm eps 1e-5 and read the text feature at argmax(ids)."""
    if metadata and CONFIG_METADATA_KEY in metadata:
        return CLIPConfig(**json.loads(metadata[CONFIG_METADATA_KEY]))
    width = _shape(checkpoint, "ln_final.weight")[0]
    text = CLIPTextConfig(context_length=_shape(checkpoint, "positional_embedding")[0],
                          vocab_size=_shape(checkpoint, "token_embedding.weight")[0],
                          width=width, layers=_count_blocks(checkpoint, "transformer.resblocks."),
                          heads=_openai_heads(width),
                          mlp_width=_shape(checkpoint, "transformer.resblocks.0.mlp.c_fc.weight")[0])
    return CLIPConfig(_shape(checkpoint, "text_projection")[1], _vision_from_openai(checkpoint),
                      text)


def _vision_from_openai(checkpoint):
    if "visual.proj" in checkpoint:  # the Vision Transformer
        width, _, patch_size, _ = _shape(checkpoint, "visual.conv1.weight")
        grid = round((_shape(checkpoint, "visual.positional_embedding")[0] - 1) ** 0.5)
        mlp = _shape(checkpoint, "visual.transformer.resblocks.0.mlp.c_fc.weight")[0]
        return CLIPVisionConfig(image_resolution=patch_size * grid,
                                layers=_count_blocks(checkpoint, "visual.transformer.resblocks."),
                                width=width, patch_size=patch_size, heads=_openai_heads(width),
                                mlp_width=mlp)
    grid = round((_shape(checkpoint, "visual.attnpool.positional_embedding")[0] - 1) ** 0.5)
    width = _shape(checkpoint, "visual.layer1.0.conv1.weight")[0]
    return CLIPVisionConfig(image_resolution=32 * grid, patch_size=None,
                            layers=tuple(_count_blocks(checkpoint, f"visual.layer{stage}.")
                                     for stage in (1, 2, 3, 4)),
                            width=width, heads=_openai_heads(32 * width))


def _shape(checkpoint, name):
    if name not in checkpoint:
        raise ValueError(f"cannot infer the CLIP config: the checkpoint holds no {name!r} (an "
                         f"OpenAI-named CLIP state dict has token_embedding.weight, "
                         f"transformer.resblocks.*, visual.*, ...)")
    return checkpoint[name].shape


def _openai_heads(width):
    """OpenAI's number of heads for an attention of `width` channels: one per 64."""
    if width < 64:
        raise ValueError(f"cannot infer the heads of an attention {width} wide: OpenAI's rule "
                         f"width // 64 gives none; pass config= to load_clip")
    return width // 64


def _count_blocks(checkpoint, prefix):
    """How many numbered blocks (prefix + "0.", prefix + "1.", ...) the checkpoint holds."""
    return len({name[len(prefix):].split(".")[0] for name in checkpoint if name.startswith(prefix)})


ARCHITECTURES = [
    Architecture("clip", CLIP, config_from_json, config_to_json, names=HF_NAMES,
                 prepare=prepare_hf, unprepare=unprepare_hf),
]

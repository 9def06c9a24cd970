"""LLaVA-style VLMs: Hugging Face `llava` directories (LlavaForConditionalGeneration with a CLIP
vision tower and a Llama decoder, as llava-hf/llava-1.5-7b-hf), and minivlm's own layout
(`minivlm_llava`) for a VLM whose decoder is the GPT-2-style CausalLM, which transformers' Llava
cannot hold (it ties lm_head to the decoder's `embed_tokens`, which GPT-2 names `wte`).

minivlm writes the hub's names (transformers 4's), which transformers 5 reads too:

    vision_tower.vision_model.*   vision_tower.*          CLIPVisionModel: clip.py's HF_NAMES
    multi_modal_projector.*       multi_modal_projector.*
    language_model.model.*        language_model.model.*  LlamaForCausalLM: the same names
    language_model.lm_head.*      language_model.lm_head.*

and reads the other spellings as well: transformers 5 saves the vision tower without its
`vision_model.` and names its modules model.vision_tower.*, model.multi_modal_projector.*,
model.language_model.* and lm_head.* (HUB_NAMES maps them). The vision tower's q, k, v are
stacked by clip.prepare_hf; CLIP's post_layernorm is kept as ln_post, which LLaVA's features
never pass through. config.json's vision_config and text_config are read and written by clip.py's
and llama.py's conversions.
"""
import dataclasses

from ..models.lm import CausalLM
from ..models.llama import LlamaForCausalLM
from ..models.llava import LlavaConfig, LlavaForConditionalGeneration, LlavaForScoring
from . import clip, llama
from .fields import Fields
from .names import Architecture, rename, rename_leading

VISION_PREFIX = "vision_tower."
VISION_NAMES = {VISION_PREFIX + name: None if target is None else
                VISION_PREFIX + target.removeprefix("visual.")
                for name, target in clip.HF_NAMES.items() if name.startswith("vision_model.")}
VISION_CHECKPOINT_NAMES = {target: name for name, target in VISION_NAMES.items() if target}
HUB_NAMES = {  # the leading names of every layout -> the hub's, first match wins
    "vision_tower.vision_model": "vision_tower.vision_model",
    "vision_tower": "vision_tower.vision_model",                 # transformers 5's files
    "model.vision_tower.vision_model": "vision_tower.vision_model",
    "model.vision_tower": "vision_tower.vision_model",           # transformers 5's modules
    "model.multi_modal_projector": "multi_modal_projector",
    "model.language_model": "language_model.model",
    "lm_head": "language_model.lm_head",
}
LLAVA_VISION_DEFAULTS = dict(  # transformers' LlavaConfig without a vision_config: CLIP-L/14-336
    intermediate_size=4096, hidden_size=1024, patch_size=14, image_size=336,
    num_hidden_layers=24, num_attention_heads=16)
LLAVA_DEFAULTS = dict(vision_feature_layer=-2, vision_feature_select_strategy="default",
                      projector_hidden_act="gelu", multimodal_projector_bias=True)


class LlavaArchitecture(Architecture):
    """The vision tower's names by the CLIP table; the projector and the language model have
    minivlm's names already."""

    def minivlm_name(self, name):
        return rename(name, VISION_NAMES) if name.startswith(VISION_PREFIX) else name

    def checkpoint_name(self, name):
        return rename(name, VISION_CHECKPOINT_NAMES) if name.startswith(VISION_PREFIX) else name


def _split_vision(checkpoint):
    """(the vision tower's entries, the others)."""
    vision = {name: array for name, array in checkpoint.items()
              if name.startswith(VISION_PREFIX)}
    return vision, {name: array for name, array in checkpoint.items() if name not in vision}


def _hub_name(name):
    try:
        return rename_leading(name, HUB_NAMES)
    except KeyError:
        return name


def prepare(checkpoint):
    """Every layout's names as the hub's, the vision tower's q, k, v stacked, the rotary buffers
    of older Llama checkpoints dropped."""
    checkpoint = {_hub_name(name): array
                  for name, array in llama.drop_rotary_buffers(checkpoint).items()}
    vision, rest = _split_vision(checkpoint)
    return {**clip.prepare_hf(vision), **rest}


def unprepare(checkpoint):
    vision, rest = _split_vision(checkpoint)
    return {**clip.unprepare_hf(vision), **rest}


def llava_config(config_json, checkpoint=()):
    """The LlavaConfig of a Hugging Face llava config.json: a CLIP vision model and a Llama
    text model (others are a clear error), their fields checked (fields.py); entries it leaves
    out take transformers' defaults."""
    fields = Fields(config_json, checkpoint)
    vision = fields.section("vision_config", defaults={
        **clip.HF_VISION_DEFAULTS,
        **(LLAVA_VISION_DEFAULTS if config_json.get("vision_config") is None else {})})
    text = fields.section("text_config").values
    for part, found, supported in (("vision_config", vision.values.get("model_type"),
                                    "clip_vision_model"),
                                   ("text_config", text.get("model_type"), "llama")):
        if found not in (None, supported):
            raise ValueError(f"llava config: {part} has model_type {found!r}; minivlm's Llava "
                             f"reads {supported!r} only")
    text_config = llama.llama_config(text, checkpoint)
    text_config.tie_word_embeddings |= bool(config_json.get("tie_word_embeddings", False))
    settings = {name: config_json.get(name, default) for name, default in LLAVA_DEFAULTS.items()}
    return LlavaConfig(clip.vision_config(vision), text_config,
                       image_token_id=config_json.get("image_token_id"),
                       image_token_index=config_json.get("image_token_index"),
                       image_seq_length=config_json.get("image_seq_length"), **settings)


def llava_json(model):
    config = model.config
    return {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"],
            "vision_config": {"model_type": "clip_vision_model",
                              **clip.vision_config_to_json(config.vision_config)},
            "text_config": llama.llama_json(model.language_model),
            "image_token_index": config.image_token_id,
            "image_seq_length": config.image_seq_length,
            **{name: getattr(config, name) for name in LLAVA_DEFAULTS},
            "tie_word_embeddings": config.text_config.tie_word_embeddings}


def minivlm_config(config_json, checkpoint=None):
    fields = {f.name for f in dataclasses.fields(LlavaConfig)}
    return LlavaConfig(**{k: v for k, v in config_json.items() if k in fields})


def minivlm_json(model, model_type="minivlm_llava"):
    return {"model_type": model_type, **dataclasses.asdict(model.config)}


def _decoder_is(decoder_class):
    return lambda model: isinstance(model.language_model, decoder_class)


ARCHITECTURES = [
    LlavaArchitecture("llava", LlavaForConditionalGeneration, llava_config, llava_json,
                      prepare=prepare, unprepare=unprepare, saves=_decoder_is(LlamaForCausalLM)),
    Architecture("minivlm_llava", LlavaForConditionalGeneration, minivlm_config, minivlm_json,
                 saves=_decoder_is(CausalLM)),
    Architecture("minivlm_llava_scoring", LlavaForScoring, minivlm_config,
                 lambda model: minivlm_json(model, "minivlm_llava_scoring")),
]

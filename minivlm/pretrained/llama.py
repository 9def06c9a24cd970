"""Hugging Face `llama` directories (LlamaForCausalLM: Llama 2, TinyLlama, SmolLM2, ...).

minivlm's LlamaForCausalLM keeps transformers' module names, so the checkpoint's names are its
own; older checkpoints also store each layer's rotary inv_freq buffer, which is dropped (minivlm
computes the angles from rope_theta). config.json gives rope_theta either at the top (older
transformers, the hub's files) or in rope_parameters (transformers 5); only the default RoPE is
supported: a rope_scaling (Llama 3.1's, linear, dynamic, YaRN ...) is a clear error.
"""
import dataclasses

from ..models.llama import LlamaConfig, LlamaForCausalLM
from .names import Architecture

CONFIG_FIELDS = [f.name for f in dataclasses.fields(LlamaConfig)]


def drop_rotary_buffers(checkpoint):
    return {name: array for name, array in checkpoint.items()
            if not name.endswith("rotary_emb.inv_freq")}


def rope_theta(config_json):
    """The rope_theta of a config.json; an error for a RoPE minivlm does not have."""
    rope = config_json.get("rope_parameters") or {}
    scaling = config_json.get("rope_scaling")
    kind = rope.get("rope_type", "default")
    if scaling is not None or kind != "default":
        raise ValueError(f"Llama config: only the default RoPE is supported, got "
                         f"rope_scaling={scaling!r}, rope_type={kind!r}")
    return rope.get("rope_theta", config_json.get("rope_theta", 10000.0))


def llama_config(config_json, checkpoint=None):
    """The LlamaConfig of a Hugging Face config.json."""
    activation = config_json.get("hidden_act", "silu")
    if activation != "silu":
        raise ValueError(f"Llama config: hidden_act={activation!r} is not supported by minivlm's "
                         f"LlamaForCausalLM (supported: 'silu')")
    fields = {name: config_json[name] for name in CONFIG_FIELDS if name in config_json}
    return LlamaConfig(**{**fields, "rope_theta": rope_theta(config_json)})


def llama_json(model):
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu",
            **dataclasses.asdict(model.config)}


ARCHITECTURES = [
    Architecture("llama", LlamaForCausalLM, llama_config, llama_json,
                 prepare=drop_rotary_buffers),
]

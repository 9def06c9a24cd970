"""Hugging Face `llama` directories (LlamaForCausalLM: Llama 2, TinyLlama, SmolLM2, ...).

minivlm's LlamaForCausalLM keeps transformers' module names, so the checkpoint's names are its
own; older checkpoints also store each layer's rotary inv_freq buffer, which is dropped (minivlm
computes the angles from rope_theta). config.json gives rope_theta either at the top (older
transformers, the hub's files) or in rope_parameters (transformers 5); only the default RoPE is
supported: a rope_scaling (Llama 3.1's, linear, dynamic, YaRN ...) is a clear error.
"""
import dataclasses

from ..models.llama import LlamaConfig, LlamaForCausalLM
from .fields import ConfigError, Fields
from .names import Architecture


def drop_rotary_buffers(checkpoint):
    return {name: array for name, array in checkpoint.items()
            if not name.endswith("rotary_emb.inv_freq")}


def rope_theta(fields):
    """The rope_theta of a config.json's Fields; an error for a RoPE minivlm does not have."""
    rope = fields.section("rope_parameters")
    scaling = fields.values.get("rope_scaling")
    kind = rope.values.get("rope_type", "default")
    if scaling is not None or kind != "default":
        raise ConfigError(f"Llama config: only the default RoPE is supported, got "
                          f"rope_scaling={scaling!r:.100}, rope_type={kind!r:.100}")
    if "rope_theta" in rope.values:
        return rope.number("rope_theta")
    return fields.number("rope_theta", 10000.0)


def llama_config(config_json, checkpoint=()):
    """The LlamaConfig of a Hugging Face config.json, each field checked (fields.py)."""
    fields = Fields(config_json, checkpoint)
    activation = fields.values.get("hidden_act", "silu")
    if activation != "silu":
        raise ConfigError(f"Llama config: hidden_act={activation!r:.100} is not supported by "
                          f"minivlm's LlamaForCausalLM (supported: 'silu')")
    values = fields.of(LlamaConfig, layers=("num_hidden_layers",))
    return LlamaConfig(**{**values, "rope_theta": rope_theta(fields)})


def llama_json(model):
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu",
            **dataclasses.asdict(model.config)}


ARCHITECTURES = [
    Architecture("llama", LlamaForCausalLM, llama_config, llama_json,
                 prepare=drop_rotary_buffers),
]

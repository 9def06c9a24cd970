"""Language models: Hugging Face `gpt2` directories (GPT2Model, GPT2LMHeadModel) for the causal
LM, and minivlm's own layout for the RoBERTa-style masked LM.

GPT-2 keeps its projections in Conv1D modules whose weight is (in, out), the transpose of a
Linear's, and its q, k, v stacked in c_attn as torch's MultiheadAttention stacks in_proj: one
transpose (prepare) and a renaming map them onto minivlm's CausalLM. The output layer is tied to
the token embedding in both. (RoBERTa counts positions from padding_idx + 1 and skips padding,
where minivlm's MaskedLM counts from 0: its checkpoints keep minivlm's names.)
"""
import dataclasses

from ..models.lm import CausalLM, LMConfig, MaskedLM
from .fields import ConfigError, Fields
from .names import Architecture

GPT2_NAMES = {
    "wte": "token_embedding",
    "wpe": "position_embedding",
    "h.{i}.ln_1": "blocks.{i}.norm1",
    "h.{i}.attn.c_attn.weight": "blocks.{i}.self_attn.in_proj_weight",  # q, k, v stacked
    "h.{i}.attn.c_attn.bias": "blocks.{i}.self_attn.in_proj_bias",
    "h.{i}.attn.c_proj": "blocks.{i}.self_attn.out_proj",
    "h.{i}.ln_2": "blocks.{i}.norm2",
    "h.{i}.mlp.c_fc": "blocks.{i}.linear1",
    "h.{i}.mlp.c_proj": "blocks.{i}.linear2",
    "ln_f": "norm",
    "h.{i}.attn.bias": None,         # the causal mask, stored by older versions
    "h.{i}.attn.masked_bias": None,
    "lm_head.weight": None,          # tied to wte (an untied config is refused)
}
CONV1D_WEIGHTS = (".c_attn.weight", ".c_proj.weight", ".c_fc.weight")   # (in, out)
GPT2_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")   # both the tanh GELU of minivlm's CausalLM


def transpose_conv1d(checkpoint):
    """GPT-2's Conv1D weights (in, out) <-> Linear weights (out, in); other tensors as they are."""
    return {name: array.T if name.endswith(CONV1D_WEIGHTS) else array
            for name, array in checkpoint.items()}


def gpt2_config(config_json, checkpoint=()):
    """The LMConfig of a Hugging Face GPT-2 config.json, each field checked; a clear error for
    what CausalLM lacks."""
    fields = Fields(config_json, checkpoint)
    width = fields.integer("n_embd")
    unsupported = {
        "activation_function": (fields.string("activation_function", "gelu_new"),
                                GPT2_ACTIVATIONS),
        "n_inner": (fields.optional_integer("n_inner"), (None, 4 * width)),
        "layer_norm_epsilon": (fields.number("layer_norm_epsilon", 1e-5), (1e-5,)),
        "tie_word_embeddings": (fields.boolean("tie_word_embeddings", True), (True,)),
        "scale_attn_by_inverse_layer_idx": (
            fields.boolean("scale_attn_by_inverse_layer_idx", False), (False,)),
    }
    for name, (value, supported) in unsupported.items():
        if value not in supported:
            raise ConfigError(f"{name}={value!r} is not supported by minivlm's CausalLM "
                              f"(supported: {', '.join(map(repr, supported))})")
    return LMConfig("causal", vocab_size=fields.integer("vocab_size"),
                    context_length=fields.integer("n_positions"), width=width,
                    layers=fields.layers("n_layer"), heads=fields.integer("n_head"),
                    dropout=fields.number("resid_pdrop", 0.0, maximum=1.0, closed=True))


def gpt2_json(model):
    config = model.config
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
            "vocab_size": config.vocab_size, "n_positions": config.context_length,
            "n_embd": config.width, "n_layer": config.layers, "n_head": config.heads,
            "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
            "resid_pdrop": config.dropout, "embd_pdrop": config.dropout,
            "attn_pdrop": config.dropout, "tie_word_embeddings": True}


def masked_lm_config(config_json, checkpoint=()):
    return LMConfig(**Fields(config_json, checkpoint).of(LMConfig, layers=("layers",)))


ARCHITECTURES = [
    Architecture("gpt2", CausalLM, gpt2_config, gpt2_json, names=GPT2_NAMES,
                 prefix="transformer.", unprefixed=("lm_head",), prepare=transpose_conv1d,
                 unprepare=transpose_conv1d),
    Architecture("minivlm_masked_lm", MaskedLM, masked_lm_config,
                 lambda model: {"model_type": "minivlm_masked_lm",
                                **dataclasses.asdict(model.config)}),
]

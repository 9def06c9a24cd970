"""A Llama-style causal LM (Touvron et al. 2023), the decoder of today's small open VLMs (LLaVA,
nanoVLM on SmolLM2), with transformers' names, so a Hugging Face `llama` checkpoint loads as is:

    LlamaForCausalLM
      model.embed_tokens                  token ids -> vectors (no learned positions)
      model.layers.{i}                    LlamaDecoderLayer, pre-norm:
          input_layernorm                 RMSNorm (no mean taken out, no bias)
          self_attn.{q,k,v,o}_proj        grouped-query attention, RoPE on q and k
          post_attention_layernorm        RMSNorm
          mlp.{gate,up,down}_proj         SwiGLU: down(silu(gate(x)) · up(x))
      model.norm                          the final RMSNorm
      lm_head                             hidden -> logits (or the embedding, tied)

    model = LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=576, ...))
    logits = model(input_ids)                    # (B, T) -> (B, T, vocab_size)
    ids = model.generate(input_ids, max_new_tokens=20)

Grouped-query attention (Ainslie et al. 2023): num_key_value_heads < num_attention_heads key and
value heads, each shared by a group of query heads, which shrinks the KV cache by the group
size. Rotary position embeddings (Su et al. 2021) turn queries and keys by angles that grow
with the position, so attention sees relative positions; rope_theta sets the slowest turn.
"""
import dataclasses

from .. import backend, nn
from .. import functional as F
from .generation import (GenerationMixin, allowed_keys, input_embeddings, padding_mask,
                         past_length, position_ids_for)
from .lm import init_weights


@dataclasses.dataclass
class LlamaConfig:
    """transformers' LlamaConfig fields (config.json's names)."""
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None   # None: one per query head (multi-head attention)
    head_dim: int | None = None              # None: hidden_size / num_attention_heads
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    initializer_range: float = 0.02
    bos_token_id: int | None = 1
    eos_token_id: int | list | None = 2

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(f"LlamaConfig: hidden_size={self.hidden_size} is not divisible "
                                 f"by num_attention_heads={self.num_attention_heads}")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.head_dim % 2:
            raise ValueError(f"LlamaConfig: head_dim={self.head_dim} must be even (RoPE turns "
                             f"pairs of features)")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"LlamaConfig: num_attention_heads={self.num_attention_heads} is not "
                             f"a multiple of num_key_value_heads={self.num_key_value_heads}")


class LlamaAttention(nn.Module):
    """Grouped-query self-attention with RoPE: hidden (B, T, hidden_size) -> the same shape."""

    def __init__(self, config):
        super().__init__()
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.num_key_value_heads = config.num_key_value_heads
        width, bias = config.hidden_size, config.attention_bias
        self.q_proj = nn.Linear(width, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(width, self.num_key_value_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(width, self.num_key_value_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, width, bias=bias)

    def forward(self, hidden_states, cos, sin, attention_mask=None, cache=None):
        """cos, sin (B, 1, T, head_dim) of the positions (the same for every head);
        attention_mask bool (B | 1, 1, T, S), True where a query may attend (None: all); cache
        this layer's nn.cache.LayerCache."""
        batch, length, _ = hidden_states.shape
        q = self._heads(self.q_proj(hidden_states), self.num_heads)
        k = self._heads(self.k_proj(hidden_states), self.num_key_value_heads)
        v = self._heads(self.v_proj(hidden_states), self.num_key_value_heads)
        q, k = F.apply_rotary_pos_emb(q, cos, sin), F.apply_rotary_pos_emb(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, enable_gqa=True)
        return self.o_proj(y.transpose(1, 2).reshape(batch, length, -1))

    def _heads(self, x, heads):
        """(B, T, heads·head_dim) -> (B, heads, T, head_dim)."""
        batch, length, _ = x.shape
        return x.reshape(batch, length, heads, self.head_dim).transpose(1, 2)


class LlamaMLP(nn.Module):
    """SwiGLU (Shazeer 2020): down_proj(silu(gate_proj(x)) · up_proj(x))."""

    def __init__(self, config):
        super().__init__()
        width, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(width, inner, bias=bias)
        self.up_proj = nn.Linear(width, inner, bias=bias)
        self.down_proj = nn.Linear(inner, width, bias=bias)
        self.act_fn = nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    """x + attention(RMSNorm(x)), then x + MLP(RMSNorm(x))."""

    def __init__(self, config):
        super().__init__()
        self.self_attn = LlamaAttention(config)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, x, cos, sin, attention_mask=None, cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attention_mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    """The decoder without its head: -> the final hidden states (B, T, hidden_size)."""

    def __init__(self, config):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config)
                                    for _ in range(config.num_hidden_layers))
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = nn.RotaryEmbedding(config.head_dim, base=config.rope_theta)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None,
                past_key_values=None, inputs_embeds=None):
        x = input_embeddings(self.embed_tokens, input_ids, inputs_embeds)
        (batch, length), past = x.shape[:2], past_length(past_key_values)
        mask = padding_mask(attention_mask, batch, past + length)
        if position_ids is None:
            position_ids = position_ids_for(mask, past, length, backend.xp_of(x.array))
        cos, sin = (angle.unsqueeze(1) for angle in self.rotary_emb(x, position_ids))  # per head
        allowed = allowed_keys(mask, length, past + length, x.device)
        for i, layer in enumerate(self.layers):
            cache = None if past_key_values is None else past_key_values[i]
            x = layer(x, cos, sin, allowed, cache)
        return self.norm(x)


class LlamaForCausalLM(GenerationMixin, nn.Module):
    """The Llama decoder and its LM head: forward(input_ids=None, attention_mask=None,
    position_ids=None, past_key_values=None, inputs_embeds=None, logits_to_keep=0) -> logits
    (B, T, vocab_size)
    (see models.generation for the arguments). With tie_word_embeddings the head is the
    embedding matrix (lm_head is None)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = (None if config.tie_word_embeddings else
                        nn.Linear(config.hidden_size, config.vocab_size, bias=False))
        init_weights(self, config.initializer_range)   # as transformers: N(0, std²), biases 0

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, input_ids=None, attention_mask=None, position_ids=None,
                past_key_values=None, inputs_embeds=None, logits_to_keep=0):
        """logits_to_keep: the logits of the last so many positions only (0: all)."""
        hidden = self.model(input_ids, attention_mask, position_ids, past_key_values,
                            inputs_embeds)
        weight = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(hidden[:, -logits_to_keep:] if logits_to_keep else hidden, weight)


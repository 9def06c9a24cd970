"""CLIP's text encoder (Radford et al., 2021), with OpenAI's names, and the Transformer it shares
with CLIP's image encoder.

The slide "Approach": a Transformer reads the caption's token ids; the feature at the
end-of-text token, projected, is the text embedding.

    ids = CLIPTokenizer()(["a photo of a cat."])          # (1, 77): sot, tokens, eot, zeros
    encoder = TextTransformer(CLIPTextConfig(), embed_dim=512)
    features = encoder(ids)                              # (1, 512), projected, not normalised

Token embedding + learned positions, pre-norm Transformer blocks with a causal mask (no token
looks ahead), a final layer norm, and the end-of-text feature times `text_projection`. The
parameter names are those of OpenAI's model.py (token_embedding, positional_embedding,
transformer.resblocks.{i}.ln_1 / attn / ln_2 / mlp.c_fc / mlp.c_proj, ln_final,
text_projection), so its checkpoints map onto them one to one.
"""
import dataclasses
from collections import OrderedDict

from .. import backend
from .. import nn
from ..autograd import Parameter, Tensor, empty
from ..nn.attention import MultiheadAttention
from .vit import activation as activation_class


class ResidualAttentionBlock(nn.Module):
    """OpenAI CLIP's pre-norm Transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).

    x (N, L, width) -> (N, L, width). mlp is c_fc (width -> mlp_width), the activation
    ('quick_gelu' as OpenAI, or 'gelu'), c_proj (mlp_width -> width). causal=True: position i
    attends only to positions j <= i (the text encoder)."""

    def __init__(self, width, heads, mlp_width=None, activation="quick_gelu", layer_norm_eps=1e-5,
                 causal=False):
        super().__init__()
        mlp_width = mlp_width or 4 * width
        self.attn = MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width, eps=layer_norm_eps)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, mlp_width)),
            ("gelu", activation_class(activation)()),
            ("c_proj", nn.Linear(mlp_width, width)),
        ]))
        self.ln_2 = nn.LayerNorm(width, eps=layer_norm_eps)
        self.causal = causal

    def attention(self, x):
        return self.attn(x, x, x, need_weights=False, is_causal=self.causal)[0]

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def extra_repr(self):
        return f"causal={self.causal}"


class CLIPTransformer(nn.Module):
    """`layers` ResidualAttentionBlocks one after the other (batch first): (N, L, width) -> same."""

    def __init__(self, width, layers, heads, mlp_width=None, activation="quick_gelu",
                 layer_norm_eps=1e-5, causal=False):
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.Sequential(*(
            ResidualAttentionBlock(width, heads, mlp_width, activation, layer_norm_eps, causal)
            for _ in range(layers)))

    def forward(self, x):
        return self.resblocks(x)


@dataclasses.dataclass
class CLIPTextConfig:
    """The text encoder's hyperparameters; the defaults are those of OpenAI's ViT-B/32 CLIP.

    mlp_width: the hidden width of each block's MLP (None: 4·width, as OpenAI).
    eos_token_id: where the text feature is read. None: at the highest id of each sequence, as
    OpenAI's `text.argmax(dim=-1)` (the end-of-text token 49407 is the highest id of CLIP's
    vocabulary). An id: at the first position holding it, as Hugging Face's CLIPTextModel does
    for configs whose eos_token_id is not the legacy value 2."""
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    layers: int = 12
    heads: int = 8
    mlp_width: int | None = None
    activation: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int | None = None

    def __post_init__(self):
        if self.heads < 1 or self.width % self.heads:
            raise ValueError(f"CLIPTextConfig: width={self.width} is not divisible by "
                             f"heads={self.heads}")
        activation_class(self.activation)


class TextTransformer(nn.Module):
    """CLIP's text encoder: token ids (N, L) with L <= context_length -> (N, embed_dim).

    Initialised as OpenAI's CLIP.initialize_parameters: token embedding N(0, 0.02²), positions
    N(0, 0.01²); in each block in_proj N(0, width⁻¹), out_proj and c_proj N(0, proj_std²) with
    proj_std = width^-½ · (2·layers)^-½, c_fc N(0, 1/(2·width)); text_projection N(0, width⁻¹).
    Attention biases start at zero (torch's MultiheadAttention); the MLP biases keep torch's
    Linear default."""

    def __init__(self, config, embed_dim):
        super().__init__()
        self.config, self.embed_dim = config, embed_dim
        width = config.width
        self.token_embedding = nn.Embedding(config.vocab_size, width)
        self.positional_embedding = Parameter(empty(config.context_length, width))
        self.transformer = CLIPTransformer(width, config.layers, config.heads, config.mlp_width,
                                           config.activation, config.layer_norm_eps, causal=True)
        self.ln_final = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.text_projection = Parameter(empty(width, embed_dim))
        self.initialize_parameters()

    def initialize_parameters(self):
        width, layers = self.config.width, self.config.layers
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = width ** -0.5 * (2 * layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width ** -0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    def forward(self, ids):
        """ids: integer array or Tensor (N, L) -> projected end-of-text features (N, embed_dim)."""
        ids = self._checked_ids(ids)
        x = self.token_embedding(ids) + self.positional_embedding[:ids.shape[1]]
        x = self.ln_final(self.transformer(x))                       # (N, L, width)
        rows = backend.xp_of(ids).arange(ids.shape[0])
        return x[rows, self.end_of_text_positions(ids)] @ self.text_projection

    def end_of_text_positions(self, ids):
        """(N,) the position of each sequence's end-of-text token (CLIPTextConfig.eos_token_id)."""
        if self.config.eos_token_id is None:
            return ids.argmax(axis=-1)
        is_eos = ids == self.config.eos_token_id
        missing = (~is_eos.any(axis=-1)).nonzero()[0]
        if len(missing):
            raise ValueError(f"TextTransformer: the sequences at rows {missing.tolist()} hold no "
                             f"end-of-text token (eos_token_id={self.config.eos_token_id})")
        return is_eos.argmax(axis=-1)

    def _checked_ids(self, ids):
        """ids as a raw integer array on the weights' backend; a clear error for bad input."""
        ids = ids.array if isinstance(ids, Tensor) else ids
        if not backend.is_array(ids) or ids.dtype.kind not in "iu":
            raise TypeError(f"TextTransformer: expected integer token ids, got "
                            f"{getattr(ids, 'dtype', type(ids).__name__)}")
        context_length, vocab_size = self.config.context_length, self.config.vocab_size
        if ids.ndim != 2 or not 0 < ids.shape[1] <= context_length:
            raise ValueError(f"TextTransformer: expected token ids of shape (batch, length) with "
                             f"1 <= length <= context_length={context_length}, got shape "
                             f"{tuple(ids.shape)}")
        if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(f"TextTransformer: token ids must lie in [0, vocab_size="
                             f"{vocab_size}), got values in [{int(ids.min())}, {int(ids.max())}]")
        return backend.to_backend(ids, self.token_embedding.weight.device)

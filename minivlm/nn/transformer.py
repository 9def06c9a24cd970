"""The Transformer: the block of the slides, torch.nn's encoder–decoder, and ViLBERT's
co-attention.

A block is self-attention (the only interaction between vectors) and an MLP (applied to each
vector alone), each inside a residual connection with layer norm, placed either

    post-norm (the 2017 paper, the slides):  x = LN(x + Attn(x)),  x = LN(x + MLP(x))
    pre-norm  (ViT, CLIP, GPT-2):            x = x + Attn(LN(x)),  x = x + MLP(LN(x))

picked by `norm_first`. The layers keep torch.nn's names, arguments and parameter names
(self_attn, multihead_attn, linear1, linear2, norm1..3, encoder.layers.0, encoder.norm, ...) so a
torch state dict loads as is.
"""
import copy

from .. import backend
from .. import functional as F
from ..autograd import Tensor
from . import init
from .attention import MultiheadAttention
from .layers import GELU, MLP, Dropout, LayerNorm, Linear
from .module import Module, ModuleList


def _activation_function(activation):
    """'relu' | 'gelu' | a callable (a function or a Module) -> the callable."""
    if isinstance(activation, str):
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation should be 'relu', 'gelu' or a callable, "
                             f"not {activation!r}")
        return F.relu if activation == "relu" else F.gelu
    if not callable(activation):
        raise ValueError(f"activation should be 'relu', 'gelu' or a callable, not {activation!r}")
    return activation


class TransformerEncoderLayer(Module):
    """torch.nn.TransformerEncoderLayer: the Transformer block, self-attention then an MLP
    (linear1, activation, linear2), post-norm or, with norm_first=True, pre-norm.

    src (L, N, d_model), (N, L, d_model) with batch_first, or (L, d_model) -> the same shape.
    Dropout follows the 2017 paper: on the attention weights, inside the MLP, and on each
    sublayer's output before it joins the residual stream.
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = _activation_function(activation)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False, cache=None):
        """src_mask (L, L) or (N·nhead, L, L), src_key_padding_mask (N, L): bool True = not
        allowed, float = added; is_causal=True forbids looking ahead. cache: this layer's
        nn.cache.LayerCache in a decoder (then S = the cached positions + L in the masks)."""
        x = self._residual(src, lambda x: self._self_attention(x, src_mask, src_key_padding_mask,
                                                               is_causal, cache),
                           self.norm1, self.dropout1)
        return self._residual(x, self._feed_forward, self.norm2, self.dropout2)

    def _residual(self, x, sublayer, norm, dropout):
        """The residual connection around `sublayer`, with the layer norm after the sum
        (post-norm) or before the sublayer (pre-norm, norm_first)."""
        if self.norm_first:
            return x + dropout(sublayer(norm(x)))
        return norm(x + dropout(sublayer(x)))

    def _self_attention(self, x, attn_mask, key_padding_mask, is_causal, cache=None):
        return self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                              need_weights=False, is_causal=is_causal, cache=cache)[0]

    def _feed_forward(self, x):
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class TransformerBlock(TransformerEncoderLayer):
    """The Transformer block of the slides, with the lecture's defaults: batch first
    (N, L, d_model), an MLP 4·d_model wide with GELU, no dropout, post-norm — or pre-norm (ViT,
    CLIP) with norm_first=True. The same layer as TransformerEncoderLayer, with its names."""

    def __init__(self, d_model, nhead, dim_feedforward=None, dropout=0.0, activation="gelu",
                 layer_norm_eps=1e-5, batch_first=True, norm_first=False, bias=True):
        super().__init__(d_model, nhead, dim_feedforward or 4 * d_model, dropout, activation,
                         layer_norm_eps, batch_first, norm_first, bias)


class TransformerDecoderLayer(TransformerEncoderLayer):
    """torch.nn.TransformerDecoderLayer: the encoder layer with cross-attention (multihead_attn)
    between its self-attention and its MLP. Queries come from the target, keys and values from
    the encoder's output `memory`. Pass tgt_mask (or tgt_is_causal=True) for the masked
    self-attention of the encoder–decoder, so no target position looks ahead.

    tgt (T, N, d_model) and memory (S, N, d_model) — batch first or unbatched as the encoder
    layer — -> the shape of tgt.
    """

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True):
        super().__init__(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                         batch_first, norm_first, bias)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                 batch_first=batch_first)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout3 = Dropout(dropout)

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
        x = self._residual(tgt, lambda x: self._self_attention(x, tgt_mask, tgt_key_padding_mask,
                                                               tgt_is_causal),
                           self.norm1, self.dropout1)
        x = self._residual(x, lambda x: self._cross_attention(x, memory, memory_mask,
                                                              memory_key_padding_mask,
                                                              memory_is_causal),
                           self.norm2, self.dropout2)
        return self._residual(x, self._feed_forward, self.norm3, self.dropout3)

    def _cross_attention(self, x, memory, attn_mask, key_padding_mask, is_causal):
        return self.multihead_attn(x, memory, memory, attn_mask=attn_mask,
                                   key_padding_mask=key_padding_mask, need_weights=False,
                                   is_causal=is_causal)[0]


def _clones(layer, num_layers):
    """`num_layers` independent deep copies of `layer` (same initial weights, as torch)."""
    return ModuleList(copy.deepcopy(layer) for _ in range(num_layers))


class TransformerEncoder(Module):
    """torch.nn.TransformerEncoder: `num_layers` copies of `encoder_layer` one after the other,
    then `norm` (a final LayerNorm, or None)."""

    def __init__(self, encoder_layer, num_layers, norm=None):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                      is_causal=is_causal)
        return x if self.norm is None else self.norm(x)


class TransformerDecoder(Module):
    """torch.nn.TransformerDecoder: `num_layers` copies of `decoder_layer`, each attending to the
    same `memory`, then `norm` (or None)."""

    def __init__(self, decoder_layer, num_layers, norm=None):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
        x = tgt
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask,
                      tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)
        return x if self.norm is None else self.norm(x)


class Transformer(Module):
    """torch.nn.Transformer, the encoder–decoder of "Attention Is All You Need": the encoder reads
    src, the decoder reads tgt with masked self-attention and attends to the encoder's output.

    src (S, N, d_model), tgt (T, N, d_model) (batch first: (N, S, d_model), (N, T, d_model))
    -> (T, N, d_model). Every weight matrix is initialised Xavier uniform, as torch.
    """

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=2048, dropout=0.1, activation="relu", custom_encoder=None,
                 custom_decoder=None, layer_norm_eps=1e-5, batch_first=False, norm_first=False,
                 bias=True):
        super().__init__()
        layer_args = dict(d_model=d_model, nhead=nhead, dim_feedforward=dim_feedforward,
                          dropout=dropout, activation=activation, layer_norm_eps=layer_norm_eps,
                          batch_first=batch_first, norm_first=norm_first, bias=bias)
        self.encoder = custom_encoder or TransformerEncoder(
            TransformerEncoderLayer(**layer_args), num_encoder_layers,
            LayerNorm(d_model, eps=layer_norm_eps, bias=bias))
        self.decoder = custom_decoder or TransformerDecoder(
            TransformerDecoderLayer(**layer_args), num_decoder_layers,
            LayerNorm(d_model, eps=layer_norm_eps, bias=bias))
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first
        self._reset_parameters()

    def _reset_parameters(self):
        for p in self.parameters():
            if p.ndim > 1:
                init.xavier_uniform_(p)

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
                src_key_padding_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, src_is_causal=False, tgt_is_causal=False,
                memory_is_causal=False):
        batch_dim = 0 if self.batch_first else 1
        if src.ndim == 3 and src.shape[batch_dim] != tgt.shape[batch_dim]:
            raise ValueError(f"Transformer: src of shape {tuple(src.shape)} and tgt of shape "
                             f"{tuple(tgt.shape)} have different batch sizes "
                             f"(batch_first={self.batch_first})")
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise ValueError(f"Transformer: src of shape {tuple(src.shape)} and tgt of shape "
                             f"{tuple(tgt.shape)} must both end in d_model={self.d_model}")
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask,
                              is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask,
                            tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz, dtype="float32", device=None):
        """(sz, sz) float mask: -inf above the diagonal (position i may not attend to j > i),
        0 elsewhere — the decoder's tgt_mask."""
        xp = backend.module(device) if device is not None else backend.default_xp()
        return Tensor(xp.triu(xp.full((sz, sz), -xp.inf, dtype=dtype), k=1))


class CrossAttentionBlock(Module):
    """Queries from x attend to the keys and values of another stream, `context`; residual and
    layer norm; then x's own MLP, residual and layer norm (post-norm, as BERT).

    x (N, L, d_model), context (N, S, context_dim) -> (N, L, d_model).
    """

    def __init__(self, d_model, context_dim, nhead, dim_feedforward=None, dropout=0.1,
                 layer_norm_eps=1e-12):
        super().__init__()
        self.attn = MultiheadAttention(d_model, nhead, dropout=dropout, kdim=context_dim,
                                       vdim=context_dim, batch_first=True)
        self.dropout = Dropout(dropout)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps)
        self.mlp = MLP(d_model, dim_feedforward or 4 * d_model, activation=GELU, dropout=dropout)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps)

    def forward(self, x, context, context_padding_mask=None):
        """context_padding_mask (N, S): True where the context holds padding."""
        attended = self.attn(x, context, context, key_padding_mask=context_padding_mask,
                             need_weights=False)[0]
        x = self.norm1(x + self.dropout(attended))
        return self.norm2(x + self.mlp(x))


class CoAttentionBlock(Module):
    """ViLBERT's co-attentional Transformer layer (Lu et al., 2019): two streams, image regions
    and words, exchange information. Each stream's queries attend to the OTHER stream's keys and
    values (residual + LN), then each stream has its own MLP (residual + LN).

    image (N, R, image_dim), text (N, T, text_dim) -> (image', text') of the same shapes.
    """

    def __init__(self, image_dim, text_dim, nhead, dim_feedforward=None, dropout=0.1,
                 layer_norm_eps=1e-12):
        super().__init__()
        self.image = CrossAttentionBlock(image_dim, text_dim, nhead, dim_feedforward, dropout,
                                         layer_norm_eps)
        self.text = CrossAttentionBlock(text_dim, image_dim, nhead, dim_feedforward, dropout,
                                        layer_norm_eps)

    def forward(self, image, text, image_padding_mask=None, text_padding_mask=None):
        """Both streams read the inputs of this layer: the words the image regions attend to are
        the words before this layer's update, and the other way round."""
        return (self.image(image, text, context_padding_mask=text_padding_mask),
                self.text(text, image, context_padding_mask=image_padding_mask))

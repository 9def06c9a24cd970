"""Language models on the built-in corpus: a GPT-style causal LM and a RoBERTa-style masked LM.

A causal LM estimates p(s) = p(w_1) p(w_2 | w_1) ... p(w_n | w_1 .. w_n-1): each position predicts
the next token and may only look back (masked self-attention). A masked LM sees the whole
sentence, with some tokens hidden, and predicts the hidden ones — a pre-training task:

    <s> <mask> a seat <mask> have a <mask> </s>   ->   take, ",", drink

    model = CausalLM(LMConfig("causal", vocab_size=tokenizer.vocab_size))
    logits = model(ids)                                   # (B, T) ids -> (B, T, vocab_size)
    ids = model.generate(prompt_ids, max_new_tokens=20, do_sample=True, temperature=0.8, top_k=20)

    model = MaskedLM(LMConfig("mlm", vocab_size=tokenizer.vocab_size))
    inputs, targets = mask_tokens(ids, tokenizer, rng)   # 15 %: 80 % <mask>, 10 % random, 10 % kept
    loss = lm_loss(model(inputs), targets)                # only the chosen positions count
    fill_mask(model, tokenizer, "the capital of france is <mask>.")
    head = SentenceClassificationHead(width, num_classes) # sentence level: reads the <s> token
    logits = head(model.encode(ids, padding_mask))        # (B, num_classes)

Both models use learned positions, blocks with a GELU MLP 4·width wide, and an output layer TIED
to the token embedding (logits = h Eᵀ, as GPT-2 and RoBERTa: one V×D matrix instead of two). The
causal LM is GPT-2's layout (GPT2LMHeadModel gives the same logits): pre-norm blocks with tanh
GELU, a final layer norm, no output bias. The masked LM is RoBERTa's (RobertaForMaskedLM): a layer
norm on the embeddings, post-norm blocks with exact GELU, and the LM head dense -> GELU -> layer
norm -> tied decoder + bias. Weights start as in GPT-2 and BERT: N(0, 0.02²), biases zero.

`minivlm train-lm --objective causal|mlm` (minivlm.recipes.lm) trains either on the built-in
corpus.
"""
import dataclasses
import functools

from .. import backend, nn
from .. import functional as F
from ..autograd import zeros
from ..nn.positional import LearnedPositionalEmbedding
from ..nn.transformer import TransformerBlock
from .generation import (GenerationMixin, decoder_causal_mask, input_embeddings, padding_mask,
                         past_length, position_ids_for)

IGNORE_INDEX = -100      # cross_entropy's ignore_index: targets that do not count
OBJECTIVES = ("causal", "mlm")


@dataclasses.dataclass
class LMConfig:
    """Hyperparameters of either language model; saved as config.json beside the weights."""
    objective: str                  # "causal" (GPT) or "mlm" (RoBERTa)
    vocab_size: int
    context_length: int = 32        # the most positions the model reads at once
    width: int = 64
    layers: int = 2
    heads: int = 4
    dropout: float = 0.0

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"LMConfig: objective must be one of {OBJECTIVES}, "
                             f"got {self.objective!r}")
        if self.width % self.heads:
            raise ValueError(f"LMConfig: width={self.width} is not divisible by "
                             f"heads={self.heads}")


def init_weights(model, std=0.02):
    """GPT-2 / BERT initialisation: every matrix (linear layers, embeddings, attention
    projections) N(0, std²), every bias 0; layer norms keep weight 1."""
    for name, param in model.named_parameters():
        if param.ndim >= 2:
            nn.init.normal_(param, std=std)
        elif name.endswith("bias"):
            nn.init.zeros_(param)
    return model


class CausalLM(GenerationMixin, nn.Module):
    """GPT: ids (B, T) -> next-token logits (B, T, vocab_size); position t sees ids[:, :t+1].
    Generates through models.generation (a KV cache; forward takes its arguments)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.position_embedding = LearnedPositionalEmbedding(config.context_length, config.width)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.width, config.heads, dropout=config.dropout, norm_first=True,
                             activation=functools.partial(F.gelu, approximate="tanh"))
            for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.width)
        init_weights(self)

    def get_input_embeddings(self):
        return self.token_embedding

    def forward(self, input_ids=None, attention_mask=None, position_ids=None,
                past_key_values=None, inputs_embeds=None, logits_to_keep=0):
        """input_ids (B, T) or inputs_embeds (B, T, width); attention_mask (B, cached + T), 0 at
        padding; position_ids (B, T) (default: counted from the mask); past_key_values an
        nn.KVCache, read and extended; logits_to_keep: of the last so many positions only (0:
        all) -> logits (B, T, vocab_size)."""
        x = input_embeddings(self.token_embedding, input_ids, inputs_embeds)
        (batch, length), past = x.shape[:2], past_length(past_key_values)
        mask = padding_mask(attention_mask, batch, past + length)
        if position_ids is None and (mask is not None or past):
            position_ids = position_ids_for(mask, past, length, backend.xp_of(x.array))
        x = self.drop(self.position_embedding(x, position_ids))
        causal = decoder_causal_mask(length, past + length, x.device)
        padding = None if mask is None else ~mask
        for i, block in enumerate(self.blocks):
            cache = None if past_key_values is None else past_key_values[i]
            x = block(x, src_mask=causal, src_key_padding_mask=padding, cache=cache)
        x = self.norm(x[:, -logits_to_keep:] if logits_to_keep else x)
        return F.linear(x, self.token_embedding.weight)   # tied output layer


class MaskedLMHead(nn.Module):
    """RoBERTa's LM head, a token-level head: hidden (B, T, D) -> logits (B, T, V) over the
    vocabulary, through dense -> GELU -> layer norm -> the (tied) embedding matrix + bias."""

    def __init__(self, width, vocab_size):
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.layer_norm = nn.LayerNorm(width)
        self.bias = nn.Parameter(zeros(vocab_size))

    def forward(self, hidden, embedding_weight):
        """embedding_weight (V, D): the token embedding, used as the decoder."""
        return F.linear(self.layer_norm(F.gelu(self.dense(hidden))), embedding_weight, self.bias)


class MaskedLM(nn.Module):
    """RoBERTa: ids (B, T) -> logits (B, T, vocab_size), every position seeing every other."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.position_embedding = LearnedPositionalEmbedding(config.context_length, config.width)
        self.embedding_norm = nn.LayerNorm(config.width)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.width, config.heads, dropout=config.dropout, norm_first=False)
            for _ in range(config.layers))
        self.lm_head = MaskedLMHead(config.width, config.vocab_size)
        init_weights(self)

    def encode(self, ids, padding_mask=None):
        """ids (B, T) -> hidden states (B, T, width), the input of any head.
        padding_mask (B, T): True at padding, which no position attends to."""
        x = self.embedding_norm(self.position_embedding(self.token_embedding(ids)))
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, src_key_padding_mask=padding_mask)
        return x

    def forward(self, ids, padding_mask=None):
        return self.lm_head(self.encode(ids, padding_mask), self.token_embedding.weight)


class SentenceClassificationHead(nn.Module):
    """RoBERTa's sentence-level head: the hidden state of the first token <s> ->
    dropout -> dense -> tanh -> dropout -> out_proj. hidden (B, T, D) -> logits (B, num_classes)."""

    def __init__(self, width, num_classes, dropout=0.1):
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)
        self.out_proj = nn.Linear(width, num_classes)

    def forward(self, hidden):
        x = self.drop(hidden[:, 0])
        return self.out_proj(self.drop(F.tanh(self.dense(x))))


class TokenClassificationHead(nn.Module):
    """A token-level head for tagging (one label per token): dropout -> linear at each position.
    hidden (B, T, D) -> logits (B, T, num_classes)."""

    def __init__(self, width, num_classes, dropout=0.1):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, hidden):
        return self.classifier(self.drop(hidden))


MODELS = {"causal": CausalLM, "mlm": MaskedLM}


def build_model(config):
    """The model class that `config.objective` names, freshly initialised."""
    return MODELS[config.objective](config)


# --- the objectives ---------------------------------------------------------------------------

def lm_loss(logits, targets, reduction="mean"):
    """Cross-entropy of logits (B, T, V) against target ids (B, T); IGNORE_INDEX targets do not
    count. reduction='mean' averages over the counted targets, 'sum' adds them."""
    B, T, V = logits.shape
    if tuple(targets.shape) != (B, T):
        raise ValueError(f"lm_loss: logits of shape {(B, T, V)} need targets of shape {(B, T)}, "
                         f"got {tuple(targets.shape)}")
    return F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T),
                           ignore_index=IGNORE_INDEX, reduction=reduction)


def mask_tokens(ids, tokenizer, rng, p=0.15):
    """BERT's masking: choose each ordinary token (not <s>, </s>, <pad>, ...) with probability p; of
    the chosen, 80 % become <mask>, 10 % a random ordinary token, 10 % stay as they are.

    ids (B, T) integer array; rng a Generator of the same backend (numpy.random.default_rng(0),
    minivlm.backend.rng(xp)). Returns (inputs, targets), both (B, T): targets hold the original id
    at chosen positions and IGNORE_INDEX elsewhere, so the loss counts the chosen positions only.
    """
    xp = backend.xp_of(ids)
    special = sorted(tokenizer.special_tokens.values())
    ordinary = xp.asarray([i for i in range(tokenizer.vocab_size) if i not in special])
    chosen = (rng.random(ids.shape) < p) & ~xp.isin(ids, xp.asarray(special))
    action = rng.random(ids.shape)                    # < 0.8: <mask>, < 0.9: random, else kept
    random_tokens = ordinary[rng.integers(0, len(ordinary), size=ids.shape)]
    inputs = xp.where(chosen & (action < 0.8), tokenizer.mask_id, ids)
    inputs = xp.where(chosen & (action >= 0.8) & (action < 0.9), random_tokens, inputs)
    targets = xp.where(chosen, ids, IGNORE_INDEX)
    return inputs, targets


# --- using a trained model --------------------------------------------------------------------

def fill_mask(model, tokenizer, text):
    """Replace each <mask> in `text` by the masked LM's most likely ordinary token (all masks
    predicted together, in one pass); returns the filled text.

    As RoBERTa's, <mask> takes the space before it: in "is <mask>." it stands for " paris".
    """
    if "<mask>" not in text:
        raise ValueError(f"fill_mask: the text has no <mask> to fill: {text!r}")
    xp = backend.default_xp()
    ids = xp.asarray([tokenizer.bos_id, *tokenizer.encode(text.replace(" <mask>", "<mask>")),
                      tokenizer.eos_id])
    with nn.evaluating(model):
        logits = model(ids[None]).array[0]
    logits[:, list(tokenizer.special_tokens.values())] = -xp.inf
    filled = xp.where(ids == tokenizer.mask_id, logits.argmax(axis=-1), ids)
    return tokenizer.decode(backend.to_numpy(filled[1:-1]).tolist())

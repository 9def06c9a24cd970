"""Language models on the built-in corpus: a GPT-style causal LM and a RoBERTa-style masked LM.

A causal LM estimates p(s) = p(w_1) p(w_2 | w_1) ... p(w_n | w_1 .. w_n-1): each position predicts
the next token and may only look back (masked self-attention). A masked LM sees the whole
sentence, with some tokens hidden, and predicts the hidden ones — a pre-training task:

    <s> <mask> a seat <mask> have a <mask> </s>   ->   take, ",", drink

    model = CausalLM(LMConfig("causal", vocab_size=tokenizer.vocab_size))
    logits = model(ids)                                   # (B, T) ids -> (B, T, vocab_size)
    ids = generate(model, prompt_ids, max_new_tokens=20, temperature=0.8, top_k=20)

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

`python -m minivlm train-lm --objective causal|mlm` trains either on the built-in corpus.
"""
import contextlib
import dataclasses
import functools
import json
import math
from pathlib import Path

from .. import backend, io, nn
from .. import functional as F
from ..autograd import Tensor, manual_seed, no_grad, zeros
from ..data.text import corpus
from ..nn.positional import LearnedPositionalEmbedding
from ..nn.transformer import TransformerBlock
from ..optim import AdamW, clip_grad_norm_, cosine_schedule, decay_matrices_only
from ..progress import progress
from ..tokenizers import BPETokenizer

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


class CausalLM(nn.Module):
    """GPT: ids (B, T) -> next-token logits (B, T, vocab_size); position t sees ids[:, :t+1]."""

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

    def forward(self, ids):
        x = self.drop(self.position_embedding(self.token_embedding(ids)))
        for block in self.blocks:
            x = block(x, is_causal=True)
        return F.linear(self.norm(x), self.token_embedding.weight)   # tied output layer


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


def inputs_and_targets(windows, objective, tokenizer, rng):
    """A batch of token windows -> (inputs, targets) for the objective: the causal LM reads
    windows[:, :-1] and predicts windows[:, 1:]; the masked LM reads masked windows."""
    if objective == "causal":
        return windows[:, :-1], windows[:, 1:]
    return mask_tokens(windows, tokenizer, rng)


def window_length(config):
    """Tokens per training window: the context, plus one for the causal LM's last target."""
    return config.context_length + (config.objective == "causal")


# --- using a trained model --------------------------------------------------------------------

@contextlib.contextmanager
def inference(model):
    """model.eval() and no_grad() inside the block; the model's training flag is restored after."""
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            yield
    finally:
        model.train(was_training)


def generate(model, prompt_ids, max_new_tokens, temperature=1.0, top_k=None, eos_id=None):
    """Continue each prompt one sampled token at a time (the causal LM reads at most its
    context_length last tokens). prompt_ids (B, T0) integer array -> (B, T0 + n) with
    n <= max_new_tokens.

    The next token is drawn from softmax(logits / temperature) restricted to the top_k most likely
    (all when None). With eos_id, stops early once every row has produced it. Randomness comes from
    the backend's generator: minivlm.manual_seed makes it reproducible.
    """
    if temperature <= 0:
        raise ValueError(f"generate: temperature must be > 0, got {temperature}")
    ids = prompt_ids.data if isinstance(prompt_ids, Tensor) else prompt_ids
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"generate: prompt_ids must be (B, T0) with T0 >= 1, got shape "
                         f"{tuple(ids.shape)}")
    xp = backend.xp_of(ids)
    rng, start = backend.rng(xp), ids.shape[1]
    with inference(model):
        for _ in range(max_new_tokens):
            logits = model(ids[:, -model.config.context_length:]).data[:, -1] / temperature
            if top_k is not None:
                kth_largest = xp.sort(logits, axis=-1)[:, -min(top_k, logits.shape[-1]), None]
                logits = xp.where(logits < kth_largest, -xp.inf, logits)
            gumbel = -xp.log(-xp.log(rng.random(logits.shape)))
            next_ids = xp.argmax(logits + gumbel, axis=-1)    # a sample of softmax(logits)
            ids = xp.concatenate([ids, next_ids[:, None].astype(ids.dtype)], axis=1)
            if eos_id is not None and (ids[:, start:] == eos_id).any(axis=1).all():
                break
    return ids


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
    with inference(model):
        logits = model(ids[None]).data[0]
    logits[:, list(tokenizer.special_tokens.values())] = -xp.inf
    filled = xp.where(ids == tokenizer.mask_id, logits.argmax(axis=-1), ids)
    return tokenizer.decode(backend.to_numpy(filled[1:-1]).tolist())


# --- data -------------------------------------------------------------------------------------

def token_stream(sentences, tokenizer):
    """All sentences as one 1-D id array on the default backend: <s> s1 </s> <s> s2 </s> ..."""
    ids = []
    for sentence in sentences:
        ids += [tokenizer.bos_id, *tokenizer.encode(sentence), tokenizer.eos_id]
    return backend.default_xp().asarray(ids)


def random_windows(stream, batch_size, length, rng):
    """batch_size windows of `length` consecutive ids, from random offsets: (batch_size, length)."""
    if len(stream) < length:
        raise ValueError(f"the token stream ({len(stream)} ids) is shorter than one window "
                         f"({length} ids)")
    starts = rng.integers(0, len(stream) - length + 1, size=batch_size)
    return stream[starts[:, None] + backend.xp_of(stream).arange(length)]


def consecutive_windows(stream, length):
    """The stream cut into non-overlapping windows, the incomplete last one dropped: (n, length)."""
    n = len(stream) // length
    return stream[:n * length].reshape(n, length)


def evaluate(model, windows, tokenizer, batch_size=64, seed=0):
    """Mean loss (nats per predicted token) over windows (n, window_length). The masked LM's
    masks are drawn from a generator seeded with `seed`, so two evaluations compare."""
    rng = backend.xp_of(windows).random.default_rng(seed)
    total, count = 0.0, 0
    with inference(model):
        for i in range(0, len(windows), batch_size):
            inputs, targets = inputs_and_targets(windows[i:i + batch_size], model.config.objective,
                                                 tokenizer, rng)
            total += lm_loss(model(inputs), targets, reduction="sum").item()
            count += int((targets != IGNORE_INDEX).sum())
    return total / count


# --- checkpoints ------------------------------------------------------------------------------

def save_checkpoint(model, tokenizer, directory):
    """Write model.safetensors, tokenizer.json and config.json into `directory` (each file
    written to a temporary name, then renamed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    io.save(model.state_dict(), directory / "model.safetensors")
    tokenizer.save(directory / "tokenizer.json")
    with io.atomic_write(directory / "config.json") as f:
        f.write(json.dumps(dataclasses.asdict(model.config), indent=2).encode("utf-8"))


def load_checkpoint(directory):
    """(model, tokenizer) saved by `save_checkpoint`."""
    directory = Path(directory)
    config = LMConfig(**json.loads((directory / "config.json").read_text(encoding="utf-8")))
    model = build_model(config)
    model.load_state_dict(io.load(directory / "model.safetensors"))
    return model, BPETokenizer.load(directory / "tokenizer.json")


# --- the command: python -m minivlm train-lm ----------------------------------------------------

# The masked LM learns from the 15 % of tokens it masks: it needs about twice the steps.
DEFAULT_STEPS = {"causal": 800, "mlm": 1600}


def add_arguments(parser):
    parser.add_argument("--objective", choices=OBJECTIVES, default="causal",
                        help="causal: predict the next token (GPT); mlm: fill in masked tokens "
                             "(RoBERTa)")
    defaults = ", ".join(f"{steps} {objective}" for objective, steps in DEFAULT_STEPS.items())
    parser.add_argument("--steps", type=int, default=None,
                        help=f"optimizer steps (default: {defaults})")
    parser.add_argument("--batch-size", type=int, default=32, help="windows per step")
    parser.add_argument("--seq-len", type=int, default=32, help="tokens per window (the context)")
    parser.add_argument("--width", type=int, default=64, help="model width D")
    parser.add_argument("--layers", type=int, default=2, help="Transformer blocks")
    parser.add_argument("--heads", type=int, default=4, help="attention heads")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (AdamW)")
    parser.add_argument("--vocab-size", type=int, default=1024,
                        help="BPE vocabulary size when the tokenizer is trained")
    parser.add_argument("--sentences", type=int, default=20000,
                        help="training sentences drawn from the built-in corpus")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature")
    parser.add_argument("--top-k", type=int, default=20, help="sample among the k likeliest")
    parser.add_argument("--out", default=None,
                        help="checkpoint directory (default runs/lm-OBJECTIVE); a tokenizer.json "
                             "already there is reused")
    parser.add_argument("--seed", type=int, default=0)


def run(args):
    manual_seed(args.seed)
    out = Path(args.out or f"runs/lm-{args.objective}")
    train_sentences = corpus(args.sentences, seed=args.seed)
    held_out = held_out_sentences(train_sentences, seed=args.seed)
    tokenizer = tokenizer_for(out, train_sentences, args.vocab_size)

    config = LMConfig(args.objective, tokenizer.vocab_size, args.seq_len, args.width, args.layers,
                      args.heads)
    model = build_model(config)
    print(f"{args.objective} LM: {model.num_parameters():,} parameters, {config}")
    steps = DEFAULT_STEPS[args.objective] if args.steps is None else args.steps
    train(model, tokenizer, token_stream(train_sentences, tokenizer), steps, args.batch_size,
          args.lr)

    windows = consecutive_windows(token_stream(held_out, tokenizer), window_length(config))
    loss = evaluate(model, windows, tokenizer)
    predicted = "next-token" if args.objective == "causal" else "masked-token"
    print(f"held-out ({len(held_out)} sentences not seen in training): {predicted} loss "
          f"{loss:.4f} nats, perplexity {math.exp(loss):.3f}")
    save_checkpoint(model, tokenizer, out)
    print(f"saved model.safetensors, tokenizer.json, config.json in {out}")
    if args.objective == "causal":
        show_samples(model, tokenizer, held_out[:5], args.temperature, args.top_k)
    else:
        show_filled_masks(model, tokenizer, held_out[:5])
    return 0


def held_out_sentences(train_sentences, seed, n=1000):
    """Up to n sentences from another draw of the corpus that are not among train_sentences."""
    seen = set(train_sentences)
    return [s for s in corpus(n, seed=seed + 1) if s not in seen]


def tokenizer_for(directory, sentences, vocab_size):
    """The tokenizer saved in `directory`, or a new one trained on `sentences`."""
    path = Path(directory) / "tokenizer.json"
    if path.exists():
        print(f"tokenizer: loaded {path}")
        return BPETokenizer.load(path)
    tokenizer = BPETokenizer.train(sentences, vocab_size)
    print(f"tokenizer: trained on {len(sentences)} sentences, vocabulary {tokenizer.vocab_size}")
    return tokenizer


def train(model, tokenizer, stream, steps, batch_size, lr, weight_decay=0.1, max_grad_norm=1.0):
    """AdamW on random windows of `stream`: linear warm-up over the first 10 % of the steps, then
    cosine decay to lr/10; weight decay on matrices only (nanoGPT); gradients clipped to norm 1."""
    params = list(model.parameters())
    optimizer = AdamW(decay_matrices_only(params), lr=lr, betas=(0.9, 0.95),
                      weight_decay=weight_decay)
    schedule = cosine_schedule(optimizer, warmup_steps=steps // 10, total_steps=steps,
                               min_lr=lr / 10)
    rng = backend.rng(backend.xp_of(stream))
    length = window_length(model.config)
    model.train()
    bar = progress(range(steps), desc="train", unit="tok", scale=batch_size * length)
    for _ in bar:
        inputs, targets = inputs_and_targets(random_windows(stream, batch_size, length, rng),
                                             model.config.objective, tokenizer, rng)
        loss = lm_loss(model(inputs), targets)
        optimizer.zero_grad()
        loss.backward()
        clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        schedule.step()
        bar.set(loss=loss.item())


def show_samples(model, tokenizer, sentences, temperature, top_k):
    """Print each sentence's first half and the model's sampled continuation."""
    print(f"samples (temperature {temperature}, top-k {top_k}): prompt | continuation")
    xp = backend.default_xp()
    for sentence in sentences:
        words = sentence.split()
        prompt = " ".join(words[:max(1, len(words) // 2)])
        prompt_ids = xp.asarray([[tokenizer.bos_id, *tokenizer.encode(prompt)]])
        ids = generate(model, prompt_ids, max_new_tokens=30, temperature=temperature, top_k=top_k,
                       eos_id=tokenizer.eos_id)
        continuation = backend.to_numpy(ids[0, prompt_ids.shape[1]:]).tolist()
        if tokenizer.eos_id in continuation:
            continuation = continuation[:continuation.index(tokenizer.eos_id)]
        print(f"  {prompt} |{tokenizer.decode(continuation)}")


def show_filled_masks(model, tokenizer, sentences):
    """Hide the last word of each sentence that is a single token behind <mask>; print the
    model's guess beside the hidden word."""
    print("fill-mask: masked sentence -> filled (hidden word)")
    for sentence in sentences:
        if len(tokenizer.encode(sentence)) + 2 > model.config.context_length:
            continue                                        # with <s> and </s> it does not fit
        words = sentence.split(" ")
        bare = [word.rstrip(".?,") for word in words]
        single = [i for i in range(1, len(words)) if len(tokenizer.encode(" " + bare[i])) == 1]
        if not single:
            continue
        i = single[-1]
        masked = " ".join(words[:i] + ["<mask>" + words[i][len(bare[i]):]] + words[i + 1:])
        print(f"  {masked} -> {fill_mask(model, tokenizer, masked)} ({bare[i]})")

"""Generation, one path for every decoder (the GPT-2-style CausalLM, the Llama-style LM, the VLM):
read the prompt once, then produce one token at a time, each step feeding only the new token
and reusing every earlier key and value from a KV cache (nn.KVCache).

    ids = model.generate(input_ids, max_new_tokens=20)                       # greedy
    ids = model.generate(input_ids, 20, do_sample=True, temperature=0.8, top_k=50, top_p=0.9)

A decoder generates through GenerationMixin when its forward is

    forward(input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
            inputs_embeds=None, logits_to_keep=0) -> logits (B, T, vocab)

(transformers' names): input_ids (B, T) or inputs_embeds (B, T, D) — a VLM passes the prompt's
embeddings with the image spliced in, so the image is encoded once; attention_mask (B, S) with 1
for real tokens and 0 for padding, S counting the cached positions too; past_key_values a
KVCache that the call reads and extends; logits_to_keep=1 computes the last position's logits
only (0: all). The helpers below give such a forward its positions, its masks and its input
embeddings.

Batched prompts of different lengths are left-padded (padding first, attention mask 0 there):
each row's positions count its real tokens only, no token attends to padding, and every row's
next token sits in the last column.
"""
from .. import backend, nn
from .. import functional as F
from ..autograd import Tensor, no_grad


def _data(x):
    return x.array if isinstance(x, Tensor) else x


def input_embeddings(embed_tokens, input_ids=None, inputs_embeds=None):
    """The (B, T, D) input of a decoder: embed_tokens(input_ids), or inputs_embeds as given."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("a decoder takes exactly one of input_ids (B, T) and inputs_embeds "
                         "(B, T, D)")
    if inputs_embeds is not None:
        if inputs_embeds.ndim != 3:
            raise ValueError(f"inputs_embeds must be (B, T, D), got shape "
                             f"{tuple(inputs_embeds.shape)}")
        return inputs_embeds
    if _data(input_ids).ndim != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
    return embed_tokens(input_ids)


def past_length(past_key_values):
    """How many positions a KVCache (or None) holds."""
    return 0 if past_key_values is None else past_key_values.get_seq_length()


def padding_mask(attention_mask, batch, key_length):
    """attention_mask (B, S) of 1 / 0 (or True / False) -> a bool array, True at the keys that
    may be attended to (real tokens), checked against the batch and the key length S."""
    if attention_mask is None:
        return None
    mask = _data(attention_mask)
    if tuple(mask.shape) != (batch, key_length):
        raise ValueError(f"attention_mask must be (batch, cached + new positions) = "
                         f"({batch}, {key_length}), got shape {tuple(mask.shape)}")
    return mask.astype(bool)


def position_ids_for(mask, past, length, xp):
    """(B, length) positions of the new tokens, or (1, length) without a mask. With a mask (bool,
    (B, past + length)) each row counts its real tokens: the first real token is position 0
    (padding gets 1, which nothing reads) — as transformers' generate."""
    if mask is None:
        return xp.arange(past, past + length)[None]
    positions = xp.cumsum(mask, axis=-1) - 1
    return xp.where(mask, positions, 1)[:, past:]


def decoder_causal_mask(length, key_length, device):
    """(length, key_length) bool Tensor, True where a query may NOT attend (nn's convention): the
    queries are the last `length` of key_length positions (after the cached ones), so query i
    sits at key_length − length + i and sees the keys up to there."""
    xp = backend.module(device)
    return Tensor(xp.triu(xp.ones((length, key_length), dtype=bool), k=key_length - length + 1))


def allowed_keys(mask, length, key_length, device):
    """The bool (B | 1, 1, length, key_length) mask of F.scaled_dot_product_attention, True where
    a query may attend: causal (the queries are the last `length` positions) and never to
    padding. None where nothing is masked (one new token, no padding)."""
    if mask is None and length == 1:
        return None
    causal = ~decoder_causal_mask(length, key_length, device).array
    return causal[None, None] if mask is None else causal & mask[:, None, None, :]


# --- choosing the next token -----------------------------------------------------------------

def warped_logits(logits, temperature=1.0, top_k=None, top_p=None):
    """Logits (B, V) of the next token as sampling sees them, transformers' warpers in order:
    divided by temperature, then −inf outside the top_k largest, then −inf outside the top_p
    nucleus (the fewest most likely tokens whose probability adds up to ≥ top_p: a token goes
    when the tokens less likely than it and it together hold ≤ 1 − top_p; the likeliest stays)."""
    xp = backend.xp_of(logits)
    logits = logits / logits.dtype.type(temperature)
    if top_k is not None:
        kth_largest = xp.sort(logits, axis=-1)[:, -min(top_k, logits.shape[-1]), None]
        logits = xp.where(logits < kth_largest, -xp.inf, logits)
    if top_p is not None and top_p < 1:
        order = xp.argsort(logits, axis=-1)                            # ascending
        ascending = xp.take_along_axis(logits, order, axis=-1)
        probs = xp.exp(ascending - ascending[:, -1:])
        cumulative = xp.cumsum(probs / probs.sum(axis=-1, keepdims=True), axis=-1)
        drop_sorted = cumulative <= 1 - top_p
        drop_sorted[:, -1] = False
        drop = xp.zeros_like(drop_sorted)
        drop[xp.arange(len(logits))[:, None], order] = drop_sorted
        logits = xp.where(drop, -xp.inf, logits)
    return logits


def next_tokens(logits, do_sample, temperature, top_k, top_p):
    """(B, V) logits of the last position -> (B,) ids: the argmax (greedy), or a sample of
    softmax(warped logits) drawn with the backend's generator (minivlm.manual_seed)."""
    xp = backend.xp_of(logits)
    if not do_sample:
        return xp.argmax(logits, axis=-1)
    logits = warped_logits(logits, temperature, top_k, top_p)
    gumbel = -xp.log(-xp.log(backend.rng(xp).random(logits.shape)))
    return xp.argmax(logits + gumbel, axis=-1)    # the Gumbel-max trick: a sample of softmax


def check_sampling(max_new_tokens, temperature, top_k, top_p):
    if max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")
    if not temperature > 0:
        raise ValueError(f"generate: temperature must be > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"generate: top_k must be >= 1 (or None), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"generate: top_p must be in (0, 1] (or None), got {top_p}")


class GenerationMixin:
    """`generate` for a decoder Module with the forward above and get_input_embeddings(). A model
    whose prompt holds more than token ids (a VLM: images) overrides prompt_embeddings."""

    def prompt_embeddings(self, input_ids=None, inputs_embeds=None):
        """The prompt's (B, T, D) input embeddings, computed once before the first step."""
        return input_embeddings(self.get_input_embeddings(), input_ids, inputs_embeds)

    def generate(self, input_ids=None, max_new_tokens=20, do_sample=False, temperature=1.0,
                 top_k=None, top_p=None, eos_token_id=None, attention_mask=None, use_cache=True,
                 inputs_embeds=None, pad_token_id=None, streamer=None, suppress_tokens=None,
                 **prompt_inputs):
        """Continue each prompt by up to max_new_tokens tokens, as transformers' generate.

        input_ids (B, T) integer array, Tensor or nested list (left-padded, with attention_mask
        (B, T) 0 at the padding, for prompts of different lengths) -> ids (B, T + n), the prompt then
        the n <= max_new_tokens new tokens; with inputs_embeds (B, T, D) instead, the new tokens
        alone (B, n). Greedy unless do_sample (then temperature, top_k, top_p shape the
        distribution; minivlm.manual_seed makes it reproducible). A row that has produced
        eos_token_id (an id or a list of ids) is finished: pad_token_id (default: the eos id)
        fills the rest of its row; generation stops once every row is finished.
        use_cache=False recomputes the whole sequence for each token (the same ids, slower).
        streamer: called with each step's new ids (B,) as they come (to print them).
        suppress_tokens: ids never generated (their logits set to -inf), as transformers'.
        prompt_inputs: the rest of the prompt, for prompt_embeddings (a VLM's pixel_values).
        """
        check_sampling(max_new_tokens, temperature, top_k, top_p)
        if input_ids is not None and not isinstance(input_ids, Tensor) \
                and not backend.is_array(input_ids):
            input_ids = backend.default_xp().asarray(input_ids)       # lists of ids
        with nn.evaluating(self), no_grad():
            embeds = self.prompt_embeddings(input_ids, inputs_embeds, **prompt_inputs)
        xp, device = backend.xp_of(embeds.array), embeds.device
        batch, length = embeds.shape[:2]
        mask = (xp.ones((batch, length), dtype=bool) if attention_mask is None else
                padding_mask(backend.to_backend(_data(attention_mask), device), batch, length))
        eos = None if eos_token_id is None else xp.asarray(eos_token_id).reshape(-1)
        if pad_token_id is None and eos is not None:
            pad_token_id = int(eos[0])
        finished = xp.zeros(batch, dtype=bool)
        new_ids = []
        with nn.evaluating(self), no_grad():
            cache = nn.KVCache() if use_cache else None
            logits = self(inputs_embeds=embeds, attention_mask=mask, past_key_values=cache,
                          logits_to_keep=1)
            for step in range(max_new_tokens):
                last = logits.array[:, -1]
                if suppress_tokens is not None:
                    last = last.copy()
                    last[:, xp.asarray(suppress_tokens)] = -xp.inf
                ids = next_tokens(last, do_sample, temperature, top_k, top_p)
                if eos is not None:
                    ids = xp.where(finished, pad_token_id, ids)
                    finished |= xp.isin(ids, eos)
                new_ids.append(ids)
                if streamer is not None:
                    streamer(ids)
                if step == max_new_tokens - 1 or finished.all():
                    break
                mask = xp.concatenate([mask, xp.ones((batch, 1), dtype=bool)], axis=1)
                if use_cache:
                    logits = self(ids[:, None], attention_mask=mask, past_key_values=cache,
                                  logits_to_keep=1)
                else:   # the whole sequence again: the prompt and every new token
                    new = self.get_input_embeddings()(xp.stack(new_ids, axis=1))
                    logits = self(inputs_embeds=F.cat([embeds, new], dim=1), attention_mask=mask,
                                  logits_to_keep=1)
        new = xp.stack(new_ids, axis=1) if new_ids else xp.zeros((batch, 0), dtype="int64")
        if input_ids is None:
            return new
        prompt = backend.to_backend(_data(input_ids), device)
        return xp.concatenate([prompt, new.astype(prompt.dtype)], axis=1)

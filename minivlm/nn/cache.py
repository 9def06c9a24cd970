"""The KV cache of a decoder: generating token t+1 needs the keys and values of tokens 1..t, which
do not change once computed (each position attends only to earlier ones). So each attention layer
keeps them, and a step computes q, k, v for the new tokens only and attends to all keys so far:

    cache = KVCache()
    logits = model(prompt_ids, past_key_values=cache)          # fills the cache: T positions
    logits = model(next_ids, past_key_values=cache)            # 1 new position, T + 1 keys

(transformers' DynamicCache). cache[i] is layer i's LayerCache, which a model hands to layer i.
"""
from .. import functional as F


class LayerCache:
    """One attention layer's keys and values so far, each (B, heads, S, head_dim), or None."""

    def __init__(self):
        self.keys = self.values = None

    def update(self, keys, values):
        """Append this step's keys and values (B, heads, T, head_dim); -> all of them so far,
        (B, heads, S + T, head_dim) each."""
        if self.keys is not None:
            keys, values = F.cat([self.keys, keys], dim=-2), F.cat([self.values, values], dim=-2)
        self.keys, self.values = keys, values
        return keys, values


class KVCache:
    """The LayerCache of every attention layer of a decoder, made as they are first asked for."""

    def __init__(self):
        self.layers = []

    def __getitem__(self, layer_idx):
        while len(self.layers) <= layer_idx:
            self.layers.append(LayerCache())
        return self.layers[layer_idx]

    def get_seq_length(self):
        """The number of positions cached (0 before the first step)."""
        first = self.layers[0].keys if self.layers else None
        return 0 if first is None else first.shape[-2]

"""Write the decoder fixtures: tests/fixtures/llama_tiny/ and gpt2_tiny/ (random-weight
transformers LlamaForCausalLM and GPT2LMHeadModel, saved with save_pretrained, with
expected.npz), and tests/fixtures/bpe_tokenizer/ (a byte-level BPE tokenizer.json trained with
the `tokenizers` package, as SmolLM2 ships one, with expected.json: its encodings and decodings).

llama_tiny has odd sizes and every Llama feature that matters: grouped-query attention (6 query
heads sharing 2 key/value heads), a head_dim (4) that is not hidden_size / heads (5), an untied
lm_head, rope_theta 500 (not the default 10000) and rms_norm_eps 1e-5. expected.npz holds
  input_ids, attention_mask   two prompts, the second left-padded (mask 0 there)
  logits                      transformers' logits of the unpadded first prompt, float64
  padded_logits               of the left-padded batch with its mask, float64 (real positions
                              are what count)
  labels, loss                labels with -100 entries and transformers' loss for them, float64
  generated                   transformers' greedy generate (float32, as saved) of the padded
                              batch, max_new_tokens=10, stopping at the config's eos_token_id
gpt2_tiny's expected.npz has the same entries.

    PYTHONPATH=. python tests/make_decoder_fixtures.py     # needs torch, transformers, tokenizers
"""
import json

import numpy as np

from make_vision_fixtures import FIXTURES, randomize

MAX_NEW_TOKENS = 10
TOKENIZER_TEXTS = [
    "the red circle is above the blue square.",
    "In 2024, 3.14159 apples cost $42!",
    "  leading spaces,\ttabs\nand newlines\n\n",
    "<|im_start|>user\nhello there<|im_end|>",
    "naïve café — 東京 😀 ٣",
    "don't you'll we've I'M",
    "version  2 of  10,\n 42 x  3",     # two spaces before a digit: Digits splits them off first
    "def f(x):\n    return  2 * x  + 1\n",
    "",
]


def tiny_llama(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=61, hidden_size=30, intermediate_size=29, num_hidden_layers=2,
                         num_attention_heads=6, num_key_value_heads=2, head_dim=4,
                         rope_theta=500.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                         max_position_embeddings=64, bos_token_id=1, eos_token_id=2)
    return randomize(LlamaForCausalLM(config), seed)


def tiny_gpt2(seed=0):
    from transformers import GPT2Config, GPT2LMHeadModel
    config = GPT2Config(vocab_size=53, n_positions=24, n_embd=12, n_layer=2, n_head=3,
                        bos_token_id=1, eos_token_id=2)
    return randomize(GPT2LMHeadModel(config), seed)


def prompts(vocab_size, rng, pad_id=0):
    """Two prompts of 9 and 6 tokens (ids >= 3), the second left-padded with pad_id."""
    ids = rng.integers(3, vocab_size, size=(2, 9))
    mask = np.ones((2, 9), dtype=np.int64)
    ids[1, :3], mask[1, :3] = pad_id, 0
    return ids, mask


def expected_outputs(model, rng):
    """What transformers computes for the fixture's inputs (see the module docstring)."""
    import copy

    import torch
    ids, mask = prompts(model.config.vocab_size, rng)
    labels = ids.copy()
    labels[0, [2, 5]] = labels[1, :3] = -100
    wide = copy.deepcopy(model).double()
    with torch.no_grad():
        logits = wide(torch.from_numpy(ids[:1])).logits.numpy()
        padded = wide(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
        loss = wide(torch.from_numpy(ids), labels=torch.from_numpy(labels)).loss.numpy()
        generated = model.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                   max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                   pad_token_id=model.config.eos_token_id).numpy()
    return dict(input_ids=ids, attention_mask=mask, logits=logits, padded_logits=padded,
                labels=labels, loss=loss, generated=generated)


def train_tokenizer():
    """A byte-level BPE as SmolLM2's: digits split one by one, then GPT-2's ByteLevel; special
    tokens first, so byte and merge ids are not minivlm's own numbering."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from minivlm.data.text import corpus
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=420,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    # the texts 20 times, so that runs of spaces ("ĠĠ") get merges: then splitting the digits off
    # first (" 2" of "of  2" no longer joins the space before it) changes the tokens
    tokenizer.train_from_iterator(corpus(400, seed=3) + TOKENIZER_TEXTS * 20, trainer)
    return tokenizer


def main():
    import tokenizers
    import torch
    import transformers

    from minivlm.io import save_npz
    versions = np.array([f"torch {torch.__version__}", f"transformers {transformers.__version__}"])
    for name, model, seed in (("llama_tiny", tiny_llama(), 1), ("gpt2_tiny", tiny_gpt2(), 2)):
        model.save_pretrained(FIXTURES / name)
        outputs = expected_outputs(model, np.random.default_rng(seed))
        save_npz({**outputs, "versions": versions}, FIXTURES / name / "expected.npz")

    tokenizer = train_tokenizer()
    directory = FIXTURES / "bpe_tokenizer"
    directory.mkdir(exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    encodings = [tokenizer.encode(text).ids for text in TOKENIZER_TEXTS]
    expected = {"tokenizers": tokenizers.__version__, "texts": TOKENIZER_TEXTS, "ids": encodings,
                "decoded": [tokenizer.decode(ids, skip_special_tokens=False) for ids in encodings]}
    (directory / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()

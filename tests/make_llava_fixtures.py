"""Write tests/fixtures/llava_tiny/: a random-weight transformers LlavaForConditionalGeneration
saved with save_pretrained (config.json + model.safetensors, bfloat16 weights), and expected.npz
with its inputs and what transformers computes from them.

Odd sizes throughout: a CLIP vision tower 24 wide with 3 heads, 2 blocks, QuickGELU, 20×20
images in 4×4 patches (25 features per image, the class token dropped, read from the output of
block 0: vision_feature_layer -2); a Llama decoder 30 wide with grouped-query attention (6 query
heads sharing 2 key/value heads, head_dim 4), rope_theta 500, rms_norm_eps 1e-5, an untied
lm_head, 53 tokens; the image token 50 inside the vocabulary. expected.npz holds

  input_ids, attention_mask   two prompts, 3 and 1 text tokens, one image's 25 image tokens, 4
                              and 3 text tokens; the second left-padded (mask 0 there)
  pixel_values                the two images, float32
  logits                      transformers' logits of the padded batch, float64
  labels, loss                labels -100 on the padding, the prompt and the image tokens, and
                              transformers' `labels=` loss for them (shifted; transformers
                              computes it in float32 even in a float64 model)
  generated                   transformers' greedy generate (float32) of the padded batch with
                              its images, max_new_tokens=8, stopping at eos_token_id 2

The float64 outputs are computed from the saved weights widened exactly, so a float64 load can
be compared closely.

    PYTHONPATH=. python tests/make_llava_fixtures.py     # needs torch and transformers

The tests import the helpers below for their live comparisons.
"""
import numpy as np

from make_vision_fixtures import FIXTURES, randomize

MAX_NEW_TOKENS = 8
EOS_TOKEN_ID = 2
VISION = dict(hidden_size=24, intermediate_size=13, num_hidden_layers=2, num_attention_heads=3,
              image_size=20, patch_size=4, hidden_act="quick_gelu", layer_norm_eps=1e-5)
TEXT = dict(vocab_size=53, hidden_size=30, intermediate_size=13, num_hidden_layers=2,
            num_attention_heads=6, num_key_value_heads=2, head_dim=4, rope_theta=500.0,
            rms_norm_eps=1e-5, tie_word_embeddings=False, max_position_embeddings=64,
            bos_token_id=1, eos_token_id=EOS_TOKEN_ID)
LLAVA = dict(image_token_index=50, image_seq_length=25, vision_feature_layer=-2,
             vision_feature_select_strategy="default", projector_hidden_act="gelu")


def hf_llava(seed=0, vision=None, text=None, **llava):
    """A transformers LlavaForConditionalGeneration with every parameter redrawn
    (make_vision_fixtures.randomize); vision, text and llava override the fixture's
    CLIPVisionConfig, LlamaConfig and LlavaConfig arguments."""
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration)
    config = LlavaConfig(vision_config=CLIPVisionConfig(**{**VISION, **(vision or {})}),
                         text_config=LlamaConfig(**{**TEXT, **(text or {})}),
                         **{**LLAVA, **llava})
    return randomize(LlavaForConditionalGeneration(config), seed)


def image_prompts(layouts, image_token_id, image_seq_length, vocab_size, rng, pad_id=0):
    """Left-padded prompts, one per layout: a layout lists the lengths of the text runs between
    images ([3, 4]: 3 text tokens, an image's image_seq_length image tokens, 4 text tokens).
    Text tokens are drawn from 3 .. vocab_size, never the image token; rows are padded on the
    left to the longest. -> (ids, attention_mask), both (rows, width)."""
    text_ids = [t for t in range(3, vocab_size) if t != image_token_id]
    rows = []
    for runs in layouts:
        row = [int(t) for t in rng.choice(text_ids, size=runs[0])]
        for run in runs[1:]:
            row += [image_token_id] * image_seq_length
            row += [int(t) for t in rng.choice(text_ids, size=run)]
        rows.append(row)
    width = max(map(len, rows))
    ids = np.full((len(rows), width), pad_id)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for r, row in enumerate(rows):
        ids[r, width - len(row):], mask[r, width - len(row):] = row, 1
    return ids, mask


def response_labels(ids, mask, image_token_id):
    """Labels for the fixture's loss: the ids after each row's last image token, -100 before
    (the prompt, the image tokens) and on the padding."""
    labels = np.where(mask == 1, ids, -100)
    for row in labels:
        row[:np.flatnonzero(row == image_token_id)[-1] + 1] = -100
    return labels


def expected_outputs(model, rng):
    """What transformers computes for the fixture's inputs (see the module docstring)."""
    import copy

    import torch
    config = model.config
    ids, mask = image_prompts([[3, 4], [1, 3]], config.image_token_id, config.image_seq_length,
                              config.text_config.vocab_size, rng)
    size = config.vision_config.image_size
    pixels = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    labels = response_labels(ids, mask, config.image_token_id)
    inputs = dict(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    wide = copy.deepcopy(model).double()
    with torch.no_grad():
        out = wide(**inputs, pixel_values=torch.from_numpy(pixels).double(),
                   labels=torch.from_numpy(labels))
        generated = model.generate(**inputs, pixel_values=torch.from_numpy(pixels),
                                   max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                   eos_token_id=EOS_TOKEN_ID, pad_token_id=EOS_TOKEN_ID)
    return dict(input_ids=ids, attention_mask=mask, pixel_values=pixels,
                logits=out.logits.numpy(), labels=labels, loss=out.loss.numpy(),
                generated=generated.numpy())


def main():
    import copy

    import torch
    import transformers

    from minivlm.io import save_npz
    model = hf_llava(seed=5)          # a seed whose greedy answers vary from token to token
    with torch.no_grad():
        for p in model.parameters():       # the values bfloat16 holds (not the rotary buffers)
            p.copy_(p.to(torch.bfloat16))
    directory = FIXTURES / "llava_tiny"
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(directory)
    versions = np.array([f"torch {torch.__version__}", f"transformers {transformers.__version__}"])
    outputs = expected_outputs(model, np.random.default_rng(1))
    save_npz({**outputs, "versions": versions}, directory / "expected.npz")


if __name__ == "__main__":
    main()

"""Write tests/fixtures/clip_tiny/ and tests/fixtures/clip_tiny_gelu/: tiny random-weight
transformers CLIPModels saved with save_pretrained (config.json + model.safetensors), and
expected.npz with their inputs and what transformers computes from them: get_image_features,
get_text_features and logits_per_image, in float64 from the saved weights.

clip_tiny       QuickGELU; text 24 wide, 2 heads; vision 40 wide, 4 heads; 2 layers each; 32×32
                images in 8×8 patches; a 77-token context; float32; eos_token_id 2, for which
                transformers reads the text feature at argmax(ids), as OpenAI.
clip_tiny_gelu  exact GELU; text 40 wide, 4 heads; vision 24 wide, 2 heads; MLPs 37 and 53 wide;
                a 12-token context; bfloat16 weights; eos_token_id an ordinary id, read at its
                first position. Row 0 holds an added token above the end-of-text id, so argmax
                would read elsewhere; row 1 is padded with end-of-text tokens.

Token ids come from minivlm's CLIPTokenizer (OpenAI-exact). A 49,408-row embedding is not tiny,
so the ids are renumbered by rank among the ids used (`compact_ids`): the order is kept, and the
end-of-text token stays the highest id.

    PYTHONPATH=. python tests/make_clip_fixtures.py     # needs torch and transformers

The tests import the helpers below for their live comparisons.
"""
import math
from pathlib import Path

import numpy as np

from make_vision_fixtures import randomize

FIXTURES = Path(__file__).with_name("fixtures")
CAPTIONS = ["a photo of a cat.", "a diagram of two dogs", "a small red circle in the top left"]


def compact_ids(ids):
    """Token ids renumbered 0, 1, ... by rank among those present: (ids, vocabulary size)."""
    used = np.unique(ids)
    return np.searchsorted(used, ids), len(used)


def hf_clip(text, vision, projection_dim, seed=0, dtype="float32"):
    """A transformers CLIPModel with every parameter redrawn (make_vision_fixtures.randomize)
    and logit_scale = ln(1/0.07); text and vision are CLIPTextConfig / CLIPVisionConfig
    keyword arguments."""
    import torch
    from transformers import CLIPConfig, CLIPModel
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    model = randomize(CLIPModel(config), seed)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1 / 0.07))
    return model.to(getattr(torch, dtype))


def hf_outputs(model, pixels, ids):
    """{image_features, text_features, logits_per_image}: float64 NumPy arrays computed in
    float64 from the model's weights (widened exactly from float32 or bfloat16)."""
    import copy

    import torch
    model = copy.deepcopy(model).double().eval()
    pixels, ids = torch.from_numpy(pixels.astype(np.float64)), torch.from_numpy(ids)
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels)
        text = model.get_text_features(input_ids=ids)
        logits = model(input_ids=ids, pixel_values=pixels).logits_per_image
    # transformers >= 5 returns the projected features as pooler_output
    image, text = (getattr(x, "pooler_output", x) for x in (image, text))
    return dict(image_features=image.numpy(), text_features=text.numpy(),
                logits_per_image=logits.numpy())


def write_fixture(name, model, pixels, ids):
    import torch
    import transformers

    from minivlm.io import save_npz
    model.save_pretrained(FIXTURES / name)
    versions = np.array([f"torch {torch.__version__}", f"transformers {transformers.__version__}"])
    save_npz(dict(pixels=pixels, input_ids=ids, **hf_outputs(model, pixels, ids),
                  versions=versions), FIXTURES / name / "expected.npz")


def main():
    from minivlm.tokenizers import CLIPTokenizer
    rng = np.random.default_rng(0)
    tokenizer = CLIPTokenizer()

    ids, vocab_size = compact_ids(tokenizer(CAPTIONS, context_length=77))
    text = dict(vocab_size=vocab_size, hidden_size=24, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                pad_token_id=0, bos_token_id=vocab_size - 2, eos_token_id=2)
    vision = dict(hidden_size=40, intermediate_size=160, num_hidden_layers=2,
                  num_attention_heads=4, image_size=32, patch_size=8, hidden_act="quick_gelu")
    pixels = rng.standard_normal((2, 3, 32, 32), dtype=np.float32)
    write_fixture("clip_tiny", hf_clip(text, vision, projection_dim=16, seed=0), pixels, ids)

    ids, vocab_size = compact_ids(tokenizer(CAPTIONS[:2], context_length=12))
    eos, added_token = vocab_size - 1, vocab_size
    ids[0, 2] = added_token                   # above eos: argmax(ids) would read here
    ids[1, ids[1].argmax() + 1:] = eos        # padded with end-of-text tokens
    text = dict(vocab_size=vocab_size + 1, hidden_size=40, intermediate_size=37,
                num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=12,
                hidden_act="gelu", layer_norm_eps=1e-6, pad_token_id=0,
                bos_token_id=vocab_size - 2, eos_token_id=eos)
    vision = dict(hidden_size=24, intermediate_size=53, num_hidden_layers=2,
                  num_attention_heads=2, image_size=32, patch_size=8, hidden_act="gelu",
                  layer_norm_eps=1e-6)
    pixels = rng.standard_normal((3, 3, 32, 32), dtype=np.float32)
    model = hf_clip(text, vision, projection_dim=12, seed=1, dtype="bfloat16")
    write_fixture("clip_tiny_gelu", model, pixels, ids)


if __name__ == "__main__":
    main()

"""The benchmark workloads: each one a step in minivlm and the same step in torch.

A `Workload` builds a step closure for either library on a device ("numpy"/"cupy" for minivlm,
"cpu"/"cuda" for torch); calling it runs one forward (+ backward + AdamW for training) and returns
its result on the host (the loss, or the output array), which also synchronises a GPU. The torch
side loads minivlm's initial weights where the model has a torch re-statement with the same
names, so the two first results can be compared. FLOPs are counted analytically: 2 per
multiply-add of every matrix product, ×3 for a step with backward (each product's two gradient
products cost as much as it); elementwise work, softmax and norms are not counted.

    from benchmarks.workloads import CPU_WORKLOADS
    step = CPU_WORKLOADS[0].minivlm_step("numpy"); step()
"""
import argparse
import dataclasses
from typing import Callable

import numpy as np

import minivlm as mv
import minivlm.functional as F
from minivlm.losses import clip_loss
from minivlm.models import LlamaConfig, LlamaForCausalLM, ViT, SwinTransformer, swin_t, vit_b16
from minivlm.models.clip import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig, clip_config
from minivlm.models.clip import VisionTransformer
from minivlm.models.text import TextTransformer
from minivlm.optim import AdamW

from . import attention as attention_benchmark
from . import vit as vit_benchmark

SEED = 0
LEARNING_RATE = 1e-3


@dataclasses.dataclass
class Workload:
    """name, kind ("training": forward + backward (+ optimizer), "inference" or "generation"),
    a one-line description, FLOPs per step, and the two step builders:
    minivlm(device) -> (step, model or None); torch(device, minivlm model or None) -> step
    (torch None: minivlm alone). target: the time ratio to reach (default: the kind's);
    tokens: tokens generated per step; repeats: at most so many timed rounds, and warmup=False
    skips the warm-up (for a step that takes minutes)."""
    name: str
    kind: str
    description: str
    flops: float
    minivlm: Callable
    torch: Callable | None
    target: float | None = None
    tokens: int | None = None
    repeats: int | None = None
    warmup: bool = True

    def minivlm_step(self, device="numpy"):
        return self.minivlm(device)[0]

    def torch_step(self, device="cpu", weights_from=None):
        return self.torch(device, weights_from)


# --- FLOP counts ---------------------------------------------------------------------------------

def encoder_macs(tokens, width, mlp_width, layers, attended=None):
    """Multiply-adds of `layers` Transformer blocks over one sequence of `tokens` tokens: per
    token 4·width² for q, k, v and the output projection, 2·width·mlp_width for the MLP, and
    2·attended·width for the scores and the weighted sum (attended: keys per query, default all)."""
    attended = tokens if attended is None else attended
    per_token = 4 * width ** 2 + 2 * width * mlp_width + 2 * attended * width
    return layers * tokens * per_token


def vit_macs(image, patch, width, layers, mlp_width, channels=3):
    """One image through a ViT (patch projection + blocks), without the head."""
    patches = (image // patch) ** 2
    return (patches * channels * patch ** 2 * width
            + encoder_macs(patches + 1, width, mlp_width, layers))


def swin_macs(config):
    """One image through a Swin Transformer: patch embedding, window blocks, merging, head."""
    side = config.image_size // config.patch_size
    macs = side ** 2 * config.num_channels * config.patch_size ** 2 * config.embed_dim
    for stage, depth in enumerate(config.depths):
        dim = config.stage_dim(stage)
        window = min(side, config.window_size)
        padded = -(-side // window) * window
        macs += encoder_macs(padded ** 2, dim, int(config.mlp_ratio * dim), depth, window ** 2)
        if stage < len(config.depths) - 1:
            side = (side + 1) // 2
            macs += side ** 2 * 4 * dim * 2 * dim
    return macs + config.stage_dim(len(config.depths) - 1) * config.num_classes


def clip_image_macs(vision, embed_dim):
    width = vision.width
    return vit_macs(vision.image_resolution, vision.patch_size, width, vision.layers,
                    vision.mlp_width or 4 * width) + width * embed_dim


def clip_text_macs(text, embed_dim, length):
    return encoder_macs(length, text.width, text.mlp_width or 4 * text.width, text.layers) \
        + text.width * embed_dim


# --- step builders --------------------------------------------------------------------------------

def _training_step(model, optimizer, loss_of, after_step=None):
    """zero_grad, loss = loss_of(model), backward, optimizer step (then after_step(model)), for
    minivlm and torch alike."""
    def step():
        optimizer.zero_grad()
        loss = loss_of(model)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step(model)
        return loss.item()
    return step


def _minivlm_inference_step(model, forward):
    model.eval()

    def step():
        with mv.no_grad():
            return forward(model).numpy()
    return step


def _torch_inference_step(model, forward):
    import torch
    model.eval()

    def step():
        with torch.no_grad():
            return forward(model).cpu().numpy()
    return step


def _torch_model(build, device, weights_from):
    """A torch re-statement built by `build()`, with minivlm's weights when given, on `device`."""
    from .torch_models import load_minivlm_weights
    model = build()
    if weights_from is not None:
        load_minivlm_weights(model, weights_from.state_dict())
    return model.to(device)


def _seeded(build):
    mv.manual_seed(SEED)
    return build()


def _to_torch(array, device):
    import torch
    return torch.from_numpy(array).to(device)


# --- the workloads -----------------------------------------------------------------------------

def attention(batch=32, tokens=197, width=768, heads=12):
    """Multi-head self-attention forward + backward (benchmarks/attention.py's layers and step)."""
    args = argparse.Namespace(width=width, heads=heads)
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((batch, tokens, width), dtype=np.float32)
    grad = rng.standard_normal((batch, tokens, width), dtype=np.float32)

    def ours(device):
        return attention_benchmark.minivlm_step(args, x, grad), None

    def theirs(device, weights_from):
        return attention_benchmark.torch_step(args, x, grad)

    return Workload("attention", "training",
                    f"multi-head self-attention fwd+bwd, {batch}×{tokens}×{width}, {heads} heads",
                    attention_benchmark.attention_flops(batch, tokens, width, heads), ours, theirs)


def vit_training(config, batch, name="vit_train"):
    """One ViT training step: cross-entropy on random labels, AdamW (benchmarks/vit.py's models)."""
    rng = np.random.default_rng(SEED)
    pixels = rng.standard_normal((batch, 3, config.image_size, config.image_size), dtype=np.float32)
    labels = rng.integers(0, config.num_classes, batch)

    def ours(device):
        model = _seeded(lambda: ViT(config)).to(device)
        x, y = mv.tensor(pixels, device=device), mv.tensor(labels, device=device)
        optimizer = AdamW(model.parameters(), lr=LEARNING_RATE)
        return _training_step(model, optimizer, lambda m: F.cross_entropy(m(x), y)), model

    def theirs(device, weights_from):
        import torch
        source = weights_from if weights_from is not None else _seeded(lambda: ViT(config))
        model = vit_benchmark.torch_vit(config, source.state_dict()).to(device)
        x, y = _to_torch(pixels, device), _to_torch(labels, device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
        return _training_step(model, optimizer,
                              lambda m: torch.nn.functional.cross_entropy(m(x), y))

    macs = vit_macs(config.image_size, config.patch_size, config.hidden_size,
                    config.num_hidden_layers, config.intermediate_size) \
        + config.hidden_size * config.num_classes
    return Workload(name, "training",
                    f"ViT training step (image {config.image_size}, patch {config.patch_size}, "
                    f"width {config.hidden_size}, depth {config.num_hidden_layers}), "
                    f"batch {batch}, AdamW", 3 * 2 * macs * batch, ours, theirs)


def clip_training(config, batch, name="clip_train"):
    """One CLIP training step on `batch` random (image, caption) pairs: symmetric contrastive loss,
    AdamW, then the logit scale clamped at ln 100."""
    rng = np.random.default_rng(SEED)
    size, text = config.vision.image_resolution, config.text
    pixels = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
    ids = rng.integers(0, text.vocab_size, (batch, text.context_length))

    def ours(device):
        model = _seeded(lambda: CLIP(config)).to(device)
        x, t = mv.tensor(pixels, device=device), mv.tensor(ids, device=device)
        optimizer = AdamW(model.parameters(), lr=LEARNING_RATE)
        step = _training_step(model, optimizer, lambda m: clip_loss(m(x, t)[0]),
                              lambda m: m.clamp_logit_scale_())
        return step, model

    def theirs(device, weights_from):
        import torch
        from . import torch_models
        model = _torch_model(lambda: torch_models.CLIP(config), device, weights_from)
        x, t = _to_torch(pixels, device), _to_torch(ids, device)

        def clamp(m):
            with torch.no_grad():
                m.logit_scale.clamp_(max=np.log(100))
        optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
        return _training_step(model, optimizer, lambda m: torch_models.clip_loss(m(x, t)), clamp)

    macs = clip_image_macs(config.vision, config.embed_dim) \
        + clip_text_macs(text, config.embed_dim, text.context_length) + batch * config.embed_dim
    return Workload(name, "training",
                    f"CLIP training step (images {size}, width {config.vision.width}, "
                    f"{config.vision.layers}+{text.layers} layers), batch {batch} pairs, AdamW",
                    3 * 2 * macs * batch, ours, theirs)


def small_clip_config():
    """Images 32, patch 4, width 128, 4 layers, 4 heads, MLP 512; text vocabulary 1000,
    32 positions, same widths; projection 64."""
    return CLIPConfig(64, CLIPVisionConfig(image_resolution=32, layers=4, width=128, patch_size=4,
                                           heads=4, mlp_width=512),
                      CLIPTextConfig(context_length=32, vocab_size=1000, width=128, layers=4,
                                     heads=4, mlp_width=512))


def clip_image_encoding(config, batch, name="clip_image"):
    """CLIP's image encoder, inference on random pixels (random weights)."""
    size = config.vision.image_resolution
    pixels = np.random.default_rng(SEED).standard_normal((batch, 3, size, size), dtype=np.float32)

    def ours(device):
        model = _seeded(lambda: VisionTransformer(config.vision, config.embed_dim)).to(device)
        x = mv.tensor(pixels, device=device)
        return _minivlm_inference_step(model, lambda m: m(x)), model

    def theirs(device, weights_from):
        from . import torch_models
        model = _torch_model(
            lambda: torch_models.VisionTransformer(config.vision, config.embed_dim), device,
            weights_from)
        x = _to_torch(pixels, device)
        return _torch_inference_step(model, lambda m: m(x))

    macs = clip_image_macs(config.vision, config.embed_dim)
    return Workload(name, "inference", f"CLIP image encoder ({size}², patch "
                    f"{config.vision.patch_size}, width {config.vision.width}), batch {batch}",
                    2 * macs * batch, ours, theirs)


def clip_text_encoding(config, batch, name="clip_text"):
    """CLIP's text encoder, inference on random full-length captions (random weights)."""
    text = config.text
    ids = np.random.default_rng(SEED).integers(0, text.vocab_size, (batch, text.context_length))

    def ours(device):
        model = _seeded(lambda: TextTransformer(text, config.embed_dim)).to(device)
        t = mv.tensor(ids, device=device)
        return _minivlm_inference_step(model, lambda m: m(t)), model

    def theirs(device, weights_from):
        from . import torch_models
        model = _torch_model(lambda: torch_models.TextTransformer(text, config.embed_dim), device,
                             weights_from)
        t = _to_torch(ids, device)
        return _torch_inference_step(model, lambda m: m(t))

    macs = clip_text_macs(text, config.embed_dim, text.context_length)
    return Workload(name, "inference", f"CLIP text encoder (width {text.width}, "
                    f"{text.layers} layers), batch {batch}×{text.context_length}",
                    2 * macs * batch, ours, theirs)


def swin_forward(config, batch, name="swin_t"):
    """Swin Transformer forward, inference on random pixels (random weights)."""
    size = config.image_size
    pixels = np.random.default_rng(SEED).standard_normal((batch, 3, size, size), dtype=np.float32)

    def ours(device):
        model = _seeded(lambda: SwinTransformer(config)).to(device)
        x = mv.tensor(pixels, device=device)
        return _minivlm_inference_step(model, lambda m: m(x)), model

    def theirs(device, weights_from):
        from . import torch_models
        model = _torch_model(lambda: torch_models.SwinTransformer(config), device, weights_from)
        x = _to_torch(pixels, device)
        return _torch_inference_step(model, lambda m: m(x))

    return Workload(name, "inference", f"Swin-T forward ({size}²), batch {batch}",
                    2 * swin_macs(config) * batch, ours, theirs)


def smollm2_135m_config():
    """SmolLM2-135M's shape: hidden 576, 30 layers, 9 query heads sharing 3 key/value heads,
    MLP 1536, vocabulary 49,152, tied embeddings, rope_theta 100,000."""
    return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                       num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                       rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
                       max_position_embeddings=8192, initializer_range=0.041666666666666664)


def llama_macs_per_token(config, attended):
    """Multiply-adds of one token through a Llama: q, k, v, o projections, the SwiGLU MLP and
    the attention over `attended` keys in every layer, then the LM head."""
    width, heads = config.hidden_size, config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    per_layer = width * (2 * heads + 2 * kv) + 3 * width * config.intermediate_size \
        + 2 * attended * heads
    return config.num_hidden_layers * per_layer + width * config.vocab_size


def llama_generation(batch, prompt=64, new_tokens=128, use_cache=True, name="llama_generate",
                     target=None, with_torch=True, repeats=None):
    """Greedy generation of new_tokens after a prompt of random ids, on a random
    SmolLM2-135M-shaped Llama: minivlm's generate against transformers' LlamaForCausalLM.generate
    (the same weights; no EOS, so every row runs the full length)."""
    config = smollm2_135m_config()
    ids = np.random.default_rng(SEED).integers(0, config.vocab_size, (batch, prompt))

    def ours(device):
        model = _seeded(lambda: LlamaForCausalLM(config)).to(device).eval()
        x = mv.tensor(ids, device=device).array

        def step():
            return mv.backend.to_numpy(model.generate(x, new_tokens, use_cache=use_cache))
        return step, model

    def theirs(device, weights_from):
        import torch
        import transformers
        source = weights_from if weights_from is not None else ours("numpy")[1]
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**fields)).eval()
        model.load_state_dict({name: torch.from_numpy(t.numpy())
                               for name, t in source.state_dict().items()}, strict=False)
        model.tie_weights()
        model.generation_config.eos_token_id = None
        model.to(device)
        x = _to_torch(ids, device)

        def step():
            with torch.no_grad():
                return model.generate(x, max_new_tokens=new_tokens, do_sample=False,
                                      use_cache=use_cache, pad_token_id=0).cpu().numpy()
        return step

    cached = sum(llama_macs_per_token(config, prompt + t) for t in range(new_tokens))
    uncached = sum(llama_macs_per_token(config, (prompt + t + 1) / 2) * (prompt + t)
                   for t in range(new_tokens))       # every position again, each step
    prompt_macs = prompt * llama_macs_per_token(config, prompt / 2)
    macs = batch * (cached + prompt_macs if use_cache else uncached)
    return Workload(name, "generation",
                    f"greedy generation of {new_tokens} tokens after {prompt}, batch {batch}, "
                    f"SmolLM2-135M-shaped Llama, KV cache {'on' if use_cache else 'off'}"
                    + ("" if with_torch else ", minivlm alone"),
                    2 * macs, ours, theirs if with_torch else None, target=target,
                    tokens=batch * new_tokens, repeats=repeats, warmup=repeats is None)


def train_vlm_llava():
    """The VLM of train-vlm's defaults (recipes.vlm.build_vlm): the shapes CLIP's vision tower
    (32², patch 8: 16 image tokens), the mlp2x_gelu projector and a 4-layer width-128 Llama
    (vocabulary 1024, image token id 1023), in float32."""
    from types import SimpleNamespace
    from minivlm.data.instructions import IMAGE
    from minivlm.recipes import clip as clip_recipe
    from minivlm.recipes import vlm
    settings = vlm.VLMSettings()
    vocab = settings.vocab_size          # the ids train-vlm's tokenizer would give
    tokenizer = SimpleNamespace(vocab_size=vocab, bos_id=1, eos_id=2,
                                special_tokens={IMAGE: vocab - 1})
    clip = CLIP(clip_recipe.shapes_clip_config(settings.image_size))
    decoder = LlamaForCausalLM(vlm.decoder_config(settings, tokenizer))
    return vlm.build_vlm(clip, decoder, tokenizer, settings)


def _vlm_inputs(model, batch, prompt):
    """A batch of prompts for minivlm's `model`: id 1 (a <s>), the image tokens, then random
    text ids; random images. -> (ids (B, T) int64, pixels (B, 3, R, R) float32)"""
    config = model.config
    rng = np.random.default_rng(SEED)
    text = rng.integers(2, config.image_token_id, (batch, prompt))
    image = np.full((batch, config.image_seq_length), config.image_token_id)
    ids = np.concatenate([np.ones((batch, 1), np.int64), image, text], axis=1)
    size = config.vision_config.image_resolution
    return ids, rng.standard_normal((batch, 3, size, size), dtype=np.float32)


def _vlm_prompt_macs(config, prompt):
    """Multiply-adds of one prompt (<s>, the image tokens, `prompt` text tokens) through a VLM:
    -> (the vision tower's blocks up to the feature layer, the projector and the decoder, the
    number of tokens)."""
    vision, text = config.vision_config, config.text_config
    tokens = 1 + config.image_seq_length + prompt
    tower = vit_macs(vision.image_resolution, vision.patch_size, vision.width,
                     config.feature_block, vision.mlp_width or 4 * vision.width)
    projector = config.image_seq_length * (vision.width + text.hidden_size) * text.hidden_size
    return tower, projector + tokens * llama_macs_per_token(text, tokens / 2), tokens


def _transformers_llava(model, device):
    """transformers' LlavaForConditionalGeneration reading minivlm's saved directory."""
    import tempfile
    import transformers
    with tempfile.TemporaryDirectory() as directory:
        mv.save_pretrained(model, directory)
        theirs = transformers.LlavaForConditionalGeneration.from_pretrained(directory)
    theirs.generation_config.eos_token_id = None
    return theirs.to(device)


def _response_labels(ids, response):
    """Labels of a stage-2 batch: the last `response` tokens supervised, -100 before."""
    return np.where(np.arange(ids.shape[1]) >= ids.shape[1] - response, ids, -100)


def llava_instruction_step(batch=32, prompt=40, response=8):
    """A stage-2 (instruction tuning) step of train-vlm's VLM, as train-vlm takes it
    (recipes.vlm: freeze_for, vlm_loss): the vision tower frozen, the loss on the last
    `response` tokens only, AdamW on the projector and the language model; against transformers'
    LlavaForConditionalGeneration with the same weights."""
    from minivlm.recipes import vlm

    def ours(device):
        model = vlm.freeze_for("instruct", _seeded(train_vlm_llava))
        ids, pixels = _vlm_inputs(model, batch, prompt)
        stage_batch = (ids, _response_labels(ids, response), np.ones_like(ids))
        trained = [p for p in model.parameters() if p.requires_grad]
        return _training_step(model, AdamW(trained, lr=LEARNING_RATE, weight_decay=0.0),
                              lambda m: vlm.vlm_loss(m, pixels, stage_batch)), model

    def theirs(device, weights_from):
        import torch
        source = weights_from if weights_from is not None else ours("numpy")[1]
        model = _transformers_llava(source, device)
        ids, pixels = _vlm_inputs(source, batch, prompt)
        model.model.vision_tower.requires_grad_(False)
        trained = [p for p in model.parameters() if p.requires_grad]
        x, y, images = (_to_torch(a, device) for a in (ids, _response_labels(ids, response),
                                                       pixels))
        return _training_step(model, torch.optim.AdamW(trained, lr=LEARNING_RATE,
                                                       weight_decay=0.0),
                              lambda m: m(input_ids=x, pixel_values=images, labels=y).loss)

    tower, rest, tokens = _vlm_prompt_macs(train_vlm_llava().config, prompt)
    return Workload("llava_instruct", "training",
                    f"train-vlm's stage-2 step (VLM of its defaults: {tokens} tokens, 16 of "
                    f"them the image's, loss on {response}), batch {batch}, vision tower frozen, "
                    f"AdamW", 2 * batch * (tower + 3 * rest), ours, theirs)   # the tower: forward


def llava_generation(batch, prompt=40, new_tokens=16, name="llava_generate"):
    """Greedy generation with an image by train-vlm's VLM (the image encoded once, KV cache):
    minivlm's generate against transformers' LlavaForConditionalGeneration.generate."""
    def ours(device):
        model = _seeded(train_vlm_llava).to(device).eval()
        ids, pixels = _vlm_inputs(model, batch, prompt)

        def step():
            return mv.backend.to_numpy(model.generate(ids, pixel_values=pixels,
                                                      max_new_tokens=new_tokens))
        return step, model

    def theirs(device, weights_from):
        import torch
        source = weights_from if weights_from is not None else ours("numpy")[1]
        model = _transformers_llava(source, device).eval()
        ids, pixels = _vlm_inputs(source, batch, prompt)
        x, images = _to_torch(ids, device), _to_torch(pixels, device)

        def step():
            with torch.no_grad():
                return model.generate(input_ids=x, pixel_values=images, do_sample=False,
                                      max_new_tokens=new_tokens, pad_token_id=0).cpu().numpy()
        return step

    config = train_vlm_llava().config
    tower, rest, tokens = _vlm_prompt_macs(config, prompt)
    decoding = sum(llama_macs_per_token(config.text_config, tokens + t)
                   for t in range(new_tokens))
    return Workload(name, "generation",
                    f"greedy generation of {new_tokens} tokens with an image by train-vlm's VLM "
                    f"({tokens} prompt tokens, 16 of them the image's), batch {batch}, KV cache "
                    f"on", 2 * batch * (tower + rest + decoding), ours, theirs,
                    tokens=batch * new_tokens)


def cpu_workloads():
    """The CPU suite of the "Performance" issue, then the generation workloads, in table
    order."""
    return [
        attention(),
        vit_training(vit_benchmark.benchmark_config(), batch=64),
        clip_training(small_clip_config(), batch=64),
        clip_image_encoding(clip_config("ViT-B/32"), batch=8),
        swin_forward(swin_t(), batch=2),
        clip_text_encoding(clip_config("ViT-B/32"), batch=64),
        llama_generation(1, name="llama_generate_b1", target=1.0),
        llama_generation(8, name="llama_generate_b8", target=1 / 0.8),
        llama_generation(1, use_cache=False, name="llama_generate_nocache", with_torch=False,
                         repeats=1),
        llava_instruction_step(),
        llava_generation(1, name="llava_generate_b1"),
        llava_generation(32, name="llava_generate_b32"),
    ]


def gpu_workloads():
    """The GPU comparison: ViT-B/16 and CLIP ViT-B/32 training steps."""
    return [
        vit_training(vit_b16(), batch=32, name="vit_b16_train"),
        clip_training(clip_config("ViT-B/32"), batch=128, name="clip_b32_train"),
    ]

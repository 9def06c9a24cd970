"""The LLaVA-style VLM: against transformers' LlavaForConditionalGeneration on the committed fixture
(logits, the loss with -100 labels, greedy generation) and live (logits and every gradient,
directories both ways, greedy generation), the image splice and its count check, the "default"
and "full" feature strategies, generation with an image (the uncached computation, the image
encoded once, left padding), finite differences, float32 on each backend, building from
trained parts, the GPT-2-style decoder and the config errors."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minivlm as mv
import minivlm.functional as F
from minivlm import io
from minivlm.models import (CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig, CausalLM,
                            LlamaConfig, LlamaForCausalLM, LlavaConfig,
                            LlavaForConditionalGeneration, LMConfig)
from minivlm.models.llava import LlavaMultiModalProjector, splice_image_features
from minivlm.pretrained import ARCHITECTURES
from minivlm.pretrained.llava import llava_config
from minivlm.testing import assert_close, gradcheck
from make_llava_fixtures import image_prompts
from make_vision_fixtures import randomize_minivlm

FIXTURE = Path(__file__).with_name("fixtures") / "llava_tiny"
# transformers computes the RoPE angles in float32 even in a float64 model (see test_llama.py)
ROPE_RTOL = 1e-6
IMAGE_TOKEN = 20
VISION = dict(image_resolution=12, layers=2, width=12, patch_size=4, heads=2, mlp_width=7,
              activation="quick_gelu")
LLAMA = dict(vocab_size=23, hidden_size=12, intermediate_size=11, num_hidden_layers=2,
             num_attention_heads=6, num_key_value_heads=2, head_dim=4, rope_theta=300.0,
             rms_norm_eps=1e-5)


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(FIXTURE / "expected.npz"))


def tiny_config(decoder="llama", vision=None, text=None, **llava):
    """A LlavaConfig of 12×12 images in 4×4 patches (9 features) and a decoder of 23 tokens."""
    vision_config = CLIPVisionConfig(**{**VISION, **(vision or {})})
    if decoder == "llama":
        text_config = LlamaConfig(**{**LLAMA, **(text or {})})
    else:
        text_config = LMConfig("causal", **{**dict(vocab_size=23, context_length=64, width=12,
                                                   layers=2, heads=3), **(text or {})})
    return LlavaConfig(vision_config, text_config, image_token_id=IMAGE_TOKEN, **llava)


def tiny_llava(seed=0, dtype="float64", decoder="llama", **overrides):
    mv.manual_seed(seed)
    model = LlavaForConditionalGeneration(tiny_config(decoder, **overrides))
    return randomize_minivlm(model, seed).to(dtype).eval()


def prompts(layouts, seed, model):
    """(ids, attention_mask, pixel_values) for make_llava_fixtures.image_prompts layouts."""
    rng = np.random.default_rng(seed)
    config = model.config
    ids, mask = image_prompts(layouts, config.image_token_id, config.image_seq_length,
                              config.text_config.vocab_size, rng)
    size = config.vision_config.image_resolution
    pixels = rng.standard_normal((sum(len(runs) - 1 for runs in layouts), 3, size, size))
    return ids, mask, pixels


def shifted_loss(logits, labels):
    """transformers' `labels=` loss: position t predicts label t + 1, -100 ignored."""
    vocab = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1),
                           ignore_index=-100)


# --- the committed fixture (transformers' outputs, no torch needed) -------------------------------

def test_fixture_logits_equal_transformers(expected):
    model = mv.load_pretrained(FIXTURE, dtype="float64")
    config = model.config
    assert (config.image_token_id, config.image_seq_length, config.vision_feature_layer) == \
        (50, 25, -2)
    assert config.text_config.num_key_value_heads == 2 and config.text_config.rope_theta == 500
    logits = model(expected["input_ids"], expected["pixel_values"],
                   attention_mask=expected["attention_mask"]).numpy()
    real = expected["attention_mask"].astype(bool)
    assert_close(logits[real], expected["logits"][real], rtol=ROPE_RTOL)


def test_fixture_loss_with_labels_equals_transformers(expected):
    model = mv.load_pretrained(FIXTURE, dtype="float64")
    logits = model(expected["input_ids"], expected["pixel_values"],
                   attention_mask=expected["attention_mask"])
    loss = shifted_loss(logits, expected["labels"])
    # transformers computes its loss in float32
    assert loss.item() == pytest.approx(float(expected["loss"]), rel=ROPE_RTOL)


@pytest.mark.parametrize("use_cache", [True, False])
def test_fixture_greedy_generate_equals_transformers(expected, use_cache):
    model = mv.load_pretrained(FIXTURE)     # float32, as transformers generated
    ids = model.generate(expected["input_ids"], pixel_values=expected["pixel_values"],
                         attention_mask=expected["attention_mask"], max_new_tokens=8,
                         eos_token_id=2, use_cache=use_cache)
    np.testing.assert_array_equal(ids, expected["generated"])


def hub_name(name):
    """transformers 5's file name (as the fixture holds) -> transformers 4's, the hub's."""
    return name.replace("vision_tower.", "vision_tower.vision_model.", 1)


def module_name(name):
    """transformers 5's file name -> transformers 5's module name."""
    for old, new in (("vision_tower.", "model.vision_tower."),
                     ("multi_modal_projector.", "model.multi_modal_projector."),
                     ("language_model.model.", "model.language_model."),
                     ("language_model.lm_head.", "lm_head.")):
        if name.startswith(old):
            return new + name[len(old):]
    raise AssertionError(name)


@pytest.mark.parametrize("spelling", [hub_name, module_name])
def test_every_spelling_of_the_names_loads_the_same_model(tmp_path, expected, spelling):
    shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    weights = io.load_safetensors(FIXTURE / "model.safetensors")
    io.save_safetensors({spelling(name): array for name, array in weights.items()},
                        tmp_path / "model.safetensors")
    reference = mv.load_pretrained(FIXTURE)
    model = mv.load_pretrained(tmp_path)
    for name, tensor in reference.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name].numpy(), tensor.numpy())


def test_saving_writes_the_hub_names_and_reads_them_back(tmp_path, expected):
    model = mv.load_pretrained(FIXTURE, dtype="float64")
    mv.save_pretrained(model, tmp_path)
    names = set(io.load_safetensors(tmp_path / "model.safetensors"))
    assert names == {hub_name(n) for n in io.load_safetensors(FIXTURE / "model.safetensors")}
    reloaded = mv.load_pretrained(tmp_path, dtype="float64")
    args = expected["input_ids"], expected["pixel_values"]
    np.testing.assert_array_equal(reloaded(*args).numpy(), model(*args).numpy())


def test_a_checkpoint_that_does_not_fit_is_one_clear_error(tmp_path):
    config = json.loads((FIXTURE / "config.json").read_text())
    config["vision_config"]["intermediate_size"] = 14
    (tmp_path / "config.json").write_text(json.dumps(config))
    weights = io.load_safetensors(FIXTURE / "model.safetensors")
    weights["vision_tower.vision_model.mystery.weight"] = weights["lm_head.weight"] \
        if "lm_head.weight" in weights else weights["language_model.lm_head.weight"]
    weights["multi_modal_projector.mystery.weight"] = weights["multi_modal_projector.linear_1.bias"]
    del weights["multi_modal_projector.linear_2.bias"]
    io.save_safetensors(weights, tmp_path / "model.safetensors")
    with pytest.raises(io.CheckpointError) as error:
        mv.load_pretrained(tmp_path)
    message = str(error.value)
    assert "no entry in the name table: vision_tower.vision_model.mystery.weight" in message
    assert "missing tensors: multi_modal_projector.linear_2.bias" in message
    assert "tensors the model does not have: multi_modal_projector.mystery.weight" in message
    assert ("vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight has shape (13, 24) in the "
            "checkpoint but (14, 24)") in message


# --- live against transformers --------------------------------------------------------------------

def from_transformers(theirs):
    """minivlm's twin of a transformers Llava (float64), through pretrained.llava's names and
    config conversion from transformers' in-memory names."""
    architecture = ARCHITECTURES["llava"]
    tied = theirs.config.tie_word_embeddings        # lm_head is the embedding: not a tensor
    state, unknown = architecture.to_minivlm({name: t.detach().numpy()
                                              for name, t in theirs.state_dict().items()
                                              if not (tied and name == "lm_head.weight")})
    assert not unknown
    model = LlavaForConditionalGeneration(llava_config(theirs.config.to_dict(),
                                                       theirs.state_dict())).double()
    model.load_state_dict({name: np.asarray(values) for name, values in state.items()})
    return model.eval()


def their_gradients(theirs):
    """{minivlm name: gradient} of a transformers Llava after backward (zeros where torch has
    none: the blocks after vision_feature_layer, post_layernorm)."""
    import torch
    grads = {name: (torch.zeros_like(p) if p.grad is None else p.grad).numpy()
             for name, p in theirs.named_parameters()}
    return {name: np.asarray(values)             # the stacked in_proj is an io.Concatenated
            for name, values in ARCHITECTURES["llava"].to_minivlm(grads)[0].items()}


@settings(max_examples=6, deadline=None)
@given(strategy=st.sampled_from(["default", "full"]), layer=st.sampled_from([-1, -2, -3, 1]),
       bias=st.booleans(), tied=st.booleans(), two_in_a_row=st.booleans(),
       seed=st.integers(0, 100))
def test_logits_and_gradients_equal_transformers(strategy, layer, bias, tied, two_in_a_row,
                                                 seed):
    """Two vision blocks: the features of layer -3 are the tower's input (transformers 5.24's
    Llava fails for vision_feature_layer=0, which asks for no hidden states)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from make_llava_fixtures import hf_llava
    theirs = hf_llava(seed, vision=dict(num_hidden_layers=2), text=dict(tie_word_embeddings=tied),
                      vision_feature_select_strategy=strategy, vision_feature_layer=layer,
                      multimodal_projector_bias=bias,
                      image_seq_length=25 + (strategy == "full")).double()
    ours = from_transformers(theirs)
    layouts = [[2, 0, 3], [1]] if two_in_a_row else [[2, 3], [0, 1]]
    ids, mask, pixels = prompts(layouts, seed, ours)
    labels = np.where(np.random.default_rng(seed).random(ids.shape) < 0.3, -100, ids)
    labels[:, -1] = ids[:, -1]                                    # at least one label counts
    out = theirs(input_ids=torch.from_numpy(ids), pixel_values=torch.from_numpy(pixels),
                 attention_mask=torch.from_numpy(mask), labels=torch.from_numpy(labels))
    out.loss.backward()
    logits = ours(ids, pixels, attention_mask=mask)
    real = mask.astype(bool)
    assert_close(logits.numpy()[real], out.logits.detach().numpy()[real], rtol=ROPE_RTOL)
    loss = shifted_loss(logits, labels)
    loss.backward()
    assert loss.item() == pytest.approx(out.loss.item(), rel=ROPE_RTOL)
    grads = their_gradients(theirs)
    for name, p in ours.named_parameters():
        ours_grad = np.zeros(p.shape) if p.grad is None else p.grad.numpy()
        assert_close(ours_grad, grads[name], rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("tied", [False, True])
def test_transformers_reads_the_saved_directory(tmp_path, tied):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ours = tiny_llava(3, dtype="float32", text=dict(tie_word_embeddings=tied))
    mv.save_pretrained(ours, tmp_path)
    theirs, info = transformers.LlavaForConditionalGeneration.from_pretrained(
        tmp_path, output_loading_info=True)
    assert not any(info.values()), info                 # no missing or unexpected tensors
    ids, mask, pixels = prompts([[2, 3], [1, 0, 2]], 0, ours)
    pixels = pixels.astype(np.float32)
    with torch.no_grad():
        expected = theirs.eval()(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(
            mask), pixel_values=torch.from_numpy(pixels)).logits.numpy()
    real = mask.astype(bool)
    assert_close(ours(ids, pixels, attention_mask=mask).numpy()[real], expected[real], rtol=1e-5)
    reloaded = mv.load_pretrained(tmp_path)
    np.testing.assert_array_equal(reloaded(ids, pixels).numpy(), ours(ids, pixels).numpy())


def test_a_tie_set_at_the_top_of_the_config_ties_as_in_transformers(tmp_path):
    """transformers ties lm_head to the embedding when LlavaConfig.tie_word_embeddings is set,
    even where the text_config says otherwise, and then saves no lm_head."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from make_llava_fixtures import hf_llava
    theirs = hf_llava(2, tie_word_embeddings=True)
    assert not theirs.config.text_config.tie_word_embeddings
    theirs.save_pretrained(tmp_path)
    ours = mv.load_pretrained(tmp_path, dtype="float64")
    assert ours.language_model.lm_head is None
    ids, mask, pixels = prompts([[2, 1]], 3, ours)
    with torch.no_grad():
        expected = theirs.double()(input_ids=torch.from_numpy(ids),
                                   pixel_values=torch.from_numpy(pixels)).logits.numpy()
    assert_close(ours(ids, pixels), expected, rtol=ROPE_RTOL)


def test_greedy_generate_with_images_equals_transformers_live():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from make_llava_fixtures import hf_llava
    theirs = hf_llava(1)
    theirs.generation_config.eos_token_id = None           # run the full length
    ours = from_transformers(theirs).to("float32")
    ids, mask, pixels = prompts([[3, 2], [1, 4], [0, 0, 1]], 2, ours)
    pixels = pixels.astype(np.float32)
    with torch.no_grad():
        expected = theirs.generate(input_ids=torch.from_numpy(ids),
                                   attention_mask=torch.from_numpy(mask),
                                   pixel_values=torch.from_numpy(pixels), max_new_tokens=10,
                                   do_sample=False, eos_token_id=None, pad_token_id=0).numpy()
    np.testing.assert_array_equal(
        ours.generate(ids, pixel_values=pixels, attention_mask=mask, max_new_tokens=10), expected)


# --- the splice and the image features ------------------------------------------------------------

def test_the_image_tokens_take_the_features_in_order_row_by_row():
    embeddings = mv.tensor(np.arange(2 * 5 * 1, dtype=np.float64).reshape(2, 5, 1))
    ids = np.array([[7, 9, 9, 7, 7],
                    [9, 7, 7, 9, 7]])
    features = mv.tensor(-np.arange(1, 5, dtype=np.float64).reshape(2, 2, 1))  # 2 images, 2 each
    spliced = splice_image_features(embeddings, ids, 9, features).numpy()[..., 0]
    np.testing.assert_array_equal(spliced, [[0, -1, -2, 3, 4],
                                            [-3, 6, 7, -4, 9]])


@pytest.mark.parametrize("tokens, images, message", [
    (8, 1, "the prompt holds 8 image tokens but 1 image gives 9 features"),
    (9, 2, "the prompt holds 9 image tokens but 2 images give 18 features"),
    (0, 1, "the prompt holds 0 image tokens but 1 image gives 9 features")])
def test_a_count_mismatch_is_a_clear_error(tokens, images, message):
    model = tiny_llava()
    ids = np.array([[1, 2] + [IMAGE_TOKEN] * tokens + [3]])
    pixels = np.zeros((images, 3, 12, 12))
    with pytest.raises(ValueError, match=message):
        model(ids, pixels)
    with pytest.raises(ValueError, match=message):
        model.generate(ids, pixel_values=pixels, max_new_tokens=2)


@pytest.mark.parametrize("strategy, length", [("default", 9), ("full", 10)])
def test_default_drops_and_full_keeps_the_class_token(strategy, length):
    model = tiny_llava(1, vision_feature_select_strategy=strategy, vision_feature_layer=1)
    assert model.config.image_seq_length == length
    pixels = np.random.default_rng(1).standard_normal((2, 3, 12, 12))
    hidden = model.vision_tower.hidden_states(mv.tensor(pixels))
    assert len(hidden) == 3                                      # the input of block 0, then 2
    kept = hidden[1] if strategy == "full" else hidden[1][:, 1:]
    features = model.get_image_features(pixels)
    assert features.shape == (2, length, 12)
    assert_close(features, model.multi_modal_projector(kept), rtol=1e-15)
    with pytest.raises(ValueError, match=rf"image_seq_length=9, but the vision tower gives 10 "
                                         rf"features per image \(3×3 patches of a 12×12 image, "
                                         rf"the class token kept"):
        tiny_config(vision_feature_select_strategy="full", image_seq_length=9)


def test_the_features_come_from_the_chosen_layer_before_ln_post():
    model = tiny_llava(2, vision_feature_layer=-2)
    pixels = np.random.default_rng(2).standard_normal((1, 3, 12, 12))
    tower = model.vision_tower
    x = tower.hidden_states(mv.tensor(pixels), num_blocks=0)[0]       # after ln_pre
    penultimate = tower.transformer.resblocks[0](x)
    assert_close(model.get_image_features(pixels),
                 model.multi_modal_projector(penultimate[:, 1:]), rtol=1e-15)
    last = tower.hidden_states(mv.tensor(pixels))[-1]
    assert_close(tower(mv.tensor(pixels)), tower.ln_post(last[:, 0]), rtol=1e-15)  # no proj


def test_pixels_of_the_wrong_shape_and_images_without_ids_are_clear_errors():
    model = tiny_llava()
    ids = np.array([[1] + [IMAGE_TOKEN] * 9])
    with pytest.raises(ValueError, match=r"LlavaForConditionalGeneration: expected images of "
                                         r"shape \(batch, 3, 12, 12\), got shape \(1, 3, 8, 8\)"):
        model(ids, np.zeros((1, 3, 8, 8)))
    embeds = model.get_input_embeddings()(ids)
    with pytest.raises(ValueError, match="pixel_values need input_ids"):
        model(inputs_embeds=embeds, pixel_values=np.zeros((1, 3, 12, 12)))


# --- generation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("decoder", ["llama", "gpt2"])
def test_generate_with_an_image_equals_the_uncached_computation(decoder):
    """Greedy decoding by hand, each token from the whole sequence so far, image and all."""
    model = tiny_llava(4, decoder=decoder)
    ids, _, pixels = prompts([[2, 3]], 4, model)
    sequence = ids
    for _ in range(6):
        logits = model(sequence, pixels).numpy()
        sequence = np.concatenate([sequence, logits[:, -1].argmax(-1)[:, None]], axis=1)
    generated = model.generate(ids, pixel_values=pixels, max_new_tokens=6)
    np.testing.assert_array_equal(generated, sequence)
    assert generated.shape == (1, ids.shape[1] + 6)


@pytest.mark.parametrize("use_cache", [True, False])
def test_the_image_is_encoded_once(use_cache):
    model = tiny_llava(5)
    ids, mask, pixels = prompts([[1, 2], [3, 1]], 5, model)
    calls = []
    hidden_states = model.vision_tower.hidden_states
    model.vision_tower.hidden_states = lambda *args, **kwargs: (
        calls.append(1), hidden_states(*args, **kwargs))[1]
    model.generate(ids, pixel_values=pixels, attention_mask=mask, max_new_tokens=7,
                   use_cache=use_cache)
    assert len(calls) == 1


def test_a_left_padded_batch_with_images_gives_each_row_its_tokens_alone():
    model = tiny_llava(6)
    ids, mask, pixels = prompts([[4, 1], [0, 2], [1, 0, 1]], 6, model)
    batch = model.generate(ids, pixel_values=pixels, attention_mask=mask, max_new_tokens=6)
    first_image = 0
    for row, images in enumerate([1, 1, 2]):
        alone = ids[row][mask[row] == 1][None]
        row_pixels = pixels[first_image:first_image + images]
        first_image += images
        new = model.generate(alone, pixel_values=row_pixels, max_new_tokens=6)
        np.testing.assert_array_equal(batch[row, ids.shape[1]:], new[0, alone.shape[1]:])


def test_sampling_with_an_image_is_reproducible_and_streams():
    model = tiny_llava(7, dtype="float32")
    ids, _, pixels = prompts([[2, 1]], 7, model)
    runs = []
    for _ in range(2):
        streamed = []
        mv.manual_seed(3)
        runs.append(model.generate(ids, pixel_values=pixels, max_new_tokens=5, do_sample=True,
                                   temperature=0.7, top_k=10, top_p=0.9,
                                   streamer=streamed.append))
        np.testing.assert_array_equal(np.stack(streamed, axis=1), runs[-1][:, ids.shape[1]:])
    np.testing.assert_array_equal(runs[0], runs[1])


# --- gradients and backends -----------------------------------------------------------------------

def test_projector_and_splice_gradients_match_finite_differences():
    mv.manual_seed(0)
    projector = LlavaMultiModalProjector(tiny_config()).double()
    x = mv.tensor(np.random.default_rng(0).standard_normal((2, 3, 12)))
    gradcheck(lambda **_: projector(x), dict(projector.named_parameters()))
    rng = np.random.default_rng(1)
    ids = np.array([[5, 9, 9, 5], [9, 5, 9, 9]])
    embeddings = mv.tensor(rng.standard_normal((2, 4, 3)), requires_grad=True)
    features = mv.tensor(rng.standard_normal((5, 1, 3)), requires_grad=True)
    gradcheck(lambda embeddings, features: splice_image_features(embeddings, ids, 9, features),
              dict(embeddings=embeddings, features=features))
    assert not embeddings.grad.numpy()[ids == 9].any()     # replaced embeddings learn nothing


def test_whole_model_gradients_match_finite_differences():
    model = tiny_llava(8, vision=dict(layers=1), text=dict(num_hidden_layers=1),
                       vision_feature_layer=-1)
    ids, _, pixels = prompts([[1, 2]], 8, model)
    params = dict(model.named_parameters())
    picked = {name: params[name] for name in (
        "vision_tower.transformer.resblocks.0.attn.in_proj_weight",
        "vision_tower.ln_pre.weight", "multi_modal_projector.linear_1.weight",
        "language_model.model.layers.0.self_attn.k_proj.weight")}
    gradcheck(lambda **_: shifted_loss(model(ids, pixels), ids), picked)


def test_float32_on_backend_matches_float64(backend):
    reference = tiny_llava(9)
    model = tiny_llava(9, dtype="float32").to(backend)
    ids, mask, pixels = prompts([[2, 3], [1, 1]], 9, model)
    labels = ids.copy()
    expected = reference(ids, pixels, attention_mask=mask)
    shifted_loss(expected, labels).backward()
    logits = model(mv.tensor(ids, device=backend), pixels.astype(np.float32),
                   attention_mask=mask)
    assert logits.dtype == np.float32 and logits.device == backend
    real = mask.astype(bool)
    assert_close(logits.numpy()[real], expected.numpy()[real], rtol=1e-3)
    shifted_loss(logits, mv.tensor(labels, device=backend)).backward()
    wide = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        if wide[name].grad is not None:
            assert p.grad.dtype == np.float32, name
            assert_close(p.grad, wide[name].grad, rtol=1e-3, atol=1e-7)


# --- building the model ---------------------------------------------------------------------------

def test_trained_parts_are_used_themselves_without_clips_projection():
    mv.manual_seed(0)
    clip = CLIP(CLIPConfig(16, CLIPVisionConfig(**VISION),
                           CLIPTextConfig(context_length=8, vocab_size=30, width=8, layers=1,
                                          heads=2)))
    decoder = LlamaForCausalLM(LlamaConfig(**LLAMA))
    model = LlavaForConditionalGeneration(tiny_config(), vision_tower=clip.visual,
                                          language_model=decoder)
    assert model.language_model is decoder
    assert model.vision_tower.transformer is clip.visual.transformer
    assert model.vision_tower.conv1.weight is clip.visual.conv1.weight
    assert model.vision_tower.class_embedding is clip.visual.class_embedding
    assert model.vision_tower.proj is None and clip.visual.proj is not None
    assert "vision_tower.proj" not in model.state_dict()
    pixels = np.random.default_rng(0).standard_normal((1, 3, 12, 12)).astype(np.float32)
    assert clip.encode_image(pixels).shape == (1, 16)       # the CLIP still works as it was
    with pytest.raises(ValueError, match="the given vision_tower has config"):
        LlavaForConditionalGeneration(tiny_config(vision=dict(layers=1)),
                                      vision_tower=clip.visual)
    with pytest.raises(TypeError, match="language_model must be a LlamaForCausalLM or CausalLM, "
                                        "got CLIP"):
        LlavaForConditionalGeneration(tiny_config(), language_model=clip)


def test_a_gpt2_style_decoder_saves_in_minivlms_layout(tmp_path):
    model = tiny_llava(10, dtype="float32", decoder="gpt2")
    ids, mask, pixels = prompts([[2, 3], [0, 1]], 10, model)
    logits = model(ids, pixels, attention_mask=mask).numpy()
    mv.save_pretrained(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "minivlm_llava"
    reloaded = mv.load_pretrained(tmp_path)
    assert isinstance(reloaded.language_model, CausalLM)
    assert reloaded.config == model.config
    np.testing.assert_array_equal(reloaded(ids, pixels, attention_mask=mask).numpy(), logits)


def test_config_errors_name_the_bad_value():
    vision, text = CLIPVisionConfig(**VISION), LlamaConfig(**LLAMA)
    for kwargs, message in (
            (dict(image_token_id=23), r"image_token_id=23 is not in the language model's "
                                      r"vocabulary \(vocab_size=23\)"),
            (dict(image_token_id=3, image_token_index=4), "image_token_id=3 and "
                                                          "image_token_index=4 disagree"),
            (dict(image_token_id=3, image_seq_length=16), r"image_seq_length=16, but the vision "
                                                          r"tower gives 9 features"),
            (dict(image_token_id=3, vision_feature_layer=-4), r"vision_feature_layer must be one "
                                                              r"index .* got -4"),
            (dict(image_token_id=3, vision_feature_select_strategy="cls"),
             "vision_feature_select_strategy must be one of"),
            (dict(image_token_id=3, projector_hidden_act="swish"), "unknown hidden_act 'swish'")):
        with pytest.raises(ValueError, match=message):
            LlavaConfig(vision, text, **kwargs)
    assert LlavaConfig(vision, text, image_token_index=4).image_token_id == 4
    with pytest.raises(ValueError, match="must be a Vision Transformer"):
        LlavaConfig(CLIPVisionConfig(image_resolution=64, layers=(1, 1, 1, 1), width=8), text,
                    image_token_id=3)
    with pytest.raises(ValueError, match="must be a decoder, got an LMConfig with "
                                         "objective='mlm'"):
        LlavaConfig(vision, LMConfig("mlm", 23), image_token_id=3)


def test_llava_directories_of_other_models_are_clear_errors(tmp_path):
    config = json.loads((FIXTURE / "config.json").read_text())
    shutil.copy(FIXTURE / "model.safetensors", tmp_path / "model.safetensors")
    for part, model_type, supported in (("text_config", "mistral", "llama"),
                                        ("vision_config", "siglip_vision_model",
                                         "clip_vision_model")):
        changed = {**config, part: {**config[part], "model_type": model_type}}
        (tmp_path / "config.json").write_text(json.dumps(changed))
        with pytest.raises(ValueError, match=f"{part} has model_type '{model_type}'; minivlm's "
                                             f"Llava reads '{supported}' only"):
            mv.load_pretrained(tmp_path)

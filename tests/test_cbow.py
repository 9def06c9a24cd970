"""The CBOW text encoder of minivlm.models.text (CLIPTextConfig(encoder="cbow")): gradients
through a whole CLIP (finite differences, tier 1), float32 on every backend against float64
(tier 2), torch's EmbeddingBag(mode="mean") and a NumPy loop (tier 3); word order and padding
that cannot change an embedding, exactly; the model directory and OpenAI-named file round trips
and train-clip --text-encoder."""
import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minivlm as mv
from minivlm.__main__ import main
from minivlm.losses import clip_loss
from minivlm.models.clip import CLIP, CLIPConfig
from minivlm.models.text import CBOW, CLIPTextConfig, TextTransformer
from minivlm.pretrained.clip import config_from_json, load_openai, save_clip
from minivlm.recipes.clip import shapes_clip_config
from minivlm.testing import assert_close, gradcheck
from minivlm.tokenizers import CLIPTokenizer
from test_clip_model import random_clip, random_inputs, tiny_config

FEW = settings(max_examples=min(10, settings.default.max_examples), deadline=None)
EOT = 10   # the highest id of tiny_config's 11-token vocabulary: where argmax finds the end


def cbow_config(resnet=False, eos_token_id=None):
    """test_clip_model's tiny CLIP with a CBOW text encoder (6-wide embeddings, 8-wide tokens)."""
    config = tiny_config(resnet=resnet, eos_token_id=eos_token_id)
    return dataclasses.replace(config, text=dataclasses.replace(config.text, encoder="cbow"))


@st.composite
def captions(draw, context_length=5, max_batch=3):
    """Token ids (N, context_length) of tiny_config's vocabulary: a start token, words of ids
    0 ... 9 (0 as CLIP's "!" included), the end-of-text token EOT, then padding zeros."""
    rows = []
    for _ in range(draw(st.integers(1, max_batch))):
        words = draw(st.lists(st.integers(0, EOT - 1), min_size=0, max_size=context_length - 2))
        row = [9, *words, EOT]
        rows.append(row + [0] * (context_length - len(row)))
    return np.array(rows, dtype=np.int64)


def reference_cbow(ids, embedding, projection, eos_token_id=None):
    """The mean of each caption's token embeddings up to its end-of-text token, projected: a
    loop over the captions in float64."""
    features = []
    for row in ids:
        end = row.argmax() if eos_token_id is None else list(row).index(eos_token_id)
        features.append(embedding[row[:end + 1]].mean(axis=0) @ projection)
    return np.array(features)


# --- tier 1: gradients ---------------------------------------------------------------------------

@pytest.mark.parametrize("resnet", [False, True])
def test_gradient_of_the_loss_wrt_every_parameter(resnet):
    config = cbow_config(resnet=resnet)
    model = random_clip(config, seed=3).eval()      # the ResNet's batch norm: running statistics
    pixels, ids = random_inputs(config, seed=3)
    ids[:, -1] = EOT                                 # random ids: end the captions somewhere
    parameters = dict(model.named_parameters())
    checked = [name for name in parameters if name.startswith("text.")] + ["logit_scale"]
    assert checked == ["text.text_projection", "text.token_embedding.weight", "logit_scale"]
    gradcheck(lambda **_: clip_loss(model(pixels, ids)[0]),
              {name: parameters[name] for name in checked}, n_directions=3, max_elements=48)


@FEW
@given(ids=captions(), seed=st.integers(0, 2 ** 16))
def test_gradient_of_the_text_embedding_wrt_its_parameters(ids, seed):
    model = random_clip(cbow_config(), seed)
    gradcheck(lambda **_: model.encode_text(ids), dict(model.text.named_parameters()),
              max_elements=100)


# --- tier 2: float32 on each backend against float64 --------------------------------------------

@FEW
@given(ids=captions(), seed=st.integers(0, 2 ** 16))
def test_float32_on_each_backend_matches_float64(backend, ids, seed):
    expected_model = random_clip(cbow_config(), seed)
    model = random_clip(cbow_config(), seed, dtype="float32").to(backend)
    expected, actual = expected_model.encode_text(ids), model.encode_text(ids)
    assert actual.device == backend and actual.dtype == np.float32
    assert_close(actual, expected, rtol=1e-4)
    weights = np.random.default_rng(seed).standard_normal(expected.shape)
    expected.backward(mv.tensor(weights))
    actual.backward(mv.tensor(weights.astype(np.float32), device=backend))
    for p32, p64 in zip(model.parameters(), expected_model.parameters()):
        assert_close(p32.grad, p64.grad, rtol=1e-4, atol=1e-7)


# --- tier 3: a NumPy loop and torch's EmbeddingBag -----------------------------------------------

@FEW
@given(ids=captions(max_batch=4), seed=st.integers(0, 2 ** 16), by_eos=st.booleans())
def test_matches_a_loop_over_the_captions(ids, seed, by_eos):
    model = random_clip(cbow_config(eos_token_id=EOT if by_eos else None), seed)
    expected = reference_cbow(ids, model.text.token_embedding.weight.numpy(),
                              model.text.text_projection.numpy(), EOT if by_eos else None)
    assert_close(model.encode_text(ids), expected, rtol=1e-12)


@FEW
@given(ids=captions(max_batch=4), seed=st.integers(0, 2 ** 16))
def test_forward_and_backward_match_torch_embedding_bag(ids, seed):
    torch = pytest.importorskip("torch")
    model = random_clip(cbow_config(), seed)
    text = model.text
    bag = torch.nn.EmbeddingBag.from_pretrained(
        torch.tensor(text.token_embedding.weight.numpy()), freeze=False, mode="mean")
    projection = torch.tensor(text.text_projection.numpy(), requires_grad=True)
    ends = ids.argmax(axis=1) + 1
    flat = np.concatenate([row[:end] for row, end in zip(ids, ends)])
    offsets = np.concatenate([[0], np.cumsum(ends)[:-1]])
    theirs = bag(torch.tensor(flat), torch.tensor(offsets)) @ projection
    ours = model.encode_text(ids)
    assert_close(ours, theirs.detach().numpy(), rtol=1e-12)
    weights = np.random.default_rng(seed).standard_normal(ours.shape)
    ours.backward(mv.tensor(weights))
    theirs.backward(torch.tensor(weights))
    assert_close(text.token_embedding.weight.grad, bag.weight.grad.numpy(), rtol=1e-12,
                 atol=1e-15)
    assert_close(text.text_projection.grad, projection.grad.numpy(), rtol=1e-12)


# --- what a bag of words cannot see -------------------------------------------------------------

@given(ids=captions(), seed=st.integers(0, 2 ** 16), dtype=st.sampled_from(["float32",
                                                                             "float64"]))
def test_word_order_does_not_change_the_embedding_at_all(ids, seed, dtype):
    """Every caption's tokens before its end shuffled: bit for bit the same embeddings."""
    model = random_clip(cbow_config(), seed, dtype)
    rng = np.random.default_rng(seed)
    shuffled = ids.copy()
    for row in shuffled:
        end = row.argmax()
        row[:end] = rng.permutation(row[:end])
    assert np.array_equal(model.encode_text(shuffled).numpy(), model.encode_text(ids).numpy())


def test_swapped_captions_get_the_same_embedding_and_the_transformer_tells_them_apart():
    mv.manual_seed(0)
    tokenizer = CLIPTokenizer()
    ids = [tokenizer([caption], context_length=16) for caption in (
        "a red circle left of a blue square", "a blue square left of a red circle",
        "a red square left of a blue circle")]
    cbow = CLIP(shapes_clip_config(text_encoder="cbow"))
    embeddings = [cbow.encode_text(i).numpy() for i in ids]
    assert np.array_equal(embeddings[0], embeddings[1])
    assert np.array_equal(embeddings[0], embeddings[2])
    transformer = CLIP(shapes_clip_config())
    first, swapped = (transformer.encode_text(i).numpy() for i in ids[:2])
    assert np.abs(first - swapped).max() > 1e-3


@given(ids=captions(), seed=st.integers(0, 2 ** 16))
def test_what_follows_the_end_of_text_token_is_left_out(ids, seed):
    model = random_clip(cbow_config(), seed)
    after = np.arange(ids.shape[1]) > ids.argmax(axis=1)[:, None]
    garbage = np.where(after, np.random.default_rng(seed).integers(0, EOT, ids.shape), ids)
    expected = model.encode_text(ids).numpy()
    assert_close(model.encode_text(garbage), expected, rtol=1e-12)
    assert_close(model.encode_text(ids[:, :ids.argmax(axis=1).max() + 1]), expected, rtol=1e-12)


def test_a_word_with_id_zero_before_the_end_counts():
    model = random_clip(cbow_config(), seed=0)
    with_word = model.encode_text(np.array([[9, 0, 3, EOT, 0]])).numpy()
    without = model.encode_text(np.array([[9, 3, EOT, 0, 0]])).numpy()
    assert np.abs(with_word - without).max() > 1e-6


# --- configs, model directories, errors ---------------------------------------------------------

def test_the_encoder_is_chosen_by_the_config_and_the_default_stays_the_transformer():
    assert CLIPTextConfig().encoder == "transformer"
    assert isinstance(CLIP(tiny_config()).text, TextTransformer)
    model = CLIP(cbow_config())
    assert isinstance(model.text, CBOW)
    assert sorted(name for name, _ in model.text.named_parameters()) == [
        "text_projection", "token_embedding.weight"]
    with pytest.raises(ValueError, match="encoder must be one of transformer, cbow, got 'lstm'"):
        CLIPTextConfig(encoder="lstm")


def test_model_directory_round_trip(tmp_path):
    model = random_clip(cbow_config(), seed=1, dtype="float32")
    mv.save_pretrained(model, tmp_path)
    text_config = json.loads((tmp_path / "config.json").read_text())["text_config"]
    assert text_config["encoder"] == "cbow"
    loaded = mv.load_pretrained(tmp_path)
    assert isinstance(loaded.text, CBOW) and loaded.config.text.encoder == "cbow"
    pixels, ids = random_inputs(cbow_config(), seed=1)
    ids[:, -1] = EOT
    for ours, theirs in zip(model(pixels.astype(np.float32), ids),
                            loaded(pixels.astype(np.float32), ids)):
        assert np.array_equal(ours.numpy(), theirs.numpy())


def test_a_transformer_directory_gets_no_encoder_key_and_a_config_without_one_is_a_transformer(
        tmp_path):
    model = CLIP(tiny_config())
    mv.save_pretrained(model, tmp_path)
    config_json = json.loads((tmp_path / "config.json").read_text())
    assert "encoder" not in config_json["text_config"]
    assert config_from_json(config_json, model.state_dict()).text.encoder == "transformer"
    assert isinstance(mv.load_pretrained(tmp_path).text, TextTransformer)


def test_openai_named_file_round_trip(tmp_path):
    model = random_clip(cbow_config(), seed=2, dtype="float32")
    save_clip(model, tmp_path / "cbow.safetensors")
    loaded = load_openai(tmp_path / "cbow.safetensors")
    assert isinstance(loaded.text, CBOW)
    ids = np.array([[9, 1, 2, EOT, 0]])
    assert np.array_equal(loaded.encode_text(ids).numpy(), model.encode_text(ids).numpy())


def test_bad_ids_are_named_with_the_encoder():
    model = CLIP(cbow_config())
    with pytest.raises(TypeError, match="CBOW: expected integer token ids, got float64"):
        model.encode_text(np.zeros((1, 5)))
    with pytest.raises(ValueError, match=r"CBOW: token ids must lie in \[0, vocab_size=11\)"):
        model.encode_text(np.array([[9, 11, EOT]]))
    by_eos = CLIP(cbow_config(eos_token_id=EOT))
    with pytest.raises(ValueError, match=r"CBOW: the sequences at rows \[0\] hold no"):
        by_eos.encode_text(np.array([[9, 1, 2]]))


# --- train-clip --text-encoder ------------------------------------------------------------------

def test_train_clip_trains_a_cbow_clip_and_resume_keeps_the_encoder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train-clip", "--text-encoder", "cbow", "--steps", "2", "--batch-size", "4",
                 "--image-size", "16", "--out", str(out)]) == 0
    model = mv.load_pretrained(out)
    assert isinstance(model.text, CBOW) and model.config.vision.image_resolution == 16
    capsys.readouterr()
    assert main(["train-clip", "--resume", str(out), "--text-encoder", "transformer"]) == 2
    assert "--text-encoder (transformer, cbow)" in capsys.readouterr().err


def test_cbow_config_is_the_tiny_clip_with_another_text_encoder():
    cbow, transformer = shapes_clip_config(text_encoder="cbow"), shapes_clip_config()
    assert isinstance(cbow, CLIPConfig)
    assert cbow.vision == transformer.vision
    assert dataclasses.replace(cbow.text, encoder="transformer") == transformer.text

"""`train-clip`: training captions and batches, a short run that lowers the contrastive loss,
checkpoints that resume with the same losses, clear errors for bad checkpoints and flags, and the
command end to end."""
import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, strategies as st

from minivlm import io
from minivlm.__main__ import main
from minivlm.data.shapes import make_shapes, split_pairs
from minivlm.models.clip import CLIPConfig, VisionConfig
from minivlm.models.text import TextConfig
from minivlm.tokenizers import CLIPTokenizer
from minivlm.train_clip import (CAPTION_PREFIXES, CHECKPOINT, TrainConfig, caption, load_checkpoint,
                                load_train_config, train, training_batch,
                                training_captions)

TINY_MODEL = CLIPConfig(32, VisionConfig(image_resolution=16, layers=1, width=32, patch_size=8,
                                         heads=2),
                        TextConfig(context_length=16, width=32, layers=1, heads=2))


def tiny_config(**overrides):
    return TrainConfig(**{"model": TINY_MODEL, "batch_size": 8, "warmup_steps": 2} | overrides)


# --- data -------------------------------------------------------------------------------------

def test_caption_leaves_out_the_parts_not_given():
    assert caption("red", "circle", "small", "top left") == "a small red circle in the top left"
    assert caption("red", "circle", position="middle") == "a red circle in the middle"
    assert caption("blue", "ring", "large") == "a large blue ring"
    assert caption("blue", "ring") == "a blue ring"


def split_prefix(text):
    """(prefix, rest) for the longest of CAPTION_PREFIXES that starts text."""
    prefix = max((p for p in CAPTION_PREFIXES if text.startswith(p)), key=len)
    return prefix, text[len(prefix):]


def test_training_captions_without_dropout_are_the_datasets_after_a_prefix():
    _, labels, captions = make_shapes(200, 16, seed=3)
    varied = training_captions(labels, 0.0, np.random.default_rng(0))
    assert [split_prefix(text)[1] for text in varied] == captions
    assert {split_prefix(text)[0] for text in varied} == set(CAPTION_PREFIXES)


@given(st.floats(0, 1), st.integers(0, 1000))
def test_training_captions_drop_size_and_position_only(dropout, seed):
    _, labels, captions = make_shapes(40, 16, seed=seed)
    varied = training_captions(labels, dropout, np.random.default_rng(seed))
    for full, text in zip(captions, varied):
        words, kept = full.split(), split_prefix(text)[1].split()   # a SIZE COLOUR SHAPE in the ...
        assert kept[0] == "a" and set(words[2:4]) <= set(kept) and set(kept) <= set(words)
    if dropout == 1.0:
        assert all(len(split_prefix(text)[1].split()) == 3 for text in varied)


def test_training_batch_depends_on_seed_and_step_only_and_skips_held_out_pairs():
    config = tiny_config(batch_size=64)
    seen, held_out = config.pairs()
    tokenizer = CLIPTokenizer()
    images, ids = training_batch(config, 5, seen, tokenizer)
    again_images, again_ids = training_batch(config, 5, seen, tokenizer)
    np.testing.assert_array_equal(images, again_images)
    np.testing.assert_array_equal(ids, again_ids)
    assert not np.array_equal(training_batch(config, 6, seen, tokenizer)[0], images)
    assert images.shape == (64, 3, 16, 16) and ids.shape == (64, 16)
    texts = [tokenizer.decode([i for i in row if 0 < i < tokenizer.sot_token_id]) for row in ids]
    assert not any(f" {colour} {shape} " in f" {text.strip()} " for text in texts
                   for colour, shape in held_out)
    assert (seen, held_out) == split_pairs(8, seed=0)


# --- training and checkpoints -----------------------------------------------------------------

@pytest.mark.slow
def test_a_short_run_lowers_the_loss():
    _, losses = train(tiny_config(steps=150, batch_size=16, lr=2e-3, warmup_steps=10))
    # chance is ln 16 = 2.77 (one caption in 16); measured: 2.86 over the first 10 steps,
    # 1.56 over the last 20
    assert np.mean(losses[:10]) > 2.6
    assert np.mean(losses[-20:]) < 2.0


def test_resumed_run_has_the_same_losses_and_weights(tmp_path):
    config = tiny_config(steps=12)
    model, losses = train(config, out=tmp_path / "straight")
    _, first_half = train(config, out=tmp_path / "interrupted", stop_at=6)
    assert first_half == losses[:6]
    resumed, resumed_losses = train(resume=tmp_path / "interrupted")
    assert resumed_losses == losses
    for (name, value), (_, resumed_value) in zip(model.state_dict().items(),
                                                 resumed.state_dict().items()):
        np.testing.assert_array_equal(value.numpy(), resumed_value.numpy(), err_msg=name)


def test_checkpoint_round_trip(tmp_path):
    config = tiny_config(steps=3)
    model, losses = train(config, out=tmp_path)
    loaded_config, loaded_model, optimizer, loaded_losses = load_checkpoint(tmp_path)
    assert loaded_config == config and loaded_losses == losses
    assert load_train_config(tmp_path / CHECKPOINT) == config
    assert all(int(state["step"]) == 3 for state in optimizer.state.values())
    np.testing.assert_array_equal(loaded_model.logit_scale.numpy(), model.logit_scale.numpy())


def test_resume_from_a_checkpoint_with_missing_keys_names_them(tmp_path):
    config = tiny_config(steps=2)
    train(config, out=tmp_path)
    path = tmp_path / CHECKPOINT
    tensors = io.load(path)
    metadata = io.read_safetensors_metadata(path)
    del tensors["model.visual.proj"], tensors["optimizer.3.exp_avg_sq"]
    io.save_safetensors(tensors, path, metadata)
    with pytest.raises(io.CheckpointError, match=r"missing keys \['model.visual.proj', "
                                                 r"'optimizer.3.exp_avg_sq'\]"):
        train(resume=path)


def test_resume_refuses_files_that_are_no_train_clip_checkpoint(tmp_path):
    io.save_safetensors({"x": np.zeros(2, np.float32)}, tmp_path / "other.safetensors")
    with pytest.raises(io.CheckpointError, match="not a train-clip checkpoint"):
        train(resume=tmp_path / "other.safetensors")


def test_resume_with_another_config_is_an_error(tmp_path):
    train(tiny_config(steps=2), out=tmp_path)
    with pytest.raises(ValueError, match="differs from the config given"):
        train(tiny_config(steps=4), resume=tmp_path)


def test_train_config_checks_its_values_and_survives_json():
    with pytest.raises(ValueError, match="'steps': 0"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="caption_dropout must lie in"):
        TrainConfig(caption_dropout=1.5)
    config = tiny_config(seed=3)
    assert TrainConfig(**json.loads(json.dumps(dataclasses.asdict(config)))) == config


# --- the command ------------------------------------------------------------------------------

@pytest.mark.slow
def test_command_trains_evaluates_and_draws(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train-clip", "--steps", "4", "--batch-size", "8", "--image-size", "16",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for phrase in ("seen pairs (40)", "held-out pairs ( 8)", "linear probe", "few-shot", "16:"):
        assert phrase in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [CHECKPOINT, "loss.png", "similarity.png", "confusion.png", "few_shot.png"])
    assert load_train_config(out).steps == 4
    with pytest.raises(ValueError, match=r"--batch-size \(16, 8\)"):
        main(["train-clip", "--resume", str(out), "--batch-size", "16"])

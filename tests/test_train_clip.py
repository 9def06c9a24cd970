"""`train-clip`: training captions and batches, a short run that lowers the contrastive loss, run
directories that resume with the same losses and that transformers' CLIPModel reads, metrics,
clear errors for bad run directories and flags, and the command end to end."""
import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st
from PIL import Image

import minivlm as mv
from minivlm import io
from minivlm.__main__ import main
from minivlm.data.shapes import make_shapes, split_pairs
from minivlm.models.clip import CLIP, CLIPConfig, CLIPVisionConfig
from minivlm.models.text import CLIPTextConfig
from minivlm.optim import AdamW
from minivlm.recipes.clip import (CAPTION_PREFIXES, COMMAND, FIGURES, TrainConfig, caption,
                                  make_optimizer, train, training_batch, training_captions)
from minivlm.recipes.common import (METRICS_FILE, STATE_FILE, Run, UsageError, read_metrics,
                                    saved_settings)
from minivlm.testing import assert_close
from minivlm.tokenizers import CLIPTokenizer

TINY_MODEL = CLIPConfig(32, CLIPVisionConfig(image_resolution=16, layers=1, width=32, patch_size=8,
                                             heads=2),
                        CLIPTextConfig(context_length=16, width=32, layers=1, heads=2))


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


def test_run_directory_round_trip(tmp_path):
    """The run directory holds the model (a Hugging Face CLIPModel directory), the optimizer's
    state at the step reached, the settings, and one metrics line per step."""
    config = tiny_config(steps=3)
    model, losses = train(config, out=tmp_path)
    loaded = mv.load_pretrained(tmp_path)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name].numpy(), value.numpy(), name)
    assert TrainConfig(**saved_settings(tmp_path, COMMAND)) == config
    run = Run.resume(tmp_path, COMMAND)
    assert run.step == 3 and run.losses() == losses
    optimizer = make_optimizer(model, config)
    run.restore(optimizer)
    assert isinstance(optimizer, AdamW)
    assert all(int(state["step"]) == 3 for state in optimizer.state.values())
    assert len(optimizer.state) == len(list(model.parameters()))


def test_metrics_have_one_line_per_step_and_a_resume_drops_the_lines_after_its_checkpoint(
        tmp_path):
    config = tiny_config(steps=6)
    _, losses = train(config, out=tmp_path, stop_at=4, save_every=2)
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert [r["loss"] for r in records] == losses
    assert all({"step", "loss", "lr", "seconds"} <= r.keys() for r in records)
    assert records[0]["lr"] == 0 and records[1]["lr"] == config.lr / 2   # the warm-up's lr
    seconds = [r["seconds"] for r in records]
    assert seconds == sorted(seconds)
    with open(tmp_path / METRICS_FILE, "a") as f:   # lines of steps the checkpoint does not hold
        f.write('{"step": 5, "loss": 1.0, "lr": 0.0, "seconds": 1.0}\n{"step": 6, "lo')
    run = Run.resume(tmp_path, COMMAND)
    assert run.step == 4 and [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
    _, resumed_losses = train(resume=tmp_path)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5, 6]
    assert resumed_losses[:4] == losses


def test_each_step_keeps_the_logit_scale_at_most_ln_100(tmp_path):
    """The CLIP paper clips exp(logit_scale) at 100: a run whose logit_scale was set to 6
    (exp 6 ≈ 403) takes one more step, which an update of about lr = 5e-4 leaves far above
    ln 100 ≈ 4.605 unless the step clamps it."""
    config = tiny_config(steps=2)
    train(config, out=tmp_path, stop_at=1)
    path = tmp_path / "model.safetensors"
    tensors, metadata = io.load(path), io.read_safetensors_metadata(path)
    tensors["logit_scale"] = np.array(6.0, np.float32)
    io.save_safetensors(tensors, path, metadata)
    model, _ = train(resume=tmp_path)
    assert model.logit_scale.item() == pytest.approx(math.log(100), rel=1e-6)


def test_resume_from_a_directory_with_missing_tensors_names_them(tmp_path):
    config = tiny_config(steps=2)
    train(config, out=tmp_path / "model")
    path = tmp_path / "model" / "model.safetensors"
    tensors, metadata = io.load(path), io.read_safetensors_metadata(path)
    del tensors["visual_projection.weight"]
    io.save_safetensors(tensors, path, metadata)
    with pytest.raises(io.CheckpointError, match="missing tensors: visual_projection.weight"):
        train(resume=tmp_path / "model")

    train(config, out=tmp_path / "state")
    path = tmp_path / "state" / STATE_FILE
    tensors, metadata = io.load(path), io.read_safetensors_metadata(path)
    del tensors["optimizer.3.exp_avg_sq"]
    io.save_safetensors(tensors, path, metadata)
    with pytest.raises(io.CheckpointError, match=r"missing \['optimizer.3.exp_avg_sq'\]"):
        train(resume=tmp_path / "state")


def test_resume_refuses_directories_that_hold_no_train_clip_run(tmp_path):
    with pytest.raises(UsageError, match=f"holds no {STATE_FILE}: it is not a run of train-clip"):
        train(resume=tmp_path)
    io.save_safetensors({"x": np.zeros(2, np.float32)}, tmp_path / STATE_FILE,
                        {"command": "train-lm", "step": "1", "settings": "{}",
                         "param_groups": "[]"})
    with pytest.raises(UsageError, match="holds no run of train-clip .* from 'train-lm'"):
        train(resume=tmp_path)


def test_a_new_run_refuses_a_directory_that_holds_one(tmp_path):
    train(tiny_config(steps=1), out=tmp_path)
    with pytest.raises(UsageError, match="holds a run already: continue it with --resume"):
        train(tiny_config(steps=1), out=tmp_path)


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


# --- the run directory is a Hugging Face CLIPModel -------------------------------------------

def test_transformers_loads_the_run_directory_and_gives_the_same_logits(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = tiny_config(steps=2)
    model, _ = train(config, out=tmp_path)
    theirs = transformers.CLIPModel.from_pretrained(tmp_path).eval()
    images, ids = training_batch(config, 0, config.pairs()[0], CLIPTokenizer())
    with torch.no_grad():
        expected = theirs(input_ids=torch.from_numpy(ids),
                          pixel_values=torch.from_numpy(images)).logits_per_image.numpy()
    with mv.no_grad():
        actual = model.eval()(images, ids)[0].numpy()
    assert_close(actual, expected, rtol=1e-5)


# --- the command ------------------------------------------------------------------------------

@pytest.mark.slow
def test_command_trains_evaluates_draws_and_the_zero_shot_command_reads_its_output(tmp_path,
                                                                                    capsys):
    out = tmp_path / "run"
    assert main(["train-clip", "--steps", "4", "--batch-size", "8", "--image-size", "16",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for phrase in ("seen pairs (40)", "held-out pairs ( 8)", "linear probe", "few-shot", "16:"):
        assert phrase in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "model.safetensors", "preprocessor_config.json", STATE_FILE, METRICS_FILE,
         "results.json", *FIGURES])
    assert saved_settings(out, COMMAND)["steps"] == 4
    results = json.loads((out / "results.json").read_text())
    assert np.asarray(results["confusion"]).shape == (48, 48)
    assert set(results["few_shot"]) == {"1", "2", "4", "8", "16"}
    assert isinstance(mv.load_pretrained(out), CLIP)

    image = tmp_path / "red_circle.png"
    Image.fromarray((make_shapes(1, 16, seed=0)[0][0].transpose(1, 2, 0) * 255)
                    .astype(np.uint8)).save(image)
    assert main(["zero-shot", "--model", str(out), "--image", str(image),
                 "--labels", "red circle,blue square"]) == 0
    assert "red circle" in capsys.readouterr().out

    assert main(["train-clip", "--resume", str(out), "--batch-size", "16"]) == 2
    assert "--batch-size (16, 8)" in capsys.readouterr().err

"""The commands against a careless or hostile user: Ctrl-C in training saves the step and says how
to resume, --out is checked before training, zero-shot bounds images before decoding them, keeps
the levels of 16-bit PNGs and names a caption longer than the text context."""
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import minivlm as mv
from minivlm import io, nn, optim
from minivlm.pretrained import load_clip
from minivlm.__main__ import build_parser, main
from minivlm.preprocess import MAX_PIXELS, MEAN, STD, ImageSizeError, check_size, preprocess
from minivlm.recipes import vision
from minivlm.recipes.common import STATE_FILE, CommandError, Run, fit, read_metrics

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).with_name("fixtures")
VISION = ["train-vision", "--model", "resnet", "--batch-size", "4", "--held-out", "6"]


def last_error_line(capsys, command):
    err = capsys.readouterr().err.strip().splitlines()
    prefix = f"minivlm {command}: "
    assert err and err[-1].startswith(prefix), err
    return err[-1][len(prefix):]


def saved_step(directory):
    return io.read_safetensors_metadata(directory / STATE_FILE)["step"]


# --- Ctrl-C --------------------------------------------------------------------------------------

def sigint_at(step, times=1):
    """training_batch, that sends this process `times` SIGINTs (Ctrl-C) in step `step`."""
    training_batch = vision.training_batch

    def batch(config, batch_size, current, seed):
        if current == step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        return training_batch(config, batch_size, current, seed)
    return batch


def test_ctrl_c_saves_the_step_it_came_in_and_the_run_resumes_bit_for_bit(tmp_path, capsys,
                                                                           monkeypatch):
    out = tmp_path / "interrupted"
    monkeypatch.setattr(vision, "training_batch", sigint_at(2))
    assert main(VISION + ["--steps", "5", "--out", str(out)]) == 130
    assert last_error_line(capsys, "train-vision") == (
        f"interrupted at step 3 of 5, saved in {out}: continue with "
        f"`minivlm train-vision --resume {out}`")
    assert saved_step(out) == "3" and [m["step"] for m in read_metrics(out)] == [1, 2, 3]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.undo()

    assert main(["train-vision", "--resume", str(out), "--held-out", "6"]) == 0
    assert main(VISION + ["--steps", "5", "--out", str(tmp_path / "straight")]) == 0
    straight, resumed = (mv.load_pretrained(tmp_path / d) for d in ("straight", "interrupted"))
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name].numpy(), value.numpy(), name)
    assert [m["loss"] for m in read_metrics(out)] == \
        [m["loss"] for m in read_metrics(tmp_path / "straight")]


def test_a_second_ctrl_c_stops_at_once_without_saving(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(vision, "training_batch", sigint_at(2, times=2))
    assert main(VISION + ["--steps", "5", "--out", str(out)]) == 130
    assert last_error_line(capsys, "train-vision") == "interrupted"
    assert not (out / STATE_FILE).exists()   # no checkpoint before step 5, none on the way out


def test_ctrl_c_to_the_command_line_process(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "minivlm", *VISION, "--steps", "100000",
                                "--out", str(out)], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120
        while not read_metrics(out) and time.monotonic() < deadline:
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    step = saved_step(out)
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == (
        f"minivlm train-vision: interrupted at step {step} of 100000, saved in {out}: "
        f"continue with `minivlm train-vision --resume {out}`")
    assert "Traceback" not in err
    assert io.read_safetensors_metadata(out / "model.safetensors")["step"] == step
    assert [m["step"] for m in read_metrics(out)][-1] == int(step)


# --- divergence --------------------------------------------------------------------------------

def test_a_diverging_run_stops_with_one_line_and_keeps_its_last_finite_checkpoint(tmp_path,
                                                                                  capsys):
    out = tmp_path / "run"
    argv = VISION + ["--steps", "8", "--out", str(out)]
    settings = vision.settings_from_args(build_parser().parse_args(argv))
    config = vision.ClassifierConfig(**settings["classifier"])
    mv.manual_seed(0)
    with pytest.raises(CommandError, match="training diverged"):
        vision.train(vision.build_model(config), config, 8, batch_size=4, lr=1e6,
                     run=Run.start(out, vision.COMMAND, settings), save_every=1)
    step = int(saved_step(out))
    assert 0 < step < 8
    assert all(np.isfinite(p.numpy()).all() for p in mv.load_pretrained(out).parameters())
    result = subprocess.run([sys.executable, "-m", "minivlm", *VISION, "--steps", "8", "--lr",
                             "1e6", "--out", str(tmp_path / "cli")], cwd=ROOT, text=True,
                            capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1
    assert result.stderr.endswith("training diverged (try a smaller --lr)\n")
    assert "Warning" not in result.stderr   # NumPy's overflow warnings are not shown


def fit_one_parameter(loss_of, lr, steps=3):
    """fit on one float32 parameter (0 at first) with plain SGD: loss_of(p) is the loss."""
    p = nn.Parameter(mv.zeros(1))
    model = nn.Module()
    model.p = p
    optimizer = optim.SGD([p], lr=lr)
    schedule = optim.cosine_schedule(optimizer, warmup_steps=0, total_steps=steps, min_lr=lr)
    return fit(model, optimizer, schedule, lambda step: loss_of(p), Run(None, "test", {}),
               steps, seed=0, max_grad_norm=float("inf"), save_every=1)


def test_a_gradient_norm_that_overflows_stops_training_before_the_step():
    """Gradients of 1e20: finite, but their norm is not in float32 (the loss is 0)."""
    with pytest.raises(CommandError, match="the gradient norm is inf: training diverged"):
        fit_one_parameter(lambda p: (p * 1e20).sum(), lr=1.0)


def test_parameters_that_overflow_are_never_saved():
    """A loss of p and a learning rate of 3e38: p is -3e38, then -inf, its loss still finite."""
    with pytest.raises(CommandError, match="the parameters are not finite after step 2"):
        fit_one_parameter(lambda p: p.sum(), lr=3e38)


# --- --out -------------------------------------------------------------------------------------

def test_out_holding_a_model_directory_is_refused_before_training(tmp_path, capsys):
    shutil.copytree(FIXTURES / "vit_tiny", tmp_path / "model")
    before = (tmp_path / "model" / "model.safetensors").read_bytes()
    assert main(VISION + ["--steps", "2", "--out", str(tmp_path / "model")]) == 2
    assert last_error_line(capsys, "train-vision") == (
        f"error: --out {tmp_path / 'model'} holds a model directory (config.json, "
        f"model.safetensors) that the run would replace: choose another --out")
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == before
    assert not (tmp_path / "model" / "metrics.jsonl").exists()


@pytest.mark.parametrize("command, out", [("train-vision", "locked"), ("train-clip", "locked"),
                                          ("train-lm", "locked/run")])
def test_out_that_cannot_be_written_is_refused_before_training(command, out, tmp_path):
    """As a user who may not write there (root may write anywhere: setpriv takes that away)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("as root, a directory is read-only only without CAP_DAC_OVERRIDE")
        prefix = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                  "--bounding-set=-dac_override,-dac_read_search"]
    started = time.monotonic()
    result = subprocess.run([*prefix, sys.executable, "-m", "minivlm", command, "--steps", "1",
                             "--out", str(tmp_path / out)], cwd=ROOT, text=True,
                            capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"minivlm {command}: error: --out {tmp_path / out} cannot be " \
                            f"written: Permission denied\n"
    assert time.monotonic() - started < 60   # (refused at once, not after training)


# --- zero-shot ---------------------------------------------------------------------------------

def png_header_only(path, width, height):
    """A PNG that declares width×height greyscale pixels and holds none: decoding it fails."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_the_issues_1_by_10000_png_is_refused_for_a_224_pixel_model():
    with pytest.raises(ImageSizeError, match="1×10000 pixels, resized to 224×2240000"):
        check_size((1, 10000), 224)
    check_size((1, 1000), 224)   # 224×224000 is allowed


@pytest.mark.parametrize("width, height, resized", [
    (1, 100000, "32×3200000"),       # small, but 0.3 GB once resized for clip_tiny's 32 pixels
    (10000, 10000, "32×32"),         # Pillow only warns below 2 × MAX_PIXELS
    (30000, 30000, "32×32"),         # Pillow's DecompressionBombError
])
def test_zero_shot_refuses_an_image_too_large_before_decoding_it(tmp_path, capsys, width,
                                                                 height, resized):
    image = png_header_only(tmp_path / "huge.png", width, height)
    assert main(["zero-shot", "--model", str(FIXTURES / "clip_tiny"), "--image", str(image),
                 "--labels", "cat,dog"]) == 1
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and f"{image}: " in message
    assert f"more than {MAX_PIXELS:,} pixels" in message or "decompression bomb" in message
    if width * height < 2 * MAX_PIXELS:
        assert resized in message


def test_a_16_bit_png_keeps_its_65536_levels(tmp_path):
    levels = np.random.default_rng(0).integers(0, 65536, (32, 32)).astype(np.uint16)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode.startswith("I;16")
        pixels = preprocess(image, image_size=32)   # no resize: the pixels themselves
    expected = (levels / 65535 - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]
    np.testing.assert_allclose(pixels, expected, rtol=1e-5, atol=1e-5)


def test_zero_shot_names_a_caption_longer_than_the_text_context(tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "image.png")
    label = " ".join(["cat"] * 100)
    assert main(["zero-shot", "--model", str(FIXTURES / "clip_tiny"), "--image",
                 str(tmp_path / "image.png"), "--labels", f"dog,{label}"]) == 2
    context = load_clip(FIXTURES / "clip_tiny").config.text.context_length
    assert last_error_line(capsys, "zero-shot") == (
        f"error: the caption 'a photo of a {label}.' is 107 tokens long, more than the model's "
        f"text context of {context}: shorten the label or the --template")

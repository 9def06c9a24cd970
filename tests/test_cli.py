"""The command line: every error is one line on stderr, `minivlm COMMAND: error: ...`, with exit
status 2 for bad arguments and 1 for failures, and no traceback unless MINIVLM_DEBUG=1; the
`minivlm` console script."""
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minivlm.__main__ import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).with_name("fixtures")


def error_line(capsys, command):
    """The one line the command printed on stderr, after its prefix."""
    err = capsys.readouterr().err
    prefix = f"minivlm {command}: error: "
    assert err.startswith(prefix) and err.count("\n") == 1, err
    return err[len(prefix):]


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "image.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return path


def zero_shot(model, image, labels="cat,dog", *more):
    return main(["zero-shot", "--model", str(model), "--image", str(image), "--labels", labels,
                 *more])


def test_zero_shot_errors(tmp_path, image, capsys):
    assert zero_shot(tmp_path / "nowhere", image) == 1
    assert "nowhere: no such CLIP checkpoint" in error_line(capsys, "zero-shot")
    (tmp_path / "empty").mkdir()
    assert zero_shot(tmp_path / "empty", image) == 1
    assert "empty holds no config.json" in error_line(capsys, "zero-shot")
    assert zero_shot(FIXTURES / "vit_tiny", image) == 1
    assert "expected a Hugging Face config with model_type 'clip', got 'vit'" in error_line(
        capsys, "zero-shot")

    assert zero_shot(FIXTURES / "clip_tiny", tmp_path / "missing.png") == 1
    assert "missing.png: no such image file" in error_line(capsys, "zero-shot")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert zero_shot(FIXTURES / "clip_tiny", corrupt) == 1
    assert "corrupt.png: not an image that Pillow can read" in error_line(capsys, "zero-shot")

    truncated = tmp_path / "truncated"
    shutil.copytree(FIXTURES / "clip_tiny", truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[:len(data) // 2])
    assert zero_shot(truncated, image) == 1
    assert "model.safetensors: " in error_line(capsys, "zero-shot")

    assert zero_shot(FIXTURES / "clip_tiny", image, " , ") == 2
    assert "--labels ' , ' names no label" in error_line(capsys, "zero-shot")
    assert zero_shot(FIXTURES / "clip_tiny", image, "cat", "--template", "a photo") == 2
    assert "--template 'a photo' has no {} for the label" in error_line(capsys, "zero-shot")


def test_a_checkpoint_that_does_not_fit_is_named_on_one_line(tmp_path, image, capsys):
    from minivlm import io
    broken = tmp_path / "broken"
    shutil.copytree(FIXTURES / "clip_tiny", broken)
    tensors = io.load_safetensors(broken / "model.safetensors")
    del tensors["logit_scale"], tensors["text_projection.weight"]
    tensors["vision_model.extra"] = np.zeros(1, np.float32)
    io.save_safetensors(tensors, broken / "model.safetensors")
    assert zero_shot(broken, image) == 1
    assert error_line(capsys, "zero-shot").endswith(
        "broken: does not fit CLIP: tensors with no entry in the name table: vision_model.extra; "
        "missing tensors: logit_scale, text_projection.weight\n")


@pytest.mark.parametrize("argv, status, message", [
    (["train-clip", "--steps", "-1"], 2, "argument --steps: invalid positive int value: '-1'"),
    (["train-clip", "--batch-size", "0"], 2, "invalid positive int value: '0'"),
    (["train-clip", "--image-size", "20"], 2, "--image-size 20 is not a multiple of the patch "
                                              "size 8"),
    (["train-clip", "--threads", "0"], 2, "argument --threads: invalid positive int value"),
    (["train-clip", "--frobnicate"], 2, "unrecognized arguments: --frobnicate"),
    (["train-vision", "--held-out", "-5"], 2, "invalid positive int value: '-5'"),
    (["train-lm", "--width", "30", "--heads", "4"], 2, "--width 30 is not divisible by --heads 4"),
    (["train-lm", "--objective", "gpt"], 2, "invalid choice: 'gpt'"),
])
def test_bad_arguments_exit_with_status_2(argv, status, message, capsys):
    assert main(argv) == status
    assert message in error_line(capsys, argv[0])


@pytest.mark.parametrize("command", ["train-clip", "train-vision", "train-lm"])
def test_resume_and_out_are_checked_before_any_training(command, tmp_path, capsys):
    assert main([command, "--resume", str(tmp_path)]) == 2
    assert f"holds no training_state.safetensors: it is not a run of {command}" in \
        error_line(capsys, command)
    (tmp_path / "file").write_text("x")
    assert main([command, "--out", str(tmp_path / "file")]) == 2
    assert "is a file, not a directory" in error_line(capsys, command)


def test_train_lm_names_a_missing_tokenizer(tmp_path, capsys):
    assert main(["train-lm", "--tokenizer", str(tmp_path / "no.json"), "--out",
                 str(tmp_path / "run")]) == 1
    assert "no.json" in error_line(capsys, "train-lm")


def run_cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "minivlm", *args], cwd=ROOT, text=True,
                          capture_output=True, env={"PYTHONPATH": str(ROOT), **env})


def test_no_traceback_unless_minivlm_debug_is_set(tmp_path):
    quiet = run_cli("zero-shot", "--model", str(tmp_path / "x"), "--image", "a.png",
                    "--labels", "cat")
    assert quiet.returncode == 1
    assert quiet.stderr.count("\n") == 1 and "Traceback" not in quiet.stderr
    loud = run_cli("zero-shot", "--model", str(tmp_path / "x"), "--image", "a.png",
                   "--labels", "cat", MINIVLM_DEBUG="1")
    assert loud.returncode == 1 and "Traceback (most recent call last)" in loud.stderr
    assert "FileNotFoundError" in loud.stderr


def test_an_unexpected_error_says_it_is_internal(monkeypatch, capsys):
    from minivlm.recipes import info
    monkeypatch.setattr(info, "run", lambda args: {}["missing"])
    assert main(["info"]) == 1
    assert error_line(capsys, "info") == ("KeyError: 'missing' (an internal error: "
                                          "MINIVLM_DEBUG=1 shows where)\n")


def test_a_missing_or_unknown_command_is_named(capsys):
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("minivlm: error: the following arguments are "
                                              "required: COMMAND")
    assert main(["train-gpt"]) == 2
    assert "minivlm: error: argument COMMAND: invalid choice: 'train-gpt'" in \
        capsys.readouterr().err


def test_info_runs(capsys):
    assert main(["info"]) == 0
    assert "MINIVLM_BACKEND" in capsys.readouterr().out


def test_the_console_script_is_the_same_main():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"minivlm": "minivlm.__main__:main"}
    assert set(COMMANDS) == {"info", "train-clip", "train-vision", "train-lm", "zero-shot",
                             "generate", "experiment"}
    help_text = run_cli("--help")
    assert help_text.returncode == 0 and all(name in help_text.stdout for name in COMMANDS)

"""`minivlm experiment sequences` with tiny settings: the receptive fields it reports are those of
the three layers' formulas (an RNN's output t depends on inputs 0..t, a convolution's on the k
around t, attention's on all), attention's memory grows faster than the others', and it writes
results.json, metrics.jsonl and its figure."""
import json

import numpy as np
import pytest

from minivlm.__main__ import main
from minivlm.recipes.experiments import sequences

LENGTHS = [16, 256, 1024]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sequences")
    status = main(["experiment", "sequences", "--lengths", *map(str, LENGTHS),
                   "--field-length", "8", "--width", "8", "--kernel-size", "3", "--repeats", "1",
                   "--out", str(out)])
    return status, out


def test_receptive_fields_are_the_layers_formulas(run):
    status, out = run
    assert status in (0, None)
    models = json.loads((out / "results.json").read_text())["models"]
    t, s = np.indices((8, 8))
    seen = {name: np.asarray(m["receptive_field"]) > 0 for name, m in models.items()}
    np.testing.assert_array_equal(seen["RNN"], s <= t)               # h_t reads x_0 .. x_t
    np.testing.assert_array_equal(seen["Conv1d"], np.abs(s - t) <= 1)  # kernel 3, padding 1
    assert seen["self-attention"].all()
    assert [models[name]["inputs_seen_by_last_output"] for name in sequences.MODELS] == [8, 2, 8]


def test_steps_and_memory_grow_as_the_slide_says(run):
    _, out = run
    results = json.loads((out / "results.json").read_text())
    models = results["models"]
    assert results["lengths"] == LENGTHS
    assert [r["sequential_steps"] for r in models["RNN"]["scaling"]] == LENGTHS
    assert [r["sequential_steps"] for r in models["Conv1d"]["scaling"]] == [1, 1, 1]
    # attention's N×N scores: at N=1024 at least 1024² float32 more than the N×D layers keep
    attention, rnn = (models[name]["scaling"][-1]["peak_bytes"] for name in ("self-attention",
                                                                             "RNN"))
    assert attention - rnn > 1024 * 1024 * 4
    assert models["self-attention"]["memory_growth"] > 1.5
    assert models["RNN"]["memory_growth"] < 1.2 and models["Conv1d"]["memory_growth"] < 1.2
    assert all(r["forward_seconds"] > 0 for m in models.values() for r in m["scaling"])


def test_it_writes_metrics_and_a_figure(run, capsys):
    _, out = run
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(m["N"], m["model"]) for m in metrics] == \
        [(n, name) for n in LENGTHS for name in sequences.MODELS]
    assert (out / "sequences.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    assert "sees 8 of 8 inputs" in results["conclusion"]


@pytest.mark.parametrize("arguments, message", [
    (["--kernel-size", "4"], "--kernel-size must be odd"),
    (["--lengths", "32", "32"], "--lengths needs two different lengths")])
def test_bad_settings_are_refused(tmp_path, capsys, arguments, message):
    assert main(["experiment", "sequences", *arguments, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

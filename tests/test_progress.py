"""The progress bar: every item passes through; lines, rate and ETA as documented."""

import io as stringio

import numpy as np
import pytest

from minivlm import progress as progress_module
from minivlm.progress import progress


class Terminal(stringio.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def clock(monkeypatch):
    """A clock that moves only when the test moves it: clock[0] seconds."""
    now = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    return now


def test_items_pass_through_and_a_log_gets_full_lines(clock):
    log = stringio.StringIO()
    bar = progress(range(4), desc="train", interval=0, file=log)
    seen = []
    for item in bar:
        clock[0] += 1.0          # each item takes one second
        seen.append(item)
        bar.set(loss=np.float32(0.123456))
    lines = log.getvalue().splitlines()
    assert seen == [0, 1, 2, 3] and "\r" not in log.getvalue()
    # after one item: 1 s elapsed, 1 item/s, 3 items left -> 3 s
    assert lines[0] == "train 1/4 25% | 1 it/s | ETA 0:03 | loss 0.1235"
    assert lines[-1] == "train 4/4 100% | 1 it/s | ETA 0:00 | loss 0.1235"


def test_a_log_stays_quiet_between_intervals(clock):
    log = stringio.StringIO()
    for _ in progress(range(100), file=log, interval=30.0):
        clock[0] += 1.0
    assert len(log.getvalue().splitlines()) == 3 + 1    # at 30, 60 and 90 s, and at the end


def test_a_terminal_gets_one_line_redrawn_with_carriage_returns(clock):
    terminal = Terminal()
    for _ in progress(range(3), desc="eval", unit="img", scale=32, file=terminal):   # 96 images in 1.5 s
        clock[0] += 0.5
    output = terminal.getvalue()
    assert output.startswith("\r") and output.endswith("\n") and output.count("\n") == 1
    assert output.rstrip("\n").split("\r")[-1] == "eval 3/3 100% | 64 img/s | ETA 0:00\x1b[K"


def test_unknown_length_shows_a_count_without_percent_or_eta(clock):
    log = stringio.StringIO()
    for _ in progress((i for i in range(2)), file=log, interval=0):
        clock[0] += 2.0
    assert log.getvalue().splitlines()[-1] == "2 | 0.5 it/s"


def test_leaving_the_loop_early_still_ends_the_line(clock):
    terminal = Terminal()
    for item in progress(range(10), total=10, file=terminal):
        clock[0] += 60.0
        if item == 1:
            break
    # item 1 was left unfinished: 1 item done in 120 s, 9 left -> 18 minutes
    assert terminal.getvalue().endswith("\r1/10 10% | 0.008333 it/s | ETA 18:00\x1b[K\n")

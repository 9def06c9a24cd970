"""A tiny progress bar for long loops, with no dependency.

    bar = progress(batches, desc="train", unit="img", scale=batch_size)
    for images, captions in bar:
        loss = step(images, captions)
        bar.set(loss=loss)

prints   train 120/500 24% | 3100 img/s | ETA 2:03 | loss 1.234

On a terminal the line is redrawn in place with \\r, at most ten times a second. Anywhere else
(a log file, CI) it is quiet except for one full line every `interval` seconds and one at the end.
"""

import numbers
import sys
import time


class Progress:
    """Wraps an iterable; `set(**stats)` adds stats shown after the count, rate and ETA."""

    def __init__(self, iterable, total=None, desc="", unit="it", scale=1, interval=30.0, file=None,
                 disable=False):
        self.iterable, self.desc, self.unit, self.scale = iterable, desc, unit, scale
        self.disable = disable   # iterate without showing anything
        self.total = len(iterable) if total is None and hasattr(iterable, "__len__") else total
        self.file = sys.stderr if file is None else file
        self.on_terminal = self.file.isatty()
        self.interval = 0.1 if self.on_terminal else interval
        self.stats, self.count = {}, 0

    def set(self, **stats):
        self.stats.update(stats)

    def __iter__(self):
        if self.disable:
            yield from self.iterable
            return
        self.start = last_shown = time.monotonic()
        try:
            for item in self.iterable:
                yield item
                self.count += 1
                if time.monotonic() - last_shown >= self.interval:
                    self._show()
                    last_shown = time.monotonic()
        finally:
            self._show(final=True)

    def _line(self):
        """'desc count/total percent | rate unit/s | ETA m:ss | stat value | ...'"""
        elapsed = max(time.monotonic() - self.start, 1e-9)
        count = f"{self.count}/{self.total} {100 * self.count / self.total:.0f}%" if self.total else f"{self.count}"
        parts = [f"{self.desc} {count}".strip(), f"{_short(self.scale * self.count / elapsed)} {self.unit}/s"]
        if self.total and self.count:
            parts.append(f"ETA {_minutes((self.total - self.count) * elapsed / self.count)}")
        parts += [f"{name} {_short(value)}" for name, value in self.stats.items()]
        return " | ".join(parts)

    def _show(self, final=False):
        if self.on_terminal:
            self.file.write("\r" + self._line() + "\x1b[K" + ("\n" if final else ""))   # \x1b[K: clear to end
        else:
            self.file.write(self._line() + "\n")
        self.file.flush()


def _short(value):
    """Floats (Python or NumPy) to 4 significant digits, whole above 1000; the rest as printed."""
    if not isinstance(value, numbers.Real) or isinstance(value, numbers.Integral):
        return str(value)
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _minutes(seconds):
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


progress = Progress   # the name a loop reads best with: `for batch in progress(batches): ...`

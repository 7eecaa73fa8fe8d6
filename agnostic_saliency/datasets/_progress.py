"""Progress of a data set job: a tqdm bar on a terminal, a line every few percent in logs."""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any, TextIO

__all__ = ["Progress"]

#: Percent of the samples between two lines written to a log (not a terminal).
LOG_STEP = 5
#: Seconds between two lines written to a log when the sample count is unknown.
LOG_SECONDS = 30.0


class Progress:
    """Counts explained samples and reports them on ``stream`` (stderr by default).

    Parameters
    ----------
    enabled
        ``False``: silent. ``None`` or ``True``: a tqdm bar with rate and ETA when
        ``stream`` is a terminal, else a plain line every :data:`LOG_STEP` percent.
    total
        The number of samples, if known.
    """

    def __init__(self, enabled: bool | None, total: int | None,
                 stream: TextIO | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.total = total
        self.done = 0
        self.bar: Any = None
        self.logging = False
        self.started = time.monotonic()
        self.next_line = 0.0
        if enabled is False:
            return
        if _is_terminal(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="sample", file=self.stream, disable=None,
                            dynamic_ncols=True, smoothing=0.1)
        else:
            self.logging = True
            self.next_line = self._next(0)

    def _next(self, done: int) -> float:
        if self.total:
            step = max(1, self.total * LOG_STEP // 100)
            return float((done // step + 1) * step)
        return time.monotonic() + LOG_SECONDS

    def update(self, samples: int) -> None:
        """Count ``samples`` more explained (or found done in a resumed store)."""
        self.done += samples
        if self.bar is not None:
            self.bar.update(samples)
        elif self.logging:
            reached = self.done >= self.next_line if self.total else \
                time.monotonic() >= self.next_line
            if reached or (self.total is not None and self.done >= self.total):
                self._line()
                self.next_line = self._next(self.done)

    def _line(self) -> None:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            left = timedelta(seconds=round((self.total - self.done) / rate)) if rate else "?"
            text = (f"{self.done} of {self.total} samples ({100 * self.done // self.total}%), "
                    f"{rate:.1f} samples/s, {left} left")
        else:
            text = f"{self.done} samples, {rate:.1f} samples/s"
        self.stream.write(f"agnostic-saliency: {text}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False

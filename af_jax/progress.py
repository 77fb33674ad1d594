"""A progress bar for long commands that stays readable in log files.

On a terminal it is a `tqdm` bar. Elsewhere (a log file, a CI job, a pipe) a redrawn bar
becomes one long line of carriage returns and escape codes, so it prints a plain line instead
every `every_percent` of the total or every `every_seconds`, whichever comes first, plus a
final line with the rate.

The total may grow while the work runs (`progress.total += n`, then `refresh()`), as the
dataset builders do when they learn each split's size.
"""

import sys
import time
from typing import TextIO

import tqdm


class Progress:
  """`update(n)` after each chunk of work; use as a context manager (or call `close`)."""

  def __init__(self, total: int, desc: str, unit: str = "img", stream: TextIO | None = None,
               every_percent: float = 10.0, every_seconds: float = 30.0):
    self.total, self.desc, self.unit = max(int(total), 0), desc, unit
    self.done = 0
    self._stream = stream or sys.stderr
    self._every_percent, self._every_seconds = every_percent, every_seconds
    self._start = self._last_time = time.monotonic()
    self._last_done = 0
    self._closed = False
    self._bar = (tqdm.tqdm(total=self.total, desc=desc, unit=unit, file=self._stream)
                 if self._stream.isatty() else None)

  def refresh(self) -> None:
    """Shows a changed `total` (the plain lines use it from their next one on)."""
    if self._bar is not None:
      self._bar.total = self.total
      self._bar.refresh()

  def update(self, n: int) -> None:
    self.done += int(n)
    if self._bar is not None:
      self._bar.update(n)
      return
    now = time.monotonic()
    if (self.done - self._last_done >= self._every_percent / 100 * self.total
        or now - self._last_time >= self._every_seconds):
      self._last_done, self._last_time = self.done, now
      self._print(f"{self.done}/{self.total} {self.unit} "
                  f"({100 * self.done / max(self.total, 1):.0f}%), {self.rate():.1f} "
                  f"{self.unit}/s")

  def rate(self) -> float:
    """Units per second since the start."""
    return self.done / max(time.monotonic() - self._start, 1e-9)

  def _print(self, text: str) -> None:
    print(f"{self.desc}: {text}", file=self._stream, flush=True)

  def close(self, summary: bool = True) -> None:
    """Ends the bar; off a terminal, `summary` prints the final line. A second call does nothing."""
    if self._closed:
      return
    self._closed = True
    if self._bar is not None:
      self._bar.close()
    elif summary:
      self._print(f"done, {self.done} {self.unit} in {time.monotonic() - self._start:.1f} s "
                  f"({self.rate():.1f} {self.unit}/s)")

  def __enter__(self):
    return self

  def __exit__(self, exc_type, *unused_exc):
    self.close(summary=exc_type is None)  # Work cut short by an error is not "done".

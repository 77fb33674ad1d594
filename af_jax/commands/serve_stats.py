"""What `af-jax serve-folder` reports: images/s while it has work, and latency from file to verdict.

Sustained images/s counts only the time spent on batches (reading, localizing, writing), not
the time waiting for images, so it is the rate the loop keeps up with, whatever the line
feeds it. Latency runs from an image's modification time (when its writer finished) to its
verdict line being on disk: the time waiting to be seen (up to two polls), for a batch to fill
(at most `--max_wait_s`), and the batch itself. Images already waiting when the loop starts
count the time it was not running.
"""

import array
import logging
import time

import numpy as np

log = logging.getLogger(__name__)


def _latency(seconds) -> dict:
  if not len(seconds):
    return {}
  p50, p95 = np.percentile(seconds, [50, 95])
  return dict(p50=round(float(p50), 3), p95=round(float(p95), 3),
              max=round(float(np.max(seconds)), 3))


class Stats:
  """Counts verdicts and logs a line every `every` images (module docstring)."""

  def __init__(self, every: int):
    self.every = every
    self.started = time.monotonic()
    self.images = self.errors = 0
    self.busy = 0.0  # Seconds spent on batches.
    self.latencies = array.array("d")  # 8 bytes an image: a long-running loop keeps them all.
    self._logged = (0, 0.0)  # (images, busy seconds) at the last log line.

  def batch(self, seconds: float, latencies: list[float], errors: int) -> None:
    """A batch written in `seconds`: its images' latencies, `errors` of them bad files."""
    self.busy += seconds
    self.images += len(latencies)
    self.errors += errors
    self.latencies.extend(latencies)
    if self.images - self._logged[0] >= self.every:
      count, busy = self.images - self._logged[0], self.busy - self._logged[1]
      log.info("serve-folder: %d images (%d bad); last %d: %.1f images/s, latency %s",
               self.images, self.errors, count, count / max(busy, 1e-9),
               _latency(self.latencies[-count:]))
      self._logged = (self.images, self.busy)

  def summary(self) -> dict:
    return dict(images=self.images, errors=self.errors,
                images_per_s=round(self.images / max(self.busy, 1e-9), 2) if self.images else 0,
                busy_s=round(self.busy, 2), wall_s=round(time.monotonic() - self.started, 2),
                latency_s=_latency(self.latencies))

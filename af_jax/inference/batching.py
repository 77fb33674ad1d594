"""Splitting image lists into device batches: fixed-size, padded, and one image size each."""

import numpy as np


def spans(n: int, batch_size: int):
  """(start, stop) of consecutive batches of at most `batch_size` over `n` items."""
  for start in range(0, n, batch_size):
    yield start, min(start + batch_size, n)


def pad(x: np.ndarray, batch_size: int) -> np.ndarray:
  """`x` [n, ...] padded to `batch_size` rows by repeating its last row (n <= batch_size), so
  one compiled function serves every batch."""
  missing = batch_size - len(x)
  return np.concatenate([x, np.repeat(x[-1:], missing, 0)]) if missing else x


def batches_by_size(images, batch_size: int | None = None) -> list[list[int]]:
  """Indices of `images` in batches of one size (H, W) each, at most `batch_size` long (default:
  all the images of a size), sizes in order of first appearance: how images of mixed sizes go
  through `Detector.localize`, which takes one size per call."""
  by_size = {}
  for i, image in enumerate(images):
    by_size.setdefault(np.shape(image)[:2], []).append(i)
  return [group[start:start + (batch_size or len(group))] for group in by_size.values()
          for start in range(0, len(group), batch_size or len(group))]


def round_up(batch_size: int, devices: int) -> int:
  """The smallest multiple of `devices` >= `batch_size`: a batch that splits evenly over them."""
  return -(-batch_size // devices) * devices

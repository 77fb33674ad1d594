"""The detector's post-processing of raw heatmaps: flipped views, smoothing, image scores.

These are part of what the detector outputs (and what its thresholds are calibrated on), so
they live beside it. Each works on numpy arrays and, inside jitted code, on JAX arrays, so the
Python `Detector` and the exported detector (`exported_detector`) run the very same rules;
the no-learning floors apply the same smoothing and image score, so all are compared on equal
terms.

Smoothing is SciPy's `ndimage.gaussian_filter` rule, written out: a normalised Gaussian kernel
of radius int(4 * sigma + 0.5), borders mirrored ('reflect': d c b a | a b c d), applied along
rows then columns.
"""

import jax.numpy as jnp
import numpy as np


def _xp(x):
  return np if isinstance(x, np.ndarray) else jnp


def flip(x, left_right: bool, top_bottom: bool):
  """Mirrors a batch [N, H, W, ...] (its own inverse)."""
  if left_right:
    x = x[:, :, ::-1]
  if top_bottom:
    x = x[:, ::-1]
  return np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x


def average_views(run, views, *inputs):
  """(mean over `views` of `run(*flipped inputs)[0]` flipped back, `run`'s outputs on the
  unflipped inputs). `views` are (left-right, top-bottom) flips; `run` returns a tuple whose
  first item is a heatmap batch [N, H, W]."""
  total, plain = 0.0, None
  for lr, ud in views:
    outputs = run(*(flip(x, lr, ud) for x in inputs))
    total = total + flip(outputs[0], lr, ud)
    if not (lr or ud):
      plain = outputs
  return total / len(views), plain


def gaussian_kernel(sigma: float) -> np.ndarray:
  """SciPy's 1-D Gaussian of `sigma` (truncated at 4 sigma), float64, summing to 1."""
  radius = int(4.0 * sigma + 0.5)
  x = np.arange(-radius, radius + 1, dtype=np.float64)
  kernel = np.exp(-0.5 * (x / sigma) ** 2)
  return kernel / kernel.sum()


def smooth_heatmaps(heatmaps, sigma: float):
  """Gaussian blur of standard deviation `sigma` pixels over the spatial axes of [N, H, W]
  heatmaps (mirrored borders); float64 for numpy input, float32 for JAX arrays. 0 returns
  them unblurred."""
  xp = _xp(heatmaps)
  heatmaps = (np.asarray(heatmaps, np.float64) if xp is np
              else jnp.asarray(heatmaps, jnp.float32))
  if heatmaps.ndim != 3:
    raise ValueError(f"expected heatmaps of shape [N, H, W], got {heatmaps.shape}")
  if not np.isfinite(sigma) or sigma < 0:
    raise ValueError(f"smoothing sigma must be finite and >= 0, got {sigma}")
  if sigma == 0:
    return heatmaps
  kernel = gaussian_kernel(sigma).astype(heatmaps.dtype)
  for axis in (1, 2):
    heatmaps = _convolve_axis(xp, heatmaps, kernel, axis)
  return heatmaps


def _convolve_axis(xp, x, kernel, axis: int):
  """`x` convolved with the symmetric `kernel` along `axis`, borders mirrored."""
  radius = len(kernel) // 2
  widths = [(0, 0)] * x.ndim
  widths[axis] = (radius, radius)
  padded = xp.pad(x, widths, mode="symmetric")
  size = x.shape[axis]
  out = 0
  for offset, weight in enumerate(kernel):
    index = [slice(None)] * x.ndim
    index[axis] = slice(offset, offset + size)
    out = out + weight * padded[tuple(index)]
  return out


def image_scores(heatmaps, on=None):
  """One anomaly score per image of [N, H, W] heatmaps (>= 0): the maximum ([N]), over the
  pixels where `on` (bool [N, H, W]) holds when given (the object, `blaze.score_on_object`)."""
  if heatmaps.ndim != 3:
    raise ValueError(f"expected heatmaps of shape [N, H, W], got {heatmaps.shape}")
  xp = _xp(heatmaps)
  heatmaps = np.asarray(heatmaps, np.float64) if xp is np else heatmaps
  if on is not None:
    heatmaps = xp.where(on, heatmaps, 0.0)
  return heatmaps.max(axis=(1, 2))

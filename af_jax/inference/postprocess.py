"""The detector's post-processing of raw heatmaps: flipped views, smoothing, image scores.

These are part of what the detector outputs (and what its thresholds are calibrated on), so
they live beside it; the per-pixel baseline applies the same smoothing and image score so the
two are compared on equal terms.
"""

import numpy as np
from scipy import ndimage


def flip(x: np.ndarray, left_right: bool, top_bottom: bool) -> np.ndarray:
  """Mirrors a batch [N, H, W, ...] (its own inverse)."""
  if left_right:
    x = x[:, :, ::-1]
  if top_bottom:
    x = x[:, ::-1]
  return np.ascontiguousarray(x)


def smooth_heatmaps(heatmaps, sigma: float) -> np.ndarray:
  """Gaussian blur of standard deviation `sigma` pixels over the spatial axes of [N, H, W]
  heatmaps (reflected borders), in float64. 0 returns them unblurred."""
  heatmaps = np.asarray(heatmaps, dtype=np.float64)
  if heatmaps.ndim != 3:
    raise ValueError(f"expected heatmaps of shape [N, H, W], got {heatmaps.shape}")
  if not np.isfinite(sigma) or sigma < 0:
    raise ValueError(f"smoothing sigma must be finite and >= 0, got {sigma}")
  return ndimage.gaussian_filter(heatmaps, sigma=(0, sigma, sigma)) if sigma > 0 else heatmaps


def image_scores(heatmaps) -> np.ndarray:
  """One anomaly score per image of [N, H, W] heatmaps: the maximum (float64 [N])."""
  heatmaps = np.asarray(heatmaps, dtype=np.float64)
  if heatmaps.ndim != 3:
    raise ValueError(f"expected heatmaps of shape [N, H, W], got {heatmaps.shape}")
  return heatmaps.max(axis=(1, 2))

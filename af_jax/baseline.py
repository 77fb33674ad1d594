"""The per-pixel Gaussian baseline: the no-learning floor a detector must beat.

Fit on normal images resized to one size: per pixel and channel, the mean m and standard
deviation s (values in [0, 1]; `af_jax.reference`, which also feeds BlazeDetector with
`blaze.reference`). A test image's score map is the mean over channels of
|x - m| / (s + `eps`), blurred by a Gaussian of `sigma` pixels (default 4 px per 256 px of
image side: 1 px at 64 px), and its image score is the map's maximum.

It needs no training and no pretrained network, and on aligned objects it is strong (MVTec AD
bottle at 64 px: 93.9 pixel AUROC, 75.8 AUPRO, 98.7 image AUROC); rotated objects and
textures defeat it (about 80 pixel AUROC on other MVTec categories). A learned detector that
does not beat it on a category has learned nothing useful there, which is why `af-jax
evaluate --baseline` and the demo report it next to BlazeDetector.
"""

import dataclasses

import numpy as np

from af_jax import pixels
from af_jax import reference
from af_jax.metrics import localization


@dataclasses.dataclass
class BaselineResult:
  heatmaps: np.ndarray  # float32 [N, S, S] score maps at the fitted size.
  scores: np.ndarray    # float64 [N] image scores (map maxima).


class PixelGaussianBaseline:
  """Per-pixel mean/std of normal images; scores are normalized absolute deviations."""

  def __init__(self, eps: float = 0.02, sigma: float | None = None):
    self.eps = eps
    self.sigma = sigma
    self.mean = self.std = None

  def fit(self, normal_images: np.ndarray) -> "PixelGaussianBaseline":
    """`normal_images`: uint8 [S, S, 3] images of one size (an array or a list), as prepared
    datasets store them."""
    images = pixels.check_uint8_rgb(normal_images, batch=True)
    self.mean, self.std = reference.Moments.of(images).statistics()
    return self

  def localize(self, images) -> BaselineResult:
    """Score maps and image scores of uint8 images of the fitted size (an array or a list)."""
    if self.mean is None:
      raise ValueError("fit() the baseline on normal images first")
    x = pixels.uint8_to_unit(pixels.check_uint8_rgb(images, batch=True))
    if x.shape[1:] != self.mean.shape:
      raise ValueError(f"images of shape {x.shape[1:]} do not match the {self.mean.shape} "
                       "images the baseline was fitted on")
    sigma = self.sigma if self.sigma is not None else 4.0 * x.shape[1] / 256
    maps = np.mean(reference.deviation(x, self.mean, self.std, self.eps), axis=-1)
    maps = localization.smooth_heatmaps(maps, sigma).astype(np.float32)
    return BaselineResult(heatmaps=maps, scores=localization.image_scores_from_heatmaps(maps))

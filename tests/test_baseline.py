"""The per-pixel Gaussian baseline (af_jax/baseline.py) on the real bottle images."""

import cv2
import numpy as np
import pytest

from af_jax import baseline
from af_jax.metrics import localization


def _read(files, size, flags=cv2.IMREAD_COLOR, interpolation=cv2.INTER_AREA):
  return np.stack([cv2.resize(cv2.imread(str(f), flags), (size, size),
                              interpolation=interpolation) for f in files])


def test_bottle_floor_matches_the_reference_figures(bottle_dir):
  """DESIGN.md B.10: 93.9 / 75.8 / 98.7 at 64 px (px-AUROC / AUPRO / image AUROC)."""
  size = 64
  train = _read(sorted((bottle_dir / "train" / "good").glob("*.png")), size)[..., ::-1]
  tests = sorted((bottle_dir / "test").glob("*/*.png"))
  images = _read(tests, size)[..., ::-1]
  masks = []
  for f in tests:
    gt = bottle_dir / "ground_truth" / f.parent.name / f"{f.stem}_mask.png"
    masks.append(_read([gt], size, cv2.IMREAD_GRAYSCALE, cv2.INTER_NEAREST)[0] > 127
                 if f.parent.name != "good" else np.zeros((size, size), bool))
  labels = [int(f.parent.name != "good") for f in tests]
  result = baseline.PixelGaussianBaseline().fit(np.ascontiguousarray(train)).localize(
      np.ascontiguousarray(images))
  assert result.heatmaps.shape == (len(tests), size, size)
  assert localization.pixel_auroc(result.heatmaps, masks) == pytest.approx(0.939, abs=0.005)
  assert localization.aupro(result.heatmaps, masks) == pytest.approx(0.758, abs=0.01)
  assert localization.image_auroc(result.scores, labels) == pytest.approx(0.987, abs=0.005)


def test_a_deviating_pixel_scores_highest():
  rng = np.random.default_rng(0)
  normal = rng.integers(100, 110, (20, 16, 16, 3)).astype(np.uint8)
  test = np.full((2, 16, 16, 3), 105, np.uint8)
  test[1, 5, 9] = 250
  result = baseline.PixelGaussianBaseline(sigma=0).fit(normal).localize(test)
  assert np.unravel_index(result.heatmaps[1].argmax(), (16, 16)) == (5, 9)
  assert result.scores[1] > 10 * result.scores[0]


def test_bad_input_says_what_was_expected():
  fitted = baseline.PixelGaussianBaseline().fit(np.zeros((3, 8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match="do not match"):
    fitted.localize(np.zeros((1, 16, 16, 3), np.uint8))
  with pytest.raises(ValueError, match=r"expected uint8 RGB images \[N, H, W, 3\]"):
    fitted.localize(np.zeros((1, 8, 8, 3), np.float32))
  with pytest.raises(ValueError, match="fit"):
    baseline.PixelGaussianBaseline().localize(np.zeros((1, 8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match="at least 2"):
    baseline.PixelGaussianBaseline().fit(np.zeros((1, 8, 8, 3), np.uint8))

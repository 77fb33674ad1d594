"""The detector's heatmap post-processing: flips, smoothing and image scores."""

import numpy as np
import pytest
from scipy import ndimage

from af_jax import postprocess


def test_image_scores_are_heatmap_maxima_and_smoothing_favours_blobs():
  heatmaps = np.zeros((3, 16, 16))
  heatmaps[0, 4, 4] = 1.0  # one hot pixel
  heatmaps[1, 8:12, 8:12] = 0.6  # a blob
  np.testing.assert_array_equal(postprocess.image_scores(heatmaps), [1.0, 0.6, 0.0])
  smoothed = postprocess.image_scores(postprocess.smooth_heatmaps(heatmaps, 2.0))
  np.testing.assert_allclose(
      smoothed, [ndimage.gaussian_filter(h.astype(np.float64), 2.0).max() for h in heatmaps])
  assert smoothed[1] > smoothed[0]  # smoothing favours blobs over single pixels
  np.testing.assert_array_equal(postprocess.smooth_heatmaps(heatmaps, 0), heatmaps)


def test_flip_is_its_own_inverse():
  x = np.arange(2 * 3 * 4).reshape(2, 3, 4, 1)
  for lr in (False, True):
    for ud in (False, True):
      np.testing.assert_array_equal(postprocess.flip(postprocess.flip(x, lr, ud), lr, ud), x)
  np.testing.assert_array_equal(postprocess.flip(x, True, False)[:, :, 0], x[:, :, -1])
  np.testing.assert_array_equal(postprocess.flip(x, False, True)[:, 0], x[:, -1])


@pytest.mark.parametrize("sigma", [-1, float("nan"), float("inf")])
def test_bad_sigma_and_shapes_are_refused(sigma):
  scores = np.zeros((2, 4, 4))
  with pytest.raises(ValueError, match="finite and >= 0"):
    postprocess.smooth_heatmaps(scores, sigma)
  with pytest.raises(ValueError, match=r"\[N, H, W\], got \(4, 4\)"):
    postprocess.image_scores(scores[0])

"""Overlays as `af-jax localize` and the demo's report draw them."""

import numpy as np
import pytest

from af_jax import commands, pixels


def test_overlay_colours_only_where_the_heatmap_nears_the_threshold():
  image = np.random.default_rng(0).integers(0, 256, (4, 6, 3), np.uint8)
  threshold = 0.02
  heatmap = np.array([[0.0, 0.004, 0.01, 0.015, 0.02, 0.5]] * 4, np.float32)
  out = commands.overlay(image, heatmap, threshold)
  # Up to half the threshold the image is untouched; at and above it, fully tinted.
  np.testing.assert_array_equal(out[:, :3], image[:, :3])
  expected = image[:, 4:] * 0.4 + pixels.heat_colours(heatmap[:, 4:] / 0.04) * 0.6
  np.testing.assert_allclose(out[:, 4:], expected, atol=0.5 + 1e-4)
  assert (out[:, 3] != image[:, 3]).any()  # Fading in between.
  np.testing.assert_array_equal(commands.overlay(image, np.zeros((4, 6)), threshold), image)


@pytest.mark.parametrize("level, rgb", [(0.0, (0, 0, 128)), (1.0, (128, 0, 0)),
                                        (2.0, (128, 0, 0))])
def test_heat_colours_run_blue_to_red(level, rgb):
  assert tuple(pixels.heat_colours(level)) == rgb

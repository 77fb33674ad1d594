"""Locality figures of generated anomalies (af_jax/metrics/locality.py) on hand-made cases."""

import numpy as np
import pytest

from af_jax.metrics import locality


def _case():
  src = np.full((2, 8, 8, 3), 100, np.uint8)
  region = np.zeros((2, 8, 8), bool)
  region[:, 2:4, 2:4] = True
  return src, region


def test_a_perfectly_local_anomaly():
  src, region = _case()
  out = src.copy()
  out[region] = 200
  figures = locality.locality(src, out, region, region.astype(np.float32), region)
  assert figures == dict(change_inside=1.0, heatmap_iou=1.0, change_outside=0.0)


def test_a_re_rendered_image_is_not_local():
  src, region = _case()
  out = src.copy() + 51   # Everything moved by 0.2 of the range.
  heat = np.full((2, 8, 8), 0.4, np.float32)   # Never reaches the 0.5 mask level.
  figures = locality.locality(src, out, region, heat, region)
  assert figures["change_inside"] == pytest.approx(4 / 64)
  assert figures["heatmap_iou"] == 0.0
  assert figures["change_outside"] == pytest.approx(0.2)


def test_shapes_must_agree():
  src, region = _case()
  with pytest.raises(ValueError, match="shapes differ"):
    locality.locality(src, src, region[:1], region, region)


def test_figures_are_means_over_anomalies():
  src, region = _case()
  out = src.copy()
  out[0][region[0]] = 200      # Local.
  out[1] = out[1] + 51         # Re-rendered.
  figures = locality.per_anomaly(src, out, region, region.astype(np.float32), region)
  np.testing.assert_allclose(figures["change_inside"], [1.0, 4 / 64])
  assert locality.summarize(figures)["change_inside"] == pytest.approx((1 + 4 / 64) / 2)

"""Locality figures of generated anomalies (af_jax/metrics/locality.py) on hand-made cases."""

import numpy as np
import pytest

from af_jax import pixels
from af_jax.metrics import locality
from af_jax.ops import foreground


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
  # A flat grey image has no backdrop to tell apart: all of it is object.
  assert figures == dict(change_inside=1.0, heatmap_iou=1.0, change_outside=0.0, on_object=1.0)


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


def test_the_object_is_found_without_labels_on_a_real_part(bottle_dir):
  image = pixels.resize_image(pixels.read_rgb(sorted((bottle_dir / "train" / "good").glob(
      "*.png"))[0]), 64)
  mask = foreground.foreground(image)
  assert mask[28:36, 28:36].all() and not mask[:4, :4].any() and not mask[-4:, -4:].any()
  assert 0.4 < mask.mean() < 0.8  # The bottle seen from above: a disc filling most of it.
  # A texture has no backdrop: everything is object.
  noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
  assert foreground.foreground(noise).all()
  # An anomaly on the bottle is on the object; one in the corner is on the backdrop.
  masks = np.zeros((2, 64, 64), bool)
  masks[0, 28:36, 28:36] = True
  masks[1, :6, :6] = True
  sources = np.stack([image, image])
  figures = locality.per_anomaly(sources, sources, masks, masks.astype(np.float32), masks)
  np.testing.assert_allclose(figures["on_object"], [1.0, 0.0])

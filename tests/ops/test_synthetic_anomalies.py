"""Pasted synthetic anomalies (af_jax/ops/synthetic_anomalies.py) on real bottle images."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from af_jax.ops import synthetic_anomalies as sa


def _bottle_batch(bottle_dir, n=6, size=64):
  import cv2  # pylint: disable=g-import-not-at-top
  files = sorted((bottle_dir / "train" / "good").glob("*.png"))[:n]
  images = [cv2.resize(cv2.imread(str(f))[..., ::-1], (size, size), interpolation=cv2.INTER_AREA)
            for f in files]
  image = jnp.asarray(np.stack(images), jnp.float32) / 127.5 - 1
  gray = np.stack([cv2.Canny(im, 50, 150) for im in images])[..., None] > 0
  return image, jnp.asarray(gray, jnp.float32)


def test_masks_cover_the_drawn_area_in_one_blob():
  config = sa.SyntheticAnomalyConfig(area=(0.02, 0.06))
  masks = np.asarray(sa.blob_masks(jax.random.PRNGKey(0), 32, 64, 64, config))[..., 0]
  cover = masks.mean((1, 2))
  assert cover.min() >= 0.02 - 1 / 4096 and cover.max() <= 0.06 + 1 / 4096
  components = [ndimage.label(m, structure=np.ones((3, 3)))[1] for m in masks]
  # The window keeps the thresholded noise together: mostly one blob, never scattered specks.
  assert np.mean(np.asarray(components) == 1) >= 0.75 and max(components) <= 3


def test_paste_changes_only_the_masked_pixels_and_edges(bottle_dir):
  image, edges = _bottle_batch(bottle_dir)
  anomaly, new_edges, mask = jax.jit(sa.paste_anomalies, static_argnums=3)(
      jax.random.PRNGKey(1), image, edges, sa.SyntheticAnomalyConfig())
  anomaly, new_edges, mask = map(np.asarray, (anomaly, new_edges, mask))
  outside = mask == 0
  np.testing.assert_array_equal(anomaly[np.broadcast_to(outside, anomaly.shape)],
                                np.asarray(image)[np.broadcast_to(outside, anomaly.shape)])
  np.testing.assert_array_equal(new_edges[outside], np.asarray(edges)[outside])
  assert anomaly.min() >= -1 and anomaly.max() <= 1
  assert set(np.unique(new_edges)) <= {0.0, 1.0}
  # Inside the mask the image visibly changes (a misplaced, recoloured patch).
  change = np.abs(anomaly - np.asarray(image)).mean(-1, keepdims=True)
  assert change[mask > 0].mean() > 0.1
  # Merge edit: edges are only added inside the mask.
  assert np.all(new_edges >= np.asarray(edges))


def test_same_key_same_anomalies(bottle_dir):
  image, edges = _bottle_batch(bottle_dir, n=2)
  config = sa.SyntheticAnomalyConfig()
  a = sa.paste_anomalies(jax.random.PRNGKey(3), image, edges, config)
  b = sa.paste_anomalies(jax.random.PRNGKey(3), image, edges, config)
  c = sa.paste_anomalies(jax.random.PRNGKey(4), image, edges, config)
  np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
  assert not np.array_equal(np.asarray(a[2]), np.asarray(c[2]))


@pytest.mark.parametrize("field, value", [("area", (0.1, 0.05)), ("opacity", (0.0, 1.0)),
                                          ("noise_grids", ()), ("self_donor_prob", 1.5)])
def test_bad_config_names_the_field(field, value):
  with pytest.raises(ValueError, match=field):
    sa.SyntheticAnomalyConfig(**{field: value})

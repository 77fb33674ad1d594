"""Per-category normal references: statistics, leave-one-out, the network's channels, files."""

import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from af_jax import pixels
from af_jax.evidence import reference

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"
BOTTLE = SHARED / "data" / "mvtec_ad" / "bottle"


def _images(seed, n, size=8, low=0, high=256):
  return np.random.default_rng(seed).integers(low, high, (n, size, size, 3), dtype=np.uint8)


def test_moments_give_numpys_mean_and_std():
  images = _images(0, 5)
  mean, std = reference.Moments.of(images).statistics()
  np.testing.assert_allclose(mean, images.mean(0) / 255, atol=1e-6)
  np.testing.assert_allclose(std, (images / 255).std(0), atol=1e-6)


def test_leave_one_out_is_the_statistics_of_the_others():
  images = _images(1, 6)
  moments = reference.Moments.of(images)
  for i in (0, 3):
    others = np.delete(images, i, axis=0) / 255
    loo = moments.leave_one_out(images[i])
    np.testing.assert_allclose(loo[..., :3], others.mean(0), atol=1e-6)
    np.testing.assert_allclose(loo[..., 3:], others.std(0), atol=1e-6)


def test_too_few_or_wrong_images_are_refused():
  with pytest.raises(ValueError, match="at least 2 normal images, got 1"):
    reference.Moments.of(_images(0, 1))
  with pytest.raises(ValueError, match="expected uint8 RGB"):
    reference.Moments.of(np.zeros((3, 8, 8, 3), np.float32))


def test_network_channels_order_deviations_and_agree_in_numpy_and_jax():
  mean_std = np.concatenate([np.full((4, 4, 3), 0.5), np.full((4, 4, 3), 0.1)], -1)
  at_mean = np.zeros((4, 4, 3), np.float32)           # 0.5 in [0, 1] is 0 in [-1, 1].
  far = np.full((4, 4, 3), 1.0, np.float32)
  assert np.allclose(reference.network_channels(at_mean, mean_std, 0.02), -1.0)
  near_value = reference.network_channels(at_mean + 0.05, mean_std, 0.02)
  far_value = reference.network_channels(far, mean_std, 0.02)
  assert np.all(-1 < near_value) and np.all(near_value < far_value) and np.all(far_value < 1)
  np.testing.assert_allclose(
      np.asarray(reference.network_channels(jnp.asarray(far), jnp.asarray(mean_std), 0.02)),
      far_value, rtol=1e-6)


@pytest.mark.skipif(not BOTTLE.is_dir(), reason=f"real MVTec bottle images not found at {BOTTLE}")
def test_real_defects_stand_out_against_the_leave_one_out_reference():
  """On real bottles, a defect deviates from the reference more than normal images do."""
  size = 64
  normal = pixels.resize_images(
      [pixels.read_rgb(f) for f in sorted((BOTTLE / "train" / "good").glob("*.png"))[:60]], size)
  broken = sorted((BOTTLE / "test" / "broken_large").glob("*.png"))[:5]
  masks = [pixels.resize_labels(pixels.read_mask(
      BOTTLE / "ground_truth" / "broken_large" / f"{f.stem}_mask.png").astype(np.uint8),
      size) > 0 for f in broken]
  moments = reference.Moments.of(normal)
  refs = reference.References.from_moments({"mvtec_ad/bottle": moments})
  defect = pixels.resize_images([pixels.read_rgb(f) for f in broken], size)
  channels = reference.network_channels(pixels.uint8_to_signed(defect), refs.mean_std(
      np.zeros(len(defect), int)), 0.02).mean(-1)
  inside = np.mean([c[m].mean() for c, m in zip(channels, masks)])
  normal_channels = np.stack([reference.network_channels(
      pixels.uint8_to_signed(x), moments.leave_one_out(x), 0.02).mean(-1) for x in normal[:10]])
  assert inside > normal_channels.mean() + 0.3


def test_nearest_reference_and_names(tmp_path):
  dark = reference.Moments.of(_images(2, 4, high=60))
  bright = reference.Moments.of(_images(3, 4, low=200))
  refs = reference.References.from_moments({"synthetic/dark-8px": dark, "mvtec_ad/bright": bright})
  np.testing.assert_array_equal(refs.nearest(np.concatenate([_images(4, 2, low=200),
                                                            _images(5, 1, high=60)])), [1, 1, 0])
  assert refs.index("bright") == 1 and refs.index("synthetic/dark-8px") == 0
  with pytest.raises(KeyError, match="no single reference named 'gear'"):
    refs.index("gear")
  with pytest.raises(ValueError, match="do not match the references"):
    refs.nearest(_images(0, 1, size=16))

  loaded = reference.load(refs.save(tmp_path).parent)
  assert loaded.names == refs.names
  np.testing.assert_array_equal(loaded.mean_std(1), refs.mean_std(1))


def test_missing_or_corrupt_reference_files_say_so(tmp_path):
  with pytest.raises(FileNotFoundError, match="reference_statistics.npz is missing"):
    reference.load(tmp_path)
  (tmp_path / reference.FILE_NAME).write_bytes(b"not an npz")
  with pytest.raises(ValueError, match="is not a reference file"):
    reference.load(tmp_path)

"""The one pixel convention: the resize rule, value ranges, and training = inference inputs."""

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from af_jax.commands import prepare
from af_jax import infer
from af_jax import pixels
from af_jax.training import stage_inputs


def _stripes(height, width):
  """One-pixel horizontal stripes: the worst case for aliasing when rows are dropped."""
  image = np.zeros((height, width, 3), np.uint8)
  image[::2] = 255
  return image


def test_resize_rule_shrinks_by_area_and_enlarges_bilinearly():
  shrink, grow = _stripes(80, 60), _stripes(20, 24)
  np.testing.assert_array_equal(pixels.resize_image(shrink, 32),
                                cv2.resize(shrink, (32, 32), interpolation=cv2.INTER_AREA))
  np.testing.assert_array_equal(pixels.resize_image(grow, 32),
                                cv2.resize(grow, (32, 32), interpolation=cv2.INTER_LINEAR))
  # Rows shrink (128 -> 32) while columns grow (20 -> 32): the rows are still averaged (mean
  # grey), which one OpenCV call with area interpolation does not do on a mixed resize.
  mixed = pixels.resize_image(_stripes(128, 20), 32)
  one_call = cv2.resize(_stripes(128, 20), (32, 32), interpolation=cv2.INTER_AREA)
  assert mixed.shape == (32, 32, 3) and np.abs(mixed - 127.5).max() <= 1
  assert np.abs(one_call - 127.5).max() > 30


def test_value_conversions_round_trip():
  x = np.arange(256, dtype=np.uint8)
  signed = pixels.uint8_to_signed(x)
  assert signed.dtype == np.float32 and signed[0] == -1 and signed[-1] == 1
  np.testing.assert_array_equal(pixels.signed_to_uint8(signed), x)
  np.testing.assert_array_equal(pixels.unit_to_uint8(pixels.uint8_to_unit(x)), x)
  # Stored edges (round(p * 255)) binarise like the probabilities they came from.
  p = np.linspace(0, 1, 10001, dtype=np.float32)
  np.testing.assert_array_equal(
      pixels.binarize_edges(pixels.uint8_to_unit(pixels.unit_to_uint8(p)), 0.5),
      pixels.binarize_edges(p, 0.5))


def test_grayscale_and_bad_images(tmp_path):
  gray = np.full((5, 7), 9, np.uint8)
  np.testing.assert_array_equal(pixels.as_rgb(gray), np.full((5, 7, 3), 9, np.uint8))
  with pytest.raises(ValueError, match="image 3: expected uint8"):
    pixels.as_rgb(np.zeros((5, 7, 3), np.float32), 3)
  assert cv2.imwrite(str(tmp_path / "g.png"), gray)
  np.testing.assert_array_equal(pixels.read_rgb(tmp_path / "g.png"), pixels.as_rgb(gray))
  (tmp_path / "bad.png").write_bytes(b"not a png")
  for path in (tmp_path / "bad.png", tmp_path / "missing.png"):
    with pytest.raises(ValueError, match=f"cannot read image {path}"):
      pixels.read_rgb(path)


def test_prepared_data_and_the_detector_feed_the_network_identical_arrays(
    runs, bottle_dir, tmp_path):
  """An odd-sized, non-square photo through `af-jax prepare` and through `infer.Detector`."""
  root, _, _ = runs
  detector = infer.Detector(root / "blaze", batch_size=4)
  size = detector.size
  photo = cv2.imread(str(bottle_dir / "train" / "good" / "000.png"))[13:90, 5:58]  # 77 x 53
  manual = tmp_path / "mvtec"
  for name in ("train/good/000.png", "test/good/000.png"):
    (manual / "bottle" / name).parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(manual / "bottle" / name), photo)
  (manual / "bottle" / "ground_truth").mkdir()
  assert prepare.main(["--dataset", "mvtec_ad", "--manual_dir", str(manual), "--data_dir",
                       str(tmp_path / "tfds"), "--size", str(size), "--edges",
                       detector.edge_method]) == 0
  example = tfds.data_source(f"mvtec_ad/bottle-{size}px-{detector.edge_method}",
                             data_dir=str(tmp_path / "tfds"), download=False)["train"][0]
  trained = stage_inputs.decode_batch({k: np.asarray(example[k])[None] for k in ("image", "edges",
                                                                            "regions")},
                                detector.edge_threshold)

  edges, image, _ = detector.network_inputs([cv2.cvtColor(photo, cv2.COLOR_BGR2RGB)])
  assert image.shape == (1, size, size, 3) and edges.shape == (1, size, size, 1)
  np.testing.assert_array_equal(np.asarray(trained["image"]), image)
  np.testing.assert_array_equal(np.asarray(trained["edges"]), edges)


def test_overlay_colours_only_where_the_heatmap_nears_the_threshold():
  image = np.random.default_rng(0).integers(0, 256, (4, 6, 3), np.uint8)
  threshold = 0.02
  heatmap = np.array([[0.0, 0.004, 0.01, 0.015, 0.02, 0.5]] * 4, np.float32)
  out = pixels.overlay(image, heatmap, threshold)
  # Up to half the threshold the image is untouched; at and above it, fully tinted.
  np.testing.assert_array_equal(out[:, :3], image[:, :3])
  expected = image[:, 4:] * 0.4 + pixels.heat_colours(heatmap[:, 4:] / 0.04) * 0.6
  np.testing.assert_allclose(out[:, 4:], expected, atol=0.5 + 1e-4)
  assert (out[:, 3] != image[:, 3]).any()  # Fading in between.
  np.testing.assert_array_equal(pixels.overlay(image, np.zeros((4, 6)), threshold), image)


@pytest.mark.parametrize("level, rgb", [(0.0, (0, 0, 128)), (1.0, (128, 0, 0)),
                                        (2.0, (128, 0, 0))])
def test_heat_colours_run_blue_to_red(level, rgb):
  assert tuple(pixels.heat_colours(level)) == rgb

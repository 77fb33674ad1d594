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


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_16_bit_image_of_12_bit_data_is_scaled_by_its_bit_depth(tmp_path, caplog, suffix):
  """Scaled from 0..65535, 12-bit sensor data (0..4095) came out almost black (mean 8)."""
  ramp = np.linspace(0, 4095, 48 * 64).reshape(48, 64).astype(np.uint16)
  path = tmp_path / f"sensor{suffix}"
  assert cv2.imwrite(str(path), ramp)
  image = pixels.read_rgb(path)
  assert image.dtype == np.uint8 and image.shape == (48, 64, 3)
  np.testing.assert_array_equal(image[..., 0], np.rint(ramp * (255 / 4095)).astype(np.uint8))
  assert [r.getMessage().split(" (further")[0] for r in caplog.records] == [
      f"{path}: a 16-bit image with values 0..4095, read as 12-bit data (0..4095 scaled to "
      "0..255)"]
  full = tmp_path / "full" / f"full{suffix}"  # The whole 16-bit range: read as 16-bit, no note.
  full.parent.mkdir()
  caplog.clear()
  assert cv2.imwrite(str(full), np.dstack([ramp * 16 + 15] * 3))
  np.testing.assert_allclose(pixels.read_rgb(full), image, atol=1)
  assert not caplog.records


def test_a_float_image_is_refused_naming_the_file(tmp_path):
  path = tmp_path / "float.tif"
  assert cv2.imwrite(str(path), np.full((8, 8, 3), 0.5, np.float32))
  with pytest.raises(ValueError, match=rf"cannot read image {path} \(float32 samples; expected "
                                       "8- or 16-bit"):
    pixels.read_rgb(path)


def _disc(size=64, radius=14):
  mask = np.zeros((size, size), np.uint8)
  cv2.circle(mask, (size // 2, size // 2), radius, 255, -1)
  return mask


def test_jpeg_and_anti_aliased_masks_are_binarized_at_half_range(tmp_path, caplog):
  """Any non-zero pixel of a JPEG mask made its ringing defect: +15-40% mask area."""
  disc = _disc()
  jpeg = tmp_path / "jpeg" / "000_mask.jpg"
  jpeg.parent.mkdir()
  assert cv2.imwrite(str(jpeg), disc, [cv2.IMWRITE_JPEG_QUALITY, 75])
  assert (cv2.imread(str(jpeg), cv2.IMREAD_GRAYSCALE) > 0).sum() > 1.15 * (disc > 0).sum()
  assert abs(int(pixels.read_mask(jpeg).sum()) - int((disc > 0).sum())) <= 0.03 * disc.sum() / 255
  assert "binarized at half range (>= 128)" in caplog.text and str(jpeg) in caplog.text
  soft = tmp_path / "soft.png"  # Anti-aliased edges: a graded PNG, from 4x supersampling.
  big = np.zeros((256, 256), np.uint8)
  cv2.circle(big, (128, 128), 56, 255, -1)
  assert cv2.imwrite(str(soft), cv2.resize(big, (64, 64), interpolation=cv2.INTER_AREA))
  np.testing.assert_array_equal(pixels.read_mask(soft),
                                cv2.resize(big, (64, 64), interpolation=cv2.INTER_AREA) >= 128)


def test_label_masks_keep_any_non_zero_value_as_defect(tmp_path):
  """VisA and MVTec LOCO encode defect types in small values: they stay defect."""
  labels = np.zeros((32, 32), np.uint16)
  labels[2:8, 2:8], labels[10:20, 10:20], labels[25:, 25:] = 1, 2, 3
  path = tmp_path / "labels.png"
  assert cv2.imwrite(str(path), labels)
  np.testing.assert_array_equal(pixels.read_mask(path), labels > 0)

"""The no-learning floors (af_jax/evidence/baseline.py) on real images and on made-up ones.

Real data: MVTec AD bottle (aligned) and MPDD metal_plate (unaligned), read and resized by
`af_jax.pixels` as prepared datasets are (the 256 px files shrink by area averaging), masks
nearest-neighbour.
"""

import cv2
import numpy as np
import pytest

from af_jax.evidence import baseline
from af_jax.metrics import localization
from af_jax import pixels
from conftest import SHARED, _require


@pytest.fixture(scope="session")
def metal_plate_dir():
  """The real MPDD `metal_plate` category (256 px, MVTec AD layout)."""
  return _require(SHARED / "data" / "mpdd" / "metal_plate")


def _category(folder, size):
  """(train images, test images, test masks, test labels) of a category at `size` px."""
  def images(files):
    return pixels.resize_images([pixels.read_rgb(f) for f in files], size)

  tests = sorted((folder / "test").glob("*/*.png"))
  masks = []
  for f in tests:
    gt = folder / "ground_truth" / f.parent.name / f"{f.stem}_mask.png"
    masks.append(pixels.resize_labels(pixels.read_mask(gt).astype(np.uint8), size)
                 if f.parent.name != "good" else np.zeros((size, size), np.uint8))
  labels = [int(f.parent.name != "good") for f in tests]
  return images(sorted((folder / "train" / "good").glob("*.png"))), images(tests), masks, labels


def _figures(floor, folder, size=64):
  """(px-AUROC, AUPRO, image AUROC) of `floor` fitted on the category's train images."""
  train, images, masks, labels = _category(folder, size)
  result = floor.fit(train).localize(images)
  assert result.heatmaps.shape == (len(images), size, size)
  return (localization.pixel_auroc(result.heatmaps, masks),
          localization.aupro(result.heatmaps, masks),
          localization.image_auroc(result.scores, labels))


# DESIGN.md B.11's table at 64 px: px-AUROC / AUPRO / image AUROC.
PER_PIXEL = {"bottle_dir": (0.939, 0.758, 0.987), "metal_plate_dir": (0.847, 0.483, 0.799)}
NEAREST_PATCH = {"bottle_dir": (0.907, 0.739, 0.937),
                 "metal_plate_dir": (0.959, 0.767, 0.992)}


@pytest.mark.parametrize("category", sorted(PER_PIXEL))
def test_per_pixel_floor_matches_the_reference_figures(category, request):
  figures = _figures(baseline.PixelGaussianBaseline(), request.getfixturevalue(category))
  assert figures == pytest.approx(PER_PIXEL[category], abs=0.003)


@pytest.mark.slow  # 15 s per category on 2 idle CPU cores (35-70 s before the bfloat16 search).
@pytest.mark.parametrize("category", sorted(NEAREST_PATCH))
def test_nearest_patch_floor_matches_the_reference_figures(category, request):
  figures = _figures(baseline.NearestPatchBaseline(), request.getfixturevalue(category))
  assert figures == pytest.approx(NEAREST_PATCH[category], abs=0.003)


def test_a_small_patch_memory_beats_the_per_pixel_floor_on_unaligned_plates(metal_plate_dir):
  """B.11's point, in seconds: a tenth of the memory still wins where alignment is missing."""
  figures = _figures(baseline.NearestPatchBaseline(memory_size=8000), metal_plate_dir)
  assert all(f > p + 0.05 for f, p in zip(figures, PER_PIXEL["metal_plate_dir"]))


def test_nearest_patch_is_b11_computed_exactly(bottle_dir, monkeypatch):
  """Against float64 numpy on real patches, built from B.11's words alone: files in sorted
  order, pixels row-major, `default_rng(seed).choice`, reflect padding, OpenCV's blur.

  Small blocks make the search span several query blocks (the last one partial) and several
  memory blocks (filled up with padding rows).
  """
  monkeypatch.setattr(baseline, "QUERY_CHUNK", 1000)
  monkeypatch.setattr(baseline, "MEMORY_CHUNK", 300)
  size, memory_size, seed = 32, 1000, 3
  train, images, _, _ = _category(bottle_dir, size)
  train, images = train[:4], images[[0, 40]]  # A good test image and a broken one.

  def all_patches(uint8_images):  # [N * S * S, 147] in [0, 1], float64.
    padded = np.pad(uint8_images / 255.0, ((0, 0), (3, 3), (3, 3), (0, 0)), mode="reflect")
    return np.stack([padded[n, y:y + 7, x:x + 7].ravel() for n in range(len(uint8_images))
                     for y in range(size) for x in range(size)])

  memory = all_patches(train)[
      np.random.default_rng(seed).choice(len(train) * size * size, memory_size, replace=False)]
  queries = all_patches(images)
  exact = np.concatenate([np.sqrt(((q[:, None] - memory[None]) ** 2).sum(-1)).min(1)
                          for q in np.array_split(queries, 64)]).reshape(2, size, size)

  fitted = baseline.NearestPatchBaseline(memory_size=memory_size, seed=seed, sigma=0).fit(train)
  np.testing.assert_allclose(fitted.memory, memory, atol=1e-7)
  raw = fitted.localize(images).heatmaps
  # float32's |q|^2 - 2 q.m + |m|^2 rounds to a few ulp (1.5e-5) of squared norms up to 147.
  np.testing.assert_allclose(raw.astype(np.float64) ** 2, exact ** 2, atol=1e-4)

  fitted.sigma = None  # The default: 4 * 32 / 256 = 0.5 px.
  blurred = fitted.localize(images)
  expected = np.stack([cv2.GaussianBlur(m, (0, 0), 0.5) for m in raw])
  np.testing.assert_allclose(blurred.heatmaps, expected, atol=1e-6)
  np.testing.assert_allclose(blurred.scores, expected.max(axis=(1, 2)), atol=1e-6)


def test_the_blur_is_opencvs_with_the_kernel_from_sigma():
  maps = np.random.default_rng(0).random((2, 20, 20)).astype(np.float32)
  radius = 4  # sigma 1 on float maps: round(4 sigma) taps each side.
  x = np.arange(-radius, radius + 1)
  taps = np.exp(-x**2 / 2.0) / np.exp(-x**2 / 2.0).sum()
  padded = np.pad(maps[0].astype(np.float64), radius, mode="reflect")  # OpenCV's reflect-101.
  rows = sum(t * padded[i:i + 20] for i, t in enumerate(taps))
  expected = sum(t * rows[:, i:i + 20] for i, t in enumerate(taps))
  np.testing.assert_allclose(baseline.opencv_blur(maps, 1.0)[0], expected, atol=1e-6)
  np.testing.assert_array_equal(baseline.opencv_blur(maps, 0), maps)


@pytest.mark.parametrize("floor, reach", [(baseline.PixelGaussianBaseline(sigma=0), 0),
                                          (baseline.NearestPatchBaseline(memory_size=2000,
                                                                         sigma=0), 3)])
def test_a_deviating_pixel_scores_highest(floor, reach):
  """Highest at the pixel, or for patches anywhere within `reach` (every 7x7 patch that
  holds the pixel is as far from the normal ones)."""
  rng = np.random.default_rng(0)
  normal = rng.integers(100, 110, (20, 16, 16, 3)).astype(np.uint8)
  test = np.full((2, 16, 16, 3), 105, np.uint8)
  test[1, 5, 9] = 250
  result = floor.fit(normal).localize(test)
  assert result.heatmaps.dtype == np.float32 and result.scores.dtype == np.float64
  where = np.unravel_index(result.heatmaps[1].argmax(), (16, 16))
  assert abs(where[0] - 5) <= reach and abs(where[1] - 9) <= reach
  assert result.scores[1] > 5 * result.scores[0]


@pytest.mark.parametrize("make", [baseline.PixelGaussianBaseline,
                                  lambda: baseline.NearestPatchBaseline(memory_size=100)])
def test_bad_input_says_what_was_expected(make):
  fitted = make().fit(np.zeros((3, 8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match=r"images of shape \(16, 16, 3\) do not match the "
                                       r"\(8, 8, 3\) images the baseline was fitted on"):
    fitted.localize(np.zeros((1, 16, 16, 3), np.uint8))
  with pytest.raises(ValueError, match=r"expected uint8 RGB images \[N, H, W, 3\]"):
    fitted.localize(np.zeros((1, 8, 8, 3), np.float32))
  with pytest.raises(ValueError, match="fit"):
    make().localize(np.zeros((1, 8, 8, 3), np.uint8))


def test_too_few_images_or_a_bad_setting_say_so():
  with pytest.raises(ValueError, match="at least 2"):
    baseline.PixelGaussianBaseline().fit(np.zeros((1, 8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match=r"2 normal images of 8x8 px give only 128 patches; the "
                                       r"nearest-patch memory needs 80000 \(give more images, or "
                                       r"keep at most 128: memory_size=128, or --patch_memory "
                                       r"128 in af-jax evaluate and demo\)"):
    baseline.NearestPatchBaseline().fit(np.zeros((2, 8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match="patch_size must be odd"):
    baseline.NearestPatchBaseline(patch_size=6)
  with pytest.raises(ValueError, match="memory_size must be at least 1"):
    baseline.NearestPatchBaseline(memory_size=0)


@pytest.mark.parametrize("floor, count, message", [
    (baseline.PixelGaussianBaseline(), 1, "at least 2 normal images, got 1"),
    (baseline.NearestPatchBaseline(memory_size=129), 2, "2 normal images of 8x8 px give only 128")])
def test_the_count_of_normal_images_is_checked_before_any_is_read(floor, count, message):
  """What `fit` refuses, `check_normal_images` refuses from the count alone (callers check a
  category's train split before reading it); one more image is enough."""
  with pytest.raises(ValueError, match=message):
    floor.check_normal_images(count, 8, 8)
  with pytest.raises(ValueError, match=message):
    floor.fit(np.zeros((count, 8, 8, 3), np.uint8))
  floor.check_normal_images(count + 1, 8, 8)

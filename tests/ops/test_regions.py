"""Candidate regions: label maps on real bottles and synthetic blobs, user masks, errors."""

import cv2
import numpy as np
import pytest

from af_jax.ops import regions

SIZE = 128


def _check_label_map(labels, shape, max_regions):
  assert labels.dtype == np.uint8 and labels.shape == shape
  count = int(labels.max())
  assert 1 <= count <= max_regions
  assert set(np.unique(labels)) == set(range(count + 1))  # background 0, contiguous 1..K
  areas = np.bincount(labels.ravel())[1:]
  assert np.all(np.diff(areas) <= 0)  # labels follow decreasing area
  return areas


def _iou(a, b):
  return np.count_nonzero(a & b) / np.count_nonzero(a | b)


@pytest.fixture(scope="module")
def blobs():
  """A noisy grey image with three coloured blobs, and the blobs' true masks."""
  image = np.full((SIZE, SIZE, 3), 150, np.uint8)
  masks = []
  for draw, color in [(lambda m: cv2.circle(m, (36, 36), 18, 1, -1), (200, 40, 40)),
                      (lambda m: cv2.rectangle(m, (70, 20), (110, 50), 1, -1), (40, 60, 190)),
                      (lambda m: cv2.ellipse(m, (50, 95), (30, 14), 20, 0, 360, 1, -1),
                       (40, 170, 60))]:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    draw(mask)
    image[mask > 0] = color
    masks.append(mask > 0)
  noise = np.random.default_rng(0).normal(0, 6, image.shape)
  return np.clip(image + noise, 0, 255).astype(np.uint8), masks


def test_real_bottles_give_valid_maps_with_the_bottle_inside(bottle_dir):
  for name in ("000.png", "005.png"):
    image = cv2.cvtColor(cv2.imread(str(bottle_dir / "train" / "good" / name)),
                         cv2.COLOR_BGR2RGB)
    labels = regions.propose_regions(image)
    areas = _check_label_map(labels, image.shape[:2], 8)
    assert areas.min() >= 0.01 * labels.size  # small pieces were grouped away
    height, width = labels.shape
    assert not labels[[0, 0, -1, -1], [0, -1, 0, -1]].any()  # the white backdrop is background
    assert labels[height // 2, width // 2] != 0  # the bottle's mouth is a region
    capped = regions.propose_regions(image, max_regions=3)
    _check_label_map(capped, image.shape[:2], 3)
    assert capped.max() == 3


def test_unsupervised_segmentation_recovers_coloured_blobs(blobs):
  image, masks = blobs
  labels = regions.propose_regions(image)
  _check_label_map(labels, (SIZE, SIZE), 8)
  assert labels.max() == len(masks)  # the grey backdrop is not a region
  for mask in masks:
    assert max(_iou(mask, labels == k) for k in range(1, len(masks) + 1)) > 0.9


def test_user_masks_in_both_layouts(tmp_path, blobs):
  image, masks = blobs
  backdrop = ~np.logical_or.reduce(masks)
  folder = tmp_path / "folders" / "bottle" / "train" / "good" / "000"
  folder.mkdir(parents=True)
  for index, mask in enumerate([backdrop] + masks):
    cv2.imwrite(str(folder / f"{index}.png"), mask.astype(np.uint8) * 255)
  label_map = tmp_path / "maps" / "bottle" / "train" / "good" / "000.png"
  label_map.parent.mkdir(parents=True)
  cv2.imwrite(str(label_map), sum((k + 1) * m for k, m in enumerate(masks)).astype(np.uint16))

  from_folder = regions.load_region_masks(tmp_path / "folders", "bottle/train/good/000.png",
                                          (SIZE, SIZE))
  from_map = regions.load_region_masks(tmp_path / "maps", "bottle/train/good/000.png",
                                       (SIZE, SIZE))
  assert [m.dtype for m in from_folder] == [bool] * 4
  for loaded, expected in [(from_folder, [backdrop] + masks), (from_map, masks)]:
    assert len(loaded) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(loaded, expected))
  for user_masks in (from_folder, from_map):
    labels = regions.propose_regions(image, masks=user_masks)
    _check_label_map(labels, (SIZE, SIZE), 8)
    assert sorted(map(np.count_nonzero, (labels == k for k in (1, 2, 3)))) == sorted(
        map(np.count_nonzero, masks))  # the backdrop mask is dropped, the blobs stay exact


def test_overlapping_masks_merge_and_nested_or_small_ones_do_not():
  image = np.zeros((100, 100, 3), np.uint8)
  def box(top, left, bottom, right):
    mask = np.zeros((100, 100), bool)
    mask[top:bottom, left:right] = True
    return mask
  near_duplicates = [box(10, 10, 50, 50), box(12, 12, 52, 52)]  # IoU 0.82
  whole, part = box(55, 10, 95, 60), box(65, 20, 80, 35)  # part nested, IoU 0.11
  # Specks of 25 px (< 1% of the image) join what surrounds them: `whole`, or the background.
  specks = [box(85, 40, 90, 45), box(5, 80, 10, 85)]
  labels = regions.propose_regions(image, masks=near_duplicates + [whole, part] + specks)
  _check_label_map(labels, (100, 100), 8)
  assert labels.max() == 3
  assert np.array_equal(labels == labels[30, 30], near_duplicates[0] | near_duplicates[1])
  assert np.array_equal(labels == labels[70, 25], part)
  assert np.array_equal(labels == labels[60, 15], whole & ~part)
  merged = regions.merge_overlapping([whole, part, box(57, 10, 95, 60)], merge_iou=0.6)
  assert len(merged) == 2


def test_bad_inputs_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"no region masks for a/001\.png"):
    regions.load_region_masks(tmp_path, "a/001.png", (8, 8))
  (tmp_path / "a").mkdir()
  cv2.imwrite(str(tmp_path / "a" / "002.png"), np.zeros((8, 9), np.uint8))
  with pytest.raises(ValueError, match=r"002\.png: mask is 9x8 \(WxH\), expected .* 8x8"):
    regions.load_region_masks(tmp_path, "a/002.png", (8, 8))
  (tmp_path / "a" / "003.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match=r"003\.png: cannot read"):
    regions.load_region_masks(tmp_path, "a/003.png", (8, 8))
  cv2.imwrite(str(tmp_path / "a" / "004.png"), np.zeros((8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match=r"004\.png: a label map must have one channel"):
    regions.load_region_masks(tmp_path, "a/004.png", (8, 8))
  (tmp_path / "a" / "005").mkdir()
  with pytest.raises(FileNotFoundError, match=r"005: no \.png masks"):
    regions.load_region_masks(tmp_path, "a/005.png", (8, 8))
  image = np.zeros((8, 8, 3), np.uint8)
  with pytest.raises(ValueError, match=r"mask 1 has shape \(8, 9\), expected .* \(8, 8\)"):
    regions.propose_regions(image, masks=[np.ones((8, 8), bool), np.ones((8, 9), bool)])
  with pytest.raises(ValueError, match="expected a uint8 RGB image"):
    regions.propose_regions(image[..., 0])
  with pytest.raises(ValueError, match="max_regions must be in 1..255"):
    regions.propose_regions(image, max_regions=0)

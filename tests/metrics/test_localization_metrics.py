"""Localization metrics against brute-force definitions, sklearn and hand-worked cases."""

import cv2
import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from af_jax.metrics import localization


def brute_force_aupro(scores, masks, fpr_limit):
  """MVTec AD's AUPRO written out literally: one pass over the data per threshold."""
  masks = masks.astype(bool)
  regions = []
  for index, mask in enumerate(masks):
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    regions += [(index, labels == k) for k in range(1, count + 1)]
  normal = ~masks
  fprs, pros = [0.0], [0.0]
  for threshold in sorted(set(scores.ravel().tolist()), reverse=True):
    predicted = scores >= threshold
    fprs.append((predicted & normal).sum() / normal.sum())
    pros.append(np.mean([predicted[index][region].mean() for index, region in regions]))
  fprs.append(1.0)
  pros.append(1.0)
  area = 0.0
  for x0, x1, y0, y1 in zip(fprs[:-1], fprs[1:], pros[:-1], pros[1:]):
    if x1 <= fpr_limit:
      area += (x1 - x0) * (y0 + y1) / 2
      continue
    if x0 < fpr_limit:
      y_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
      area += (fpr_limit - x0) * (y0 + y_limit) / 2
    break
  return area / fpr_limit


def random_case(seed, levels):
  """Blobby masks (some touching only diagonally) and scores with `levels` tied values."""
  rng = np.random.default_rng(seed)
  masks = ndimage.binary_opening(rng.random((6, 24, 24)) > 0.75, np.ones((1, 2, 1)))
  masks[0] = False  # an image without anomaly
  signal = masks + rng.normal(0, 0.8, masks.shape)
  scores = np.round(signal * levels / 4) / levels
  return scores.astype(np.float32), masks


@pytest.mark.parametrize("seed,levels,fpr_limit", [
    (0, 3, 0.3), (1, 8, 0.3), (2, 40, 0.3), (3, 5, 0.05), (4, 1000, 1.0)])
def test_aupro_matches_brute_force(seed, levels, fpr_limit):
  scores, masks = random_case(seed, levels)
  assert len(np.unique(scores)) < scores.size  # ties are present
  expected = brute_force_aupro(scores, masks, fpr_limit)
  assert localization.aupro(scores, masks, fpr_limit) == pytest.approx(expected, abs=1e-9)


def test_aupro_on_bottle_masks_with_a_real_crude_detector(bottle_dir):
  """Real MVTec masks; score = distance of a test image to the mean train image."""
  size = 48
  def load(path, flags):
    image = cv2.imread(str(path), flags)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
  train = np.mean([load(path, cv2.IMREAD_GRAYSCALE)
                   for path in sorted((bottle_dir / "train" / "good").glob("*.png"))[:8]], 0)
  scores, masks = [], []
  for image_path in sorted((bottle_dir / "test").glob("*/00[0-4].png")):
    defect = image_path.parent.name
    mask_path = bottle_dir / "ground_truth" / defect / f"{image_path.stem}_mask.png"
    mask = (cv2.resize(cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE), (size, size),
                       interpolation=cv2.INTER_NEAREST) > 0) if defect != "good" else (
                           np.zeros((size, size), bool))
    scores.append(np.round(np.abs(load(image_path, cv2.IMREAD_GRAYSCALE) - train) / 4))
    masks.append(mask)
  scores, masks = np.stack(scores), np.stack(masks)
  assert masks.any(axis=(1, 2)).sum() == 15 and (~masks.any(axis=(1, 2))).sum() == 5
  assert localization.aupro(scores, masks) == pytest.approx(
      brute_force_aupro(scores, masks, 0.3), abs=1e-9)
  assert localization.pixel_auroc(scores, masks) == pytest.approx(
      roc_auc_score(masks.ravel(), scores.ravel()), abs=1e-12)


def test_aupro_hand_worked_tie_and_partial_trapezoid():
  # Normal pixels 0.9, 0.5, 0.4, 0.1 and one anomalous pixel tied at 0.5.
  # Curve: (0, 0), (.25, 0), (.5, 1), (.75, 1), (1, 1). PRO at FPR 0.3 is
  # 0.2, so the area up to 0.3 is 0.5 * 0.2 * 0.05 = 0.005, i.e. 1/60 of 0.3.
  scores = np.array([[[0.9, 0.5, 0.5, 0.4, 0.1]]])
  masks = np.array([[[0, 1, 0, 0, 0]]], bool)
  assert localization.aupro(scores, masks) == pytest.approx(1 / 60, abs=1e-12)
  assert localization.aupro(scores, masks, fpr_limit=0.5) == pytest.approx(0.25 * 0.5 / 0.5)


def test_regions_are_eight_connected():
  # One region of 3 pixels (corner touch); only its corner pixel scores high:
  # PRO is 1/3 (4-connectivity would give two regions and PRO 1/2).
  masks = np.zeros((1, 4, 4), bool)
  masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 1, 2] = True
  scores = np.zeros((1, 4, 4))
  scores[0, 0, 0] = 1.0
  fpr, pro = localization.pro_curve(scores, masks)
  np.testing.assert_allclose(fpr, [0, 0, 1, 1])
  np.testing.assert_allclose(pro, [0, 1 / 3, 1, 1])


@pytest.mark.parametrize("max_fpr", [0.0, 0.1, 0.3, 0.999])
def test_truncated_pro_curve_is_a_prefix_ending_past_max_fpr(max_fpr):
  scores, masks = random_case(6, 12)
  full_fpr, full_pro = localization.pro_curve(scores, masks)
  fpr, pro = localization.pro_curve(scores, masks, max_fpr=max_fpr)
  past = int(np.argmax(full_fpr > max_fpr))  # index of the first point beyond
  np.testing.assert_array_equal(fpr, full_fpr[:past + 1])
  np.testing.assert_allclose(pro, full_pro[:past + 1], rtol=0, atol=1e-12)


def test_perfect_inverted_and_constant_scores():
  _, masks = random_case(5, 10)
  perfect = masks.astype(np.float32)
  assert localization.pixel_auroc(perfect, masks) == 1.0
  assert localization.aupro(perfect, masks) == pytest.approx(1.0)
  assert localization.pixel_auroc(1 - perfect, masks) == 0.0
  assert localization.aupro(1 - perfect, masks) == 0.0
  assert localization.pixel_auroc(np.full(masks.shape, 0.3), masks) == 0.5
  labels = np.array([0, 0, 1, 1, 1])
  assert localization.image_auroc(np.array([0.1, 0.2, 0.3, 0.4, 0.5]), labels) == 1.0
  assert localization.image_auroc(np.array([0.5, 0.4, 0.3, 0.2, 0.1]), labels) == 0.0
  assert localization.image_auroc(np.ones(5), labels) == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_agrees_with_sklearn_including_ties(seed):
  scores, masks = random_case(seed, 4)
  assert localization.pixel_auroc(scores, masks) == pytest.approx(
      roc_auc_score(masks.ravel(), scores.ravel()), abs=1e-12)
  rng = np.random.default_rng(seed)
  image_scores = rng.integers(0, 5, 40).astype(np.float64)
  labels = rng.random(40) > 0.5
  assert localization.image_auroc(image_scores, labels) == pytest.approx(
      roc_auc_score(labels, image_scores), abs=1e-12)


def test_bad_inputs_raise_clear_errors():
  scores = np.zeros((2, 4, 4))
  masks = np.zeros((2, 4, 4), bool)
  with pytest.raises(ValueError, match="does not match masks shape"):
    localization.pixel_auroc(scores, masks[:, :3])
  with pytest.raises(ValueError, match="no positive"):
    localization.pixel_auroc(scores, masks)
  with pytest.raises(ValueError, match="no anomalous region"):
    localization.aupro(scores, masks)
  with pytest.raises(ValueError, match="no normal pixel"):
    localization.aupro(scores, ~masks)
  with pytest.raises(ValueError, match="no negative"):
    localization.image_auroc([0.1, 0.2], [1, 1])
  with pytest.raises(ValueError, match=r"\[N, H, W\]"):
    localization.pixel_auroc(scores[0], masks[0])
  with pytest.raises(ValueError, match="NaN"):
    localization.pixel_auroc(np.full((2, 4, 4), np.nan), masks)
  with pytest.raises(ValueError, match="fpr_limit"):
    localization.aupro(scores, masks, fpr_limit=0)


def test_evaluation_summary():
  per_category = {"bottle": {"pixel_auroc": 0.98, "aupro": 0.90, "num_images": 83},
                  "cable": {"pixel_auroc": 0.94, "aupro": 0.80, "image_auroc": 1.0,
                            "num_images": np.int64(150)}}
  summary, table = localization.evaluation_summary(per_category)
  assert summary["per_category"] == per_category
  assert isinstance(summary["per_category"]["cable"]["num_images"], int)
  assert summary["mean"] == pytest.approx({"pixel_auroc": 0.96, "aupro": 0.85,
                                           "num_images": 116.5, "image_auroc": 1.0})
  lines = table.splitlines()
  assert lines[0] == "| category | pixel_auroc (%) | aupro (%) | num_images | image_auroc (%) |"
  assert lines[2] == "| bottle | 98.0 | 90.0 | 83 | - |"
  assert lines[-1] == "| mean | 96.0 | 85.0 | 116.5 | 100.0 |"
  assert len(lines) == 5
  _, raw = localization.evaluation_summary(per_category, percent=False)
  assert "| cable | 0.9400 | 0.8000 | 150 | 1.0000 |" in raw.splitlines()
  with pytest.raises(ValueError, match="empty"):
    localization.evaluation_summary({})

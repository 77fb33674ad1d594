"""Anomaly localization metrics: pixel AUROC, AUPRO and image AUROC (numpy).

All metrics are computed per category over the whole test split, as the MVTec
AD papers report them:

* `pixel_auroc`: ROC AUC over every pixel of every test image.
* `aupro`: the MVTec AD official area under the per-region-overlap curve up to
  a false positive rate of 0.3, normalized by that limit (see `aupro`).
* `image_auroc`: ROC AUC of one score per image (the detector's own image score, the maximum
  of its smoothed heatmap, is its post-processing: `af_jax.postprocess`).

Masks may be bool or any numeric type; nonzero means anomalous. Everything is
vectorized (one sort, cumulative sums), so a category of 200 images at 256 px
takes a few seconds on one CPU core.
"""

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

# 8-connectivity: pixels that touch at a corner belong to the same defect.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _as_maps(scores, masks, where: str) -> tuple[np.ndarray, np.ndarray]:
  """Validates a (scores, masks) pair of [N, H, W] maps; returns float, bool."""
  scores, masks = np.asarray(scores), np.asarray(masks)
  if scores.shape != masks.shape:
    raise ValueError(f"{where}: scores shape {scores.shape} does not match masks "
                     f"shape {masks.shape}")
  if scores.ndim != 3:
    raise ValueError(f"{where}: expected scores and masks of shape [N, H, W], got "
                     f"{scores.shape}")
  if not np.issubdtype(scores.dtype, np.floating):
    scores = scores.astype(np.float32)
  if not np.all(np.isfinite(scores)):
    raise ValueError(f"{where}: scores contain NaN or infinite values")
  return scores, masks != 0


def _auroc(scores: np.ndarray, positive: np.ndarray, where: str) -> float:
  """ROC AUC as the Mann-Whitney U statistic, ties counted one half.

  This equals the rank-sum formula with tied scores given their average rank:
  for every positive, count the negatives scored strictly lower plus half of
  those scored equal. Sorting the two groups separately is cheaper than an
  argsort of everything.
  """
  scores, positive = scores.ravel(), positive.ravel()
  pos = np.sort(scores[positive])
  neg = np.sort(scores[~positive])
  if pos.size == 0:
    raise ValueError(f"{where}: no positive (anomalous) entries; AUROC is undefined")
  if neg.size == 0:
    raise ValueError(f"{where}: no negative (normal) entries; AUROC is undefined")
  below = np.searchsorted(neg, pos, side="left")
  below_or_equal = np.searchsorted(neg, pos, side="right")
  wins = int(below.sum(dtype=np.int64))
  ties = int((below_or_equal - below).sum(dtype=np.int64))
  return (wins + 0.5 * ties) / (pos.size * neg.size)


def pixel_auroc(scores, masks) -> float:
  """ROC AUC over all pixels of all images.

  Args:
    scores: float [N, H, W] anomaly heatmaps (higher = more anomalous).
    masks: [N, H, W] ground truth, nonzero = anomalous pixel.

  Returns:
    The area under the ROC curve in [0, 1]; ties count one half.
  """
  scores, masks = _as_maps(scores, masks, "pixel_auroc")
  return _auroc(scores, masks, "pixel_auroc")


def image_auroc(image_scores, labels) -> float:
  """ROC AUC of per-image scores against per-image labels (nonzero = anomalous)."""
  image_scores, labels = np.asarray(image_scores), np.asarray(labels)
  if image_scores.ndim != 1 or image_scores.shape != labels.shape:
    raise ValueError(f"image_auroc: expected image_scores and labels of the same shape "
                     f"[N], got {image_scores.shape} and {labels.shape}")
  if not np.all(np.isfinite(image_scores)):
    raise ValueError("image_auroc: image_scores contain NaN or infinite values")
  return _auroc(image_scores, labels != 0, "image_auroc")


def _region_weights(masks: np.ndarray) -> tuple[np.ndarray, int]:
  """Per pixel 1 / (size of its ground-truth region), 0 on normal pixels.

  Summing these weights over the pixels above a threshold gives, for every
  region at once, the sum of the regions' overlap fractions.
  """
  weights = np.zeros(masks.shape, dtype=np.float64)
  num_regions = 0
  for image_mask, image_weights in zip(masks, weights):
    regions, count = ndimage.label(image_mask, structure=_EIGHT_CONNECTED)
    if count:
      sizes = np.bincount(regions.ravel())
      inverse_sizes = np.concatenate([[0.0], 1.0 / sizes[1:]])
      image_weights[...] = inverse_sizes[regions]
    num_regions += count
  return weights, num_regions


def _lowest_needed_score(normal_scores: np.ndarray, max_fpr: float) -> float | None:
  """The threshold of the first curve point with FPR above `max_fpr`, if any.

  That is the (floor(max_fpr * n) + 1)-th highest normal score: above it at
  most floor(max_fpr * n) normal pixels lie, at it more than max_fpr * n.
  """
  allowed = int(np.floor(max_fpr * normal_scores.size))
  if allowed >= normal_scores.size:
    return None
  kth = normal_scores.size - 1 - allowed
  return float(np.partition(normal_scores, kth)[kth])


def pro_curve(scores, masks, max_fpr: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """The per-region-overlap curve: (FPR, PRO) at every distinct score threshold.

  A pixel is predicted anomalous when its score is >= the threshold. FPR is the
  fraction of all normal pixels predicted anomalous; PRO is the mean over all
  ground-truth regions (8-connected components of each mask) of the fraction
  of the region predicted anomalous. Thresholds run from the highest score
  down; the curve starts at (0, 0) and ends at (1, 1).

  Args:
    scores: float [N, H, W] anomaly heatmaps.
    masks: [N, H, W] ground truth, nonzero = anomalous.
    max_fpr: below 1, the curve stops at its first point with FPR > max_fpr
      (no (1, 1) end point). Only the pixels scored at or above that point's
      threshold are sorted, which makes `aupro` several times faster.

  Returns:
    Two float64 arrays (fpr, pro), fpr non-decreasing.
  """
  if not 0 <= max_fpr <= 1:
    raise ValueError(f"pro_curve: max_fpr must be in [0, 1], got {max_fpr}")
  scores, masks = _as_maps(scores, masks, "pro_curve")
  weights, num_regions = _region_weights(masks)
  normal_scores = scores[~masks]
  if num_regions == 0:
    raise ValueError("pro_curve: masks contain no anomalous region; PRO is undefined")
  if normal_scores.size == 0:
    raise ValueError("pro_curve: masks contain no normal pixel; FPR is undefined")
  scores, normal, weights = scores.ravel(), ~masks.ravel(), weights.ravel()
  lowest = _lowest_needed_score(normal_scores, max_fpr)
  if lowest is not None:
    needed = scores >= lowest
    scores, normal, weights = scores[needed], normal[needed], weights[needed]
  order = np.argsort(scores)[::-1]
  sorted_scores = scores[order]
  false_positives = np.cumsum(normal[order], dtype=np.int64)
  overlap = np.cumsum(weights[order])
  # Pixels with equal scores cross the threshold together: keep the last
  # point of every run of equal scores.
  last_of_run = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
  fpr = np.concatenate([[0.0], false_positives[last_of_run] / normal_scores.size])
  # Rounding in the long cumulative sum can push PRO a hair above 1.
  pro = np.concatenate([[0.0], np.minimum(overlap[last_of_run] / num_regions, 1.0)])
  if lowest is None:
    fpr, pro = np.append(fpr, 1.0), np.append(pro, 1.0)
  return fpr, pro


def _area_up_to(x: np.ndarray, y: np.ndarray, x_limit: float) -> float:
  """Trapezoid area under y(x) on [x[0], x_limit], interpolating y at x_limit."""
  inside = int(np.searchsorted(x, x_limit, side="right"))
  xs, ys = x[:inside], y[:inside]
  area = float(np.sum(0.5 * (ys[1:] + ys[:-1]) * (xs[1:] - xs[:-1])))
  if inside < x.size and xs[-1] < x_limit:
    x0, x1, y0, y1 = x[inside - 1], x[inside], y[inside - 1], y[inside]
    y_at_limit = y0 + (y1 - y0) * (x_limit - x0) / (x1 - x0)
    area += 0.5 * (y0 + y_at_limit) * (x_limit - x0)
  return area


def aupro(scores, masks, fpr_limit: float = 0.3) -> float:
  """Normalized area under the PRO curve up to `fpr_limit` (MVTec AD official).

  The PRO curve (see `pro_curve`) is integrated over FPR from 0 to `fpr_limit`
  with the trapezoid rule; when no threshold lands exactly on the limit, a
  partial trapezoid up to the limit is added with PRO linearly interpolated.
  The area is divided by `fpr_limit`, so a perfect detector scores 1.

  Args:
    scores: float [N, H, W] anomaly heatmaps.
    masks: [N, H, W] ground truth, nonzero = anomalous. Images without any
      anomaly contribute normal pixels only.
    fpr_limit: the integration limit, in (0, 1].

  Returns:
    AUPRO in [0, 1].
  """
  if not 0 < fpr_limit <= 1:
    raise ValueError(f"aupro: fpr_limit must be in (0, 1], got {fpr_limit}")
  fpr, pro = pro_curve(scores, masks, max_fpr=fpr_limit)
  return float(_area_up_to(fpr, pro, fpr_limit) / fpr_limit)


def _is_count(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def evaluation_summary(per_category: Mapping[str, Mapping[str, float]],
                       percent: bool = True) -> tuple[dict, str]:
  """Per-category metrics plus their mean, as a dict and a markdown table.

  Args:
    per_category: category name -> {metric name -> value}. A metric missing
      from some categories is averaged over the categories that have it and
      shown as "-" where missing. Integer values (counts such as num_images)
      are kept as integers and never scaled.
    percent: show float values multiplied by 100 with one decimal, as papers
      report AUROC and AUPRO; otherwise four decimals as given.

  Returns:
    ({"per_category": {...}, "mean": {metric: mean}}, markdown table string
    with one row per category in the given order and a final "mean" row).
  """
  if not per_category:
    raise ValueError("evaluation_summary: per_category is empty")
  metric_names = list(dict.fromkeys(name for values in per_category.values()
                                    for name in values))
  categories = {category: {name: int(value) if _is_count(value) else float(value)
                           for name, value in values.items()}
                for category, values in per_category.items()}
  columns = {name: [values[name] for values in categories.values() if name in values]
             for name in metric_names}
  counts = {name for name, column in columns.items() if all(map(_is_count, column))}
  mean = {name: float(np.mean(column)) for name, column in columns.items()}

  def cell(values: Mapping[str, float], name: str) -> str:
    if name not in values:
      return "-"
    if name in counts:  # Category rows hold ints, the mean row floats.
      return str(values[name]) if _is_count(values[name]) else f"{values[name]:.1f}"
    return f"{100 * values[name]:.1f}" if percent else f"{values[name]:.4f}"

  def row(label: str, values: Mapping[str, float]) -> str:
    return "| " + " | ".join([label, *(cell(values, name) for name in metric_names)]) + " |"

  header = [name if name in counts or not percent else f"{name} (%)" for name in metric_names]
  lines = ["| " + " | ".join(["category", *header]) + " |",
           "|---" * (len(metric_names) + 1) + "|"]
  lines += [row(category, values) for category, values in categories.items()]
  lines.append(row("mean", mean))
  return {"per_category": categories, "mean": mean}, "\n".join(lines)

"""A detector's calibrated thresholds: measured on normal images, saved in the run, checked on use.

Without anomalous data, `calibrate` sets the pixel threshold to the (1 - fpr) quantile of all
heatmap values of held-out normal images and the image threshold to the (1 - fpr) quantile of
their image scores. They are saved, with the checkpoint step, edge method and heatmap
post-processing (smoothing, flip averaging) they were measured with, to
`<workdir>/thresholds.json`; a detector that differs in any of those refuses them.
"""

import json
import math
import pathlib

import numpy as np

from af_jax import files

FILE_NAME = "thresholds.json"
KINDS = ("pixel", "image")
# What a calibrated threshold depends on; a detector differing in any of them recalibrates.
MEASURED_WITH = ("step", "edge_method", "smoothing_sigma", "flip_tta")


def measure(heatmaps: np.ndarray, scores: np.ndarray, fpr: float, settings: dict) -> dict:
  """The thresholds at false-positive rate `fpr` of normal images' heatmap values and scores,
  with the detector `settings` (`MEASURED_WITH`) they were measured with."""
  return dict(pixel=float(np.quantile(heatmaps, 1 - fpr)),
              image=float(np.quantile(scores, 1 - fpr)),
              fpr=fpr, num_images=len(scores), **settings)


def save(workdir, thresholds: dict) -> pathlib.Path:
  """Writes `<workdir>/thresholds.json` atomically."""
  return files.write_json(pathlib.Path(workdir) / FILE_NAME, thresholds)


def load(workdir) -> dict | None:
  """The saved thresholds of a run, None when it has none; an error naming a broken file."""
  path = pathlib.Path(workdir) / FILE_NAME
  if not path.is_file():
    return None
  try:
    thresholds = json.loads(path.read_text())
    missing = [k for k in (*KINDS, *MEASURED_WITH) if k not in thresholds]
  except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is not a thresholds file: {e}") from e
  if missing:
    raise ValueError(f"{path} lacks {missing}; recalibrate")
  return thresholds


def check_value(name: str, value: float) -> float:
  """A threshold given by a user: finite and in [0, 1] (heatmaps and scores live there)."""
  value = float(value)
  if not math.isfinite(value) or not 0 <= value <= 1:
    raise ValueError(f"{name} must be a finite number in [0, 1], got {value}")
  return value


def choose(kind: str, saved: dict | None, settings: dict, workdir,
           override: float | None = None) -> float:
  """The pixel/image threshold: `override` when given, else the saved one if it was measured
  with the detector's current `settings`, else an error saying how to get one."""
  if kind not in KINDS:
    raise ValueError(f"threshold kind must be one of {KINDS}, got {kind!r}")
  if override is not None:
    return check_value(f"the {kind} threshold", override)
  path = pathlib.Path(workdir) / FILE_NAME
  if not saved:
    raise ValueError(f"no calibrated thresholds in {path}: run "
                     "Detector.calibrate(normal_images) (or `af-jax localize --calibrate DIR`) "
                     "or pass a threshold")
  measured = {k: saved[k] for k in MEASURED_WITH}
  if measured != settings:
    differ = ", ".join(f"{k} {measured[k]!r} (now {settings[k]!r})" for k in MEASURED_WITH
                       if measured[k] != settings[k])
    raise ValueError(f"thresholds in {path} were calibrated with {differ}: recalibrate or "
                     "pass a threshold")
  return float(saved[kind])

"""A detector's calibrated thresholds, per category: measured on normal images, saved in the run,
checked on use.

Without anomalous data, `calibrate` sets the pixel threshold to the (1 - fpr) quantile of all
heatmap values of held-out normal images and the image threshold to the (1 - fpr) quantile of
their image scores. Each category's scores have their own scale, so the thresholds are kept
per reference category the images were compared with (a run trained with `blaze.reference`;
one entry, `ANY`, for a run without references), each with the checkpoint step, edge method
and heatmap post-processing (smoothing, flip averaging) it was measured with, in
`<workdir>/thresholds.json`:

  {"categories": {"synthetic/circuit": {"pixel": ..., "image": ..., "fpr": ..., ...}, ...}}

Saving replaces only the categories just measured, in the file as it is then (never another
category's entry), and first copies the file to `thresholds.json.bak`. A category without an
entry, or whose entry was measured with other settings, has no thresholds: it is never judged
with another category's.

A file from before thresholds were kept per category holds one set. It stands for the category
it recorded as its reference; with none recorded (calibrated on each image's nearest
reference), for every category the run was trained on, marked `legacy` until that category is
calibrated again (a one-line note says so).
"""

import json
import logging
import math
import pathlib

import numpy as np

from af_jax import files

log = logging.getLogger(__name__)

FILE_NAME = "thresholds.json"
BACKUP_SUFFIX = ".bak"
KINDS = ("pixel", "image")
# What a calibrated threshold depends on; a detector differing in any of them recalibrates.
MEASURED_WITH = ("step", "edge_method", "smoothing_sigma", "flip_tta")
# The key of a run without references: one set of thresholds for every image. Not a plain
# name (`files.check_plain_name`), so no category can take it.
ANY = "*"


def measure(heatmaps: np.ndarray, scores: np.ndarray, fpr: float, settings: dict) -> dict:
  """The thresholds at false-positive rate `fpr` of normal images' heatmap values and scores,
  with the detector `settings` (`MEASURED_WITH`) they were measured with."""
  return dict(pixel=float(np.quantile(heatmaps, 1 - fpr)),
              image=float(np.quantile(scores, 1 - fpr)),
              fpr=fpr, num_images=len(scores), **settings)


def _read(path: pathlib.Path, trained: tuple[str, ...]) -> dict[str, dict]:
  """{category: thresholds} of the file at `path` ({} when there is none); an older file's
  one set stands for its recorded reference, else for the `trained` categories (module
  docstring). A ValueError names a broken file and the key."""
  if not path.is_file():
    return {}
  try:
    saved = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path} is not a thresholds file: {e}") from e
  if isinstance(saved, dict) and "categories" not in saved and "pixel" in saved:
    saved = _from_one_set(path, saved, trained)
  if not isinstance(saved, dict) or not isinstance(saved.get("categories"), dict):
    raise ValueError(f"{path} is not a thresholds file: expected an object with "
                     "'categories' (category -> thresholds); recalibrate")
  for name, entry in saved["categories"].items():
    missing = [k for k in (*KINDS, *MEASURED_WITH)
               if not isinstance(entry, dict) or k not in entry]
    if missing:
      raise ValueError(f"{path}: categories[{name!r}] lacks {missing}; recalibrate it")
  return saved["categories"]


def _from_one_set(path: pathlib.Path, saved: dict, trained: tuple[str, ...]) -> dict:
  """An older file's one set of thresholds, as per-category entries (module docstring)."""
  reference = saved.pop("reference", None)
  if reference is not None:
    # A short name (`--category circuit`) stands for the trained "synthetic/circuit".
    full = [n for n in trained if n.split("/")[-1] == reference]
    return dict(categories={full[0] if len(full) == 1 else reference: saved})
  # A run without references meant the same then as now: nothing to mark.
  legacy = {} if trained == (ANY,) else dict(legacy=True)
  return dict(categories={name: dict(saved, **legacy) for name in trained})


def load(workdir, trained: tuple[str, ...]) -> dict[str, dict]:
  """The saved thresholds of a run, {category: thresholds} ({} when it has none); `trained`:
  the categories the run was trained on (`ANY` for a run without references), which an older
  file's one set stands for."""
  path = pathlib.Path(workdir) / FILE_NAME
  saved = _read(path, tuple(trained))
  legacy = [name for name, entry in saved.items() if entry.get("legacy")]
  if legacy:
    log.warning("%s: the thresholds of %s are one set from an older af_jax, calibrated on each "
                "image's nearest reference; they serve until each category is calibrated again "
                "(af-jax localize --calibrate DIR --category NAME)", path, ", ".join(legacy))
  return saved


def save(workdir, measured: dict[str, dict], trained: tuple[str, ...]) -> pathlib.Path:
  """Writes the `measured` categories' thresholds into `<workdir>/thresholds.json` as it is
  now, the other categories' entries kept; the file before is kept as `thresholds.json.bak`.
  Both writes are atomic."""
  path = pathlib.Path(workdir) / FILE_NAME
  categories = {**_read(path, tuple(trained)), **measured}
  if path.is_file():
    files.write_bytes(path.with_name(FILE_NAME + BACKUP_SUFFIX), path.read_bytes())
  return files.write_json(path, dict(categories=categories))


def check_value(name: str, value: float) -> float:
  """A threshold given by a user: finite and in [0, 1] (heatmaps and scores live there)."""
  value = float(value)
  if not math.isfinite(value) or not 0 <= value <= 1:
    raise ValueError(f"{name} must be a finite number in [0, 1], got {value}")
  return value


def problem(saved: dict[str, dict], category: str, settings: dict) -> str | None:
  """Why `category` has no thresholds in `saved` to judge with now (none calibrated, or
  calibrated with other detector `settings`), or None when it has."""
  entry = saved.get(category)
  shown = "this run" if category == ANY else category
  if entry is None:
    calibrated = ", ".join(saved) if saved else "none"
    return f"no calibrated thresholds for {shown} (calibrated: {calibrated})"
  measured = {k: entry[k] for k in MEASURED_WITH}
  if measured == settings:
    return None
  differ = ", ".join(f"{k} {measured[k]!r} (now {settings[k]!r})" for k in MEASURED_WITH
                     if measured[k] != settings[k])
  return f"the thresholds of {shown} were calibrated with {differ}"


def choose(kind: str, saved: dict[str, dict], category: str, settings: dict, workdir,
           override: float | None = None) -> float:
  """The pixel/image threshold of `category`: `override` when given, else its saved one if it
  was measured with the detector's current `settings`, else an error saying how to get one."""
  if kind not in KINDS:
    raise ValueError(f"threshold kind must be one of {KINDS}, got {kind!r}")
  if override is not None:
    return check_value(f"the {kind} threshold", override)
  why = problem(saved, category, settings)
  if why:
    name = "" if category == ANY else f", category={category!r}"
    raise ValueError(f"{why} in {pathlib.Path(workdir) / FILE_NAME}: run "
                     f"Detector.calibrate(normal_images{name}) (or `af-jax localize "
                     "--calibrate DIR`) or pass a threshold")
  return float(saved[category][kind])

"""`af-jax localize`: heatmaps, masks, overlays and OK/NG for images, with a trained BlazeDetector.

  af-jax localize --workdir runs/blaze --images 'test/*/*.png' --out loc/ \\
      [--calibrate 'val_good/*.png'] [--ground_truth GT] [--reference [DIR]]

It writes `<out>/{heatmaps,masks,overlays}` (`NNN_<stem>.npy`, `NNN_<stem>_mask.png`,
`NNN_<stem>.png`, NNN the image's place among the files), `scores.csv`
(file, score, OK/NG) and `summary.json`. Images may differ in size and each keeps its own; the
detector takes those of one size together, so `scores.csv` lists them size by size, in file
order within a size. With `--ground_truth` (MVTec layout: `<gt>/<defect>/<stem>_mask.png` for
`.../<defect>/<stem>.png`, images under `good/` have empty masks) the summary also holds pixel
AUROC, AUPRO (FPR 0.3) and image AUROC. `scores.csv` lists an image only once its files are
written; `summary.json` is written last, so an output without it did not finish, and
`--resume` completes it: only the images `scores.csv` does not list yet are localized.
Masks and OK/NG use the calibrated thresholds of the category each image was compared with
(`af_jax.inference.thresholds`; `--calibrate` measures them on normal images first and saves
one category's, leaving the others' as they were: `--category`'s or `--reference`'s, else the
one the folder names, `bottle/train/good` bottle's); `--pixel_threshold` / `--image_threshold`
override. An image whose category has no calibrated thresholds is never judged with another
category's: its decision is "not calibrated" (and it gets no mask or overlay, unless
`--pixel_threshold` is given), `summary.json` counts them per category, and one line per such
category names the `--calibrate` command that gives it thresholds.

Batches are split over all of this host's devices. Several hosts (the multi-host flags of
`af-jax train`, `host_flags`) share the work: each process localizes every N-th file from its
own index on, writes those files and lists them in its own part of `scores.csv`
(`scores.process_<i>.csv`, `output_files`); process 0 then merges the parts into the same
`scores.csv` and `summary.json` one process writes (metrics read the heatmap files back). A
host that dies leaves the others' files and rows; `--resume` on any number of hosts completes
only what is missing. Every host reads all the images (they are checked before anything is
written) and runs `--calibrate` itself.

A run trained with `blaze.reference` compares each image with a category's normal reference:
by default the trained category whose mean image is nearest; `--reference DIR` gives it the
images' own category's normal images instead (a category it was not trained on: a new
product), and `--reference` alone uses the `--calibrate` images for it. `scores.csv` then has a
`reference` column and `summary.json` counts the images per reference. `--resume` refuses
to complete an output when the reference images (their names, sizes and modification times)
changed since it was begun: its rows would be scored against two references.
"""

import argparse
import collections
import csv
import logging
import shlex

import numpy as np

from af_jax.commands import image_files
from af_jax.commands import output_files
from af_jax.commands import run_flags
from af_jax.data_builders import source_files
from af_jax import files
from af_jax.inference import defaults
from af_jax.inference import thresholds as thresholds_lib
from af_jax import pixels
from af_jax import progress

log = logging.getLogger(__name__)

OUTPUT_DIRS = ("heatmaps", "masks", "overlays")
SCORES_CSV, SUMMARY_JSON = "scores.csv", "summary.json"
SCORES_FIELDS = ("file", "score", "decision")
NOT_CALIBRATED = "not calibrated"


def metrics(heatmaps, masks, scores, labels) -> dict:
  """Pixel AUROC, AUPRO (FPR 0.3) and image AUROC (labels: 1 = anomalous image)."""
  from af_jax.metrics import localization  # pylint: disable=g-import-not-at-top
  heatmaps, masks = np.stack(heatmaps), np.stack(masks)
  return dict(pixel_auroc=localization.pixel_auroc(heatmaps, masks),
              aupro=localization.aupro(heatmaps, masks, fpr_limit=0.3),
              image_auroc=localization.image_auroc(np.asarray(scores), np.asarray(labels)))


def _check_metric_inputs(paths, images) -> None:
  """Metrics need one image size and both normal and anomalous images."""
  described = f"the {len(paths)} images ({image_files.listing([str(f) for f in paths], 2)})"
  sizes = {im.shape[:2] for im in images}
  if len(sizes) > 1:
    raise ValueError(f"metrics need images of one size; {described} have sizes {sorted(sizes)}")
  labels = set(image_files.image_labels(paths))
  if labels != {0, 1}:
    kind = "under good/" if 0 in labels else "outside good/"
    raise ValueError(f"metrics need normal (good/) and anomalous images; all of {described} "
                     f"are {kind}")


def localize(args) -> dict:
  """Heatmaps, masks, overlays, scores.csv and summary.json (module docstring).

  Every input is read and checked, and the output folder claimed, before anything is
  computed; thresholds calibrated with `--calibrate` reach the run's thresholds.json only
  once the whole output is written. Process 0 returns the summary, the others what they did.
  """
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  from af_jax.inference import hosts  # pylint: disable=g-import-not-at-top
  paths = image_files.find_images(args.images)
  images = image_files.read_images(paths)
  gt = (image_files.ground_truth_masks(paths, images, args.ground_truth) if args.ground_truth
        else None)
  if gt is not None:
    _check_metric_inputs(paths, images)
  normal_paths = image_files.find_images(args.calibrate) if args.calibrate else None
  normal = image_files.read_images(normal_paths) if args.calibrate else None
  reference_paths, reference_images, category = _reference(args, normal_paths, normal)
  if normal is not None and len(normal) < args.min_calibration_images:
    raise ValueError(f"--calibrate {args.calibrate} holds {len(normal)} normal images; "
                     f"calibration needs at least {args.min_calibration_images} (the quantile "
                     "of a handful says little of unseen images; --min_calibration_images "
                     "lowers the bar knowingly)")
  detector = infer.Detector(args.workdir, **run_flags.detector_options(args))
  if reference_images is not None:
    detector.add_reference(category, reference_images)
  calibrated = _calibrated_category(args, detector, normal_paths, category)
  for checked, names in ((images, paths), (normal or [], normal_paths)):  # Before any output:
    detector.compared_with(checked, category, names)  # gray and colour are never compared.
  reference_files = image_files.file_states(reference_paths or [])
  with output_files.output_folder(args.out, OUTPUT_DIRS, [SCORES_CSV, SUMMARY_JSON],
                                  args.overwrite, args.resume) as out:
    if out.resumed:
      _check_reference_unchanged(out, args, reference_files)
    if normal is not None:
      detector.calibrate(normal, fpr=args.fpr, category=calibrated,
                         min_images=args.min_calibration_images, save=False)
    thresholds = category_thresholds(detector, args.pixel_threshold, args.image_threshold)
    out.check_settings(dict(
        command="localize", workdir=str(detector.workdir.resolve()), dtype=args.dtype,
        **detector.settings(), pixel_threshold=args.pixel_threshold,
        image_threshold=args.image_threshold, thresholds=thresholds, reference=args.reference,
        reference_files=reference_files, category=category, images=[str(f) for f in paths]))
    done = _listed_rows(out, paths) if out.resumed else {}
    todo = [i for i in hosts.share(len(paths)) if i not in done]
    _write_results(detector, out, paths, images, todo, thresholds, category,
                   detector.batch_size)
    hosts.barrier("localize: every share written")
    if not hosts.is_main():
      return dict(process=out.process, num_images=len(todo))
    summary = _merge(out, detector, paths, images, gt, thresholds)
    if normal is not None:
      detector.save_thresholds()  # The command succeeded: the run may now keep them.
    out.write(files.write_json, out.root / SUMMARY_JSON, summary)  # Last: the run completed.
  for name, count in summary.get("not_calibrated", {}).items():
    log.warning("%s", _calibrate_line(args, detector, name, count))
  return summary


def _stem(paths, i: int) -> str:
  """The name of image `i`'s output files."""
  return f"{i:03d}_{paths[i].stem}"


def _listed_rows(out, paths) -> dict[int, dict]:
  """The scores.csv rows that the output's parts list (every process's), by image index."""
  index = {str(f): i for i, f in enumerate(paths)}
  rows = {}
  for part in out.parts(SCORES_CSV):
    with part.open(newline="") as f:
      rows.update((index[row["file"]], row) for row in csv.DictReader(f) if row["file"] in index)
  return rows


def category_thresholds(detector, pixel: float | None, image: float | None
                        ) -> dict[str, list[float | None]]:
  """{category: [pixel, image threshold]} of each category the images may be compared with
  (`thresholds.ANY` for a run without references): the override given, else the category's
  calibrated one, else None: not calibrated, and never judged with another category's."""
  names = (thresholds_lib.ANY,) if detector.references is None else detector.references.names
  settings, saved = detector.settings(), detector.thresholds
  usable = {name: thresholds_lib.problem(saved, name, settings) is None for name in names}
  return {name: [given if given is not None else saved[name][kind] if usable[name] else None
                 for kind, given in (("pixel", pixel), ("image", image))] for name in names}


def _calibrated_category(args, detector, normal_paths, category: str | None) -> str | None:
  """The one category `--calibrate` measures, so that it never changes another's: the images'
  (`--category`, `--reference`), else the one the calibration folder names (MVTec layout:
  `bottle/train/good` is bottle's), which must be one of the run's; None for a run without
  references (one set) or without --calibrate."""
  if category is not None or detector.references is None or normal_paths is None:
    return category
  try:
    name = image_files.category_of(normal_paths)
    detector.references.index(name)
  except (KeyError, ValueError) as e:
    raise ValueError(f"--calibrate {args.calibrate}: {e.args[0]}; name the run's category they "
                     f"are normal images of (--category NAME: "
                     f"{', '.join(detector.references.names)}), or give a part the run was not "
                     "trained on its own reference (--reference DIR)") from None
  return name


def _check_reference_unchanged(out, args, reference_files: dict) -> None:
  """--resume: a ValueError naming the reference folder and what changed in it since the
  output was begun (its rows would be scored against two references)."""
  changed = source_files.changes(out.recorded("reference_files") or {}, reference_files)
  if changed:
    raise ValueError(f"--resume: the reference images in {args.reference or args.calibrate} "
                     f"changed since the output in {out.root} was begun ({changed}); pass "
                     "--overwrite instead of --resume to start over")


def _calibrate_line(args, detector, name: str, count: int) -> str:
  """The one line saying that `count` images of category `name` are not judged, and the
  `af-jax localize` (these flags, and --calibrate) that gives `name` thresholds."""
  why = thresholds_lib.problem(detector.thresholds, name, detector.settings())
  flags = [("--workdir", args.workdir), ("--images", args.images), ("--out", args.out)]
  flags += [(flag, value) for flag, value, default in (
      ("--step", args.step, -1), ("--edges", args.edges, "auto"),
      ("--smoothing_sigma", args.smoothing_sigma, defaults.SMOOTHING_SIGMA),
      ("--flare_workdir", args.flare_workdir, None), ("--fpr", args.fpr,
                                                      defaults.CALIBRATION_FPR),
      ("--category", args.category, None)) if value != default]
  if args.reference is not None:  # The reference folder holds the category's normal images.
    flags += [("--reference", args.reference or args.calibrate),
              ("--calibrate", args.reference or args.calibrate)]
  else:  # A folder of normal images, named after the category (`_calibrated_category`).
    flags.append(("--calibrate", "NORMAL_IMAGES" if name == thresholds_lib.ANY
                  else f"NORMAL_IMAGES/{name.split('/')[-1]}/train/good"))
  command = " ".join(f"{flag} {shlex.quote(str(value))}" for flag, value in flags)
  return (f"{count} image(s) compared with {'the run' if name == thresholds_lib.ANY else name} "
          f"say {NOT_CALIBRATED!r} in {SCORES_CSV} ({why}); calibrate it: af-jax localize "
          f"{command} --overwrite{_flip_flag(args.flip_tta)}")


def _flip_flag(flip_tta: bool | None) -> str:
  """The command-line flag that asks for `flip_tta` again ('' for the run's own choice)."""
  return "" if flip_tta is None else " --flip_tta" if flip_tta else " --no-flip_tta"


def _merge(out, detector, paths, images, gt, thresholds: dict) -> dict:
  """Process 0: every part's rows into scores.csv, in one process's order; returns the
  summary (metrics from the heatmap files; the thresholds of the categories judged)."""
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  rows = _listed_rows(out, paths)
  missing = [str(paths[i]) for i in range(len(paths)) if i not in rows]
  if missing:
    raise ValueError(f"{len(missing)} images have no result ({image_files.listing(missing, 2)}):"
                     " a process failed; rerun with --resume to complete the output")
  order = [i for batch in infer.batches_by_size(images) for i in batch]
  fields = list(rows[0])
  out.merge(SCORES_CSV, "".join(output_files.csv_line(line) + "\n" for line in
                                [fields, *(rows[i].values() for i in order)]))
  names = [rows[i].get("reference", thresholds_lib.ANY) for i in order]
  unjudged = collections.Counter(n for n, i in zip(names, order)
                                 if rows[i]["decision"] == NOT_CALIBRATED)
  summary = dict(num_images=len(rows),
                 num_ng=sum(rows[i]["decision"] == "NG" for i in order),
                 thresholds={name: dict(zip(thresholds_lib.KINDS, thresholds[name]))
                             for name in sorted(set(names))},
                 step=detector.step, edge_method=detector.edge_method)
  if unjudged:
    summary["not_calibrated"] = dict(unjudged)
  if detector.references is not None:
    summary["references"] = dict(collections.Counter(names))
  if gt is not None:
    heatmaps = [np.load(out.dirs["heatmaps"] / f"{_stem(paths, i)}.npy")
                for i in range(len(paths))]
    scores = [float(rows[i]["score"]) for i in range(len(paths))]
    summary["metrics"] = metrics(heatmaps, gt, scores, image_files.image_labels(paths))
  return summary


def _reference(args, normal_paths, normal) -> tuple[list | None, list | None, str | None]:
  """(the files and normal images of `--reference`, or None, None; the category name the
  images are compared with: `--category`, else the reference's, else None for each image's
  nearest)."""
  if args.reference is None:
    return None, None, args.category
  if not args.reference and not args.calibrate:
    raise ValueError("--reference without a folder uses the --calibrate images; pass "
                     "--calibrate DIR or --reference DIR")
  if not args.reference:
    return normal_paths, normal, args.category or image_files.category_of(normal_paths)
  paths = image_files.find_images(args.reference)
  return (paths, image_files.read_images(paths),
          args.category or image_files.category_of(paths))


def _write_results(detector, out, paths, images, todo: list[int], thresholds: dict,
                   category: str | None, batch_size: int) -> None:
  """Localizes images `todo` size by size and writes each one's files, judged with the
  `thresholds` of the category it was compared with (`category_thresholds`; no mask or
  overlay without a pixel threshold), then its row in this process's part of scores.csv."""
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  part, dirs = out.part(SCORES_CSV), out.dirs
  if todo and not part.is_file():
    fields = SCORES_FIELDS + (("reference",) if detector.references is not None else ())
    out.write_all([(files.append_line, part, output_files.csv_line(fields))])
  with progress.Progress(len(todo), "localize") as bar:
    for batch in infer.batches_by_size([images[i] for i in todo], batch_size):
      batch = [todo[k] for k in batch]
      result = detector.localize([images[i] for i in batch], category)
      names = result.references or [thresholds_lib.ANY] * len(batch)
      for i, hm, score, name in zip(batch, result.heatmaps, result.scores, names):
        pixel_t, image_t = thresholds[name]
        decision = (NOT_CALIBRATED if image_t is None else "NG" if score >= image_t else "OK")
        row = [str(paths[i]), float(score), decision]
        if result.references is not None:
          row.append(name)
        stem = _stem(paths, i)
        judged = [] if pixel_t is None else [
            (output_files.write_png, dirs["masks"] / f"{stem}_mask.png",
             (hm >= pixel_t).astype(np.uint8) * 255),
            (output_files.write_png, dirs["overlays"] / f"{stem}.png",
             pixels.overlay(images[i], hm, pixel_t))]
        out.write_all([(files.write_npy, dirs["heatmaps"] / f"{stem}.npy", hm), *judged,
                       (files.append_line, part, output_files.csv_line(row))])
      bar.update(len(batch))


class _Once(argparse.Action):
  """A flag given at most once: argparse would keep the last and drop the others silently."""

  def __call__(self, parser, namespace, values, option_string=None):
    before = getattr(namespace, self.dest)
    if before is not None:
      parser.error(f"{option_string} is given twice ({before or '(alone)'} and "
                   f"{values or '(alone)'}): localize compares the images with one reference; "
                   "run it once per category")
    setattr(namespace, self.dest, values)


def main(argv) -> int:
  p = run_flags.parser("localize", __doc__)
  run_flags.add_heatmap_flags(p)
  p.add_argument("--images", required=True, help="glob pattern or directory of images")
  p.add_argument("--out", required=True)
  p.add_argument("--ground_truth", help="MVTec-layout ground_truth folder: also compute metrics")
  p.add_argument("--calibrate", help="normal images (glob or directory) to calibrate and "
                                     "save the thresholds on first")
  p.add_argument("--fpr", type=run_flags.open_unit_interval, default=defaults.CALIBRATION_FPR,
                 help="calibration false-positive rate")
  p.add_argument("--min_calibration_images", type=run_flags.positive_int,
                 default=defaults.MIN_CALIBRATION_IMAGES,
                 help="fewest normal images --calibrate accepts")
  p.add_argument("--reference", nargs="?", const="", action=_Once,
                 help="normal images (glob or directory) of the images' own category: a run "
                      "trained with blaze.reference compares each image with them instead of "
                      "the nearest trained category; alone, the --calibrate images")
  p.add_argument("--category", type=run_flags.plain_name,
                 help="the images' category: the name of --reference (default: its folder's "
                      "category), or a trained category to compare with (default: each "
                      "image's nearest)")
  p.add_argument("--pixel_threshold", type=run_flags.unit_interval,
                 help="override the calibrated pixel threshold (in [0, 1])")
  p.add_argument("--image_threshold", type=run_flags.unit_interval,
                 help="override the calibrated image threshold (in [0, 1])")
  run_flags.add_output_flags(p)
  return run_flags.run("localize", localize, p.parse_args(argv))

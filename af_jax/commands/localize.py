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
Masks and OK/NG use the detector's calibrated thresholds (`--calibrate` measures them on normal
images first); `--pixel_threshold` / `--image_threshold` override.

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
`reference` column and `summary.json` counts the images per reference.
"""

import collections
import csv

import numpy as np

from af_jax.commands import image_files
from af_jax.commands import output_files
from af_jax.commands import run_flags
from af_jax import files
from af_jax.inference import defaults
from af_jax import pixels
from af_jax import progress

OUTPUT_DIRS = ("heatmaps", "masks", "overlays")
SCORES_CSV, SUMMARY_JSON = "scores.csv", "summary.json"
SCORES_FIELDS = ("file", "score", "decision")


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
  normal = (image_files.read_images(image_files.find_images(args.calibrate)) if args.calibrate
            else None)
  reference_images, category = _reference(args, normal)
  if normal is not None and len(normal) < args.min_calibration_images:
    raise ValueError(f"--calibrate {args.calibrate} holds {len(normal)} normal images; "
                     f"calibration needs at least {args.min_calibration_images} (the quantile "
                     "of a handful says little of unseen images; --min_calibration_images "
                     "lowers the bar knowingly)")
  detector = infer.Detector(args.workdir, **run_flags.detector_options(args))
  if reference_images is not None:
    detector.add_reference(category, reference_images)
  if normal is None:  # Without calibration, the thresholds are known before any work.
    pixel_t = detector.threshold("pixel", args.pixel_threshold)
    image_t = detector.threshold("image", args.image_threshold)
  with output_files.output_folder(args.out, OUTPUT_DIRS, [SCORES_CSV, SUMMARY_JSON],
                                  args.overwrite, args.resume) as out:
    if normal is not None:
      detector.calibrate(normal, fpr=args.fpr, category=category,
                         min_images=args.min_calibration_images, save=False)
      pixel_t = detector.threshold("pixel", args.pixel_threshold)
      image_t = detector.threshold("image", args.image_threshold)
    out.check_settings(dict(
        command="localize", workdir=str(detector.workdir.resolve()), dtype=args.dtype,
        **detector.settings(), pixel_threshold=pixel_t, image_threshold=image_t,
        reference=args.reference, category=category, images=[str(f) for f in paths]))
    done = _listed_rows(out, paths) if out.resumed else {}
    todo = [i for i in hosts.share(len(paths)) if i not in done]
    _write_results(detector, out, paths, images, todo, (pixel_t, image_t), category,
                   detector.batch_size)
    hosts.barrier("localize: every share written")
    if not hosts.is_main():
      return dict(process=out.process, num_images=len(todo))
    summary = _merge(out, detector, paths, images, gt, (pixel_t, image_t))
    if normal is not None:
      detector.save_thresholds()  # The command succeeded: the run may now keep them.
    out.write(files.write_json, out.root / SUMMARY_JSON, summary)  # Last: the run completed.
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


def _merge(out, detector, paths, images, gt, thresholds: tuple[float, float]) -> dict:
  """Process 0: every part's rows into scores.csv, in one process's order; returns the
  summary (metrics from the heatmap files)."""
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
  pixel_t, image_t = thresholds
  summary = dict(num_images=len(rows),
                 num_ng=sum(rows[i]["decision"] == "NG" for i in order),
                 pixel_threshold=pixel_t, image_threshold=image_t, step=detector.step,
                 edge_method=detector.edge_method)
  if detector.references is not None:
    summary["references"] = dict(collections.Counter(rows[i]["reference"] for i in order))
  if gt is not None:
    heatmaps = [np.load(out.dirs["heatmaps"] / f"{_stem(paths, i)}.npy")
                for i in range(len(paths))]
    scores = [float(rows[i]["score"]) for i in range(len(paths))]
    summary["metrics"] = metrics(heatmaps, gt, scores, image_files.image_labels(paths))
  return summary


def _reference(args, normal) -> tuple[list | None, str | None]:
  """(the normal images of `--reference`, or None; the category name the images are compared
  with: `--category`, else the reference's, else None for each image's nearest)."""
  if args.reference is None:
    return None, args.category
  folder = args.reference or args.calibrate
  if not folder:
    raise ValueError("--reference without a folder uses the --calibrate images; pass "
                     "--calibrate DIR or --reference DIR")
  if not args.reference:
    return normal, args.category or image_files.category_of(image_files.find_images(folder))
  paths = image_files.find_images(folder)
  return image_files.read_images(paths), args.category or image_files.category_of(paths)


def _write_results(detector, out, paths, images, todo: list[int],
                   thresholds: tuple[float, float], category: str | None,
                   batch_size: int) -> None:
  """Localizes images `todo` size by size and writes each one's files, then its row in this
  process's part of scores.csv."""
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  pixel_t, image_t = thresholds
  part, dirs = out.part(SCORES_CSV), out.dirs
  if todo and not part.is_file():
    fields = SCORES_FIELDS + (("reference",) if detector.references is not None else ())
    out.write_all([(files.append_line, part, output_files.csv_line(fields))])
  with progress.Progress(len(todo), "localize") as bar:
    for batch in infer.batches_by_size([images[i] for i in todo], batch_size):
      batch = [todo[k] for k in batch]
      result = detector.localize([images[i] for i in batch], category)
      for k, (i, hm, score) in enumerate(zip(batch, result.heatmaps, result.scores)):
        row = [str(paths[i]), float(score), "NG" if score >= image_t else "OK"]
        if result.references is not None:
          row.append(result.references[k])
        stem = _stem(paths, i)
        out.write_all([
            (files.write_npy, dirs["heatmaps"] / f"{stem}.npy", hm),
            (output_files.write_png, dirs["masks"] / f"{stem}_mask.png",
             (hm >= pixel_t).astype(np.uint8) * 255),
            (output_files.write_png, dirs["overlays"] / f"{stem}.png",
             pixels.overlay(images[i], hm, pixel_t)),
            (files.append_line, part, output_files.csv_line(row))])
      bar.update(len(batch))


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
  p.add_argument("--reference", nargs="?", const="",
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

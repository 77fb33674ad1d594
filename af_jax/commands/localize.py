"""`af-jax localize`: heatmaps, masks, overlays and OK/NG for images, with a trained BlazeDetector.

  af-jax localize --workdir runs/blaze --images 'test/*/*.png' --out loc/ \\
      [--calibrate 'val_good/*.png'] [--ground_truth GT] [--reference [DIR]]

It writes `<out>/{heatmaps,masks,overlays}` (`NNN_<stem>.npy`, `NNN_<stem>_mask.png`,
`NNN_<stem>.png`, NNN the image's place among the files), `scores.csv` (file, score, OK/NG)
and `summary.json`. Images may differ in size and each keeps its own; the detector takes those
of one size together, so `scores.csv` lists them size by size, in file order within a size.
With `--ground_truth` (MVTec layout: `<gt>/<defect>/<stem>_mask.png` for
`.../<defect>/<stem>.png`, images under `good/` have empty masks) the summary also holds pixel
AUROC, AUPRO (FPR 0.3) and image AUROC. `scores.csv` lists an image only once its files are
written; `summary.json` is written last, so an output without it did not finish. Masks and
OK/NG use the detector's calibrated thresholds (`--calibrate` measures them on normal images
first); `--pixel_threshold` / `--image_threshold` override.

A run trained with `blaze.reference` compares each image with a category's normal reference:
by default the trained category whose mean image is nearest; `--reference DIR` gives it the
images' own category's normal images instead (a category it was not trained on: a new
product), and `--reference` alone uses the `--calibrate` images for it. `scores.csv` then has a
`reference` column and `summary.json` counts the images per reference.
"""

import collections

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
  once the whole output is written.
  """
  from af_jax import infer  # pylint: disable=g-import-not-at-top
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
  detector = infer.Detector(args.workdir, smoothing_sigma=args.smoothing_sigma,
                            flip_tta=args.flip_tta, **run_flags.network_options(args))
  if reference_images is not None:
    detector.add_reference(category, reference_images)
  if normal is None:  # Without calibration, the thresholds are known before any work.
    pixel_t = detector.threshold("pixel", args.pixel_threshold)
    image_t = detector.threshold("image", args.image_threshold)
  with output_files.output_folder(args.out, OUTPUT_DIRS, [SCORES_CSV, SUMMARY_JSON],
                                  args.overwrite) as out:
    if normal is not None:
      detector.calibrate(normal, fpr=args.fpr, category=category,
                         min_images=args.min_calibration_images, save=False)
      pixel_t = detector.threshold("pixel", args.pixel_threshold)
      image_t = detector.threshold("image", args.image_threshold)
    rows, heatmaps = _write_results(detector, out, paths, images, (pixel_t, image_t),
                                    category, args.batch_size, keep_heatmaps=gt is not None)
    summary = dict(num_images=len(rows),
                   num_ng=sum(r["decision"] == "NG" for r in rows.values()),
                   pixel_threshold=pixel_t, image_threshold=image_t, step=detector.step,
                   edge_method=detector.edge_method)
    if detector.references is not None:
      summary["references"] = dict(collections.Counter(r["reference"] for r in rows.values()))
    if gt is not None:
      order = range(len(images))
      summary["metrics"] = metrics([heatmaps[i] for i in order], gt,
                                   [rows[i]["score"] for i in order],
                                   image_files.image_labels(paths))
    if normal is not None:
      detector.save_thresholds()  # The command succeeded: the run may now keep them.
    out.write(files.write_json, out.root / SUMMARY_JSON, summary)  # Last: the run completed.
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


def _write_results(detector, out, paths, images, thresholds: tuple[float, float],
                   category: str | None, batch_size: int, *,
                   keep_heatmaps: bool) -> tuple[dict, dict]:
  """Localizes the images size by size and writes each one's files and scores.csv row;
  returns the rows and (with `keep_heatmaps`) the heatmaps, by image index."""
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  pixel_t, image_t = thresholds
  fields = SCORES_FIELDS + (("reference",) if detector.references is not None else ())
  heatmaps, rows = {}, {}  # By image index: a folder of mixed sizes goes one size at a time.
  scores_csv, dirs = out.root / SCORES_CSV, out.dirs
  out.write(files.append_line, scores_csv, output_files.csv_line(fields))
  with progress.Progress(len(images), "localize") as bar:
    for batch in infer.batches_by_size(images, batch_size):
      result = detector.localize([images[i] for i in batch], category)
      for k, (i, hm, score) in enumerate(zip(batch, result.heatmaps, result.scores)):
        stem = f"{i:03d}_{paths[i].stem}"
        rows[i] = dict(file=str(paths[i]), score=float(score),
                       decision="NG" if score >= image_t else "OK")
        if result.references is not None:
          rows[i]["reference"] = result.references[k]
        out.write_all([
            (files.write_npy, dirs["heatmaps"] / f"{stem}.npy", hm),
            (output_files.write_png, dirs["masks"] / f"{stem}_mask.png",
             (hm >= pixel_t).astype(np.uint8) * 255),
            (output_files.write_png, dirs["overlays"] / f"{stem}.png",
             pixels.overlay(images[i], hm, pixel_t)),
            (files.append_line, scores_csv, output_files.csv_line(rows[i].values()))])
        if keep_heatmaps:
          heatmaps[i] = hm
      bar.update(len(batch))
  return rows, heatmaps


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
  p.add_argument("--overwrite", action="store_true", help="replace a previous output")
  return run_flags.run("localize", localize, p.parse_args(argv))

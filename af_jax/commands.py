"""`af-jax generate | localize | evaluate`: the trained models on files and prepared datasets.

  af-jax generate --workdir runs/flare --images 'normal/*.png' --num 10 --out gen/
  af-jax generate --workdir runs/flare --dataset mvtec_ad/bottle --data_dir data --out gen/
  af-jax localize --workdir runs/blaze --images 'test/*/*.png' --out loc/ \\
      [--calibrate 'val_good/*.png'] [--ground_truth GT]
  af-jax evaluate --workdir runs/blaze --dataset mvtec_ad --categories bottle --data_dir data

`generate` takes a Flare run, or a Boot run to render the same edits with the BootGenerator
(how the paper compares the two; score either with `af-jax evaluate-generation`).

Edges: `--edges` defaults to the extractor the run's training data was prepared with (recorded
in the run's config, `data_facts.edge_method`); naming another one works but warns.

`generate` writes `<out>/<category>/{images,masks,heatmaps,edges}` in the MVTec naming
(`NNN.png`, binary `NNN_mask.png` with 0/255, float32 heatmaps `NNN.npy`, edited edge maps
`NNN.png`) and one `manifest.jsonl` line per anomaly (its files, source image, seed, source
index, variant, donor image, region kind, edit op). `<category>` is `--category`, else the
category of the images' MVTec-layout paths (`bottle/train/good/*.png` -> `bottle`;
`category_of`) or the dataset's. Anomalies are made from groups of
`GROUP_SIZE` consecutive images (donor edges come from the same group), so the output depends
on the seed and the images only, not on `--batch_size`. Every file is written under a
temporary name and renamed; an anomaly whose files cannot all be written leaves none of them,
and its manifest line is appended only once they all exist, whole or not at all: a run that
fails mid-way (a full disk included) leaves complete files that match the manifest. Existing
outputs are never replaced unless `--overwrite` is given, which first removes the category's
previous output.

`localize` writes `<out>/{heatmaps,masks,overlays}` (`NNN_<stem>.npy`, `NNN_<stem>_mask.png`,
`NNN_<stem>.png`, NNN the image's place among the files), `scores.csv` (file, score, OK/NG) and
`summary.json`. Images may differ in size and each keeps its own; the detector takes those of
one size together, so `scores.csv` lists them size by size, in file order within a size. With
`--ground_truth` (MVTec layout: `<gt>/<defect>/<stem>_mask.png` for `.../<defect>/<stem>.png`,
images under `good/` have empty masks) the summary also holds pixel AUROC, AUPRO (FPR 0.3)
and image AUROC. Like the manifest, `scores.csv` lists an image only once its files are
written; `summary.json` is written last, so a `localize` output without it did not finish.
Masks and OK/NG use the detector's calibrated thresholds (`--calibrate` measures them on
normal images first); `--pixel_threshold` / `--image_threshold` override.

`evaluate` writes `metrics.json` and `metrics.md` (per category and mean pixel AUROC, AUPRO at
FPR 0.3, image AUROC) to `--out` (default `<workdir>/eval`).

Every input is read and checked before anything is written: an unreadable image, a pattern
matching no image, or ground truth masks that are missing or of another size stop the command
with an error naming the files.
"""

import argparse
import csv
import errno
import glob
import io
import json
import os
import pathlib
import shutil
import sys

import numpy as np

from af_jax import pixels
from af_jax import progress

GENERATE_DIRS = ("images", "masks", "heatmaps", "edges")
LOCALIZE_DIRS = ("heatmaps", "masks", "overlays")
SCORES_CSV, SUMMARY_JSON = "scores.csv", "summary.json"
SCORES_FIELDS = ("file", "score", "decision")
MANIFEST = "manifest.jsonl"
LOCALITY_JSON = "locality.json"
BASELINE_TITLE = "Per-pixel Gaussian baseline (no learning; af_jax/baseline.py):"
GROUP_SIZE = 16
SPLITS = ("train", "test", "validation")  # Split folders of the MVTec layout (and MVTec LOCO's).
EDGE_CHOICES = ("auto", *pixels.EDGE_METHODS)


# ------------------------------------------------------------------ reading
def find_images(pattern: str) -> list[pathlib.Path]:
  """Image files matching a glob pattern or inside a directory; error when there are none."""
  path = pathlib.Path(pattern)
  if path.is_dir():
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in pixels.IMAGE_SUFFIXES)
  else:
    files = sorted(pathlib.Path(p) for p in glob.glob(pattern, recursive=True)
                   if pathlib.Path(p).suffix.lower() in pixels.IMAGE_SUFFIXES)
  if not files:
    raise FileNotFoundError(
        f"no image files ({', '.join(pixels.IMAGE_SUFFIXES)}) match {pattern!r}")
  return files


def read_images(files) -> list[np.ndarray]:
  """Every image, or one error naming all the unreadable files."""
  images, bad = [], []
  for f in files:
    try:
      images.append(pixels.read_rgb(f))
    except ValueError:
      bad.append(str(f))
  if bad:
    raise ValueError(f"cannot read {len(bad)} image file(s) (corrupt or not an image): "
                     + _listing(bad))
  return images


def category_of(files) -> str:
  """The category of images in the MVTec layout, `<category>/<split>/<defect>/<file>`.

  Images outside it name their category by their own folder, unless that folder is a split or
  `good` (which names no category). Raises ValueError when the files disagree or name none.
  """
  categories = set()
  for f in files:
    folders = pathlib.Path(f).resolve().parent.parts
    if len(folders) >= 3 and folders[-2] in SPLITS:
      categories.add(folders[-3])
    elif folders[-1] in (*SPLITS, "good"):
      raise ValueError(f"cannot tell the category of {f} from its path (MVTec layout: "
                       "<category>/<split>/<defect>/<file>); pass --category NAME")
    else:
      categories.add(folders[-1])
  if len(categories) > 1:
    raise ValueError(f"the images are of several categories ({', '.join(sorted(categories))}, "
                     "from their paths); run once per category or pass --category NAME")
  return categories.pop()


def _listing(names: list[str], most: int = 5) -> str:
  return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def ground_truth_masks(files, images, gt_dir) -> list[np.ndarray]:
  """MVTec layout: `<gt>/<defect>/<stem>_mask.png` for `.../<defect>/<stem>.png`; 'good' = empty.

  Raises one error naming every missing, unreadable or wrongly sized mask.
  """
  masks, problems = [], []
  for f, image in zip(files, images):
    f = pathlib.Path(f)
    if f.parent.name == "good":
      masks.append(np.zeros(image.shape[:2], bool))
      continue
    path = pathlib.Path(gt_dir) / f.parent.name / f"{f.stem}_mask.png"
    try:
      mask = pixels.read_mask(path)
    except ValueError:
      problems.append(f"{path} (missing or unreadable, for {f})")
      continue
    if mask.shape != image.shape[:2]:
      problems.append(f"{path} is {mask.shape[1]}x{mask.shape[0]} but {f} is "
                      f"{image.shape[1]}x{image.shape[0]}")
    else:
      masks.append(mask)
  if problems:
    raise ValueError(f"ground truth in {gt_dir} does not match the images: "
                     + _listing(problems))
  return masks


# ------------------------------------------------------------------ writing
# Files are written by Python (not by OpenCV), so a full disk or a failing write is an
# OSError naming the file, which the commands report in one line.
def _atomic_write(path: pathlib.Path, write) -> None:
  tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


def write_png(path: pathlib.Path, image: np.ndarray) -> None:
  """An RGB or grayscale uint8 PNG, atomically."""
  _atomic_write(path, lambda tmp: tmp.write_bytes(pixels.encode_png(image)))


def write_text(path: pathlib.Path, text: str) -> None:
  """A text file, atomically: readers see the old file or the whole new one."""
  _atomic_write(path, lambda tmp: tmp.write_text(text))


def append_line(path: pathlib.Path, line: str) -> None:
  """Appends `line` and a newline, whole or not at all.

  A failed write (a full disk) is cut back off the file, so a listing such as the manifest
  never holds a partial line.
  """
  data = (line + "\n").encode()
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    size = os.lseek(fd, 0, os.SEEK_END)
    try:
      written = os.write(fd, data)
      if written != len(data):
        raise OSError(errno.ENOSPC, f"only {written} of {len(data)} bytes written", str(path))
    except OSError:
      os.ftruncate(fd, size)
      raise
  finally:
    os.close(fd)


def _csv_line(values) -> str:
  buffer = io.StringIO()
  csv.writer(buffer, lineterminator="").writerow(values)
  return buffer.getvalue()


def write_npy(path: pathlib.Path, array: np.ndarray) -> None:
  """A .npy array, atomically."""
  def save(tmp):
    with open(tmp, "wb") as f:
      np.save(f, array)
  _atomic_write(path, save)


def write_all(writes: list[tuple]) -> None:
  """Runs `(writer, path, data)` writes; on any failure removes those done, then re-raises.

  The line listing them (`append_line`) goes last, so it is there only when they all are.
  """
  done = []
  try:
    for writer, path, data in writes:
      writer(path, data)
      done.append(path)
  except BaseException:
    for path in done:
      path.unlink(missing_ok=True)
    raise


def _prepare_output(root: pathlib.Path, dir_names, file_names,
                    overwrite: bool) -> dict[str, pathlib.Path]:
  """Output sub-folders of `root`; previous output there is refused, or cleared if `overwrite`."""
  dirs = {name: root / name for name in dir_names}
  previous = [p for p in [*dirs.values(), *(root / f for f in file_names)] if p.exists()]
  if previous and not overwrite:
    raise FileExistsError(f"{root} already holds output ({', '.join(p.name for p in previous)});"
                          " pass --overwrite to replace it")
  for p in previous:
    if p.is_dir():
      shutil.rmtree(p)
    else:
      p.unlink()
  for d in dirs.values():
    d.mkdir(parents=True)
  return dirs


def overlay(image: np.ndarray, heatmap: np.ndarray, threshold: float,
            alpha: float = 0.6) -> np.ndarray:
  """The image, coloured only where the heatmap nears or passes the pixel `threshold`.

  Colour: `pixels.heat_colours` over [0, 2 x threshold] (green at the threshold, red at twice
  it). Opacity: none up to half the threshold, rising to `alpha` at the threshold, so the
  image keeps its own colours where the heatmap is low (a heatmap of 0 leaves it unchanged)
  and the coloured parts are those its binary mask marks or nearly marks.
  """
  level = np.asarray(heatmap, np.float32) / max(2 * threshold, 1e-12)
  weight = alpha * np.clip(4 * level - 1, 0, 1)[..., None]
  blended = image * (1 - weight) + pixels.heat_colours(level) * weight
  return np.round(blended).astype(np.uint8)


def _stage_options(args) -> dict:
  return dict(step=args.step, dtype=args.dtype, batch_size=args.batch_size,
              edge_method=None if args.edges == "auto" else args.edges)


# ------------------------------------------------------------------ generate
def _source_images(args):
  """(category, source names, images, region maps or None) from --images or --dataset."""
  if args.images:
    files = find_images(args.images)
    category = args.category or category_of(files)
    return category, [str(f) for f in files], read_images(files), None
  from af_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  dataset, _, category = args.dataset.partition("/")
  if not category:
    raise ValueError(f"--dataset must be NAME/CATEGORY (e.g. mvtec_ad/bottle), "
                     f"got {args.dataset!r}")
  examples = [ex for ex in input_pipeline.make_eval_dataset(args.data_dir, dataset, category,
                                                             split=args.split)
              if int(ex["label"]) == 0]
  if not examples:
    raise ValueError(f"{args.dataset} in {args.data_dir} has no normal image in split "
                     f"{args.split!r}")
  return (args.category or category, [ex["file_name"] for ex in examples],
          [np.asarray(ex["image"]) for ex in examples],
          [np.asarray(ex["regions"]) for ex in examples])


def generate(args) -> pathlib.Path:
  """Writes the anomalies of every source image (module docstring); returns the output folder."""
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  from af_jax.metrics import locality  # pylint: disable=g-import-not-at-top
  if args.num < 1:
    raise ValueError(f"--num must be >= 1, got {args.num}")
  category, names, images, regions = _source_images(args)
  generator = infer.Generator(args.workdir, bound_to_region=args.bound_to_region,
                              **_stage_options(args))
  root = pathlib.Path(args.out) / category
  dirs = _prepare_output(root, GENERATE_DIRS, [MANIFEST, LOCALITY_JSON], args.overwrite)
  index, figures = 0, []
  with progress.Progress(len(images) * args.num, f"generate {category}") as bar:
    for start in range(0, len(images), GROUP_SIZE):
      stop = min(start + GROUP_SIZE, len(images))
      result = generator.generate(
          images[start:stop], n_variants=args.num, seed=args.seed,
          regions=None if regions is None else regions[start:stop],
          image_ids=range(start, stop), mask_threshold=args.mask_threshold)
      for j in range(len(result.images)):
        stem = f"{index:03d}"
        files = dict(image=dirs["images"] / f"{stem}.png",
                     mask=dirs["masks"] / f"{stem}_mask.png",
                     heatmap=dirs["heatmaps"] / f"{stem}.npy",
                     edges=dirs["edges"] / f"{stem}.png")
        source = start + int(result.source[j])
        record = {k: str(p.relative_to(root)) for k, p in files.items()}
        record.update(source=names[source], source_index=source, seed=args.seed,
                      variant=int(result.variant[j]),
                      donor=names[start + int(result.donor[j])],
                      region_kind=result.region_kind[j], edit_op=result.edit_op[j])
        write_all([(write_png, files["image"], result.images[j]),
                   (write_png, files["mask"], result.masks[j].astype(np.uint8) * 255),
                   (write_npy, files["heatmap"], result.heatmaps[j]),
                   (write_png, files["edges"], pixels.unit_to_uint8(result.edges[j])),
                   (append_line, root / MANIFEST, json.dumps(record))])
        index += 1
        bar.update(1)
      sources = pixels.resize_images(images[start:stop], generator.size)[result.source]
      figures.append(locality.per_anomaly(sources, result.images, result.masks, result.heatmaps,
                                          result.region_masks))
  summary = locality.summarize({k: np.concatenate([f[k] for f in figures])
                                for k in locality.FIGURES})
  write_text(root / LOCALITY_JSON, json.dumps(summary, indent=2))
  print(f"{category}: {locality_line(summary)}")
  return root


def locality_line(figures: dict) -> str:
  """The locality figures (af_jax/metrics/locality.py) in words."""
  return (f"{100 * figures['change_inside']:.0f}% of the change inside the masks, heatmap IoU "
          f"with the edited region {figures['heatmap_iou']:.2f}, mean change outside "
          f"{100 * figures['change_outside']:.2f}% of the range")


# ------------------------------------------------------------------ localize
def _metrics(heatmaps, masks, scores, labels) -> dict:
  """Pixel AUROC, AUPRO (FPR 0.3) and image AUROC (labels: 1 = anomalous image)."""
  from af_jax.metrics import localization  # pylint: disable=g-import-not-at-top
  heatmaps, masks = np.stack(heatmaps), np.stack(masks)
  return dict(pixel_auroc=localization.pixel_auroc(heatmaps, masks),
              aupro=localization.aupro(heatmaps, masks, fpr_limit=0.3),
              image_auroc=localization.image_auroc(np.asarray(scores), np.asarray(labels)))


def _image_labels(files) -> list[int]:
  """MVTec layout: images under `good/` are normal (0), all others anomalous (1)."""
  return [int(pathlib.Path(f).parent.name != "good") for f in files]


def _check_metric_inputs(files, images) -> None:
  """Metrics need one image size and both normal and anomalous images."""
  described = f"the {len(files)} images ({_listing([str(f) for f in files], 2)})"
  sizes = {im.shape[:2] for im in images}
  if len(sizes) > 1:
    raise ValueError(f"metrics need images of one size; {described} have sizes {sorted(sizes)}")
  labels = set(_image_labels(files))
  if labels != {0, 1}:
    kind = "under good/" if 0 in labels else "outside good/"
    raise ValueError(f"metrics need normal (good/) and anomalous images; all of {described} "
                     f"are {kind}")


def localize(args) -> dict:
  """Heatmaps, masks, overlays, scores.csv and summary.json (module docstring)."""
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  files = find_images(args.images)
  images = read_images(files)
  gt = ground_truth_masks(files, images, args.ground_truth) if args.ground_truth else None
  if gt is not None:
    _check_metric_inputs(files, images)
  normal = read_images(find_images(args.calibrate)) if args.calibrate else None
  detector = infer.Detector(args.workdir, smoothing_sigma=args.smoothing_sigma,
                            flip_tta=args.flip_tta, **_stage_options(args))
  if normal is not None:
    detector.calibrate(normal, fpr=args.fpr)
  pixel_t = detector.threshold("pixel", args.pixel_threshold)
  image_t = detector.threshold("image", args.image_threshold)
  out = pathlib.Path(args.out)
  dirs = _prepare_output(out, LOCALIZE_DIRS, [SCORES_CSV, SUMMARY_JSON], args.overwrite)
  heatmaps, rows = {}, {}  # By image index: a folder of mixed sizes goes one size at a time.
  append_line(out / SCORES_CSV, _csv_line(SCORES_FIELDS))
  bar = progress.Progress(len(images), "localize")
  for batch in infer.batches_by_size(images, args.batch_size):
    result = detector.localize([images[i] for i in batch])
    for i, hm, score in zip(batch, result.heatmaps, result.scores):
      stem = f"{i:03d}_{files[i].stem}"
      rows[i] = dict(file=str(files[i]), score=float(score),
                     decision="NG" if score >= image_t else "OK")
      write_all([(write_npy, dirs["heatmaps"] / f"{stem}.npy", hm),
                 (write_png, dirs["masks"] / f"{stem}_mask.png",
                  (hm >= pixel_t).astype(np.uint8) * 255),
                 (write_png, dirs["overlays"] / f"{stem}.png", overlay(images[i], hm, pixel_t)),
                 (append_line, out / SCORES_CSV, _csv_line(rows[i][k] for k in SCORES_FIELDS))])
      if gt is not None:
        heatmaps[i] = hm
    bar.update(len(batch))
  bar.close()
  summary = dict(num_images=len(rows), num_ng=sum(r["decision"] == "NG" for r in rows.values()),
                 pixel_threshold=pixel_t, image_threshold=image_t, step=detector.step,
                 edge_method=detector.edge_method)
  if gt is not None:
    order = range(len(images))
    summary["metrics"] = _metrics([heatmaps[i] for i in order], gt,
                                  [rows[i]["score"] for i in order], _image_labels(files))
  write_text(out / SUMMARY_JSON, json.dumps(summary, indent=2))  # Last: the run completed.
  return summary


# ------------------------------------------------------------------ evaluate
def evaluate_category(detector, data_dir, dataset, category, split="test") -> dict:
  """Pixel AUROC, AUPRO (FPR 0.3) and image AUROC of one prepared category.

  `detector`: anything whose `localize(images)` gives `.heatmaps` and `.scores` (an
  `infer.Detector`, or a fitted `baseline.PixelGaussianBaseline`).
  """
  from af_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  examples = list(input_pipeline.make_eval_dataset(data_dir, dataset, category, split=split))
  if not examples:
    raise ValueError(f"{dataset}/{category} in {data_dir} has no {split!r} examples")
  images = [np.asarray(ex["image"]) for ex in examples]
  masks = [np.asarray(ex["mask"])[..., 0] > 0 for ex in examples]
  labels = [int(ex["label"]) for ex in examples]
  result = detector.localize(images)
  return dict(_metrics(result.heatmaps, masks, result.scores, labels), num_images=len(images))


def evaluate_baseline_category(data_dir, dataset, category, split="test") -> dict:
  """`evaluate_category` of the per-pixel Gaussian baseline fitted on the category's train split."""
  from af_jax import baseline, input_pipeline  # pylint: disable=g-import-not-at-top
  normal = [np.asarray(ex["image"]) for ex in
            input_pipeline.make_eval_dataset(data_dir, dataset, category, split="train")]
  return evaluate_category(baseline.PixelGaussianBaseline().fit(normal), data_dir, dataset,
                           category, split)


def evaluate(args) -> dict:
  """metrics.json and metrics.md over `--categories`; returns the summary."""
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  from af_jax.metrics import localization  # pylint: disable=g-import-not-at-top
  categories = [c.strip() for c in args.categories.split(",") if c.strip()]
  if not categories:
    raise ValueError(f"--categories names no category: {args.categories!r}")
  detector = infer.Detector(args.workdir, smoothing_sigma=args.smoothing_sigma,
                            flip_tta=args.flip_tta, **_stage_options(args))
  per_category, floor = {}, {}
  bar = progress.Progress(len(categories), "evaluate", unit="category")
  for category in categories:
    per_category[category] = evaluate_category(detector, args.data_dir, args.dataset, category,
                                               args.split)
    if args.baseline:
      floor[category] = evaluate_baseline_category(args.data_dir, args.dataset, category,
                                                   args.split)
    bar.update(1)
  bar.close()
  summary, table = localization.evaluation_summary(per_category)
  summary.update(dataset=args.dataset, split=args.split, workdir=str(args.workdir),
                 step=detector.step, edge_method=detector.edge_method)
  if args.baseline:
    summary["baseline"], floor_table = localization.evaluation_summary(floor)
    table += f"\n\n{BASELINE_TITLE}\n\n{floor_table}"
  out = pathlib.Path(args.out or pathlib.Path(args.workdir) / "eval")
  out.mkdir(parents=True, exist_ok=True)
  write_text(out / "metrics.json", json.dumps(summary, indent=2))
  write_text(out / "metrics.md", table + "\n")
  print(table)
  print(f"written: {out / 'metrics.json'}, {out / 'metrics.md'}")
  return summary


# ------------------------------------------------------------------ command line
def _parser(command: str) -> argparse.ArgumentParser:
  """The flags every command shares: which run, which checkpoint, how to compute."""
  p = argparse.ArgumentParser(prog=f"af-jax {command}", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="training run directory of the stage")
  p.add_argument("--step", type=int, default=-1, help="checkpoint step (default: the latest)")
  p.add_argument("--batch_size", type=int, default=16, help="images per device call")
  p.add_argument("--dtype", help="compute dtype, e.g. bfloat16 (default: the run's)")
  p.add_argument("--edges", choices=EDGE_CHOICES, default="auto",
                 help="edge extractor; auto = the one the run's training data was prepared "
                      "with (recorded in the run)")
  return p


def _heatmap_args(p: argparse.ArgumentParser) -> None:
  """The detector's heatmap post-processing (localize, evaluate)."""
  p.add_argument("--smoothing_sigma", type=float, default=4.0,
                 help="Gaussian blur of the heatmaps, in model pixels (0: raw heatmaps)")
  p.add_argument("--flip_tta", action=argparse.BooleanOptionalAction, default=True,
                 help="average the heatmaps of the mirrored views the run was trained with")


def _run(command: str, fn, args, show_result: bool = True) -> int:
  """Runs `fn(args)`; expected failures become one error line and exit status 1."""
  from af_jax import checkpoint  # pylint: disable=g-import-not-at-top
  try:
    result = fn(args)
  except (OSError, ValueError, KeyError, checkpoint.CheckpointError) as e:
    print(f"af-jax {command}: error: {e}", file=sys.stderr)
    return 1
  if show_result:
    print(f"af-jax {command}: {result}")
  return 0


def generate_main(argv) -> int:
  p = _parser("generate")
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--images", help="glob pattern or directory of normal images")
  src.add_argument("--dataset", help="prepared NAME/CATEGORY (normal images of --split)")
  p.add_argument("--data_dir", help="with --dataset: where `af-jax prepare` wrote it")
  p.add_argument("--split", default="train")
  p.add_argument("--category", help="output sub-folder (default: the category of an MVTec-"
                                    "layout path, <category>/<split>/<defect>/<file>, else the "
                                    "images' folder name; or the dataset's category)")
  p.add_argument("--num", type=int, default=1, help="anomalies per normal image")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--mask_threshold", type=float, default=0.5,
                 help="heatmap level of the binary masks (inside the edited region)")
  p.add_argument("--bound_to_region", action=argparse.BooleanOptionalAction, default=None,
                 help="change no pixel outside the edited region; --no-bound_to_region: the "
                      "paper's unbounded fusion (default: the run's flare.bound_to_region)")
  p.add_argument("--out", required=True)
  p.add_argument("--overwrite", action="store_true", help="replace a previous output")
  args = p.parse_args(argv)
  if args.dataset and not args.data_dir:
    p.error("--dataset needs --data_dir")
  return _run("generate", generate, args)


def localize_main(argv) -> int:
  p = _parser("localize")
  _heatmap_args(p)
  p.add_argument("--images", required=True, help="glob pattern or directory of images")
  p.add_argument("--out", required=True)
  p.add_argument("--ground_truth", help="MVTec-layout ground_truth folder: also compute metrics")
  p.add_argument("--calibrate", help="normal images (glob or directory) to calibrate and "
                                     "save the thresholds on first")
  p.add_argument("--fpr", type=float, default=0.01, help="calibration false-positive rate")
  p.add_argument("--pixel_threshold", type=float, help="override the calibrated pixel threshold")
  p.add_argument("--image_threshold", type=float, help="override the calibrated image threshold")
  p.add_argument("--overwrite", action="store_true", help="replace a previous output")
  return _run("localize", localize, p.parse_args(argv))


def evaluate_main(argv) -> int:
  p = _parser("evaluate")
  _heatmap_args(p)
  p.add_argument("--dataset", required=True, help="prepared dataset name, e.g. mvtec_ad")
  p.add_argument("--categories", required=True, help="comma-separated categories")
  p.add_argument("--data_dir", required=True)
  p.add_argument("--split", default="test")
  p.add_argument("--out", help="output folder (default: WORKDIR/eval)")
  p.add_argument("--baseline", action="store_true",
                 help="also score the per-pixel Gaussian baseline (af_jax/baseline.py), fitted on "
                      "each category's train split: the no-learning floor to beat")
  return _run("evaluate", evaluate, p.parse_args(argv), show_result=False)  # It prints a table.

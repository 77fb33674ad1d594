"""`af-jax generate | localize | evaluate`: the trained models on files and prepared datasets.

  af-jax generate --workdir runs/flare --images 'normal/*.png' --num 10 --out gen/
  af-jax generate --workdir runs/flare --dataset mvtec_ad/bottle --data_dir data --out gen/
  af-jax localize --workdir runs/blaze --images 'test/*/*.png' --out loc/ [--ground_truth GT]
  af-jax evaluate --workdir runs/blaze --dataset mvtec_ad --categories bottle --data_dir data

`generate` writes `<out>/<category>/{images,masks,heatmaps,edges}` in the MVTec naming
(`NNN.png`, `NNN_mask.png` 0/255, heatmaps as float32 `NNN.npy`, edited edges as PNG) and
one `manifest.jsonl` line per image (source, seed, variant, region kind, edit op). Every file
is written under a temporary name and renamed, and the manifest line is appended only after
its files exist: a run that fails mid-way leaves complete files that match the manifest.
Existing outputs are never overwritten unless `--overwrite` is given.
"""

import argparse
import csv
import glob
import json
import os
import pathlib
import sys

import cv2
import numpy as np
import tqdm

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


# ------------------------------------------------------------------ files
def find_images(pattern: str) -> list[pathlib.Path]:
  """Image files matching a glob pattern or inside a directory; error when there are none."""
  path = pathlib.Path(pattern)
  if path.is_dir():
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
  else:
    files = sorted(pathlib.Path(p) for p in glob.glob(pattern, recursive=True)
                   if pathlib.Path(p).suffix.lower() in IMAGE_SUFFIXES)
  if not files:
    raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) match {pattern!r}")
  return files


def read_image(path) -> np.ndarray:
  """uint8 RGB [H, W, 3]; grayscale is converted; unreadable files raise naming the file."""
  data = cv2.imread(str(path), cv2.IMREAD_COLOR)
  if data is None:
    raise ValueError(f"cannot read image {path} (missing, corrupt or not an image)")
  return cv2.cvtColor(data, cv2.COLOR_BGR2RGB)


def read_mask(path, shape) -> np.ndarray:
  mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
  if mask is None:
    raise ValueError(f"cannot read mask {path}")
  if mask.shape != tuple(shape):
    raise ValueError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]}, its image is "
                     f"{shape[1]}x{shape[0]}")
  return mask > 0


def _atomic_write(path: pathlib.Path, write) -> None:
  tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
  write(tmp)
  os.replace(tmp, path)


def write_png(path: pathlib.Path, image: np.ndarray) -> None:
  if image.ndim == 3:
    image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
  def save(p):
    if not cv2.imwrite(str(p), image):
      raise OSError(f"cannot write {path}")
  _atomic_write(path, save)


def write_npy(path: pathlib.Path, array: np.ndarray) -> None:
  def save(p):
    with open(p, "wb") as f:
      np.save(f, array)
  _atomic_write(path, save)


def _check_writable(directory: pathlib.Path, overwrite: bool) -> None:
  if directory.exists() and any(directory.rglob("*")) and not overwrite:
    raise FileExistsError(f"{directory} already holds files; pass --overwrite to replace them")


# ------------------------------------------------------------------ generate
def _source_images(args) -> tuple[str, list[str], list[np.ndarray]]:
  """(category, names, images) from --images or from a prepared --dataset split."""
  if args.images:
    files = find_images(args.images)
    category = args.category or files[0].parent.name
    return category, [str(f) for f in files], [read_image(f) for f in files]
  from af_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  dataset, _, category = args.dataset.partition("/")
  if not category:
    raise ValueError(f"--dataset must be NAME/CATEGORY (e.g. mvtec_ad/bottle), got {args.dataset!r}")
  examples = [ex for ex in input_pipeline.make_eval_dataset(args.data_dir, dataset, category,
                                                             split=args.split)
              if int(ex["label"]) == 0]
  names = [_text(ex["file_name"]) for ex in examples]
  return category, names, [np.asarray(ex["image"]) for ex in examples]


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def generate(args) -> pathlib.Path:
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  category, names, images = _source_images(args)
  root = pathlib.Path(args.out) / category
  _check_writable(root, args.overwrite)
  dirs = {k: root / k for k in ("images", "masks", "heatmaps", "edges")}
  for d in dirs.values():
    d.mkdir(parents=True, exist_ok=True)
  generator = infer.Generator(args.workdir, batch_size=args.batch_size)
  manifest = root / "manifest.jsonl"
  manifest.write_text("")
  index = 0
  with tqdm.tqdm(total=len(images) * args.num, desc=f"generate {category}", unit="img") as bar:
    for start in range(0, len(images), args.batch_size):
      chunk = images[start:start + args.batch_size]
      result = generator.generate(chunk, n_variants=args.num, seed=args.seed + start,
                                  mask_threshold=args.mask_threshold)
      for j in range(len(result.images)):
        stem = f"{index:03d}"
        write_png(dirs["images"] / f"{stem}.png", result.images[j])
        write_png(dirs["masks"] / f"{stem}_mask.png", result.masks[j].astype(np.uint8) * 255)
        write_npy(dirs["heatmaps"] / f"{stem}.npy", result.heatmaps[j])
        write_png(dirs["edges"] / f"{stem}.png", (result.edges[j] * 255).astype(np.uint8))
        record = dict(image=f"images/{stem}.png", mask=f"masks/{stem}_mask.png",
                      heatmap=f"heatmaps/{stem}.npy", edges=f"edges/{stem}.png",
                      source=names[start + int(result.source[j])], seed=args.seed + start,
                      variant=int(result.variant[j]), region_kind=result.region_kind[j],
                      edit_op=result.edit_op[j])
        with manifest.open("a") as f:
          f.write(json.dumps(record) + "\n")
        index += 1
        bar.update(1)
  return root


# ------------------------------------------------------------------ localize
def ground_truth_masks(files, images, gt_dir) -> list[np.ndarray]:
  """MVTec layout: `<gt>/<defect>/<stem>_mask.png` for `.../<defect>/<stem>.png`; 'good' = empty."""
  masks, missing = [], []
  for f, image in zip(files, images):
    f = pathlib.Path(f)
    if f.parent.name == "good":
      masks.append(np.zeros(image.shape[:2], bool))
      continue
    path = pathlib.Path(gt_dir) / f.parent.name / f"{f.stem}_mask.png"
    if not path.is_file():
      missing.append(str(path))
      continue
    masks.append(read_mask(path, image.shape[:2]))
  if missing:
    raise FileNotFoundError(f"ground truth masks missing for {len(missing)} images: "
                            + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
  return masks


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
  colour = cv2.applyColorMap((np.clip(heatmap, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
  colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
  return (image * (1 - alpha) + colour * alpha).astype(np.uint8)


def localize(args) -> dict:
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  from af_jax.metrics import localization  # pylint: disable=g-import-not-at-top
  files = find_images(args.images)
  images = [read_image(f) for f in files]
  gt = ground_truth_masks(files, images, args.ground_truth) if args.ground_truth else None
  out = pathlib.Path(args.out)
  _check_writable(out, args.overwrite)
  dirs = {k: out / k for k in ("heatmaps", "masks", "overlays")}
  for d in dirs.values():
    d.mkdir(parents=True, exist_ok=True)
  detector = infer.Detector(args.workdir, batch_size=args.batch_size)
  if args.calibrate:
    detector.calibrate([read_image(f) for f in find_images(args.calibrate)], fpr=args.fpr)
  pixel_t = detector.threshold("pixel", args.pixel_threshold)
  image_t = detector.threshold("image", args.image_threshold)
  heatmaps, scores = [], []
  for start in tqdm.trange(0, len(images), args.batch_size, desc="localize", unit="batch"):
    result = detector.localize(images[start:start + args.batch_size])
    heatmaps += result.heatmaps
    scores += list(result.scores)
  rows = []
  for i, (f, image, hm, score) in enumerate(zip(files, images, heatmaps, scores)):
    stem = f"{i:03d}_{f.stem}"
    write_npy(dirs["heatmaps"] / f"{stem}.npy", hm.astype(np.float32))
    write_png(dirs["masks"] / f"{stem}_mask.png", (hm >= pixel_t).astype(np.uint8) * 255)
    write_png(dirs["overlays"] / f"{stem}.png", overlay(image, hm))
    rows.append(dict(file=str(f), score=float(score), decision="NG" if score >= image_t else "OK"))
  with (out / "scores.csv").open("w", newline="") as fh:
    writer = csv.DictWriter(fh, fieldnames=["file", "score", "decision"])
    writer.writeheader()
    writer.writerows(rows)
  summary = dict(num_images=len(rows), num_ng=sum(r["decision"] == "NG" for r in rows),
                 pixel_threshold=pixel_t, image_threshold=image_t)
  if gt is not None:
    hm = np.stack(heatmaps) if len({h.shape for h in heatmaps}) == 1 else None
    if hm is None:
      raise ValueError("metrics need images of one size; resize them first")
    masks = np.stack(gt)
    labels = masks.any(axis=(1, 2)).astype(int)
    summary["metrics"] = dict(
        pixel_auroc=localization.pixel_auroc(hm, masks),
        aupro=localization.aupro(hm, masks, fpr_limit=0.3),
        image_auroc=localization.image_auroc(np.asarray(scores), labels))
  (out / "summary.json").write_text(json.dumps(summary, indent=2))
  return summary


# ------------------------------------------------------------------ evaluate
def evaluate_category(detector, data_dir, dataset, category, split="test") -> dict:
  """Pixel AUROC, AUPRO (FPR 0.3) and image AUROC of one prepared category."""
  from af_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from af_jax.metrics import localization  # pylint: disable=g-import-not-at-top
  examples = list(input_pipeline.make_eval_dataset(data_dir, dataset, category, split=split))
  images = [np.asarray(ex["image"]) for ex in examples]
  masks = np.stack([np.asarray(ex["mask"])[..., 0] > 0 for ex in examples])
  labels = np.asarray([int(ex["label"]) for ex in examples])
  result = detector.localize(images)
  heatmaps = np.stack(result.heatmaps)
  return dict(pixel_auroc=localization.pixel_auroc(heatmaps, masks),
              aupro=localization.aupro(heatmaps, masks, fpr_limit=0.3),
              image_auroc=localization.image_auroc(result.scores, labels),
              num_images=len(images))


def evaluate(args) -> dict:
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  from af_jax.metrics import localization  # pylint: disable=g-import-not-at-top
  detector = infer.Detector(args.workdir, batch_size=args.batch_size)
  categories = [c for c in args.categories.split(",") if c]
  per_category = {}
  for category in tqdm.tqdm(categories, desc="evaluate", unit="category"):
    per_category[category] = evaluate_category(detector, args.data_dir, args.dataset, category,
                                               args.split)
  summary, table = localization.evaluation_summary(per_category)
  out = pathlib.Path(args.out or pathlib.Path(args.workdir) / "eval")
  out.mkdir(parents=True, exist_ok=True)
  (out / "metrics.json").write_text(json.dumps(summary, indent=2))
  (out / "metrics.md").write_text(table + "\n")
  print(table)
  print(f"written: {out / 'metrics.json'}, {out / 'metrics.md'}")
  return summary


# ------------------------------------------------------------------ argument parsing
def _parser(command: str) -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog=f"af-jax {command}", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="training run directory of the stage")
  p.add_argument("--batch_size", type=int, default=16)
  if command == "generate":
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="glob pattern or directory of normal images")
    src.add_argument("--dataset", help="prepared NAME/CATEGORY (normal images of --split)")
    p.add_argument("--data_dir", help="with --dataset: where `af-jax prepare` wrote it")
    p.add_argument("--split", default="train")
    p.add_argument("--category", help="output sub-folder (default: the images' folder name)")
    p.add_argument("--num", type=int, default=1, help="anomalies per normal image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mask_threshold", type=float, default=0.5)
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
  elif command == "localize":
    p.add_argument("--images", required=True, help="glob pattern or directory of images")
    p.add_argument("--out", required=True)
    p.add_argument("--ground_truth", help="MVTec-layout ground_truth folder: also compute metrics")
    p.add_argument("--calibrate", help="normal images to calibrate thresholds on first")
    p.add_argument("--fpr", type=float, default=0.01, help="calibration false-positive rate")
    p.add_argument("--pixel_threshold", type=float, help="override the calibrated pixel threshold")
    p.add_argument("--image_threshold", type=float, help="override the calibrated image threshold")
    p.add_argument("--overwrite", action="store_true")
  else:
    p.add_argument("--dataset", required=True, help="prepared dataset name, e.g. mvtec_ad")
    p.add_argument("--categories", required=True, help="comma-separated categories")
    p.add_argument("--data_dir", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", help="output folder (default: WORKDIR/eval)")
  return p


def _run(command: str, fn, argv) -> int:
  args = _parser(command).parse_args(argv)
  if command == "generate" and args.dataset and not args.data_dir:
    _parser(command).error("--dataset needs --data_dir")
  try:
    result = fn(args)
  except (FileNotFoundError, FileExistsError, ValueError) as e:
    print(f"af-jax {command}: error: {e}", file=sys.stderr)
    return 1
  if command != "evaluate":
    print(f"af-jax {command}: {result}")
  return 0


def generate_main(argv) -> int:
  return _run("generate", generate, argv)


def localize_main(argv) -> int:
  return _run("localize", localize, argv)


def evaluate_main(argv) -> int:
  return _run("evaluate", evaluate, argv)

"""`af-jax evaluate-generation`: IS and IC-LPIPS of generated images, as the paper reports them.

  af-jax evaluate-generation --generated gen/ --real /data/mvtec_ad \\
      --inception weights-inception-2015-12-05-6726825d.pth --lpips vgg16-397923af.pth
  af-jax evaluate-generation --generated gen/ --real mvtec_ad --data_dir ~/tensorflow_datasets \\
      --inception inception.npz --lpips lpips_vgg16.npz [--out DIR]

Metrics (`af_jax.metrics.generation`): the Inception Score (mean and std over 10 splits, as
torch-fidelity computes it) and IC-LPIPS (generated images clustered around real ones by
LPIPS-VGG, at most 50 per cluster, mean pairwise LPIPS per cluster, mean over clusters;
clusters of fewer than two images count 0, as in DFMGAN). The paper multiplies LPIPS by 10.

--generated: what `af-jax generate` wrote (`<gen>/<category>/images/NNN.png` with a
  `manifest.jsonl`), one such category folder, or a plain folder of images (one category,
  named after the folder). Images are taken in the manifest's order (generation order), or
  else in name order; the IC-LPIPS cap keeps the first ones.
--real: the cluster centres, the paper's sampled normal and anomalous test images. Either a
  folder (per category: `<real>/<category>/test`, as in the MVTec layout, else
  `<real>/<category>`, else `<real>` itself; images found recursively), or a prepared data set
  `NAME` (category = the generated one) or `NAME/CATEGORY`, read from --data_dir's --split.
  At most --num_real of them (100, as in the paper) are drawn with --seed, then resized to the
  generated images' size with `af_jax.pixels.resize_images`.
Subsets: where the manifest records them, every value of every --by field (default
  `edit_op`, `region_kind`) is also scored on its own, e.g. `edit_op=remove`.

Writes `metrics.json` and `metrics.md` to --out (default `<generated>/eval`): per category
(all images and each subset), the mean over categories, and the settings. Weights are never
downloaded; each metric refuses to run without its file (--inception: torch-fidelity's
`weights-inception-2015-12-05-6726825d.pth`; --lpips: torchvision's `vgg16-397923af.pth`),
given as `.pth` or as the `.npz` of `af-jax convert-weights`. --metrics picks the metrics.
"""

import argparse
import json
import math
import pathlib
import pickle
import sys
import time

import numpy as np

METRICS = ("is", "ic_lpips")
MANIFEST = "manifest.jsonl"
SUBSET_FIELDS = "edit_op,region_kind"
TABLE_COLUMNS = ("is_mean", "is_std", "ic_lpips", "ic_lpips_populated", "num_generated",
                 "num_real")
MISSING_WEIGHTS = {
    "is": ("--inception", "the Inception Score needs torch-fidelity's Inception weights: pass "
           "--inception FILE (weights-inception-2015-12-05-6726825d.pth, or its .npz from "
           "`af-jax convert-weights`)"),
    "ic_lpips": ("--lpips", "IC-LPIPS needs torchvision's ImageNet VGG16 weights: pass --lpips "
                 "FILE (vgg16-397923af.pth, or its .npz from `af-jax convert-weights`)"),
}


# ------------------------------------------------------------------ inputs
def generated_categories(root, only: list[str] | None = None) -> dict[str, pathlib.Path]:
  """Category name -> folder, from the --generated layout (module docstring)."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f"--generated {root} is not a folder")
  if (root / "images").is_dir():
    found = {root.name: root}
  else:
    found = {p.name: p for p in sorted(root.iterdir()) if (p / "images").is_dir()}
  found = found or {root.name: root}
  if only:
    missing = [c for c in only if c not in found]
    if missing:
      raise ValueError(f"--categories {missing} not found in {root}; it holds {sorted(found)}")
    found = {c: found[c] for c in only}
  return found


def generated_set(folder: pathlib.Path) -> tuple[list[pathlib.Path], list[dict | None]]:
  """The category's image files in generation order, and each one's manifest record (or None).

  With a manifest, its order and its images; otherwise every image in name order.
  """
  from af_jax.commands import image_files  # pylint: disable=g-import-not-at-top
  manifest = folder / MANIFEST
  if not manifest.is_file():
    images_dir = folder / "images" if (folder / "images").is_dir() else folder
    files = image_files.find_images(str(images_dir))
    return files, [None] * len(files)
  files, records = [], []
  for n, line in enumerate(manifest.read_text().splitlines(), 1):
    if line.strip():
      try:
        record = json.loads(line)
        files.append(folder / record["image"])
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{manifest} line {n} is not a generate record: {e}") from e
      records.append(record)
  if not files:
    raise ValueError(f"{manifest} lists no image")
  return files, records


def subsets_of(records: list[dict | None], fields: list[str]) -> dict[str, list[int]]:
  """'<field>=<value>' -> indices of the images whose record says so."""
  subsets: dict[str, list[int]] = {}
  for field in fields:
    for i, record in enumerate(records):
      if record is not None and field in record:
        subsets.setdefault(f"{field}={record[field]}", []).append(i)
  return subsets


def real_images(real: str, category: str, *, data_dir=None, split="test") -> list[np.ndarray]:
  """The real images of a category from --real (module docstring)."""
  from af_jax.commands import image_files  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(real)
  if path.is_dir():
    folder = path / category
    if folder.is_dir():
      folder = folder / "test" if (folder / "test").is_dir() else folder
    else:
      folder = path
    return image_files.read_images(image_files.find_images(str(folder)))
  if not data_dir:
    raise ValueError(f"--real {real!r} is not a folder; as a prepared data set name it needs "
                     "--data_dir")
  from af_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  dataset, _, name = real.partition("/")
  examples = input_pipeline.make_eval_dataset(data_dir, dataset, name or category, split=split)
  images = [np.asarray(ex["image"]) for ex in examples]
  if not images:
    raise ValueError(f"{dataset}/{name or category} in {data_dir} has no {split!r} images")
  return images


def sample(images: list, count: int, seed: int) -> list:
  """At most `count` of `images`, drawn without replacement with `seed`, in their order."""
  if len(images) <= count:
    return images
  chosen = np.sort(np.random.default_rng(seed).choice(len(images), count, replace=False))
  return [images[i] for i in chosen]


def _one_size(images: list[np.ndarray], where: str) -> int:
  sizes = sorted({im.shape[:2] for im in images})
  if len(sizes) != 1 or sizes[0][0] != sizes[0][1]:
    raise ValueError(f"{where}: expected square images of one size, got sizes {sizes[:4]}")
  return sizes[0][0]


# ------------------------------------------------------------------ evaluation
def _mean_over(rows: list[dict]) -> dict:
  """Mean of every metric over the rows that have it (NaN values skipped)."""
  out = {}
  for name in dict.fromkeys(k for row in rows for k in row):
    values = [row[name] for row in rows if name in row and not math.isnan(row[name])]
    if values:
      out[name] = float(np.mean(values))
  return out


def _json_safe(value):
  """NaN (an empty mean) -> None, so the file is strict JSON."""
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  return None if isinstance(value, float) and math.isnan(value) else value


def evaluate(args) -> dict:
  """Scores every category (module docstring); writes metrics.json/.md; returns the summary."""
  from af_jax.commands import image_files  # pylint: disable=g-import-not-at-top
  from af_jax import pixels  # pylint: disable=g-import-not-at-top
  from af_jax import progress  # pylint: disable=g-import-not-at-top
  from af_jax.metrics import generation  # pylint: disable=g-import-not-at-top
  metrics = _metric_names(args.metrics)
  fields = [f.strip() for f in args.by.split(",") if f.strip()]
  categories = generated_categories(args.generated, _names(args.categories))
  inception = (generation.load_inception(args.inception, args.batch_size)
               if "is" in metrics else None)
  lpips_model = (generation.load_lpips(args.lpips, args.batch_size)
                 if "ic_lpips" in metrics else None)
  per_category = {}
  for category, folder in categories.items():
    files, records = generated_set(folder)
    images = image_files.read_images(files)
    size = _one_size(images, f"generated images of {category}")
    real = None
    if lpips_model is not None:
      real = real_images(args.real, category, data_dir=args.data_dir, split=args.split)
      real = pixels.resize_images(sample(real, args.num_real, args.seed), size)
    n = len(images)
    work = n * (inception is not None) + (len(real) + 2 * n if real is not None else 0)
    started = time.perf_counter()
    with progress.Progress(work, f"evaluate-generation {category}") as bar:
      per_category[category] = generation.generation_metrics(
          np.stack(images), real, inception=inception, lpips_model=lpips_model,
          subsets=subsets_of(records, fields), splits=args.splits,
          max_per_cluster=args.max_per_cluster, progress=bar.update)
    seconds = time.perf_counter() - started
    print(f"{category}: {n} generated images in {seconds:.1f} s ({n / seconds:.2f} img/s; "
          f"networks {bar.done / seconds:.1f} img/s)", flush=True)
  summary = dict(
      per_category=per_category,
      mean=_mean_over([result["all"] for result in per_category.values()]),
      mean_by_subset={name: _mean_over([r[name] for r in per_category.values() if name in r])
                      for name in dict.fromkeys(k for r in per_category.values() for k in r)
                      if name != "all"},
      settings=dict(generated=str(args.generated), real=args.real, metrics=metrics,
                    inception=args.inception, lpips=args.lpips,
                    lpips_heads="the --lpips file's, else lpips 0.1.4's (shipped)", is_splits=args.splits,
                    max_per_cluster=args.max_per_cluster, num_real=args.num_real,
                    seed=args.seed, split=args.split))
  table = _tables(summary)
  out = pathlib.Path(args.out or pathlib.Path(args.generated) / "eval")
  out.mkdir(parents=True, exist_ok=True)
  (out / "metrics.json").write_text(json.dumps(_json_safe(summary), indent=2))
  (out / "metrics.md").write_text(table + "\n")
  print(table)
  print(f"written: {out / 'metrics.json'}, {out / 'metrics.md'}")
  return summary


def _tables(summary: dict) -> str:
  """Markdown: one table over categories (all images), one per subset name."""
  from af_jax.metrics.localization import evaluation_summary  # pylint: disable=g-import-not-at-top

  def columns(result: dict) -> dict:
    return {k: result[k] for k in TABLE_COLUMNS if k in result}

  per_category = summary["per_category"]
  parts = ["## Generation quality (all generated images)", "",
           evaluation_summary({c: columns(r["all"]) for c, r in per_category.items()},
                              percent=False)[1]]
  for name in summary["mean_by_subset"]:
    rows = {c: columns(r[name]) for c, r in per_category.items() if name in r}
    parts += ["", f"## {name}", "", evaluation_summary(rows, percent=False)[1]]
  return "\n".join(parts)


# ------------------------------------------------------------------ argument parsing
def _names(text: str | None) -> list[str] | None:
  names = [c.strip() for c in (text or "").split(",") if c.strip()]
  return names or None


def _metric_names(text: str) -> list[str]:
  names = _names(text) or []
  unknown = [m for m in names if m not in METRICS]
  if unknown or not names:
    raise ValueError(f"--metrics {text!r}: expected a comma-separated subset of {METRICS}")
  return names


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="af-jax evaluate-generation", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--generated", required=True, help="generated images (module docstring)")
  p.add_argument("--real", help="real images: a folder, or a prepared data set NAME[/CATEGORY]")
  p.add_argument("--data_dir", help="with a data set --real: where `af-jax prepare` wrote it")
  p.add_argument("--split", default="test", help="with a data set --real: its split")
  p.add_argument("--inception", help="torch-fidelity Inception weights (.pth / .npz)")
  p.add_argument("--lpips", help="torchvision VGG16 weights for LPIPS (.pth / .npz)")
  p.add_argument("--metrics", default=",".join(METRICS), help="comma-separated, of " +
                 ", ".join(METRICS))
  p.add_argument("--categories", help="comma-separated (default: every generated category)")
  p.add_argument("--by", default=SUBSET_FIELDS,
                 help="manifest fields whose values are also scored as subsets ('' for none)")
  p.add_argument("--num_real", type=int, default=100, help="most real images per category")
  p.add_argument("--seed", type=int, default=0, help="seed of the real-image draw")
  p.add_argument("--splits", type=int, default=10, help="Inception Score splits")
  p.add_argument("--max_per_cluster", type=int, default=50, help="IC-LPIPS cluster cap")
  p.add_argument("--batch_size", type=int, default=16, help="images per device call")
  p.add_argument("--out", help="output folder (default: GENERATED/eval)")
  return p


def main(argv) -> int:
  p = parser()
  args = p.parse_args(argv)
  try:
    metrics = _metric_names(args.metrics)
  except ValueError as e:
    p.error(str(e))
  for metric in metrics:
    flag, message = MISSING_WEIGHTS[metric]
    if not getattr(args, flag[2:]):
      p.error(f"{message}; or leave {metric} out of --metrics")
  if "ic_lpips" in metrics and not args.real:
    p.error("IC-LPIPS clusters the generated images around real ones: pass --real (a folder "
            "of images or a prepared data set name)")
  if args.num_real < 1 or args.splits < 1 or args.max_per_cluster < 2:
    p.error("--num_real and --splits must be >= 1, --max_per_cluster >= 2")
  try:
    evaluate(args)
  except (OSError, ValueError, KeyError, pickle.UnpicklingError) as e:
    print(f"af-jax evaluate-generation: error: {e}", file=sys.stderr)
    return 1
  return 0

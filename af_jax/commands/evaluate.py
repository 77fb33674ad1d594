"""`af-jax evaluate`: pixel AUROC, AUPRO and image AUROC of a BlazeDetector on prepared test sets.

  af-jax evaluate --workdir runs/blaze --dataset mvtec_ad --categories bottle --data_dir data \\
      [--baseline]

It writes `metrics.json` and `metrics.md` (per category and mean pixel AUROC, AUPRO at FPR 0.3,
image AUROC) to `--out` (default `<workdir>/eval`); `--baseline` adds the no-learning floor's
figures (`af_jax/baseline.py`), fitted on each category's train split.
"""

import json
import pathlib

import numpy as np

from af_jax.commands import localize as localize_command
from af_jax.commands import run_flags
from af_jax import files
from af_jax import progress

BASELINE_TITLE = "Per-pixel Gaussian baseline (no learning; af_jax/baseline.py):"


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
  return dict(localize_command.metrics(result.heatmaps, masks, result.scores, labels), num_images=len(images))


def evaluate_baseline_category(data_dir, dataset, category, split="test") -> dict:
  """`evaluate_category` of the per-pixel Gaussian baseline fitted on the category's train split."""
  from af_jax import baseline  # pylint: disable=g-import-not-at-top
  from af_jax import input_pipeline  # pylint: disable=g-import-not-at-top
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
                            flip_tta=args.flip_tta, **run_flags.network_options(args))
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
  files.write_text(out / "metrics.json", json.dumps(summary, indent=2))
  files.write_text(out / "metrics.md", table + "\n")
  print(table)
  print(f"written: {out / 'metrics.json'}, {out / 'metrics.md'}")
  return summary


def main(argv) -> int:
  p = run_flags.parser("evaluate", __doc__)
  run_flags.add_heatmap_flags(p)
  p.add_argument("--dataset", required=True, help="prepared dataset name, e.g. mvtec_ad")
  p.add_argument("--categories", required=True, help="comma-separated categories")
  p.add_argument("--data_dir", required=True)
  p.add_argument("--split", default="test")
  p.add_argument("--out", help="output folder (default: WORKDIR/eval)")
  p.add_argument("--baseline", action="store_true",
                 help="also score the per-pixel Gaussian baseline (af_jax/baseline.py), fitted on "
                      "each category's train split: the no-learning floor to beat")
  return run_flags.run("evaluate", evaluate, p.parse_args(argv), show_result=False)  # It prints a table.

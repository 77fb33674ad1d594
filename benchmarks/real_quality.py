"""Quality on real images: BlazeDetector next to the per-pixel Gaussian baseline, per seed.

  python benchmarks/real_quality.py --manual_dir ../shared/data/mvtec_ad --categories bottle \\
      [--dataset mvtec_ad] [--seeds 0,1] [--out runs/real_quality]

Runs `af-jax demo --dataset ... --seed S` (prepare, Boot, Flare, Blaze as ONE model over the
synthetic categories and the given ones, generate, localize, evaluate) once per seed and
prints one table: per category and seed, the detector's and the baseline's pixel AUROC / AUPRO
/ image AUROC, the locality of the generated anomalies, and the time of each training stage.
A finished seed's folder is reused (delete it to measure time again).
"""

import argparse
import json
import pathlib
import sys

from af_jax.commands import demo
from af_jax import log_setup


def _cells(values: dict) -> str:
  return " / ".join(f"{100 * values[k]:.1f}" for k in ("pixel_auroc", "aupro", "image_auroc"))


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--manual_dir", type=pathlib.Path, required=True)
  parser.add_argument("--dataset", default="mvtec_ad")
  parser.add_argument("--categories", default="bottle")
  parser.add_argument("--seeds", default="0,1")
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/real_quality"))
  args = parser.parse_args(argv)
  rows = []
  for seed in [int(s) for s in args.seeds.split(",")]:
    out = args.out / f"seed{seed}"
    if (out / "metrics.json").is_file():
      metrics = json.loads((out / "metrics.json").read_text())
    else:
      with log_setup.routed("demo", ["--out", str(out)]):  # Library notices to its af_jax.log.
        metrics = demo.run_demo(out, dataset=args.dataset, manual_dir=args.manual_dir,
                                categories=args.categories.split(","), seed=seed)
    t = metrics["timings"]
    train_s = [t[f"train_{s}_s"] for s in ("boot", "flare", "blaze")]
    for category, values in metrics["per_category"].items():
      local = metrics["generation_locality"][category]
      rows.append(
          f"| {category} | {seed} | {_cells(values)} | {_cells(metrics['baseline']['per_category'][category])} "
          f"| {100 * local['change_inside']:.0f}% / {local['heatmap_iou']:.2f} / "
          f"{100 * local['change_outside']:.2f}% "
          f"| {sum(train_s):.0f} ({' + '.join(f'{s:.0f}' for s in train_s)}) |")
  print("| category | seed | detector px-AUROC / AUPRO / img-AUROC | baseline (same) "
        "| generated: change inside / heatmap IoU / change outside | train s (boot + flare + blaze) |")
  print("|---|---|---|---|---|---|")
  print("\n".join(rows))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

"""Quality on real images: BlazeDetector beside both no-learning floors, per seed.

  python benchmarks/real_quality.py [--categories bottle,metal_plate] [--seeds 0,1]
      [--data_root ../shared/data] [--out runs/real_quality] [--quick]

A category is a name of `SOURCES` (MVTec AD bottle, aligned; MPDD metal_plate, unaligned: the
two of DESIGN.md B.11's table, under `--data_root`) or the path of any category folder in the
MVTec AD layout. They are linked into one manual folder, `<out>/manual/<name>`, and read as the
generic `folder` dataset, so that each seed trains ONE model over all of them and the synthetic
categories: `af-jax demo --dataset folder --manual_dir <out>/manual --categories ... --seed S`.

It prints two tables: per category, the detector at each seed (and whether it beats the
floor), the per-pixel floor, the nearest-patch floor and the floor (the better of the two, per
metric; floors have no seed), with the locality of the generated anomalies; then the seconds
each seed spent in each stage. A finished seed's folder is reused (delete it to measure time
again). `--quick` runs the demo's smoke test (a few training steps) into `<out>/quick`: it
checks that the benchmark runs; its figures mean nothing.
"""

import argparse
import json
import os
import pathlib
import sys

from af_jax.commands import demo
from af_jax.commands import evaluate
from af_jax import log_setup

SOURCES = {"bottle": "mvtec_ad/bottle", "metal_plate": "mpdd/metal_plate",
           "magnetic_tile": "magnetic_tile/magnetic_tile"}
DEFAULT_DATA_ROOT = pathlib.Path(os.environ.get(
    "AF_JAX_SHARED", pathlib.Path(__file__).resolve().parents[2] / "shared")) / "data"


def category_dirs(categories: list[str], data_root: pathlib.Path) -> dict[str, pathlib.Path]:
  """name -> category folder: `SOURCES` under `data_root`, or a path named after its folder."""
  dirs = {}
  for category in categories:
    path = data_root / SOURCES[category] if category in SOURCES else pathlib.Path(category)
    if not (path / "train" / "good").is_dir():
      raise ValueError(f"{category!r} is neither one of {', '.join(SOURCES)} (under "
                       f"{data_root}) nor a category folder with train/good/: {path}")
    dirs[path.name] = path.resolve()
  return dirs


def manual_folder(out: pathlib.Path, dirs: dict[str, pathlib.Path]) -> pathlib.Path:
  """`<out>/manual` with one link per category (the `folder` dataset follows them). It stays:
  a later run's builds, which record this folder, are then reused."""
  manual = out / "manual"
  manual.mkdir(parents=True, exist_ok=True)
  for name, target in dirs.items():
    link = manual / name
    if not link.exists() and not link.is_symlink():
      link.symlink_to(target, target_is_directory=True)
    elif link.resolve() != target:
      raise ValueError(f"{link} links to {link.resolve()}, not {target}: its builds would be "
                       "reused for other images; delete it (and the seeds' folders) or pass "
                       "another --out")
  return manual


def run_seed(out: pathlib.Path, manual: pathlib.Path, names: list[str], seed: int,
             quick: bool) -> dict:
  """The demo's metrics.json for one seed, reused when a finished run of this version wrote it."""
  metrics_file = out / "metrics.json"
  if metrics_file.is_file():
    metrics = json.loads(metrics_file.read_text())
    if "floor" in metrics:  # Older demos reported one floor only: run those again.
      return metrics
  with log_setup.routed("demo", ["--out", str(out)]):  # Library notices to its af_jax.log.
    return demo.run_demo(out, quick=quick, dataset="folder", manual_dir=manual,
                         categories=names, seed=seed)


def _figures(values: dict) -> str:
  return " / ".join(f"{100 * values[k]:.1f}" for k in evaluate.METRICS)


def quality_table(by_seed: dict[int, dict]) -> str:
  """Per category: the detector at each seed, each floor and the floor (module docstring)."""
  first = next(iter(by_seed.values()))
  rows = []
  for category in first["per_category"]:
    for seed, metrics in by_seed.items():
      local = metrics["generation_locality"][category]
      rows.append([category, evaluate.DETECTOR, str(seed),
                   _figures(metrics["per_category"][category]),
                   evaluate.verdict(metrics["beats_floor"][category]),
                   f"{100 * local['change_inside']:.0f}% / {local['heatmap_iou']:.2f} / "
                   f"{100 * local['change_outside']:.2f}%"])
    floors = [(evaluate.floor_title(name), results)
              for name, results in first["baselines"].items()]
    for model, results in [*floors, (evaluate.FLOOR, first["floor"])]:
      rows.append([category, model, "-", _figures(results["per_category"][category]), "", "-"])
  return evaluate.markdown_table(
      ["category", "model", "seed", "px-AUROC / AUPRO / img-AUROC (%)", "beats the floor",
       "generated: change inside / heatmap IoU / change outside"], rows)


def time_table(by_seed: dict[int, dict]) -> str:
  """Seconds per stage (the demo's `timings`), one row per seed."""
  stages = list(next(iter(by_seed.values()))["timings"])
  rows = [[str(seed), *(f"{metrics['timings'][s]:.0f}" for s in stages)]
          for seed, metrics in by_seed.items()]
  return evaluate.markdown_table(["seed", *(f"{s.removesuffix('_s')} s" for s in stages)], rows)


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--categories", default="bottle,metal_plate")
  parser.add_argument("--seeds", default="0,1")
  parser.add_argument("--data_root", type=pathlib.Path, default=DEFAULT_DATA_ROOT,
                      help="the folder SOURCES are under (default: $AF_JAX_SHARED/data or "
                           "../shared/data beside the repository)")
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("runs/real_quality"))
  parser.add_argument("--quick", action="store_true",
                      help="the demo's few training steps: a smoke test of this benchmark")
  args = parser.parse_args(argv)
  out = args.out / "quick" if args.quick else args.out
  try:
    dirs = category_dirs([c for c in args.categories.split(",") if c], args.data_root)
    manual = manual_folder(out, dirs)
    by_seed = {seed: run_seed(out / f"seed{seed}", manual, list(dirs), seed, args.quick)
               for seed in (int(s) for s in args.seeds.split(","))}
  except ValueError as e:
    print(f"real_quality: error: {e}", file=sys.stderr)
    return 1
  print(f"{quality_table(by_seed)}\n\n{evaluate.FLOOR_NOTE}\n\n{time_table(by_seed)}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

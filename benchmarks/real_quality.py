"""Quality on real images: BlazeDetector beside both no-learning floors, per seed.

  python benchmarks/real_quality.py [--categories bottle,metal_plate,magnetic_tile] [--seeds 0,1]
      [--held_out bottle,...] [--data_root ../shared/data] [--out runs/real_quality] [--quick]

A category is a name of `SOURCES` (MVTec AD bottle, aligned; MPDD metal_plate, unaligned; the
magnetic tile, a surface: DESIGN.md B.11's table, under `--data_root`) or the path of any
category folder in the MVTec AD layout. They are linked into one manual folder,
`<out>/manual/<name>`, and read as the generic `folder` dataset, so that each seed trains ONE
model over all of them and the synthetic categories:
`af-jax demo --dataset folder --manual_dir <out>/manual --categories ... --seed S`.

It prints two tables: per category, the detector at each seed (whether it beats the floor, and
whether it keeps its evidence: its pixel AUROC and AUPRO at or above each evidence input scored
alone), each of its evidence sources scored alone, the per-pixel floor, the nearest-patch floor
and the floor (the better of the two, per metric; floors have no seed), with the locality of the
generated anomalies; then the seconds each seed spent in each stage.

`--held_out CATEGORY[,...]`: a part the model never saw. For each, ONE model per seed is
trained on the other categories (`<out>/held_out_<name>/seed<S>`), then the held-out category
is prepared (its test split only is scored), given to the trained detector through its normal
training images alone (`Detector.add_reference`, as `af-jax localize --reference DIR` does:
reference, patch memory and evidence trust fitted from them) and scored beside its floors and
its evidence; a third table shows it. A finished seed's folder is reused (delete it to measure time
again). `--quick` runs the demo's smoke test (a few training steps) into `<out>/quick`: it
checks that the benchmark runs; its figures mean nothing.
"""

import argparse
import json
import os
import pathlib
import sys

import numpy as np

from af_jax.commands import demo
from af_jax.commands import evaluate
from af_jax import log_setup

SOURCES = {"bottle": "mvtec_ad/bottle", "metal_plate": "mpdd/metal_plate",
           "magnetic_tile": "magnetic_tile/magnetic_tile"}
HELD_OUT_FILE = "held_out.json"
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


def score_held_out(out: pathlib.Path, manual: pathlib.Path, name: str) -> dict:
  """The held-out category `name` scored by the run in `out` (a finished `run_seed` that never
  saw it), through its normal training images alone; metrics.json's shape, one category.
  Reused when `out` holds it."""
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  from af_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from af_jax.configs import demo as demo_config  # pylint: disable=g-import-not-at-top
  from af_jax.metrics import localization  # pylint: disable=g-import-not-at-top
  cached = out / HELD_OUT_FILE
  if cached.is_file():
    return json.loads(cached.read_text())
  data_dir = out / "data"
  with log_setup.routed("demo", ["--out", str(out)]):
    # pylint: disable-next=protected-access
    [built] = demo._prepare_user_data("folder", manual, [name], data_dir,
                                      demo_config.DATA["size"])
    floors = evaluate.floor_factories()
    test = evaluate.scorable(data_dir, [("folder", built)], floors)[built]
    train = input_pipeline.make_eval_dataset(data_dir, "folder", built, split="train")
    normal = [np.asarray(ex["image"]) for ex in sorted(train, key=lambda ex: ex["file_name"])]
    detector = infer.Detector(out / "runs" / "blaze", batch_size=8)
    detector.add_reference(built, normal)
    evidence = {}
    per_category = {built: evaluate.score_with_evidence(detector, test, evidence, built)}
    floor_results = {floor: {built: evaluate.score_floor(made, test)}
                     for floor, made in floors.items()}
  summary = evaluate.with_floors(localization.evaluation_summary(per_category)[0], floors,
                                 floor_results)
  if evidence:
    summary["evidence"] = evidence
  cached.write_text(json.dumps(summary, indent=1))
  return summary


def _figures(values: dict) -> str:
  return " / ".join(f"{100 * values[k]:.1f}" for k in evaluate.METRICS)


def quality_table(by_seed: dict[int, dict]) -> str:
  """Per category: the detector at each seed, each floor and the floor (module docstring)."""
  first = next(iter(by_seed.values()))
  rows = []
  for category in first["per_category"]:
    for seed, metrics in by_seed.items():
      local = metrics.get("generation_locality", {}).get(category)
      evidence = metrics.get("evidence", {}).get(category)
      rows.append([category, evaluate.DETECTOR, str(seed),
                   _figures(metrics["per_category"][category]),
                   evaluate.verdict(metrics["beats_floor"][category]),
                   evaluate.verdict(evidence["keeps_evidence"]) if evidence else "-",
                   "-" if local is None else
                   f"{100 * local['change_inside']:.0f}% / {local['heatmap_iou']:.2f} / "
                   f"{100 * local['change_outside']:.2f}%"])
      for source, title in evaluate.EVIDENCE_TITLES.items() if evidence else ():
        rows.append([category, title, str(seed), _figures(evidence[source]), "", "", "-"])
    floors = [(evaluate.floor_title(name), results)
              for name, results in first["baselines"].items()]
    for model, results in [*floors, (evaluate.FLOOR, first["floor"])]:
      rows.append([category, model, "-", _figures(results["per_category"][category]), "", "",
                   "-"])
  return evaluate.markdown_table(
      ["category", "model", "seed", "px-AUROC / AUPRO / img-AUROC (%)", "beats the floor",
       "keeps its evidence", "generated: change inside / heatmap IoU / change outside"], rows)


def time_table(by_seed: dict[int, dict]) -> str:
  """Seconds per stage (the demo's `timings`), one row per seed."""
  stages = list(next(iter(by_seed.values()))["timings"])
  rows = [[str(seed), *(f"{metrics['timings'][s]:.0f}" for s in stages)]
          for seed, metrics in by_seed.items()]
  return evaluate.markdown_table(["seed", *(f"{s.removesuffix('_s')} s" for s in stages)], rows)


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--categories", default=",".join(SOURCES))
  parser.add_argument("--seeds", default="0,1")
  parser.add_argument("--held_out", default="",
                      help="categories (of --categories' kind) to hold out of training, one "
                           "model per category and seed, then score through their normal "
                           "images alone (module docstring)")
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
    seeds = [int(s) for s in args.seeds.split(",")]
    held = category_dirs([c for c in args.held_out.split(",") if c], args.data_root)
    held_manual = manual_folder(out, held)
    by_seed = {seed: run_seed(out / f"seed{seed}", manual, list(dirs), seed, args.quick)
               for seed in seeds}
    held_by_seed = {}
    for name in held:
      others = [n for n in dirs if n != name]
      if not others:
        raise ValueError(f"--held_out {name} leaves no category of --categories to train on")
      for seed in seeds:
        run_dir = out / f"held_out_{name}" / f"seed{seed}"
        run_seed(run_dir, manual, others, seed, args.quick)
        held_by_seed.setdefault(seed, {"per_category": {}, "beats_floor": {}, "evidence": {},
                                       "baselines": {}, "floor": {"per_category": {}}})
        merge_held_out(held_by_seed[seed], score_held_out(run_dir, held_manual, name))
  except ValueError as e:
    print(f"real_quality: error: {e}", file=sys.stderr)
    return 1
  print(f"{quality_table(by_seed)}\n\n{evaluate.FLOOR_NOTE}\n\n{time_table(by_seed)}")
  if held_by_seed:
    print(f"\nHeld out of training, localized through its normal images alone:\n"
          f"{quality_table(held_by_seed)}")
  return 0


def merge_held_out(into: dict, summary: dict) -> None:
  """Adds one held-out category's `score_held_out` summary to a seed's combined one."""
  into["per_category"].update(summary["per_category"])
  into["beats_floor"].update(summary["beats_floor"])
  into["evidence"].update(summary.get("evidence", {}))
  into["floor"]["per_category"].update(summary["floor"]["per_category"])
  for floor, results in summary["baselines"].items():
    into["baselines"].setdefault(floor, {"per_category": {}})["per_category"].update(
        results["per_category"])


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

"""`af-jax demo`: the whole product on a CPU, in minutes: on the built-in data, or on yours.

  af-jax demo [--out demo_out] [--quick] [--seed 0]
  af-jax demo --dataset mvtec_ad --manual_dir /data/mvtec_ad --categories bottle,cable
  af-jax demo --dataset folder --manual_dir /data/mine --categories widget,gadget

1. builds the synthetic data set (`data_builders/synthetic`, PiDiNet edges), no download, and
   writes it as PNG files in the MVTec AD layout to `<out>/synthetic/<category>/` (`af-jax
   export`), for `af-jax generate --images` and `af-jax localize` (README "Next steps");
2. trains tiny BootGenerator -> FlareGenerator -> BlazeDetector (`configs/demo.py`);
3. generates anomalies (with heatmaps and masks) from normal images;
4. localizes the synthetic test set and scores it (pixel AUROC, AUPRO, image AUROC) beside
   both no-learning floors (af_jax/evidence/baseline.py, fitted on each category's training images);
5. writes `report.html` (metric tables, labelled image grids, each stage's loss curves;
   af_jax/commands/demo_report.py) and `metrics.json`.

With `--dataset NAME --manual_dir DIR [--categories a,b]` it also prepares your categories (any
image size, in the dataset's own layout; `folder` reads any folder laid out like MVTec AD) at
the demo's size and trains ONE model over the synthetic categories and yours; steps 3-4 then
run on your categories. Before training it checks that each category can be scored (normal
test images, anomalous ones with ground-truth masks) and has enough training images for the
floors (`--patch_memory`), and stops naming the category if not. `metrics.json` holds
`per_category` and `mean` (pixel_auroc, aupro, image_auroc) of the detector, the floors'
`baselines`, `floor`, `beats_floor` and `patch_memory` (af_jax/commands/evaluate.py), and
`generation_locality` (af_jax/metrics/locality.py: how local the generated anomalies are) per
category; categories are named as built (e.g. `bottle-64px`).

With `--inception FILE --lpips FILE` (the weights of `af-jax evaluate-generation`), step 3 also
scores the generated anomalies: IS and IC-LPIPS per category, `QUALITY_NORMALS` normal images
x `QUALITY_VARIANTS` anomalies each, clustered around the category's test images. Sets this
small cannot fill the paper's 10 splits, so IS uses one split. Without the files it says in
one line that it skipped them.

Re-running resumes: a built data set and finished stages are reused. `--quick` trains a few
steps on a smaller data set (a smoke test of the whole chain, not a model worth using).
"""

import argparse
import logging
import pathlib
import sys
import time

import numpy as np

from af_jax.commands import demo_report
from af_jax.commands import evaluate
from af_jax.inference import defaults
from af_jax import files
from af_jax import pixels

log = logging.getLogger(__name__)

QUICK_STEPS = dict(boot=4, flare=3, blaze=3)
QUALITY_NORMALS, QUALITY_VARIANTS = 8, 2
# Normal images per category whose anomalies (2 each) are measured for locality; the first
# GRID_ANOMALIES of them are shown in the report.
LOCALITY_NORMALS, GRID_ANOMALIES = 16, 4
# 20 train images at 64 px hold the 80,000 patches of the nearest-patch floor's memory (and at
# least defaults.MIN_CALIBRATION_IMAGES), so README's `localize --calibrate` and `evaluate
# --baseline` run on a quick demo's outputs too.
QUICK_DATA = dict(num_train=20, num_test_normal=2, num_test_anomalous=4)
EXPORT_DIR = "synthetic"  # In <out>: the synthetic set as PNG files (`af-jax export`).


def _data_options(quick: bool) -> dict:
  from af_jax.configs import demo as demo_config  # pylint: disable=g-import-not-at-top
  return dict(demo_config.DATA, **(QUICK_DATA if quick else {}))


def _stage_config(stage, data_dir, teacher, quick, sources, seed):
  from af_jax.configs import demo as demo_config  # pylint: disable=g-import-not-at-top
  config = demo_config.get_config(stage)
  config.data.data_dir = str(data_dir)
  config.data.sources = sources
  config.teacher_workdir = str(teacher or "")
  config.seed = seed
  if quick:
    config.num_steps = QUICK_STEPS[stage]
    config.checkpoint_every_steps = config.num_steps
    config.log_every_steps = 1
    config.image_every_steps = 0
  return config


def _prepare_user_data(dataset, manual_dir, categories, data_dir, size) -> list[str]:
  """Builds the user's categories at the demo's size (`af-jax prepare`); their config names."""
  from af_jax.commands import prepare  # pylint: disable=g-import-not-at-top
  from af_jax.commands import prepare_build  # pylint: disable=g-import-not-at-top
  argv = ["--dataset", dataset, "--manual_dir", str(manual_dir), "--data_dir", str(data_dir),
          "--size", str(size)]
  if categories:
    argv += ["--categories", ",".join(categories)]
  if prepare.main(argv) != 0:
    raise ValueError(f"could not prepare {dataset} from {manual_dir} (the error above says why)")
  cls = prepare_build.builder_class(dataset)
  names = categories or cls.found_categories(manual_dir)
  return [prepare_build.config_for(dataset, cls, c, size=size).name for c in names]


def _stage_done(workdir: pathlib.Path, config) -> bool:
  """Whether the stage trained all its steps and fitted what its end fits (a run stopped
  during its evidence trust fit is trained again: `train` then only fits)."""
  from af_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from af_jax import stage_registry  # pylint: disable=g-import-not-at-top
  from af_jax.evidence import trust  # pylint: disable=g-import-not-at-top
  if not (workdir / checkpoint.CONFIG_FILE).is_file():
    return False
  if (stage_registry.uses_evidence_trust(config)
      and not (workdir / trust.FILE_NAME).is_file()):
    return False
  return checkpoint.Checkpointer(workdir).latest_step() == config.num_steps


def _gray(x) -> np.ndarray:
  return np.repeat(pixels.unit_to_uint8(x)[..., None], 3, -1)


def _generation_quality(generator, data_dir, evaluated, inception, lpips) -> dict:
  """IS and IC-LPIPS of each category's generated anomalies (module docstring)."""
  from af_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from af_jax.metrics import generation  # pylint: disable=g-import-not-at-top
  inception = generation.load_inception(inception) if inception else None
  lpips = generation.load_lpips(lpips) if lpips else None
  per_category = {}
  for dataset, category in evaluated:
    normals = [np.asarray(ex["image"]) for ex, _ in zip(
        input_pipeline.make_eval_dataset(data_dir, dataset, category, split="train"),
        range(QUALITY_NORMALS))]
    images = generator.generate(normals, n_variants=QUALITY_VARIANTS, seed=1).images
    real = pixels.resize_images([np.asarray(ex["image"]) for ex in
                                input_pipeline.make_eval_dataset(data_dir, dataset, category)],
                               images.shape[1])
    values = generation.generation_metrics(
        images, real, inception=inception, lpips_model=lpips, splits=1)["all"]
    # An undefined mean (no cluster of two) is left out: metrics.json stays strict JSON.
    per_category[category] = {k: v for k, v in values.items() if v == v}
  return per_category


def _has_test_split(data_dir, dataset: str, category: str) -> bool:
  """Whether the prepared category has a test split (a `folder` category may have none)."""
  from af_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  info = input_pipeline.open_split(data_dir, dataset, category, "train").dataset_info
  return "test" in info.splits


def run_demo(out="demo_out", quick: bool = False, inception=None, lpips=None, *, dataset=None,
             manual_dir=None, categories=None, seed: int = 0,
             patch_memory: int | None = None) -> dict:
  """Runs every step of the demo into `out`; returns the metrics written to metrics.json.

  `inception` / `lpips`: weight files of the generation metrics (module docstring).
  `dataset`, `manual_dir`, `categories`: the user's data (module docstring); `seed`: of every
  stage; `patch_memory`: of the nearest-patch floor (`evaluate.floor_factories`).
  """
  from af_jax.commands import generate  # pylint: disable=g-import-not-at-top
  from af_jax.commands import export  # pylint: disable=g-import-not-at-top
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  from af_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from af_jax import stage_registry  # pylint: disable=g-import-not-at-top
  from af_jax.training import train  # pylint: disable=g-import-not-at-top
  from af_jax.metrics import localization, locality  # pylint: disable=g-import-not-at-top
  from af_jax.configs import demo as demo_config  # pylint: disable=g-import-not-at-top
  from af_jax.configs import mix82  # pylint: disable=g-import-not-at-top
  from af_jax.data_builders import synthetic  # pylint: disable=g-import-not-at-top
  started = time.perf_counter()
  out = pathlib.Path(out)
  data_dir = out / "data"
  timings = {}

  # 1. data ---------------------------------------------------------------------------
  print(f"[1/5] building the synthetic data set in {data_dir}", flush=True)
  t = time.perf_counter()
  built = synthetic.build(data_dir, **_data_options(quick))
  for name in built:  # Replaced on re-runs, so the files always match the build.
    export.export_category(data_dir, "synthetic", name, out / EXPORT_DIR, overwrite=True)
  sources = mix82.sources_for("synthetic", built)
  evaluated = [("synthetic", c) for c in built]
  if dataset:
    print(f"      preparing {dataset} from {manual_dir} at {demo_config.DATA['size']} px",
          flush=True)
    names = _prepare_user_data(dataset, manual_dir, categories, data_dir,
                               demo_config.DATA["size"])
    sources += mix82.sources_for(dataset, names)
    evaluated = [(dataset, c) for c in names if _has_test_split(data_dir, dataset, c)]
    for name in sorted(set(names) - {c for _, c in evaluated}):
      print(f"      {dataset}/{name} has no test images: trained on, not scored", flush=True)
    if not evaluated:
      raise ValueError(f"none of {', '.join(names)} has test images to score the detector on; "
                       "train on them with `af-jax train`, or add test/ images")
  floors = evaluate.floor_factories(patch_memory)
  tests = evaluate.scorable(data_dir, evaluated, floors)  # Refusals come before training.
  timings["data_s"] = time.perf_counter() - t

  # 2. training: one model over the synthetic categories and the user's -------------------
  teacher = None
  for i, stage in enumerate(stage_registry.STAGES):
    workdir = out / "runs" / stage
    config = _stage_config(stage, data_dir, teacher, quick, sources, seed)
    print(f"[2/5] training {stage} ({i + 1}/{len(stage_registry.STAGES)}): {config.num_steps} "
          f"steps -> {workdir}", flush=True)
    t = time.perf_counter()
    if not _stage_done(workdir, config):
      train.train(config, str(workdir))
    timings[f"train_{stage}_s"] = time.perf_counter() - t
    teacher = workdir

  # 3. generation ----------------------------------------------------------------------
  print("[3/5] generating anomalies from normal images", flush=True)
  t = time.perf_counter()
  generator = infer.Generator(out / "runs" / stage_registry.serving("generate").name, batch_size=8)
  gen_rows, local, calibration = [], {}, []
  heat_scale = demo_report.ColourScale(1.0, (("mask threshold", defaults.MASK_THRESHOLD),))
  for ds, category in evaluated:
    normals = pixels.resize_images([np.asarray(ex["image"]) for ex, _ in zip(
        input_pipeline.make_eval_dataset(data_dir, ds, category, split="train"),
        range(LOCALITY_NORMALS))], generator.size)
    calibration += list(normals)
    result = generator.generate(normals, n_variants=2, seed=0)  # defaults.MASK_THRESHOLD
    local[category] = locality.locality(normals[result.source], result.images, result.masks,
                                        result.heatmaps, result.region_masks)
    print(f"      {category}: {generate.locality_line(local[category])}", flush=True)
    for j in range(GRID_ANOMALIES):
      gen_rows.append((f"{category}: {result.edit_op[j]} ({result.region_kind[j]} region), "
                       f"variant {result.variant[j]}",
                       [normals[result.source[j]], _gray(result.edges[j]), result.images[j],
                        heat_scale.colour(result.heatmaps[j]), _gray(result.masks[j])]))
  quality = None
  if inception or lpips:
    quality = _generation_quality(generator, data_dir, evaluated, inception, lpips)
    for category, values in quality.items():
      print(f"      {category}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
  missing = [flag for flag, path in (("--inception", inception), ("--lpips", lpips)) if not path]
  if missing:
    print(f"      generation metrics {'partly ' if len(missing) == 1 else ''}skipped: pass "
          f"{' and '.join(missing)} weight files to report IS and IC-LPIPS", flush=True)
  timings["generate_s"] = time.perf_counter() - t

  # 4. localization + metrics, next to the no-learning floors ----------------------------
  print(f"[4/5] localizing the {dataset or 'synthetic'} test set", flush=True)
  t = time.perf_counter()
  detector = infer.Detector(out / "runs" / stage_registry.serving("localize").name, batch_size=8)
  if len(calibration) < defaults.MIN_CALIBRATION_IMAGES:
    log.warning("only %d normal images to calibrate the report's pixel threshold on (%d are "
                "advised); its overlays are rough", len(calibration),
                defaults.MIN_CALIBRATION_IMAGES)
  # Calibrated per category (each image's nearest reference); the report's one colour bar
  # and its overlays mark the highest category's pixel threshold.
  threshold = max(t["pixel"] for t in detector.calibrate(
      calibration, fpr=defaults.CALIBRATION_FPR, min_images=1).values())
  loc_scale = demo_report.ColourScale(2 * threshold, (("threshold", threshold),))
  per_category, loc_rows, evidence = {}, [], {}
  for ds, category in evaluated:
    per_category[category] = evaluate.score_with_evidence(detector, tests[category], evidence)
    examples = [ex for ex in input_pipeline.make_eval_dataset(data_dir, ds, category)
                if int(ex["label"]) == 1][:3]
    result = detector.localize([np.asarray(ex["image"]) for ex in examples])
    for ex, hm in zip(examples, result.heatmaps):
      loc_rows.append((f"{category}: {ex['defect']}",
                       [np.asarray(ex["image"]), loc_scale.colour(hm),
                        pixels.overlay(np.asarray(ex["image"]), hm, threshold),
                        _gray(np.asarray(ex["mask"])[..., 0] > 0)]))
  timings["localize_s"] = time.perf_counter() - t
  print("      scoring the no-learning floors", flush=True)
  t = time.perf_counter()
  floor_results = {name: {category: evaluate.score_floor(floor, test)
                          for category, test in tests.items()} for name, floor in floors.items()}
  summary = evaluate.with_floors(localization.evaluation_summary(per_category)[0], floors,
                                 floor_results)
  if evidence:
    summary["evidence"] = evidence
  table = (f"{evaluate.markdown_table(*evaluate.comparison_rows(summary))}\n\n"
           "Generated anomalies (FlareGenerator):\n" +
           "\n".join(f"  {c}: {generate.locality_line(v)}" for c, v in local.items()))
  timings["floors_s"] = time.perf_counter() - t

  # 5. report --------------------------------------------------------------------------
  timings["total_s"] = time.perf_counter() - started
  metrics = dict(summary, generation_locality=local, timings=timings, quick=quick, seed=seed)
  if quality is not None:
    metrics["generation"] = quality
  files.write_json(out / "metrics.json", metrics)
  grids = [
      demo_report.Grid("Generated anomalies (FlareGenerator)",
                       ["normal image", "edited edge map", "generated anomaly", "heatmap",
                        "binary mask"], gen_rows, heat_scale),
      demo_report.Grid("Localization (BlazeDetector)",
                       ["test image", "heatmap", "overlay", "ground truth"], loc_rows, loc_scale,
                       f"Pixel thresholds are calibrated per category at "
                       f"{defaults.CALIBRATION_FPR:.0%} false positives on {len(calibration)} "
                       "normal training images (saved in the run's thresholds.json, so `af-jax "
                       "localize` can use them); the overlay colours only what nears or passes "
                       "the highest of them."),
  ]
  page = demo_report.write_report(
      out, f"AnomalyFactory on {dataset or 'the synthetic data set'}", metrics, grids)
  print(f"[5/5] done in {timings['total_s']:.0f} s\n{table}\n"
        f"report: {page.resolve()}\nmetrics: {(out / 'metrics.json').resolve()}", flush=True)
  print(f"images: {(out / EXPORT_DIR).resolve()} (the synthetic set as PNG files in the MVTec "
        "layout, for af-jax generate --images and af-jax localize; README: Next steps)",
        flush=True)
  return metrics


def main(argv) -> int:
  parser = argparse.ArgumentParser(prog="af-jax demo", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="demo_out", help="output folder")
  parser.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
  parser.add_argument("--inception", help="torch-fidelity Inception weights: also report IS")
  parser.add_argument("--lpips", help="torchvision VGG16 weights: also report IC-LPIPS")
  parser.add_argument("--dataset", help="your data instead of the synthetic test set: a dataset "
                      "of `af-jax prepare` (mvtec_ad, visa, mvtec_loco, madsim, real_iad, or "
                      "folder: any folder of categories laid out like MVTec AD)")
  parser.add_argument("--manual_dir", type=pathlib.Path,
                      help="with --dataset: the folder of the download, in its own layout")
  parser.add_argument("--categories", type=lambda v: [c for c in v.split(",") if c],
                      help="with --dataset: comma-separated categories (default: all found)")
  parser.add_argument("--seed", type=int, default=0, help="seed of every training stage")
  evaluate.add_patch_memory_flag(parser)
  args = parser.parse_args(argv)
  if (args.dataset is None) != (args.manual_dir is None):
    parser.error("--dataset and --manual_dir go together")
  if args.categories and not args.dataset:
    parser.error("--categories needs --dataset (the synthetic demo uses all its categories)")
  try:
    run_demo(args.out, quick=args.quick, inception=args.inception, lpips=args.lpips,
             dataset=args.dataset, manual_dir=args.manual_dir, categories=args.categories,
             seed=args.seed, patch_memory=args.patch_memory)
  except ValueError as e:
    print(f"af-jax demo: error: {e}", file=sys.stderr)
    return 1
  return 0

"""`af-jax evaluate`: pixel AUROC, AUPRO and image AUROC of a BlazeDetector on prepared test sets.

  af-jax evaluate --workdir runs/blaze --dataset mvtec_ad --categories bottle --data_dir data \\
      [--baseline [--patch_memory N]]

It writes `metrics.md` (the table it prints) and `metrics.json` to `--out` (default
`<workdir>/eval`): `per_category` and `mean` pixel AUROC, AUPRO at FPR 0.3 and image AUROC.
`--baseline` also scores both no-learning floors (af_jax/evidence/baseline.py), each fitted on the
category's train split at its prepared size, and adds to metrics.json:

  baselines     {"pixel_gaussian": {per_category, mean}, "nearest_patch": {per_category, mean}}
  floor         {per_category, mean}: per category, the better of the two floors per metric
  beats_floor   {category: {metric: bool}}: whether the detector passes the floor there
                (`FLOOR_MARGIN`: pixel AUROC and AUPRO at or above it, image AUROC at most 2
                points below it)
  patch_memory  the nearest-patch floor's memory (DESIGN.md B.11: 80,000 patches)

The nearest-patch floor's time grows with test pixels x memory: on 2 CPU cores about 40 s for
MVTec AD bottle at 64 px, some 16 times that at 256 px (a GPU takes it when JAX has one).

A run trained with `blaze.reference` compares each image with the nearest of its categories'
references; a category it was not trained on needs its own, `--reference DIR` (its normal
images, named after their folder's category as for `localize`, e.g.
`--reference my_parts/widget/train/good`, repeatable): without one it is refused, naming the
run's categories (compared with another category's reference, its figures would say nothing).

Every category's test split (normal images, and anomalous ones with ground-truth masks) and,
with `--baseline`, its train split's size are checked before anything is scored, so a bad
category stops the run at once, naming it. Each file is written whole (`files.write_json`),
metrics.json last: only a finished evaluation writes (or replaces) it.
"""

import dataclasses
import functools
import pathlib
import typing

import numpy as np

from af_jax.commands import image_files
from af_jax.commands import localize as localize_command
from af_jax.commands import output_files
from af_jax.commands import run_flags
from af_jax import files
from af_jax import progress

OUTPUT_FILES = ("metrics.md", "metrics.json")
METRICS = {"pixel_auroc": "pixel AUROC", "aupro": "AUPRO", "image_auroc": "image AUROC"}
# Issue 19's bar: how far below the floor a detector's figure may stay and still pass it.
FLOOR_MARGIN = {"pixel_auroc": 0.0, "aupro": 0.0, "image_auroc": 0.02}
DETECTOR = "BlazeDetector"
FLOOR = "floor (the better of the two)"
FLOOR_NOTE = ("Beside the detector, the two no-learning floors (af_jax/evidence/baseline.py): "
              "per-pixel Gaussian statistics (DESIGN.md B.10) and the nearest patch on raw "
              "pixels (B.11), each fitted on the category's training images. The floor is the "
              "better of the two per metric; the detector beats it where its pixel AUROC and "
              "AUPRO reach the floor and its image AUROC is at most 2 points below it.")


@dataclasses.dataclass(frozen=True)
class TestSet:
  """One prepared category's split, checked to be scorable (`load_test_set`)."""
  data_dir: str
  dataset: str
  category: str
  images: list[np.ndarray]  # uint8 [S, S, 3] each, as prepared.
  masks: list[np.ndarray]   # bool [S, S] each.
  labels: list[int]         # 1: anomalous.

  @property
  def name(self) -> str:
    return f"{self.dataset}/{self.category}"


def load_test_set(data_dir, dataset, category, split="test") -> TestSet:
  """The split's images, masks and labels. ValueError naming the category when it cannot be
  scored: no such split (a `folder` category built without test images), or no normal image,
  or no anomalous one with an anomalous pixel in its ground-truth mask (AUROCs and AUPRO need
  both)."""
  from af_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  where = f"{dataset}/{category}"
  try:
    examples = list(input_pipeline.make_eval_dataset(data_dir, dataset, category, split=split))
  except KeyError as e:  # No such split; its message lists the splits there are.
    raise ValueError(f"cannot score {where}: {e.args[0]}") from None
  masks = [np.asarray(ex["mask"])[..., 0] > 0 for ex in examples]
  labels = [int(ex["label"]) for ex in examples]
  anomalous, with_truth = sum(labels), sum(bool(m.any()) for m in masks)
  if anomalous == len(labels) or not with_truth:
    raise ValueError(
        f"cannot score {where}: its {split!r} split in {data_dir} has "
        f"{len(labels) - anomalous} normal and {anomalous} anomalous images, {with_truth} with "
        "anomalous pixels in their ground-truth masks; scoring needs normal images and "
        "anomalous ones with ground-truth masks")
  return TestSet(str(data_dir), dataset, category, [np.asarray(ex["image"]) for ex in examples],
                 masks, labels)


def score(model, test: TestSet) -> dict:
  """Pixel AUROC, AUPRO (FPR 0.3), image AUROC and num_images of `model` on `test`.

  `model`: anything whose `localize(images)` gives `.heatmaps` and `.scores` (an
  `infer.Detector`, a fitted floor of `af_jax.evidence.baseline`).
  """
  from af_jax.inference import hosts  # pylint: disable=g-import-not-at-top
  heatmaps, scores = hosts.localize_shares(model, test.images)  # Each host its share.
  return dict(localize_command.metrics(heatmaps, test.masks, scores, test.labels),
              num_images=len(test.images))


def evaluate_category(detector, data_dir, dataset, category, split="test") -> dict:
  """`score` of `detector` on one prepared category's split."""
  return score(detector, load_test_set(data_dir, dataset, category, split))


def evidence_block(detector, test: TestSet, category: str | None = None,
                   shared: dict | None = None) -> dict | None:
  """What the detector was given, scored alone beside it (a run with `blaze.evidence_trust`,
  else None): per source of `trust.SOURCES` its `score` (`infer.EvidenceChannel`), with the
  reference `category` (default: each image's nearest, as the detector chose), and the trust
  fitted for that reference (`trust.Trust.row`; for nearest references, the one most of
  `test`'s images use). `shared`: evidence maps already computed for `test` (the
  channels' `shared`), else computed here once for the three sources."""
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  from af_jax import pixels  # pylint: disable=g-import-not-at-top
  from af_jax.evidence import trust  # pylint: disable=g-import-not-at-top
  if detector.trust is None:
    return None
  if category is None:
    which = detector.reference_indices(pixels.resize_images(test.images, detector.size), None)
    name = detector.references.names[np.bincount(which).argmax()]
  else:
    name = detector.references.names[detector.references.index(category)]
  shared = {} if shared is None else shared
  block = {source: score(infer.EvidenceChannel(detector, source, category, shared), test)
           for source in trust.SOURCES}
  return dict(block, trust=detector.trust.row(name))


def keeps_evidence(detector_metrics: dict, evidence: dict) -> dict[str, bool]:
  """Per pixel metric: the detector at or above every evidence input scored alone."""
  return {k: all(detector_metrics[k] >= evidence[source][k] for source in ("patch", "reference"))
          for k in ("pixel_auroc", "aupro")}


def score_with_evidence(detector, test: TestSet, evidence: dict, category: str | None = None
                        ) -> dict:
  """`score` of `detector` on `test`; for a run with evidence trust, also puts the category's
  `evidence_block`, with `keeps_evidence`, into `evidence` under `test.category`, the
  detector and its sources scored from one computation of the evidence maps."""
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  if detector.trust is None:
    return score(detector if category is None else WithReference(detector, category), test)
  shared = {}  # Each test image's evidence maps, for the detector and its three sources.
  metrics = score(infer.EvidenceChannel(detector, infer.EvidenceChannel.FUSED, category,
                                        shared), test)
  block = evidence_block(detector, test, category, shared)
  evidence[test.category] = dict(block, keeps_evidence=keeps_evidence(metrics, block))
  return metrics


@dataclasses.dataclass(frozen=True)
class WithReference:
  """A Detector that compares every image with the reference `category` (`localize`'s
  `category`), for `score`."""
  detector: typing.Any
  category: str

  def localize(self, images):
    return self.detector.localize(images, category=self.category)


# ------------------------------------------------------------------ the no-learning floors
def floor_factories(patch_memory: int | None = None) -> dict:
  """Both floors by name (`baseline.FLOORS`), the nearest-patch one keeping `patch_memory`
  training patches (None: B.11's `baseline.MEMORY_SIZE`)."""
  from af_jax.evidence import baseline  # pylint: disable=g-import-not-at-top
  memory = baseline.MEMORY_SIZE if patch_memory is None else patch_memory
  return dict(baseline.FLOORS,
              nearest_patch=functools.partial(baseline.NearestPatchBaseline, memory_size=memory))


def checked_floor(floor, test: TestSet):
  """An unfitted floor that fits on the train split of `test`'s category, checked from the
  split's size before any image is read; ValueError naming the category if it does not.

  `floor`: a name of `baseline.FLOORS`, or a class (or any callable making one, such as a
  `functools.partial` with options).
  """
  from af_jax.evidence import baseline  # pylint: disable=g-import-not-at-top
  from af_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  if isinstance(floor, str):
    if floor not in baseline.FLOORS:
      raise ValueError(f"no floor named {floor!r}; the floors are {', '.join(baseline.FLOORS)}")
    floor = baseline.FLOORS[floor]
  made = floor()
  count = len(input_pipeline.make_eval_dataset(test.data_dir, test.dataset, test.category,
                                               split="train"))
  try:
    made.check_normal_images(count, *test.images[0].shape[:2])
  except ValueError as e:
    raise ValueError(f"cannot fit the {made.title} on {test.name}'s train split: {e}") from None
  return made


def score_floor(floor, test: TestSet) -> dict:
  """`score` of a floor (`checked_floor`) fitted on the train split of `test`'s category."""
  from af_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  made = checked_floor(floor, test)
  train = input_pipeline.make_eval_dataset(test.data_dir, test.dataset, test.category,
                                           split="train")
  # In file order, as B.11 samples its memory; builds store their examples shuffled.
  normal = [np.asarray(ex["image"]) for ex in sorted(train, key=lambda ex: ex["file_name"])]
  return score(made.fit(normal), test)


def evaluate_baseline_category(floor, data_dir, dataset, category, split="test") -> dict:
  """`score_floor` of `floor` (a name or a class, `checked_floor`) on one prepared category."""
  return score_floor(floor, load_test_set(data_dir, dataset, category, split))


def scorable(data_dir, categories, floors: dict, split="test") -> dict[str, TestSet]:
  """Each (dataset, category)'s test set by category, each checked (`load_test_set`) and each
  floor checked to fit on it (`checked_floor`): every refusal comes before anything is scored
  (or, in the demo, trained)."""
  tests = {category: load_test_set(data_dir, dataset, category, split)
           for dataset, category in categories}
  for test in tests.values():
    for floor in floors.values():
      checked_floor(floor, test)
  return tests


def with_floors(detector: dict, floors: dict, results: dict[str, dict[str, dict]]) -> dict:
  """`detector`'s summary (`localization.evaluation_summary`) with `baselines`, `floor`,
  `beats_floor` and `patch_memory` (module docstring), from `floors` (`floor_factories`) and
  their per-category `results` (by floor name)."""
  from af_jax.metrics import localization  # pylint: disable=g-import-not-at-top
  best = {category: {k: max(by_category[category][k] for by_category in results.values())
                     for k in METRICS} for category in detector["per_category"]}
  beats = {category: {k: values[k] >= best[category][k] - FLOOR_MARGIN[k] for k in METRICS}
           for category, values in detector["per_category"].items()}
  return dict(detector,
              baselines={name: localization.evaluation_summary(by_category)[0]
                         for name, by_category in results.items()},
              floor=localization.evaluation_summary(best)[0], beats_floor=beats,
              patch_memory=floors["nearest_patch"]().memory_size)


# ------------------------------------------------------------------ tables
def floor_title(name: str) -> str:
  from af_jax.evidence import baseline  # pylint: disable=g-import-not-at-top
  return baseline.FLOORS[name].title


def verdict(beats: dict[str, bool]) -> str:
  """'yes', or 'no: ' and the metrics that stay below the floor."""
  below = [METRICS[k] for k, passed in beats.items() if not passed]
  return f"no: {', '.join(below)}" if below else "yes"


def comparison_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
  """Header and rows of the localization table of a metrics.json dict: per category, then the
  mean, a row for the detector and, where scored, one per floor and one for the floor; the
  detector's row says whether it beats the floor."""
  models = [(DETECTOR, metrics), *_evidence_models(metrics.get("evidence", {})),
            *((floor_title(name), results)
              for name, results in metrics.get("baselines", {}).items())]
  if "floor" in metrics:
    models.append((FLOOR, metrics["floor"]))
  beats, evidence = metrics.get("beats_floor"), metrics.get("evidence")
  header = ["category", "model", *(f"{title} (%)" for title in METRICS.values()), "test images"]
  header += ["beats the floor"] if beats else []
  header += ["keeps its evidence"] if evidence else []
  rows = []
  for category in [*metrics["per_category"], "mean"]:
    for model, results in models:
      values = results["mean"] if category == "mean" else results["per_category"][category]
      row = [category, model,
             *(f"{100 * values[k]:.1f}" if k in values else "-" for k in METRICS),
             "" if category == "mean" else str(values.get("num_images", ""))]
      mine = model == DETECTOR and category != "mean"
      if beats:
        row.append(verdict(beats[category]) if mine and category in beats else "")
      if evidence:
        row.append(verdict(evidence[category]["keeps_evidence"]) if mine else "")
      rows.append(row)
  return header, rows


EVIDENCE_TITLES = {"network": "... its network alone", "patch": "... its patch distances alone",
                   "reference": "... its per-pixel reference alone"}


def _evidence_models(evidence: dict) -> list[tuple[str, dict]]:
  """(title, {per_category, mean}) of each evidence source of a metrics.json `evidence` block."""
  if not evidence:
    return []
  models = []
  for source, title in EVIDENCE_TITLES.items():
    per_category = {category: block[source] for category, block in evidence.items()}
    mean = {k: float(np.mean([v[k] for v in per_category.values()])) for k in METRICS}
    models.append((title, dict(per_category=per_category, mean=mean)))
  return models


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
  return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, ["---"] * len(header),
                                                                   *rows])


# ------------------------------------------------------------------ the command
def evaluate(args) -> dict:
  """metrics.md and metrics.json over `--categories`; returns the summary."""
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  from af_jax.metrics import localization  # pylint: disable=g-import-not-at-top
  categories = [c.strip() for c in args.categories.split(",") if c.strip()]
  if not categories:
    raise ValueError(f"--categories names no category: {args.categories!r}")
  floors = floor_factories(args.patch_memory) if args.baseline else {}
  tests = scorable(args.data_dir, [(args.dataset, c) for c in categories], floors, args.split)
  references = image_files.reference_sets(args.reference or ())
  detector = infer.Detector(args.workdir, **run_flags.detector_options(args))
  compared = references_of(detector, args.dataset, categories, references)
  for category, test in tests.items():  # Gray and colour are never compared: refused first.
    detector.compared_with(test.images, compared[category],
                           [f"{test.name} {args.split} image {i}"
                            for i in range(len(test.images))])
  out = pathlib.Path(args.out or pathlib.Path(args.workdir) / "eval")
  with output_files.output_folder(out, (), OUTPUT_FILES, args.overwrite) as folder:
    per_category, floor_results = {}, {name: {} for name in floors}
    bar = progress.Progress(len(categories), "evaluate", unit="category")
    evidence = {}
    for category, test in tests.items():
      per_category[category] = score_with_evidence(detector, test, evidence,
                                                   compared[category])
      for name, floor in floors.items():
        floor_results[name][category] = score_floor(floor, test)
      bar.update(1)
    bar.close()
    summary, _ = localization.evaluation_summary(per_category)
    summary.update(dataset=args.dataset, split=args.split, workdir=str(args.workdir),
                   step=detector.step, edge_method=detector.edge_method)
    if floors:
      summary = with_floors(summary, floors, floor_results)
    if evidence:
      summary["evidence"] = evidence
    table = markdown_table(*comparison_rows(summary))
    folder.write(files.write_text, out / OUTPUT_FILES[0], table + "\n")
    folder.write(files.write_json, out / OUTPUT_FILES[1], summary)  # Last: a finished run.
  print(table)
  print(f"written: {out / OUTPUT_FILES[1]}, {out / OUTPUT_FILES[0]}")
  return summary


def references_of(detector, dataset: str, categories: list[str],
                  references: dict[str, list]) -> dict[str, str | None]:
  """{category: the reference its images are compared with}: the `--reference` of its name
  (added to `detector`), else None (each image's nearest) for a category the run was trained
  on. ValueError for a category of neither, or a `--reference` of no category evaluated."""
  from af_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  names = {c: next((n for n in (c, input_pipeline.category_of_build(dataset, c))
                    if n in references), None) for c in categories}
  unused = sorted(set(references) - set(names.values()))
  if unused:
    raise ValueError(f"--reference of category {', '.join(unused)} (from its path) matches none "
                     f"of --categories {','.join(categories)}; name its folder as the category")
  for name in names.values():
    if name is not None:
      detector.add_reference(name, references[name])
  trained = detector.references.names if detector.references is not None else None
  for category, name in names.items():
    if name is None and trained is not None and not _trained_on(trained, dataset, category):
      raise ValueError(
          f"the run in {detector.workdir} was not trained on {dataset}/{category} (its "
          f"categories: {', '.join(trained)}), and its images compared with another category's "
          f"reference would score nothing of it: give its normal images, --reference DIR "
          f"(e.g. <manual_dir>/{category}/train/good)")
  return names


def _trained_on(trained: tuple[str, ...], dataset: str, category: str) -> bool:
  """Whether a reference of `trained` ('<dataset>/<build>') is of `category` of `dataset`,
  named by its build's name or its category's (`input_pipeline.resolve_category`)."""
  from af_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  wanted = input_pipeline.category_of_build(dataset, category)
  for name in trained:
    source, _, build = name.rpartition("/")
    if source == dataset and (build == category or
                              input_pipeline.category_of_build(source, build) == wanted):
      return True
  return False


def add_patch_memory_flag(parser) -> None:
  """`--patch_memory`, of `evaluate --baseline` and the demo (both score the floors)."""
  parser.add_argument("--patch_memory", type=int,
                      help="training patches the nearest-patch floor keeps, its memory_size "
                           "(default 80000, DESIGN.md B.11: 20 training images at 64 px); "
                           "fewer for categories with fewer training images")


def main(argv) -> int:
  p = run_flags.parser("evaluate", __doc__)
  run_flags.add_heatmap_flags(p)
  p.add_argument("--dataset", required=True, help="prepared dataset name, e.g. mvtec_ad")
  p.add_argument("--categories", required=True, help="comma-separated categories")
  p.add_argument("--data_dir", required=True)
  p.add_argument("--split", default="test")
  p.add_argument("--out", help="output folder (default: WORKDIR/eval)")
  p.add_argument("--overwrite", action="store_true", help="replace a previous evaluation there")
  p.add_argument("--baseline", action="store_true",
                 help="also score both no-learning floors (af_jax/evidence/baseline.py: per-pixel "
                      "Gaussian and nearest patch), fitted on each category's train split, and "
                      "whether the detector beats the better of the two")
  add_patch_memory_flag(p)
  run_flags.add_references_flag(p)
  # It prints its table.
  return run_flags.run("evaluate", evaluate, p.parse_args(argv), show_result=False)

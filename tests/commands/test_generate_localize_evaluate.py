"""`af-jax generate | localize | evaluate` end to end on tiny trained stages and image files.

The stages come from the session's `runs` fixture (tests/conftest.py); the image files are
the tiny synthetic set written out in the MVTec AD layout.
"""

import csv
import functools
import json
import pathlib
import shutil

import cv2
import numpy as np
import pytest

from af_jax.evidence import baseline
from af_jax import cli
from af_jax.commands import evaluate
from af_jax.commands import image_files
from af_jax.commands import localize
from af_jax import files
from af_jax import infer
from af_jax import input_pipeline
from af_jax.metrics import locality
from af_jax.ops import manipulate
from conftest import copy_run
from test_baseline import NEAREST_PATCH, PER_PIXEL  # DESIGN.md B.11's figures.


def _write_rgb(path: pathlib.Path, image: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def mvtec(runs, tmp_path_factory):
  """One synthetic category as files: train/good, test/<defect>, ground_truth/<defect>."""
  _, data_dir, names = runs
  root = tmp_path_factory.mktemp("mvtec") / "circuit"
  for split in ("train", "test"):
    for ex in input_pipeline.make_eval_dataset(data_dir, "synthetic", names[0], split=split):
      path = root / ex["file_name"]  # '<split>/<defect>/NNN.png'
      _write_rgb(path, np.asarray(ex["image"]))
      if ex["label"]:
        mask = root / "ground_truth" / path.parent.name / f"{path.stem}_mask.png"
        mask.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(mask), np.asarray(ex["mask"])[..., 0])
  return root


def _run(command, *args, capsys, stdout=False):
  code = cli.main([command, *map(str, args)])
  captured = capsys.readouterr()
  return code, (captured.out if stdout else captured.err)


def _manifest(folder: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def _written(folder: pathlib.Path) -> set[str]:
  """The output files in `folder` (not the hidden ledger and lock, `output_files`)."""
  return {str(p.relative_to(folder)) for p in folder.rglob("*")
          if p.is_file() and not p.name.startswith(".af_jax_")}


# ------------------------------------------------------------------ generate
def test_generate_writes_mvtec_masks_heatmaps_and_manifest(runs, mvtec, tmp_path, capsys):
  flare = runs[0] / "flare"
  sources = sorted((mvtec / "train" / "good").glob("*.png"))[:3]
  first_three = mvtec / "train" / "good" / "00[0-2].png"
  code, printed = _run("generate", "--workdir", flare, "--images", first_three, "--num", 2,
                       "--category", "circuit", "--out", tmp_path / "a", capsys=capsys,
                       stdout=True)
  assert code == 0
  out = tmp_path / "a" / "circuit"
  records = _manifest(out)
  assert len(records) == 6
  assert _written(out) == {"manifest.jsonl", "locality.json"} | {
      r[k] for r in records for k in ("image", "mask", "heatmap", "edges")}
  # Locality figures of what was written, printed and saved (af_jax/metrics/locality.py).
  figures = json.loads((out / "locality.json").read_text())
  assert set(figures) == set(locality.FIGURES)
  assert 0 <= figures["change_inside"] <= 1 and 0 <= figures["heatmap_iou"] <= 1
  assert "of the change inside the masks" in printed
  assert [r["source"] for r in records] == [str(s) for s in sources for _ in range(2)]
  assert [r["variant"] for r in records] == [0, 1] * 3
  for j, r in enumerate(records):
    assert r["image"] == f"images/{j:03d}.png" and r["mask"] == f"masks/{j:03d}_mask.png"
    assert r["seed"] == 0 and r["donor"] != r["source"]
    assert r["region_kind"] in manipulate.REGION_KINDS and r["edit_op"] in manipulate.EDIT_OPS
    image = cv2.imread(str(out / r["image"]), cv2.IMREAD_UNCHANGED)
    mask = cv2.imread(str(out / r["mask"]), cv2.IMREAD_UNCHANGED)
    heatmap = np.load(out / r["heatmap"])
    assert image.shape == (32, 32, 3) and mask.shape == heatmap.shape == (32, 32)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255} and mask.any()
    assert heatmap.dtype == np.float32

  # The same seed makes the same files, whatever the batch size; existing output is kept.
  code, _ = _run("generate", "--workdir", flare, "--images", first_three, "--num", 2,
                 "--category", "circuit", "--out", tmp_path / "b", "--batch_size", 4,
                 capsys=capsys)
  assert code == 0
  for r in records:
    for key in ("image", "mask", "heatmap", "edges"):
      assert (out / r[key]).read_bytes() == (tmp_path / "b" / "circuit" / r[key]).read_bytes()
  code, err = _run("generate", "--workdir", flare, "--images", sources[0], "--category", "circuit",
                   "--out", tmp_path / "a", capsys=capsys)
  assert code == 1 and "already holds output" in err and "--overwrite" in err
  assert len(_manifest(out)) == 6
  # --overwrite replaces the whole previous output, leaving no stale file.
  code, err = _run("generate", "--workdir", flare, "--images", sources[0], "--category", "circuit",
                   "--out", tmp_path / "a", "--overwrite", capsys=capsys)
  assert code == 0, err
  assert _written(out) == {"manifest.jsonl", "locality.json", "images/000.png",
                           "masks/000_mask.png", "heatmaps/000.npy", "edges/000.png"}


def test_generate_with_a_boot_run_renders_the_same_edits(runs, mvtec, tmp_path, capsys):
  images = mvtec / "train" / "good" / "00[0-1].png"
  for stage in ("boot", "flare"):
    code, err = _run("generate", "--workdir", runs[0] / stage, "--images", images,
                     "--category", "circuit", "--out", tmp_path / stage, capsys=capsys)
    assert code == 0, err
  boot, flare = (_manifest(tmp_path / stage / "circuit") for stage in ("boot", "flare"))
  drop = ("image", "mask", "heatmap")  # The renderings differ; the edits are the same.
  assert [{k: v for k, v in r.items() if k not in drop} for r in boot] == [
      {k: v for k, v in r.items() if k not in drop} for r in flare]


def test_generate_names_the_output_after_the_category_not_the_folder(runs, mvtec, tmp_path,
                                                                     capsys, monkeypatch):
  # An MVTec-layout path names its category, also when given relative to its own folder.
  monkeypatch.chdir(mvtec / "train" / "good")
  code, err = _run("generate", "--workdir", runs[0] / "flare", "--images", "00[01].png",
                   "--out", tmp_path / "gen", capsys=capsys)
  assert code == 0, err
  assert [p.name for p in (tmp_path / "gen").iterdir()] == ["circuit"]
  assert len(_manifest(tmp_path / "gen" / "circuit")) == 2

  assert image_files.category_of(["x/bottle/train/good/000.png",
                               "x/bottle/test/broken_large/000.png"]) == "bottle"
  assert image_files.category_of(["/data/normal/000.png"]) == "normal"
  with pytest.raises(ValueError, match="several categories .*bottle, cable"):
    image_files.category_of(["bottle/train/good/000.png", "cable/train/good/000.png"])
  for folder in ("good", "train", "test"):
    with pytest.raises(ValueError, match=f"category of .*{folder}/000.png .*--category NAME"):
      image_files.category_of([f"/data/{folder}/000.png"])
  # Images in a bare good/ folder need --category, which names the output.
  bare = tmp_path / "good"
  bare.mkdir()
  shutil.copy(mvtec / "train" / "good" / "000.png", bare)
  code, err = _run("generate", "--workdir", runs[0] / "flare", "--images", bare,
                   "--out", tmp_path / "bare", capsys=capsys)
  assert code == 1 and "--category NAME" in err and not (tmp_path / "bare").exists()
  code, err = _run("generate", "--workdir", runs[0] / "flare", "--images", bare,
                   "--category", "mine", "--out", tmp_path / "bare", capsys=capsys)
  assert code == 0, err
  assert [p.name for p in (tmp_path / "bare").iterdir()] == ["mine"]


def test_generate_from_a_prepared_dataset(runs, tmp_path, capsys):
  root, data_dir, names = runs
  code, err = _run("generate", "--workdir", root / "flare", "--dataset", f"synthetic/{names[1]}",
                   "--data_dir", data_dir, "--seed", 5, "--out", tmp_path, capsys=capsys)
  assert code == 0, err
  records = _manifest(tmp_path / names[1])
  assert sorted(r["source"] for r in records) == [f"train/good/{k:03d}.png" for k in range(8)]
  assert {r["seed"] for r in records} == {5}
  code, err = _run("generate", "--workdir", root / "flare", "--dataset", "synthetic",
                   "--data_dir", data_dir, "--out", tmp_path / "x", capsys=capsys)
  assert code == 1 and "NAME/CATEGORY" in err


def test_generate_failing_midway_leaves_files_that_match_the_manifest(runs, mvtec, tmp_path,
                                                                     capsys, monkeypatch):
  write_npy, calls = files.write_npy, []

  def fail_on_third(path, array):
    calls.append(path)
    if len(calls) == 3:
      raise OSError(f"disk full while writing {path}")
    write_npy(path, array)

  monkeypatch.setattr(files, "write_npy", fail_on_third)
  code, err = _run("generate", "--workdir", runs[0] / "flare", "--images", mvtec / "train",
                   "--num", 2, "--out", tmp_path, capsys=capsys)
  assert code == 1 and "disk full while writing" in err and "heatmaps/002.npy" in err
  out = tmp_path / "circuit"
  records = _manifest(out)
  assert len(records) == 2
  assert _written(out) == {"manifest.jsonl"} | {r[k] for r in records
                                                for k in ("image", "mask", "heatmap", "edges")}
  for r in records:
    assert cv2.imread(str(out / r["image"])).shape == (32, 32, 3)
    assert np.load(out / r["heatmap"]).shape == (32, 32)


def test_a_full_disk_stops_generate_and_localize_with_only_complete_listed_outputs(
    runs, mvtec, small_disk, capsys):
  """On a real 48 KB file system: ENOSPC part-way, one error line, nothing partial listed."""
  gen = small_disk(48 * 1024)
  code, err = _run("generate", "--workdir", runs[0] / "flare", "--images", mvtec / "train",
                   "--num", 2, "--out", gen, capsys=capsys)
  assert code == 1 and "Traceback" not in err, err
  assert err.strip().splitlines()[-1].startswith("af-jax generate: error: [Errno 28] No space")
  records = _manifest(gen / "circuit")  # Every line whole JSON...
  assert 0 < len(records) < 16
  assert _written(gen / "circuit") == {"manifest.jsonl"} | {  # ...and only listed, whole files.
      r[k] for r in records for k in ("image", "mask", "heatmap", "edges")}
  for r in records:
    assert np.load(gen / "circuit" / r["heatmap"]).shape == (32, 32)

  loc = small_disk(48 * 1024)
  code, err = _run("localize", "--workdir", runs[0] / "blaze", "--images", mvtec / "test",
                   "--pixel_threshold", 0.5, "--image_threshold", 0.5, "--out", loc,
                   capsys=capsys)
  assert code == 1 and "Traceback" not in err, err
  assert err.strip().splitlines()[-1].startswith("af-jax localize: error: [Errno 28] No space")
  with (loc / localize.SCORES_CSV).open() as f:
    rows = list(csv.DictReader(f))
  assert 0 < len(rows) < 8 and not (loc / localize.SUMMARY_JSON).exists()
  stems = [f"{i:03d}_{pathlib.Path(row['file']).stem}" for i, row in enumerate(rows)]
  assert _written(loc) == {localize.SCORES_CSV} | {
      f for s in stems for f in (f"heatmaps/{s}.npy", f"masks/{s}_mask.png",
                                 f"overlays/{s}.png")}


def test_generate_bad_input_names_the_files(runs, mvtec, tmp_path, capsys):
  flare = runs[0] / "flare"
  broken = tmp_path / "in" / "broken.png"
  broken.parent.mkdir()
  broken.write_bytes(b"not a png")
  _write_rgb(tmp_path / "in" / "fine.png", np.zeros((32, 32, 3), np.uint8))
  code, err = _run("generate", "--workdir", flare, "--images", tmp_path / "in", "--out",
                   tmp_path / "out", capsys=capsys)
  assert code == 1 and str(broken) in err and "fine.png" not in err
  assert not (tmp_path / "out").exists()

  (tmp_path / "empty").mkdir()
  code, err = _run("generate", "--workdir", flare, "--images", tmp_path / "empty", "--out",
                   tmp_path / "out", capsys=capsys)
  assert code == 1 and "no image files" in err and "empty" in err

  good = mvtec / "train" / "good"
  code, err = _run("generate", "--workdir", runs[0] / "blaze", "--images", good, "--out",
                   tmp_path / "out", capsys=capsys)
  assert code == 1 and "holds a 'blaze' run, expected a 'flare' run" in err
  code, err = _run("generate", "--workdir", tmp_path / "empty", "--images", good, "--out",
                   tmp_path / "out", capsys=capsys)
  assert code == 1 and "not an af_jax training workdir" in err
  assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ localize
def test_localize_calibrates_thresholds_writes_results_and_metrics(runs, mvtec, tmp_path,
                                                                   capsys):
  blaze = copy_run(runs[0] / "blaze", tmp_path / "blaze")
  test_images = mvtec / "test"
  code, err = _run("localize", "--workdir", blaze, "--images", test_images, "--out",
                   tmp_path / "none", capsys=capsys)  # Scored, but judged by no thresholds.
  assert code == 0 and "8 image(s) compared with the run say 'not calibrated'" in err, err
  assert "--calibrate NORMAL_IMAGES --overwrite" in err and "Traceback" not in err
  with (tmp_path / "none" / "scores.csv").open() as f:
    assert {r["decision"] for r in csv.DictReader(f)} == {"not calibrated"}
  assert not list((tmp_path / "none" / "masks").iterdir())

  out = tmp_path / "loc"
  code, err = _run("localize", "--workdir", blaze, "--images", test_images, "--out", out,
                   "--calibrate", mvtec / "train" / "good", "--fpr", 0.05,
                   "--min_calibration_images", 8,
                   "--ground_truth", mvtec / "ground_truth", capsys=capsys)
  assert code == 0, err
  thresholds = json.loads((blaze / "thresholds.json").read_text())["categories"]["*"]
  summary = json.loads((out / "summary.json").read_text())
  assert thresholds["fpr"] == 0.05 and thresholds["num_images"] == 8
  assert summary["thresholds"] == {"*": dict(pixel=thresholds["pixel"],
                                             image=thresholds["image"])}
  assert set(summary["metrics"]) == {"pixel_auroc", "aupro", "image_auroc"}
  assert all(0 <= v <= 1 for v in summary["metrics"].values())

  files = image_files.find_images(str(test_images))
  with (out / "scores.csv").open() as f:
    rows = list(csv.DictReader(f))
  assert [r["file"] for r in rows] == [str(p) for p in files]
  assert summary["num_images"] == 8 and summary["num_ng"] == sum(r["decision"] == "NG"
                                                                for r in rows)
  for i, (row, path) in enumerate(zip(rows, files)):
    stem = f"{i:03d}_{path.stem}"
    heatmap = np.load(out / "heatmaps" / f"{stem}.npy")
    mask = cv2.imread(str(out / "masks" / f"{stem}_mask.png"), cv2.IMREAD_UNCHANGED)
    assert heatmap.shape == mask.shape == (32, 32)
    np.testing.assert_array_equal(mask == 255, heatmap >= thresholds["pixel"])
    assert cv2.imread(str(out / "overlays" / f"{stem}.png")).shape == (32, 32, 3)
    expected = "NG" if float(row["score"]) >= thresholds["image"] else "OK"
    assert row["decision"] == expected

  # Overrides win over the calibrated thresholds; a folder of mixed sizes keeps each one's.
  resized = tmp_path / "resized"
  resized.mkdir()
  for k, path in enumerate(files[:3]):
    image = cv2.imread(str(path))
    assert cv2.imwrite(str(resized / f"{k}.png"), image if k == 1 else cv2.resize(image, (40, 24)))
  code, err = _run("localize", "--workdir", blaze, "--images", resized, "--out", tmp_path / "o",
                   "--pixel_threshold", 0, "--image_threshold", 1, capsys=capsys)
  assert code == 0, err
  for k, shape in enumerate([(24, 40), (32, 32), (24, 40)]):
    mask = cv2.imread(str(tmp_path / "o" / "masks" / f"{k:03d}_{k}_mask.png"),
                      cv2.IMREAD_UNCHANGED)
    assert mask.shape == np.load(tmp_path / "o" / "heatmaps" / f"{k:03d}_{k}.npy").shape == shape
    assert (mask == 255).all()
  with (tmp_path / "o" / "scores.csv").open() as f:
    rows = list(csv.DictReader(f))
  assert [pathlib.Path(r["file"]).name for r in rows] == ["0.png", "2.png", "1.png"]  # By size.
  assert {r["decision"] for r in rows} == {"OK"}


def test_localize_ground_truth_that_does_not_match_names_the_masks(runs, mvtec, tmp_path,
                                                                  capsys):
  gt = tmp_path / "gt"
  masks = sorted((mvtec / "ground_truth").rglob("*_mask.png"))
  for k, mask in enumerate(masks[1:]):
    target = gt / mask.parent.name / mask.name
    target.parent.mkdir(parents=True, exist_ok=True)
    data = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(target), cv2.resize(data, (16, 16)) if k == 0 else data)
  code, err = _run("localize", "--workdir", runs[0] / "blaze", "--images", mvtec / "test",
                   "--out", tmp_path / "out", "--pixel_threshold", 0.5, "--image_threshold", 0.5,
                   "--ground_truth", gt, capsys=capsys)
  assert code == 1
  missing = gt / masks[0].parent.name / masks[0].name
  wrong_size = gt / masks[1].parent.name / masks[1].name
  assert f"{missing} (missing" in err and f"{wrong_size} is 16x16" in err
  assert not (tmp_path / "out").exists()


def test_localize_real_mvtec_images_with_their_ground_truth(runs, bottle_dir, tmp_path, capsys):
  """256 px MVTec AD bottles go through the 32 px model and come back at 256 px."""
  out = tmp_path / "loc"
  code, err = _run("localize", "--workdir", runs[0] / "blaze", "--images",
                   bottle_dir / "test" / "*" / "00[01].png", "--out", out,
                   "--ground_truth", bottle_dir / "ground_truth", "--pixel_threshold", 0.5,
                   "--image_threshold", 0.5, capsys=capsys)
  assert code == 0, err
  summary = json.loads((out / "summary.json").read_text())
  assert summary["num_images"] == 8
  assert all(0 <= v <= 1 for v in summary["metrics"].values())
  heatmaps = sorted((out / "heatmaps").glob("*.npy"))
  assert len(heatmaps) == 8 and all(np.load(h).shape == (256, 256) for h in heatmaps)


# ------------------------------------------------------------------ evaluate
def test_evaluate_writes_json_and_markdown(runs, tmp_path, capsys):
  root, data_dir, names = runs
  code, err = _run("evaluate", "--workdir", root / "blaze", "--dataset", "synthetic",
                   "--categories", ",".join(names[:2]), "--data_dir", data_dir,
                   "--out", tmp_path, capsys=capsys)
  assert code == 0, err
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert list(metrics["per_category"]) == names[:2]
  for values in [*metrics["per_category"].values(), metrics["mean"]]:
    assert {"pixel_auroc", "aupro", "image_auroc"} <= set(values)
    assert all(0 <= values[k] <= 1 for k in ("pixel_auroc", "aupro", "image_auroc"))
  for name in names[:2]:
    assert metrics["per_category"][name]["num_images"] == 8
  np.testing.assert_allclose(
      metrics["mean"]["aupro"], np.mean([v["aupro"] for v in metrics["per_category"].values()]))
  table = (tmp_path / "metrics.md").read_text().splitlines()
  assert table[0] == ("| category | model | pixel AUROC (%) | AUPRO (%) | image AUROC (%) | "
                      "test images |")
  assert [line.split(" | ")[:2] for line in table[2:]] == [
      [f"| {n}", "BlazeDetector"] for n in [*names[:2], "mean"]]
  assert "baselines" not in metrics
  again = ("evaluate", "--workdir", root / "blaze", "--dataset", "synthetic", "--categories",
           names[0], "--data_dir", data_dir, "--out", tmp_path)
  code, err = _run(*again, capsys=capsys)
  assert code == 1 and "already holds output (metrics.md, metrics.json" in err, err
  assert json.loads((tmp_path / "metrics.json").read_text()) == metrics  # Left as it was.
  assert _run(*again, "--overwrite", capsys=capsys)[0] == 0
  assert list(json.loads((tmp_path / "metrics.json").read_text())["per_category"]) == names[:1]

  code, err = _run("evaluate", "--workdir", root / "blaze", "--dataset", "synthetic",
                   "--categories", names[0], "--data_dir", data_dir, "--smoothing_sigma", "0",
                   "--no-flip_tta", "--out", tmp_path / "raw", capsys=capsys)
  assert code == 0, err
  raw = json.loads((tmp_path / "raw" / "metrics.json").read_text())["per_category"][names[0]]
  unblurred = infer.Detector(root / "blaze", batch_size=4, smoothing_sigma=0, flip_tta=False)
  assert raw == pytest.approx(evaluate.evaluate_category(unblurred, data_dir, "synthetic",
                                                         names[0]))
  assert raw["pixel_auroc"] != metrics["per_category"][names[0]]["pixel_auroc"]

  # --baseline: both floors, fitted on the train split, in the same shape; the floor is the
  # better one per metric. The 8 train images of 32 px hold 8192 patches: a small memory.
  code, out = _run("evaluate", "--workdir", root / "blaze", "--dataset", "synthetic",
                   "--categories", ",".join(names[:2]), "--data_dir", data_dir, "--baseline",
                   "--patch_memory", 2000, "--out", tmp_path / "floor", capsys=capsys, stdout=True)
  assert code == 0, out
  floors = json.loads((tmp_path / "floor" / "metrics.json").read_text())
  assert floors["per_category"] == metrics["per_category"] and floors["patch_memory"] == 2000
  small = functools.partial(baseline.NearestPatchBaseline, memory_size=2000)
  for name, floor in (("pixel_gaussian", "pixel_gaussian"), ("nearest_patch", small)):
    assert set(floors["baselines"][name]) == {"per_category", "mean"}
    assert floors["baselines"][name]["per_category"][names[1]] == pytest.approx(
        evaluate.evaluate_baseline_category(floor, data_dir, "synthetic", names[1]))
  for category in names[:2]:
    both = [floors["baselines"][f]["per_category"][category] for f in baseline.FLOORS]
    best = floors["floor"]["per_category"][category]
    detector = floors["per_category"][category]
    assert best == {k: max(b[k] for b in both) for k in ("pixel_auroc", "aupro", "image_auroc")}
    assert floors["beats_floor"][category] == {
        "pixel_auroc": detector["pixel_auroc"] >= best["pixel_auroc"],
        "aupro": detector["aupro"] >= best["aupro"],
        "image_auroc": detector["image_auroc"] >= best["image_auroc"] - 0.02}
  table = (tmp_path / "floor" / "metrics.md").read_text()
  assert table in out  # The table it prints is the one it writes.
  assert [line.split(" | ")[1] for line in table.splitlines()[2:6]] == [
      "BlazeDetector", "per-pixel Gaussian floor", "nearest-patch floor",
      "floor (the better of the two)"]
  assert table.splitlines()[0].endswith("| test images | beats the floor |")

  # A category's own name finds its only build; results are named as the user named them.
  short = names[0].split("-")[0]
  code, err = _run("evaluate", "--workdir", root / "blaze", "--dataset", "synthetic",
                   "--categories", short, "--data_dir", data_dir, "--out", tmp_path / "short",
                   capsys=capsys)
  assert code == 0, err
  by_short = json.loads((tmp_path / "short" / "metrics.json").read_text())["per_category"]
  assert by_short == {short: metrics["per_category"][names[0]]}

  code, err = _run("evaluate", "--workdir", root / "blaze", "--dataset", "synthetic",
                   "--categories", "nowhere", "--data_dir", data_dir, "--out", tmp_path / "x",
                   capsys=capsys)
  assert code == 1 and "synthetic/nowhere is not prepared" in err


@pytest.mark.slow  # The nearest-patch floor at B.11's memory: a minute on 2 shared cores.
def test_the_floors_of_a_prepared_category_are_the_design_figures(bottle_dir, tmp_path, capsys):
  """Prepared at 64 px and fitted on the train split in file order (builds store it
  shuffled), both floors give DESIGN.md B.11's figures for the real bottle."""
  data_dir = tmp_path / "data"
  assert cli.main(["prepare", "--dataset", "folder", "--manual_dir", str(bottle_dir.parent),
                   "--categories", "bottle", "--data_dir", str(data_dir), "--size", "64",
                   "--edges", "canny"]) == 0, capsys.readouterr().err
  for name, expected in (("pixel_gaussian", PER_PIXEL["bottle_dir"]),
                         ("nearest_patch", NEAREST_PATCH["bottle_dir"])):
    figures = evaluate.evaluate_baseline_category(name, data_dir, "folder", "bottle")
    assert [figures[k] for k in ("pixel_auroc", "aupro", "image_auroc")] == pytest.approx(
        expected, abs=0.003), name


def test_evaluate_refuses_categories_it_cannot_score(runs, tmp_path, capsys):
  """Each refusal names the category and what it lacks; nothing is written."""
  root, data_dir, names = runs
  manual = tmp_path / "manual"
  for category, splits in (("trainonly", ("train",)), ("goodonly", ("train", "test"))):
    for split in splits:  # Normal images only.
      for ex in input_pipeline.make_eval_dataset(data_dir, "synthetic", names[0], split=split):
        if not ex["label"]:
          _write_rgb(manual / category / split / "good" / pathlib.Path(ex["file_name"]).name,
                     np.asarray(ex["image"]))
  folder_data = tmp_path / "data"
  assert cli.main(["prepare", "--dataset", "folder", "--manual_dir", str(manual), "--data_dir",
                   str(folder_data), "--size", "32", "--edges", "canny"]) == 0
  capsys.readouterr()

  def refused(dataset, where, categories, *flags):
    code, err = _run("evaluate", "--workdir", root / "blaze", "--dataset", dataset,
                     "--categories", categories, "--data_dir", where, "--out",
                     tmp_path / "out", *flags, capsys=capsys)
    assert code == 1 and not (tmp_path / "out").exists()
    return err

  err = refused("folder", folder_data, "trainonly")
  assert "cannot score folder/trainonly: " in err and "has no split 'test'" in err
  err = refused("folder", folder_data, "goodonly", "--baseline")
  assert ("cannot score folder/goodonly: its 'test' split in " in err and
          "has 2 normal and 0 anomalous images, 0 with anomalous pixels in their ground-truth "
          "masks; scoring needs normal images and anomalous ones" in err)
  # The nearest-patch floor's memory (B.11: 80,000 patches) needs more than 8 images of 32 px.
  err = refused("synthetic", data_dir, names[0], "--baseline")
  assert (f"cannot fit the nearest-patch floor on synthetic/{names[0]}'s train split: 8 normal "
          "images of 32x32 px give only 8192 patches; the nearest-patch memory needs 80000" in err)

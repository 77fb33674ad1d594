"""`af-jax demo`: the short form in the default suite, the full one behind the `slow` marker."""

import functools
import json
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from af_jax.evidence import baseline
from af_jax import cli
from af_jax.commands import demo
from af_jax.commands import evaluate
from af_jax.training import train
from conftest import FAST_XLA, REPO, subprocess_env


def _check_outputs(out, metrics):
  on_disk = json.loads((out / "metrics.json").read_text())
  assert on_disk["mean"] == pytest.approx(metrics["mean"])
  categories = set(on_disk["per_category"])
  assert {c.split("-")[0] for c in categories} == {"circuit", "gear", "fabric"}
  for values in on_disk["per_category"].values():
    for key in ("pixel_auroc", "aupro", "image_auroc"):
      assert 0.0 <= values[key] <= 1.0
  assert set(on_disk["baselines"]) == {"pixel_gaussian", "nearest_patch"}
  for summary in [*on_disk["baselines"].values(), on_disk["floor"]]:
    assert set(summary["per_category"]) == categories and "mean" in summary
  assert set(on_disk["beats_floor"]) == categories
  page = (out / "report.html").read_text()
  assert "<th>pixel AUROC (%)</th>" in page and "|---" not in page  # HTML tables, not Markdown.
  for floor in ("per-pixel Gaussian floor", "nearest-patch floor", "floor (the better of the two)"):
    assert page.count(f"<th class=row>{floor}</th>") == len(categories) + 1  # And the mean.
  for heading in ("generated anomaly", "binary mask", "overlay", "ground truth"):
    assert f"<th>{heading}</th>" in page
  assert page.count("aria-label='colour scale'") == 2  # One per grid of heatmaps.
  assert all(f"aria-label='{stage} losses'" in page for stage in ("boot", "flare", "blaze"))
  for stage in ("boot", "flare", "blaze"):
    assert (out / "runs" / stage / "config.json").is_file()


def readme_next_steps() -> list[str]:
  """The commands of README.md's "Next steps" block, continuation lines joined."""
  readme = (REPO / "README.md").read_text()
  section = readme[readme.index("### Next steps"):]
  start = section.index("```bash\n") + len("```bash\n")
  block = section[start:section.index("\n```", start)]
  return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_quick_demo_runs_every_step_and_the_readme_next_steps_on_its_outputs(
    tmp_path, capsys, monkeypatch):
  out = tmp_path / "demo_out"  # Where README's "Next steps" find the demo's outputs.
  train._warn_once.cache_clear()  # pylint: disable=protected-access
  # A small nearest-patch memory: the chain is what is tested here (B.11's floor: test_baseline).
  assert cli.main(["demo", "--quick", "--patch_memory", "4096", "--out", str(out)]) == 0
  captured = capsys.readouterr()
  printed = captured.out
  for step in ("[1/5]", "[2/5] training boot", "[2/5] training blaze", "[3/5]", "[4/5]",
               "scoring the no-learning floors", "[5/5]", "report:",
               "generation metrics skipped: pass --inception and --lpips",
               f"images: {out / 'synthetic'} (the synthetic set as PNG files in the MVTec"):
    assert step in printed
  # Each fact once, in words; library notices only in the log file, which is named once.
  assert captured.err.count("the VGG perceptual loss is off") == 1
  assert captured.err.count(str(out / "af_jax.log")) == 1
  logged = (out / "af_jax.log").read_text()
  for notice in ("Using custom data configuration", "Given directory is read only",
                 "Downloading and preparing"):
    assert notice not in captured.out + captured.err
  assert "Using custom data configuration" in logged and "Given directory is read only" in logged
  metrics = json.loads((out / "metrics.json").read_text())
  _check_outputs(out, metrics)
  assert metrics["patch_memory"] == 4096 and metrics["timings"]["floors_s"] > 0
  for category in ("circuit", "gear", "fabric"):  # The synthetic set as files (af-jax export).
    assert {p.name for p in (out / "synthetic" / category).iterdir()} == {
        "train", "test", "ground_truth"}

  # Every command of README.md's "Next steps", exactly as written, from the demo's folder.
  commands = readme_next_steps()
  assert [c.split()[1] for c in commands] == ["generate", "localize", "evaluate", "export"]
  monkeypatch.chdir(tmp_path)
  for command in commands:
    argv = shlex.split(command)
    assert argv[0] == "af-jax" and cli.main(argv[1:]) == 0, (command, capsys.readouterr().err)
  generated = list((out / "gen" / "circuit" / "images").glob("*.png"))
  assert len(generated) == 2 * demo.QUICK_DATA["num_train"]
  summary = json.loads((out / "loc" / "circuit" / "summary.json").read_text())
  assert summary["num_images"] == 6 and set(summary["metrics"]) == {
      "pixel_auroc", "aupro", "image_auroc"}
  evaluated = json.loads((out / "runs" / "blaze" / "eval" / "metrics.json").read_text())
  assert list(evaluated["per_category"]) == ["circuit", "gear", "fabric"]
  # B.11's floor: a quick demo's 20 training images per category hold its 80,000 patches.
  assert evaluated["patch_memory"] == baseline.MEMORY_SIZE
  assert set(evaluated["baselines"]) == {"pixel_gaussian", "nearest_patch"}
  assert (tmp_path / "my_images" / "gear" / "train" / "good").is_dir()


def _mini_bottle(bottle_dir, root, with_ground_truth=True):
  """A small MVTec-layout copy of the real bottle: 6 train/good, 2 test/good, 2 broken_large."""
  cat = root / "bottle"
  for split, defect, count in (("train", "good", 6), ("test", "good", 2),
                               ("test", "broken_large", 2)):
    (cat / split / defect).mkdir(parents=True)
    for f in sorted((bottle_dir / split / defect).glob("*.png"))[:count]:
      shutil.copy(f, cat / split / defect / f.name)
      if defect != "good" and with_ground_truth:
        (cat / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
        shutil.copy(bottle_dir / "ground_truth" / defect / f"{f.stem}_mask.png",
                    cat / "ground_truth" / defect)
  return root


def test_quick_demo_on_real_data_reports_both_floors_and_locality(bottle_dir, tmp_path, capsys):
  """A user's own folder (the `folder` dataset): a scorable category and a train-only one."""
  manual = _mini_bottle(bottle_dir, tmp_path / "mine")
  shutil.copytree(manual / "bottle" / "train", manual / "my_part" / "train")
  out = tmp_path / "out"
  # 6 training images of 64 px hold 24,576 patches: a smaller nearest-patch memory.
  assert cli.main(["demo", "--quick", "--dataset", "folder", "--manual_dir", str(manual),
                   "--categories", "bottle,my_part", "--patch_memory", "4096",
                   "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  assert "folder/my_part-64px has no test images: trained on, not scored" in printed
  assert "| bottle-64px | nearest-patch floor |" in printed
  assert "of the change inside the masks" in printed
  metrics = json.loads((out / "metrics.json").read_text())
  assert list(metrics["per_category"]) == ["bottle-64px"]  # The user's category, as built.
  for result in (metrics, *metrics["baselines"].values(), metrics["floor"]):
    assert set(result) >= {"per_category", "mean"}
    assert {"pixel_auroc", "aupro", "image_auroc"} <= set(result["per_category"]["bottle-64px"])
  small = functools.partial(baseline.NearestPatchBaseline, memory_size=4096)
  for name, floor in (("pixel_gaussian", "pixel_gaussian"), ("nearest_patch", small)):
    assert metrics["baselines"][name]["per_category"]["bottle-64px"] == pytest.approx(
        evaluate.evaluate_baseline_category(floor, out / "data", "folder", "bottle-64px"))
  local = metrics["generation_locality"]["bottle-64px"]
  assert set(local) == {"change_inside", "heatmap_iou", "change_outside", "on_object"}
  assert local["on_object"] == 1.0  # The demo keeps its anomalies on the part.
  # One unified model: the synthetic categories and the user's were trained together.
  config = json.loads((out / "runs" / "blaze" / "config.json").read_text())
  assert [(s["dataset"], s["categories"]) for s in config["data"]["sources"][1:]] == [
      ("folder", ["bottle-64px", "my_part-64px"])]
  page = (out / "report.html").read_text()
  assert "<th class=row>nearest-patch floor</th>" in page and "folder" in page


def test_demo_refuses_incomplete_real_data_requests(bottle_dir, tmp_path, capsys):
  """Flags that need each other, data it cannot prepare, then categories it cannot score: too
  few training images for the nearest-patch floor, or no test images. Those stop the demo
  after preparing the data, naming the category, before it trains anything."""
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["demo", "--dataset", "mvtec_ad", "--out", str(tmp_path)])
  assert exit_info.value.code == 2 and "--manual_dir go together" in capsys.readouterr().err
  out = tmp_path / "out"  # One folder: later runs reuse its synthetic data set.
  manual = _mini_bottle(bottle_dir, tmp_path / "mvtec", with_ground_truth=False)
  assert cli.main(["demo", "--quick", "--dataset", "mvtec_ad", "--manual_dir", str(manual),
                   "--out", str(out)]) == 1
  err = capsys.readouterr().err
  assert "ground_truth" in err and "could not prepare mvtec_ad" in err
  assert not (out / "metrics.json").exists()

  manual = _mini_bottle(bottle_dir, tmp_path / "mine")
  shutil.copytree(manual / "bottle" / "train", manual / "plain" / "train")
  for category, expected in (
      ("bottle", "cannot fit the nearest-patch floor on folder/bottle-64px's train split: 6 "
                 "normal images of 64x64 px give only 24576 patches; the nearest-patch memory "
                 "needs 80000"),
      ("plain", "none of plain-64px has test images to score the detector on")):
    assert cli.main(["demo", "--quick", "--dataset", "folder", "--manual_dir", str(manual),
                     "--categories", category, "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert expected in captured.err and "[2/5]" not in captured.out
    assert not (out / "runs").exists() and not (out / "metrics.json").exists()


def _demo_process(args, out):
  """`af-jax demo ARGS --out OUT` in its own process with XLA's default optimization, as a user
  runs it (the suite's fast-compile flags would make its training several times slower)."""
  env = subprocess_env()
  if env.get("XLA_FLAGS") == FAST_XLA:
    del env["XLA_FLAGS"]
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", "af_jax.cli", "demo", *args, "--out", str(out)],
                        env=env, capture_output=True, text=True, timeout=1800, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads((out / "metrics.json").read_text()), time.perf_counter() - start


@pytest.mark.slow
def test_real_bottle_detector_beats_the_floor_and_anomalies_stay_local(bottle_dir, tmp_path):
  """Issue 10's floor on the real MVTec AD bottle (seed 0): pixel AUROC and AUPRO at or above
  the better no-learning floor, image AUROC >= 0.90; generated anomalies with >= 80% of their
  change inside their masks, heatmap IoU >= 0.5 with the edited region, < 1% change outside."""
  metrics, _ = _demo_process(["--dataset", "mvtec_ad", "--manual_dir", str(bottle_dir.parent),
                              "--categories", "bottle", "--seed", "0"], tmp_path)
  detector = metrics["per_category"]["bottle-64px"]
  print(f"bottle: detector {detector}, floor {metrics['floor']['per_category']['bottle-64px']}")
  beats = metrics["beats_floor"]["bottle-64px"]
  assert beats["pixel_auroc"] and beats["aupro"]
  assert detector["image_auroc"] >= 0.90
  local = metrics["generation_locality"]["bottle-64px"]
  assert local["change_inside"] >= 0.8 and local["heatmap_iou"] >= 0.5
  assert local["change_outside"] < 0.01


@pytest.mark.slow
def test_full_demo_meets_its_quality_floor(tmp_path):
  """`af-jax demo` as a user runs it, on the synthetic set (its time: benchmarks/real_quality.py
  and the README)."""
  metrics, elapsed = _demo_process([], tmp_path)
  _check_outputs(tmp_path, metrics)
  print(f"full demo: {elapsed:.0f} s, mean {metrics['mean']}")
  assert metrics["mean"]["pixel_auroc"] >= 0.85

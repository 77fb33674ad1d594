"""`af-jax prepare` end to end: fake MVTec AD trees, the synthetic set, usage errors, rebuilds."""

import json
import os
import pathlib
import re
import shlex
import shutil

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from af_jax import cli
from af_jax.commands import prepare
from af_jax import input_pipeline


def _mvtec_tree(root: pathlib.Path, categories=("cable", "screw")) -> pathlib.Path:
  """Per category: 2 normal train, 1 normal + 1 'cut' test image with its mask, 40 x 40 px."""
  rng = np.random.default_rng(0)
  for category in categories:
    for name, array in (("train/good/000.png", None), ("train/good/001.png", None),
                        ("test/good/000.png", None), ("test/cut/000.png", None),
                        ("ground_truth/cut/000_mask.png", np.full((40, 40), 255, np.uint8))):
      path = root / category / name
      path.parent.mkdir(parents=True, exist_ok=True)
      image = rng.integers(0, 255, (40, 40, 3), np.uint8) if array is None else array
      assert cv2.imwrite(str(path), image)
  return root


def _run(*args: str) -> int:
  return prepare.main(["--size", "32", "--edges", "canny", *map(str, args)])


def test_builds_every_category_found_and_says_how_to_read_it(tmp_path, capsys):
  root = _mvtec_tree(tmp_path / "mvtec")
  assert _run("--dataset", "mvtec_ad", "--manual_dir", root, "--data_dir", tmp_path / "out") == 0
  out = capsys.readouterr().out
  for category in ("cable", "screw"):
    name = f"mvtec_ad/{category}-32px-canny"
    assert name in out
    splits = tfds.data_source(name, data_dir=str(tmp_path / "out"), download=False)
    assert (len(splits["train"]), len(splits["test"])) == (2, 2)
    assert splits["test"][0]["image"].shape == (32, 32, 3)
  assert f"tfds.data_source('mvtec_ad/cable-32px-canny', data_dir='{tmp_path / 'out'}')" in out


def test_categories_option_builds_only_those(tmp_path, capsys):
  root = _mvtec_tree(tmp_path / "mvtec")
  assert _run("--dataset", "mvtec_ad", "--manual_dir", root, "--data_dir", tmp_path / "out",
              "--categories", "screw") == 0
  assert "mvtec_ad/screw-32px-canny" in capsys.readouterr().out
  assert not (tmp_path / "out" / "mvtec_ad" / "cable-32px-canny").exists()


def test_bad_file_fails_naming_it_unless_skipped(tmp_path, capsys):
  root = _mvtec_tree(tmp_path / "mvtec", ("cable",))
  bad = root / "cable" / "train" / "good" / "001.png"
  bad.write_bytes(b"not a png")
  args = ("--dataset", "mvtec_ad", "--manual_dir", root, "--data_dir", tmp_path / "out")
  assert _run(*args) == 1
  assert str(bad) in capsys.readouterr().err
  assert _run(*args, "--skip_bad") == 0
  out = capsys.readouterr().out
  assert "Skipped 1 bad file(s)" in out and str(bad) in out and "(test 2, train 1)" in out


def test_synthetic_needs_no_manual_dir(tmp_path, capsys):
  assert _run("--dataset", "synthetic", "--data_dir", tmp_path / "out",
              "--categories", "gear") == 0
  out = capsys.readouterr().out
  assert "synthetic/gear-32px-canny" in out
  splits = tfds.data_source("synthetic/gear-32px-canny", data_dir=str(tmp_path / "out"),
                            download=False)
  assert len(splits["train"]) > 0 and splits["train"][0]["image"].shape == (32, 32, 3)


@pytest.mark.parametrize("args, message", [
    (["--dataset", "mvtec_ad"], "--manual_dir is required"),
    (["--dataset", "mvtec_ad", "--manual_dir", "{tmp}/nowhere"], "nowhere is not a folder"),
    (["--dataset", "mvtec_ad", "--manual_dir", "{tmp}/mvtec", "--categories", "bottel"],
     "unknown mvtec_ad categories bottel; expected some of bottle, cable"),
    (["--dataset", "imagenet"], "invalid choice: 'imagenet'"),
    (["--dataset", "visa", "--edges", "sobel"], "invalid choice: 'sobel'"),
    (["--dataset", "synthetic", "--size", "8"], "--size must be at least 16"),
])
def test_usage_errors_exit_2_with_a_clear_message(tmp_path, capsys, args, message):
  _mvtec_tree(tmp_path / "mvtec", ("cable",))
  with pytest.raises(SystemExit) as exit_:
    prepare.main([a.format(tmp=tmp_path) for a in args] + ["--data_dir", str(tmp_path / "out")])
  assert exit_.value.code == 2
  assert message in capsys.readouterr().err


def test_manual_dir_without_any_category_shows_the_expected_layout(tmp_path, capsys):
  (tmp_path / "empty" / "something").mkdir(parents=True)
  with pytest.raises(SystemExit):
    _run("--dataset", "mvtec_ad", "--manual_dir", tmp_path / "empty", "--data_dir",
         tmp_path / "out")
  err = capsys.readouterr().err
  assert "no mvtec_ad category found" in err and "<category>/train/good/000.png" in err


def test_overwrite_rebuilds_a_corrupt_category_in_place_atomically(tmp_path, capsys):
  root = _mvtec_tree(tmp_path / "mvtec", ("cable",))
  out = tmp_path / "out"
  assert _run("--dataset", "mvtec_ad", "--manual_dir", root, "--data_dir", out) == 0
  (shard,) = (out / "mvtec_ad" / "cable-32px-canny" / "1.0.0").glob("*-test.array_record-*")
  os.truncate(shard, 100)  # A copy cut short.
  with pytest.raises(input_pipeline.DatasetError) as error:
    list(input_pipeline.make_eval_dataset(str(out), "mvtec_ad", "cable-32px-canny"))
  command = re.search(r"`af-jax prepare (.*)`", str(error.value)).group(1)
  argv = command.replace("<your download>", str(root)).split()
  assert "--overwrite" in argv

  # A rebuild that fails part-way (a bad image) leaves the old build exactly as it was.
  bad = root / "cable" / "test" / "good" / "000.png"
  image = bad.read_bytes()
  bad.write_bytes(b"not a png")
  assert prepare.main(argv) == 1
  assert shard.stat().st_size == 100 and not list(out.glob(".prepare-overwrite-*"))
  bad.write_bytes(image)
  assert prepare.main(argv) == 0
  assert "mvtec_ad/cable-32px-canny" in capsys.readouterr().out
  assert len(list(input_pipeline.make_eval_dataset(str(out), "mvtec_ad", "cable-32px-canny"))) == 2
  assert not list(out.glob(".prepare-overwrite-*"))


def test_the_not_prepared_error_prints_the_command_that_prepares_exactly_that_build(tmp_path,
                                                                                     capsys):
  name = "gear-16px-canny-train2-good1-bad1"
  with pytest.raises(FileNotFoundError) as error:
    input_pipeline.open_split(str(tmp_path), "synthetic", name, "train")
  command = re.search(r"Build it with `af-jax prepare (.*?)`", str(error.value)).group(1)
  assert cli.main(["prepare", *shlex.split(command)]) == 0
  assert f"synthetic/{name}" in capsys.readouterr().out
  assert len(input_pipeline.open_split(str(tmp_path), "synthetic", name, "train")) == 2
  assert len(input_pipeline.open_split(str(tmp_path), "synthetic", name, "test")) == 2


@pytest.mark.parametrize("dataset, categories, flags, message", [
    ("synthetic", "gear-64px", ["--size", "32"], "gear-64px with the other flags builds "
                                                 "gear-32px, not gear-64px"),
    ("synthetic", "gear-blue", [], "'blue' spells no build option"),
    ("synthetic", "gear-32px-32px", [], "'32px' spells no build option"),
    ("mvtec_ad", "cable-32px-train8", [], "'train8' spells no build option"),
    ("mvtec_ad", "cable-regions.sam", [], "a folder named 'sam': pass that folder as "
                                          "--regions_dir"),
])
def test_build_names_that_do_not_spell_a_build_exit_2(tmp_path, capsys, dataset, categories,
                                                       flags, message):
  root = _mvtec_tree(tmp_path / "mvtec", ("cable",))
  with pytest.raises(SystemExit) as exit_:
    prepare.main(["--dataset", dataset, "--manual_dir", str(root), "--data_dir",
                  str(tmp_path / "out"), "--categories", categories, *flags])
  assert exit_.value.code == 2
  assert message in capsys.readouterr().err


def test_a_build_name_with_agreeing_flags_plans_that_build(tmp_path):
  root = _mvtec_tree(tmp_path / "mvtec", ("cable",))
  regions = tmp_path / "sam"
  regions.mkdir()
  _, _, configs = prepare.plan(["--dataset", "mvtec_ad", "--manual_dir", str(root),
                                "--data_dir", str(tmp_path / "out"), "--size", "32",
                                "--regions_dir", str(regions),
                                "--categories", "cable-32px-k4-regions.sam,cable"])
  assert [c.name for c in configs] == ["cable-32px-k4-regions.sam", "cable-32px-regions.sam"]
  assert (configs[0].size, configs[0].max_regions, configs[0].regions_dir) == (32, 4,
                                                                               str(regions))


@pytest.mark.parametrize("options", [
    dict(size=64, num_train=64),  # configs/demo.py's
    dict(size=32, edges="canny", max_regions=4, num_train=8, num_test_normal=2,
         num_test_anomalous=6, seed=3),
])
def test_every_synthetic_build_name_plans_that_build(options):
  from af_jax.data_builders import synthetic  # pylint: disable=g-import-not-at-top
  built = synthetic.config_for("gear", **options)
  planned = prepare.config_named("synthetic", prepare.builder_class("synthetic"), built.name)
  assert planned.name == built.name
  assert {k: getattr(planned, k) for k in options} == options


# ---------------------------------------------------------------- a changed manual folder


def _snapshot(folder: pathlib.Path) -> dict[str, bytes]:
  """Every file under `folder` and its bytes (but the log every verb appends to)."""
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
          if p.is_file() and p.name != "af_jax.log"}


def test_a_changed_folder_is_refused_naming_what_changed_not_reused(bottle_dir, tmp_path,
                                                                      capsys):
  """Real bottle images as a `folder` category: built, reused while unchanged, refused once
  images are added and one rewritten (one line naming the folder, the counts and
  --overwrite; the build and the folder untouched), rebuilt with --overwrite; a build made
  before the files were recorded is reused with one warning line."""
  good = tmp_path / "mine" / "widget" / "train" / "good"
  good.mkdir(parents=True)
  sources = sorted((bottle_dir / "train" / "good").glob("*.png"))
  for source in sources[:2]:
    shutil.copy(source, good)
  data_dir = tmp_path / "tfds"
  args = ["prepare", "--dataset", "folder", "--manual_dir", tmp_path / "mine", "--data_dir",
          data_dir, "--size", "32", "--edges", "canny"]
  assert cli.main(list(map(str, args))) == 0
  assert cli.main(list(map(str, args))) == 0  # Unchanged: reused.
  assert "(train 2)" in capsys.readouterr().out
  for source in sources[2:5]:
    shutil.copy(source, good)
  os.utime(good / sources[0].name, ns=(0, 0))  # Rewritten, as far as its time says.
  before = _snapshot(tmp_path)
  assert cli.main(list(map(str, args))) == 1
  err = capsys.readouterr().err
  assert "Traceback" not in err
  (line,) = [line for line in err.splitlines() if line.startswith("af-jax prepare: error:")]
  assert "widget/train/good: 3 files added, 1 file changed" in line and "--overwrite" in line
  assert _snapshot(tmp_path) == before
  assert cli.main(list(map(str, [*args, "--overwrite"]))) == 0
  assert "(train 5)" in capsys.readouterr().out

  metadata = next(data_dir.rglob("metadata.json"))  # As a build made before the record.
  recorded = json.loads(metadata.read_text())
  metadata.write_text(json.dumps({k: v for k, v in recorded.items() if k != "source_files"}))
  assert cli.main(list(map(str, args))) == 0
  notes = [line for line in capsys.readouterr().err.splitlines() if "source files" in line]
  assert len(notes) == 1 and "--overwrite" in notes[0]

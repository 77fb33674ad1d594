"""Thresholds per category on the production line (issue 28): real MVTec bottle images as two
parts of one run trained with `blaze.reference`, calibrated one after the other.

The run comes from the session's `pidinet_runs` fixture (tests/conftest.py). Each command's
stderr is checked for its one line and for no traceback, and everything but `--out`, the run's
thresholds (thresholds.json and its .bak, where a calibration is meant to write) and its log
is checked unchanged.
"""

import contextlib
import csv
import hashlib
import io
import json
import logging
import pathlib
import shlex
import shutil

import cv2
import pytest

import af_jax
from af_jax import cli
from af_jax import infer
from af_jax.inference import thresholds
from conftest import copy_run

RUN_FILES = (thresholds.FILE_NAME, thresholds.FILE_NAME + thresholds.BACKUP_SUFFIX, "af_jax.log")


def _run(*args) -> tuple[int, str]:
  """(exit status, stderr) of `af-jax ARGS`, asserting no traceback."""
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    try:
      code = cli.main([*map(str, args)])
    except SystemExit as e:  # argparse's usage errors.
      code = e.code
  assert "Traceback" not in err.getvalue(), err.getvalue()
  return code, err.getvalue()


def _snapshot(folder: pathlib.Path, outputs=()) -> dict[str, str]:
  """Every file under `folder` but the `outputs` folders, the run files a command may write
  (`RUN_FILES`) and output locks (they hold the last command's process id), with the hash of
  its bytes."""
  return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in RUN_FILES
          and not p.name.startswith(".af_jax_output.lock")
          and not any(p.is_relative_to(folder / o) for o in outputs)}


def _rows(out: pathlib.Path) -> list[dict]:
  with (out / "scores.csv").open(newline="") as f:
    return list(csv.DictReader(f))


def _images(folder: pathlib.Path) -> list:
  return [cv2.imread(str(p))[..., ::-1] for p in sorted(folder.glob("*.png"))]


def _part(root: pathlib.Path, name: str, bottle_dir: pathlib.Path, turn: bool) -> pathlib.Path:
  """`<root>/<name>/{train/good, test/good, test/broken_large}`: real bottle images (turned a
  quarter for the second part), 10 normal ones to calibrate on and 4 to judge."""
  picks = [("train/good", k) for k in range(10)] + [
      (f"test/{kind}", k) for kind in ("good", "broken_large") for k in range(2)]
  for folder, k in picks:
    image = cv2.imread(str(bottle_dir / folder / f"{k:03d}.png"))
    target = root / name / folder / f"{k:03d}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(target), cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE) if turn else image)
  return root / name


@pytest.fixture(scope="module")
def line(pidinet_runs, bottle_dir, tmp_path_factory):
  """Two parts calibrated one after the other on one run: `bottle`, then `turned`, judged
  first without calibration, then calibrated by the very command that run printed."""
  root, _ = pidinet_runs
  tmp = tmp_path_factory.mktemp("line")
  parts = {name: _part(tmp / "parts", name, bottle_dir, name == "turned")
           for name in ("bottle", "turned")}
  workdir = copy_run(root / "blaze_reference", tmp / "run")
  trained = list(infer.Detector(workdir).references.names)

  def localize(part, out, *extra):
    return _run("localize", "--workdir", workdir, "--images", parts[part] / "test", "--out",
                tmp / out, "--reference", parts[part] / "train" / "good", *extra)

  steps = {}
  before = _snapshot(tmp)
  steps["bottle"] = localize("bottle", "bottle", "--calibrate", parts["bottle"] / "train" / "good")
  after_bottle = (workdir / thresholds.FILE_NAME).read_text()
  steps["uncalibrated"] = localize("turned", "uncalibrated")
  out = tmp / "uncalibrated"
  uncalibrated = dict(rows=_rows(out), summary=json.loads((out / "summary.json").read_text()),
                      judged=[*(out / "masks").iterdir(), *(out / "overlays").iterdir()])
  unchanged = _snapshot(tmp, ("bottle", "uncalibrated")) == before
  fixes = [l for l in steps["uncalibrated"][1].splitlines() if "calibrate it: af-jax " in l]
  steps["turned"] = _run(*shlex.split(fixes[-1].split("calibrate it: af-jax ")[1]))
  return dict(tmp=tmp, parts=parts, workdir=workdir, steps=steps, after_bottle=after_bottle,
              uncalibrated=uncalibrated, unchanged=unchanged, trained=trained)


def test_calibrating_a_second_part_keeps_the_first_parts_thresholds(line):
  for code, err in line["steps"].values():
    assert code == 0, err
  saved = json.loads((line["workdir"] / thresholds.FILE_NAME).read_text())["categories"]
  first = json.loads(line["after_bottle"])["categories"]
  assert set(first) == {"bottle"} and set(saved) == {"bottle", "turned"}
  assert saved["bottle"] == first["bottle"]  # Untouched by the second part's calibration.
  assert saved["turned"]["num_images"] == 10 and saved["turned"] != saved["bottle"]
  backup = line["workdir"] / (thresholds.FILE_NAME + thresholds.BACKUP_SUFFIX)
  assert backup.read_text() == line["after_bottle"]  # The file as it was before.
  summary = json.loads((line["tmp"] / "bottle" / "summary.json").read_text())
  assert summary["thresholds"] == {"bottle": {k: first["bottle"][k] for k in ("pixel", "image")}}
  assert {r["decision"] for r in _rows(line["tmp"] / "bottle")} <= {"OK", "NG"}
  assert line["unchanged"]  # Nothing but --out and the run's thresholds.
  with pytest.raises(ValueError, match=r"no calibrated thresholds for synthetic/\S+ "
                                       r"\(calibrated: bottle, turned\)"):
    infer.Detector(line["workdir"]).threshold("image", category=line["trained"][0])


def test_an_uncalibrated_part_is_never_judged_with_another_parts_thresholds(line):
  code, err = line["steps"]["uncalibrated"]
  reference = line["parts"]["turned"] / "train" / "good"
  assert code == 0, err
  rows, summary = line["uncalibrated"]["rows"], line["uncalibrated"]["summary"]
  assert len(rows) == 4 and {(r["decision"], r["reference"]) for r in rows} == {
      ("not calibrated", "turned")}
  assert line["uncalibrated"]["judged"] == []  # No masks or overlays without a threshold.
  assert summary["not_calibrated"] == {"turned": 4} and summary["num_ng"] == 0
  assert summary["thresholds"] == {"turned": {"pixel": None, "image": None}}
  warnings = [l for l in err.splitlines() if "not calibrated" in l]
  assert len(warnings) == 1 and "no calibrated thresholds for turned (calibrated: bottle)" in err
  assert f"--reference {reference} --calibrate {reference} --overwrite" in warnings[0]
  # The fixture ran the printed command as printed: the part is now judged by its own.
  assert {r["decision"] for r in _rows(line["tmp"] / "uncalibrated")} <= {"OK", "NG"}


def test_the_export_carries_each_parts_thresholds(line):
  tmp, parts, trained = line["tmp"], line["parts"], line["trained"]
  before = _snapshot(tmp)
  code, err = _run("export-detector", "--workdir", line["workdir"], "--out", tmp / "detector",
                   "--reference", parts["bottle"] / "train" / "good",
                   "--reference", parts["turned"] / "train" / "good")
  assert code == 0, err
  assert _snapshot(tmp, ("detector",)) == before
  notes = [l for l in err.splitlines() if "carries no calibrated thresholds" in l]
  assert len(notes) == 1 and f"for {', '.join(trained)}:" in notes[0]
  meta = json.loads((tmp / "detector" / "detector.json").read_text())
  assert set(meta["thresholds"]) == {"bottle", "turned"}
  detector = infer.Detector(line["workdir"])
  exported = af_jax.load_detector(tmp / "detector")
  for name in ("bottle", "turned"):
    for kind in thresholds.KINDS:
      value = detector.threshold(kind, category=name)
      assert meta["thresholds"][name][kind] == value == exported.threshold(kind, name)
      assert exported.threshold(kind, meta["categories"].index(name)) == value
  with pytest.raises(ValueError, match=f"no calibrated image threshold for {trained[0]} "
                                       r"\(calibrated: bottle, turned\)"):
    exported.threshold("image", trained[0])
  with pytest.raises(ValueError, match="category index 9 is out of range"):
    exported.threshold("image", 9)


def test_resume_refuses_reference_images_changed_since_the_output_began(line, tmp_path):
  reference = tmp_path / "bottle" / "train" / "good"
  shutil.copytree(line["parts"]["bottle"] / "train" / "good", reference)
  args = ("localize", "--workdir", line["workdir"], "--images", line["parts"]["bottle"] / "test",
          "--out", tmp_path / "out", "--reference", reference)
  code, err = _run(*args)
  assert code == 0, err
  (tmp_path / "out" / "summary.json").unlink()  # As an output that did not finish.
  shutil.copy(reference / "009.png", reference / "003.png")  # Replaced under the same name.
  before = _snapshot(tmp_path) | _snapshot(line["workdir"])
  code, err = _run(*args, "--resume")
  lines = [l for l in err.splitlines() if l and not l.startswith("(library warnings")]
  assert code == 1 and len(lines) == 1, err
  assert (f"--resume: the reference images in {reference} changed since the output in "
          f"{tmp_path / 'out'} was begun ({reference}: 1 file changed)") in err
  assert "pass --overwrite instead of --resume to start over" in err
  assert _snapshot(tmp_path) | _snapshot(line["workdir"]) == before


def test_a_second_reference_folder_is_refused_naming_both(line, tmp_path):
  parts = line["parts"]
  first, second = parts["bottle"] / "train" / "good", parts["turned"] / "train" / "good"
  code, err = _run("localize", "--workdir", line["workdir"], "--images", parts["bottle"] / "test",
                   "--out", tmp_path / "out", "--reference", first, "--reference", second)
  assert code == 2 and f"--reference is given twice ({first} and {second})" in err, err
  twin = tmp_path / "elsewhere" / "bottle" / "train" / "good"
  shutil.copytree(first, twin)
  code, err = _run("export-detector", "--workdir", line["workdir"], "--out", tmp_path / "out",
                   "--reference", first, "--reference", twin)
  assert code == 1, err
  assert f"--reference {first} and --reference {twin} are both category 'bottle'" in err
  assert not (tmp_path / "out").exists()


def test_an_older_one_set_file_stands_for_what_it_was_calibrated_on(line, pidinet_runs,
                                                                    tmp_path, caplog):
  workdir, trained = copy_run(line["workdir"], tmp_path / "run"), line["trained"]
  old = dict(pixel=0.3, image=0.6, fpr=0.01, num_images=12,
             **infer.Detector(workdir).settings())
  path = workdir / thresholds.FILE_NAME
  path.write_text(json.dumps(dict(old, reference=None)))  # Nearest references: every trained.
  plain = copy_run(pidinet_runs[0] / "blaze", tmp_path / "plain")  # A run without references.
  (plain / thresholds.FILE_NAME).write_text(json.dumps(dict(old, reference=None)))
  with caplog.at_level(logging.WARNING):
    assert infer.Detector(plain).threshold("image") == 0.6  # The same meaning then as now.
    detector = infer.Detector(workdir)
  notes = [r.getMessage() for r in caplog.records if "one set from an older" in r.getMessage()]
  assert len(notes) == 1 and all(name in notes[0] for name in trained)
  assert [detector.threshold("image", category=n) for n in trained] == [0.6] * len(trained)
  with pytest.raises(ValueError, match="no calibrated thresholds for bottle"):
    detector.threshold("image", category="bottle")
  # Calibrating one category keeps the others' older set, still marked as such.
  normal = _images(line["parts"]["bottle"] / "train" / "good")
  detector.add_reference("bottle", normal)
  detector.calibrate(normal, category="bottle")
  saved = json.loads(path.read_text())["categories"]
  assert set(saved) == {*trained, "bottle"} and all(saved[n]["legacy"] for n in trained)
  path.write_text(json.dumps(dict(old, reference="bottle")))  # Calibrated on one: that one.
  assert infer.Detector(workdir).thresholds == {"bottle": old}


def test_a_calibration_folder_of_no_trained_category_is_refused(line, tmp_path):
  """Without --reference or --category, --calibrate measures the category its folder names;
  one the run does not have is refused, never calibrated into the nearest trained one's."""
  workdir, parts = line["workdir"], line["parts"]
  before = _snapshot(workdir.parent) | {"thresholds": (workdir / thresholds.FILE_NAME).read_text()}
  code, err = _run("localize", "--workdir", workdir, "--images", parts["bottle"] / "test",
                   "--out", tmp_path / "out", "--calibrate", parts["bottle"] / "train" / "good")
  assert code == 1 and "no single reference named 'bottle'" in err, err
  assert "(--category NAME: " in err and "(--reference DIR)" in err
  after = _snapshot(workdir.parent) | {"thresholds": (workdir / thresholds.FILE_NAME).read_text()}
  assert after == before and not (tmp_path / "out").exists()

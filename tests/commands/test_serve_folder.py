"""`af-jax serve-folder` on real bottle images: every image gets exactly one verdict line, through
a kill mid-batch and a restart, a torn last line, bad files and files that land while it runs.

The detector is the session's tiny PiDiNet run (`pidinet_runs`, tests/conftest.py), exported;
it takes 32 px, so the 256 px bottle images are also resized on the way in and back.
"""

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from af_jax import cli
from af_jax import pixels
from af_jax.commands import folder_watch
from af_jax.commands import verdict_file
from conftest import subprocess_env

FAST = ["--batch_size", "4", "--poll_s", "0.1", "--max_wait_s", "0.2"]


def _export(pidinet_runs, tmp_path_factory, run: str):
  root, _ = pidinet_runs
  out = tmp_path_factory.mktemp("serve") / run
  assert cli.main(["export-detector", "--workdir", str(root / run), "--out", str(out)]) == 0
  return out


@pytest.fixture(scope="module")
def detector_dir(pidinet_runs, tmp_path_factory):
  return _export(pidinet_runs, tmp_path_factory, "blaze")


def _bottles(bottle_dir, folder, count: int) -> list[str]:
  """`count` real bottle test images, good and broken, copied into `folder`; their names."""
  sources = sorted(bottle_dir.glob("test/*/*.png"))[::7][:count]
  folder.mkdir(parents=True, exist_ok=True)
  names = [f"{p.parent.name}_{p.name}" for p in sources]
  for source, name in zip(sources, names):
    shutil.copy(source, folder / name)
  return names


def _verdicts(out) -> list[dict]:
  return [json.loads(line) for line in (out / verdict_file.NAME).read_text().splitlines()]


def _serve(detector_dir, watch, out, *extra) -> int:
  return cli.main(["serve-folder", "--detector", str(detector_dir), "--watch", str(watch),
                   "--out", str(out), *FAST, *extra])


def test_once_scores_each_image_once_and_redoes_a_torn_last_line(detector_dir, bottle_dir,
                                                                 tmp_path, capsys):
  names = _bottles(bottle_dir, tmp_path / "in", 5)
  out = tmp_path / "out"
  assert _serve(detector_dir, tmp_path / "in", out, "--once") == 0
  lines = _verdicts(out)
  assert sorted(r["file"] for r in lines) == sorted(names)
  for r in lines:
    assert r["verdict"] == "not calibrated" and 0 <= r["score"] <= 1, r  # The export has none.
    assert pixels.read_rgb(out / r["heatmap"]).shape == (256, 256, 3)  # The image's own size.
    assert pixels.read_rgb(out / r["overlay"]).shape == (256, 256, 3)
  # Killed while writing its last line: that image's files are there, its line is torn.
  text = (out / verdict_file.NAME).read_text()
  whole, last = text[:text.rstrip("\n").rfind("\n") + 1], text.rstrip("\n").split("\n")[-1]
  (out / verdict_file.NAME).write_text(whole + last[:len(last) // 2])
  capsys.readouterr()
  assert _serve(detector_dir, tmp_path / "in", out, "--once", "--image_threshold", "0.5") == 1
  assert "begun with other settings" in capsys.readouterr().err  # One detector's verdicts a file.
  assert _serve(detector_dir, tmp_path / "in", out, "--once") == 0
  again = (out / verdict_file.NAME).read_text()
  assert again.startswith(whole) and again[len(whole):] == last + "\n"  # Only it is redone.
  assert _serve(detector_dir, tmp_path / "in", out, "--once") == 0  # Nothing left to do.
  assert (out / verdict_file.NAME).read_text() == again


def test_a_bad_file_is_a_verdict_line_naming_what_is_wrong(detector_dir, bottle_dir, tmp_path,
                                                          capsys):
  watch = tmp_path / "in"
  names = _bottles(bottle_dir, watch, 2)
  (watch / "corrupt.png").write_bytes(os.urandom(3000))
  (watch / "empty.png").write_bytes(b"")
  (watch / "gone.png").symlink_to(watch / "nowhere.png")
  (watch / "notes.txt").write_text("not an image")
  (watch / ".being_written.png").write_bytes(b"half")  # Writers' temporary names.
  (watch / "also_being_written.png.part").write_bytes(b"half")
  out = tmp_path / "out"
  assert _serve(detector_dir, watch, out, "--once", "--image_threshold", "0.5") == 0
  assert "Traceback" not in capsys.readouterr().err
  lines = {r["file"]: r for r in _verdicts(out)}
  assert sorted(lines) == sorted([*names, "corrupt.png", "empty.png", "gone.png"])
  assert "corrupt or not an image" in lines["corrupt.png"]["error"]
  assert "the file is empty" in lines["empty.png"]["error"]
  assert "symbolic link" in lines["gone.png"]["error"]
  assert all(str(watch / name) in lines[name]["error"] for name in lines if "error" in lines[name])
  assert {lines[n]["verdict"] for n in names} <= {"OK", "NG"}


def test_a_detector_with_categories_scores_against_the_one_named(pidinet_runs, bottle_dir,
                                                                 tmp_path_factory, capsys):
  detector = _export(pidinet_runs, tmp_path_factory, "blaze_reference")
  categories = [f"synthetic/{n}" for n in pidinet_runs[1]]
  watch, out = tmp_path_factory.mktemp("in"), tmp_path_factory.mktemp("out")
  names = _bottles(bottle_dir, watch, 3)
  gray = pixels.read_rgb(watch / names[0]).mean(-1).astype(np.uint8)  # A gray camera's image.
  (watch / "gray.png").write_bytes(pixels.encode_png(gray))
  capsys.readouterr()
  assert _serve(detector, watch, out, "--once") == 1
  assert f"compares images with one of {', '.join(categories)}; pass --category" in (
      capsys.readouterr().err)
  assert _serve(detector, watch, out, "--once", "--category", categories[1]) == 0
  lines = {r["file"]: r for r in _verdicts(out)}
  assert sorted(lines) == sorted([*names, "gray.png"])
  assert {lines[n]["category"] for n in names} == {categories[1]}  # Batched with the gray one.
  assert "gray.png: image 0 is gray" in lines["gray.png"]["error"], lines["gray.png"]


def _count(out) -> int:
  path = out / verdict_file.NAME
  return path.read_bytes().count(b"\n") if path.is_file() else 0


def _wait_for(condition, proc, timeout: float = 300):
  deadline = time.monotonic() + timeout
  while not condition():
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.005)


def test_killed_mid_batch_and_restarted_every_image_gets_exactly_one_verdict(
    detector_dir, bottle_dir, tmp_path):
  watch, out = tmp_path / "in", tmp_path / "out"
  names = _bottles(bottle_dir, watch, 12)
  command = [sys.executable, "-m", "af_jax.cli", "serve-folder", "--detector",
             str(detector_dir), "--watch", str(watch), "--out", str(out), *FAST,
             "--log_every", "4"]
  proc = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    _wait_for(lambda: _count(out) >= 1, proc)
    proc.kill()  # As its batch's first verdict lands: the rest of the batch is half done.
  finally:
    proc.kill()
    proc.communicate()
  assert 1 <= _count(out) < len(names)
  proc = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    _wait_for(lambda: _count(out) == len(names), proc)
    (watch / "late.png.part").write_bytes((watch / names[0]).read_bytes())
    time.sleep(0.5)  # Polls see it; its name is not an image's, so it is not taken.
    assert _count(out) == len(names)
    os.rename(watch / "late.png.part", watch / "late.png")  # Write, then rename.
    _wait_for(lambda: _count(out) == len(names) + 1, proc)
    proc.send_signal(signal.SIGTERM)  # Finishes its batch, then stops.
    stdout, stderr = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 0, stderr[-3000:]
  assert "images/s" in stderr and "'images': " in stdout, (stdout, stderr)
  counts = collections.Counter(r["file"] for r in _verdicts(out))
  assert counts == collections.Counter([*names, "late.png"])  # Each exactly once.


def test_an_image_is_ready_once_unchanged_across_polls(tmp_path):
  watcher = folder_watch.Watcher(tmp_path, taken={"done.png"}, settle_s=0)
  for name in ("done.png", ".tmp.png", "a.png.part"):
    (tmp_path / name).write_bytes(b"x")
  (tmp_path / "d.png").mkdir()
  (tmp_path / "a.png").write_bytes(b"first half")
  assert watcher.poll() == [] and watcher.waiting() == 1  # Seen once: maybe being written.
  with (tmp_path / "a.png").open("ab") as f:
    f.write(b" and the rest")
  assert watcher.poll() == []  # It changed since.
  (ready,) = watcher.poll()
  assert ready.path == tmp_path / "a.png" and watcher.waiting() == 0
  assert watcher.poll() == []  # Each image is taken once.


def test_an_edited_verdict_file_is_refused_naming_the_line(tmp_path):
  path = tmp_path / verdict_file.NAME
  path.write_text('{"file": "a.png"}\nnot a verdict\n{"file": "b.png"}\n')
  with pytest.raises(ValueError, match=r"line 2 of .* is not a verdict"):
    verdict_file.done_names(path)
  path.write_text('{"file": "a.png"}\n{"file": "b.p')
  assert verdict_file.done_names(path) == {"a.png"}
  assert path.read_text() == '{"file": "a.png"}\n'

"""`generate`, `localize` and `evaluate` on 8 devices and on 2 processes give one device's outputs;
an unfinished output (a failure, a host that died) is completed by `--resume`.

The device count is fixed when JAX starts, so runs on several devices or processes are
subprocesses (`--xla_force_host_platform_device_count`); the 1-device reference runs here.
"""

import csv
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import cv2
import numpy as np
import pytest

from af_jax import cli
from af_jax import files
from af_jax.inference import hosts
from conftest import subprocess_env
from test_generate_localize_evaluate import mvtec  # pylint: disable=unused-import

TIMEOUT_S = 300
HEATMAP_ATOL = 1e-5

# Runs `af-jax ARGS`; with AF_TEST_DIE_AFTER=k the process dies (os._exit) at its k+1-th
# heatmap, as a host that fails mid-way.
_CLI = """
  import os, sys
  from af_jax import cli, files
  die_after = int(os.environ.get("AF_TEST_DIE_AFTER", "-1"))
  write_npy, written = files.write_npy, []

  def write_or_die(path, array):
    if len(written) == die_after:
      os._exit(3)
    written.append(path)
    write_npy(path, array)

  files.write_npy = write_or_die
  sys.exit(cli.main(sys.argv[1:]))
"""


def _env(devices: int, **extra) -> dict:
  flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
  return subprocess_env(XLA_FLAGS=flags, **extra)


def _cli(*args, devices: int = 1) -> None:
  """`af-jax ARGS` in a subprocess with `devices` CPU devices."""
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_CLI), *map(str, args)],
                        env=_env(devices), capture_output=True, text=True, timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-4000:]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start_processes(args, log_dir: pathlib.Path, die_after=(-1, -1)) -> list:
  """`af-jax ARGS` as processes 0 and 1 of one run (2 CPU devices each)."""
  port, procs = _free_port(), []
  for i in range(2):
    with open(log_dir / f"process_{i}.log", "w") as log:
      procs.append(subprocess.Popen(
          [sys.executable, "-c", textwrap.dedent(_CLI), *map(str, args),
           "--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2",
           "--process_id", str(i)],
          env=_env(2, AF_TEST_DIE_AFTER=str(die_after[i])), stdout=log,
          stderr=subprocess.STDOUT))
  return procs


def _wait(procs, until, log_dir: pathlib.Path) -> None:
  """Polls until `until()`; a process that fails first (or the deadline) ends them all."""
  deadline = time.monotonic() + TIMEOUT_S
  try:
    while not until():
      codes = [p.poll() for p in procs]
      assert time.monotonic() < deadline, "deadline passed"
      assert all(code in (None, 0) for code in codes), codes
      time.sleep(0.2)
  except AssertionError as e:
    logs = "\n".join(f.read_text()[-3000:] for f in sorted(log_dir.glob("*.log")))
    raise AssertionError(f"{e}:\n{logs}") from None
  finally:
    for p in procs:
      if p.poll() is None and not until():
        p.kill()


def _two_processes(args, log_dir: pathlib.Path) -> None:
  log_dir.mkdir(parents=True, exist_ok=True)
  procs = _start_processes(args, log_dir)
  _wait(procs, lambda: all(p.poll() == 0 for p in procs), log_dir)


# ------------------------------------------------------------------ comparing outputs
def _rows(out: pathlib.Path) -> list[dict]:
  with (out / "scores.csv").open(newline="") as f:
    return list(csv.DictReader(f))


def _assert_same_localize(reference: pathlib.Path, other: pathlib.Path) -> None:
  """Same files, rows, decisions and metrics; heatmaps within HEATMAP_ATOL."""
  mine, theirs = _rows(reference), _rows(other)
  assert [(r["file"], r["decision"]) for r in theirs] == [(r["file"], r["decision"])
                                                          for r in mine]
  np.testing.assert_allclose([float(r["score"]) for r in theirs],
                             [float(r["score"]) for r in mine], atol=HEATMAP_ATOL)
  names = sorted(p.name for p in (reference / "heatmaps").iterdir())
  assert names and sorted(p.name for p in (other / "heatmaps").iterdir()) == names
  for name in names:
    difference = np.abs(np.load(other / "heatmaps" / name) - np.load(reference / "heatmaps" / name))
    assert difference.max() <= HEATMAP_ATOL, (name, difference.max())
  summary, expected = (json.loads((out / "summary.json").read_text()) for out in (other, reference))
  metrics, expected_metrics = summary.pop("metrics"), expected.pop("metrics")
  assert summary == expected
  assert metrics.keys() == expected_metrics.keys()
  np.testing.assert_allclose(list(metrics.values()), list(expected_metrics.values()), atol=1e-6)


def _assert_same_generate(reference: pathlib.Path, other: pathlib.Path) -> None:
  """Same manifest; heatmaps within HEATMAP_ATOL, images within a rounding step."""
  records = [json.loads(line) for line in (reference / "manifest.jsonl").read_text().splitlines()]
  assert (other / "manifest.jsonl").read_text() == (reference / "manifest.jsonl").read_text()
  for r in records:
    heat = np.abs(np.load(other / r["heatmap"]) - np.load(reference / r["heatmap"])).max()
    assert heat <= HEATMAP_ATOL, (r["heatmap"], heat)
    image = np.abs(cv2.imread(str(other / r["image"])).astype(int)
                   - cv2.imread(str(reference / r["image"])).astype(int)).max()
    assert image <= 1, (r["image"], image)
  locality, expected = (json.loads((out / "locality.json").read_text())
                        for out in (other, reference))
  np.testing.assert_allclose(list(locality.values()), list(expected.values()), atol=1e-5)


def _assert_same_metrics(reference: pathlib.Path, other: pathlib.Path) -> None:
  metrics, expected = (json.loads((out / "metrics.json").read_text())
                       for out in (other, reference))
  for category, values in expected["per_category"].items():
    assert values.keys() == metrics["per_category"][category].keys()
    np.testing.assert_allclose(list(metrics["per_category"][category].values()),
                               list(values.values()), atol=1e-6)


# ------------------------------------------------------------------ the commands' arguments
@pytest.fixture(scope="module")
def commands(runs, mvtec, tmp_path_factory):  # pylint: disable=redefined-outer-name
  """{verb: args without --out} for localize, generate and evaluate on the tiny runs, and the
  1-device outputs (run here) by verb."""
  root, data_dir, names = runs
  sources = tmp_path_factory.mktemp("sources")  # 20 images: 2 generate groups of 16.
  for k, path in enumerate(sorted(mvtec.rglob("*.png"))[:20]):
    shutil.copy(path, sources / f"{k:03d}.png")
  args = dict(
      localize=["localize", "--workdir", root / "blaze", "--images", mvtec / "test",
                "--ground_truth", mvtec / "ground_truth", "--pixel_threshold", 0.5,
                "--image_threshold", 0.5, "--batch_size", 3],
      generate=["generate", "--workdir", root / "flare", "--images", sources,
                "--category", "circuit", "--num", 2, "--batch_size", 5],
      evaluate=["evaluate", "--workdir", root / "blaze", "--dataset", "synthetic",
                "--categories", names[0], "--data_dir", data_dir, "--batch_size", 3])
  single = tmp_path_factory.mktemp("single_device")
  for verb, verb_args in args.items():
    assert cli.main([*map(str, verb_args), "--out", str(single / verb)]) == 0
  return args, single


def _out(verb: str, folder: pathlib.Path) -> pathlib.Path:
  """Where a verb's outputs lie under its --out."""
  return folder / "circuit" if verb == "generate" else folder


SAME = dict(localize=_assert_same_localize, generate=_assert_same_generate,
            evaluate=_assert_same_metrics)


def test_eight_devices_give_the_single_device_outputs(commands, tmp_path):
  args, single = commands
  for verb, verb_args in args.items():
    _cli(*verb_args, "--out", tmp_path / verb, devices=8)
    SAME[verb](_out(verb, single / verb), _out(verb, tmp_path / verb))


@pytest.mark.slow
def test_two_processes_give_the_single_process_outputs(commands, tmp_path):
  args, single = commands
  for verb, verb_args in args.items():
    _two_processes([*verb_args, "--out", tmp_path / verb], tmp_path / "logs" / verb)
    SAME[verb](_out(verb, single / verb), _out(verb, tmp_path / verb))
    parts = [p.name for p in _out(verb, tmp_path / verb).glob("[!.]*.process_*")]
    assert not parts, f"{verb} left parts after the merge: {parts}"


@pytest.mark.slow
def test_a_host_that_dies_leaves_the_others_outputs_and_resume_completes_them(commands,
                                                                              tmp_path):
  """Process 1 dies at its 3rd image; process 0 finishes its share and waits for it, and is
  stopped. A 2-process rerun with --resume localizes only the 2 images process 1 lacked."""
  args, single = commands
  out, logs = tmp_path / "loc", tmp_path / "logs"
  logs.mkdir()
  command = [*args["localize"], "--out", out]
  procs = _start_processes(command, logs, die_after=(-1, 2))
  mine = hosts.share(8, 0, 2)
  share_written = lambda: (procs[1].poll() == 3 and (out / "scores.csv").is_file()
                           and len(_rows(out)) == len(mine))
  _wait(procs[:1], share_written, logs)
  for p in procs:
    p.kill()
    p.wait()
  assert len(list(out.glob("heatmaps/*.npy"))) == len(mine) + 2
  assert len(_rows(out)) == 4 and not (out / "summary.json").exists()
  before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()
            and p.parent.name in ("heatmaps", "masks", "overlays")}
  _two_processes([*command, "--resume"], logs / "resumed")
  _assert_same_localize(single / "localize", out)
  for path, mtime in before.items():
    assert path.stat().st_mtime_ns == mtime, f"{path} was written again"
  assert len(list(out.glob("heatmaps/*.npy"))) == 8


# ------------------------------------------------------------------ --resume on one process
def _fail_after(writes: int, monkeypatch) -> None:
  """`files.write_npy` writes `writes` files, then fails as a full disk would."""
  write_npy, written = files.write_npy, []

  def write_or_fail(path, array):
    if len(written) == writes:
      raise OSError(f"disk full while writing {path}")
    written.append(path)
    write_npy(path, array)

  monkeypatch.setattr(files, "write_npy", write_or_fail)


def test_resume_completes_an_unfinished_localize_and_refuses_other_settings(
    commands, tmp_path, monkeypatch, capsys):
  args, single = commands
  out = tmp_path / "loc"
  command = [*map(str, args["localize"]), "--out", str(out)]
  _fail_after(3, monkeypatch)
  assert cli.main(command) == 1
  monkeypatch.undo()
  before = {p: p.stat().st_mtime_ns for p in out.glob("heatmaps/*.npy")}
  assert len(before) == 3 and not (out / "summary.json").exists()
  capsys.readouterr()
  assert cli.main(command) == 1
  assert "--overwrite to replace it or --resume to complete it" in capsys.readouterr().err
  other = [a if a != "0.5" else "0.4" for a in command]
  assert cli.main([*other, "--resume"]) == 1
  err = capsys.readouterr().err
  assert "begun with other settings" in err and "pixel_threshold: 0.5 then, 0.4 now" in err, err
  with pytest.raises(SystemExit, match="2"):  # argparse: the two flags exclude each other.
    cli.main([*command, "--resume", "--overwrite"])

  assert cli.main([*command, "--resume"]) == 0
  _assert_same_localize(single / "localize", out)
  assert (out / "scores.csv").read_bytes() == (single / "localize" / "scores.csv").read_bytes()
  assert {p: p.stat().st_mtime_ns for p in before} == before  # Kept, not redone.


def test_resume_completes_an_unfinished_generate(commands, tmp_path, monkeypatch):
  args, single = commands
  command = [*map(str, args["generate"]), "--out", str(tmp_path)]
  _fail_after(19, monkeypatch)
  assert cli.main(command) == 1
  monkeypatch.undo()
  out = tmp_path / "circuit"
  assert len((out / "manifest.jsonl").read_text().splitlines()) == 19
  assert cli.main([*command, "--resume"]) == 0
  assert (out / "manifest.jsonl").read_bytes() == (
      single / "generate" / "circuit" / "manifest.jsonl").read_bytes()
  assert ((out / "locality.json").read_text()
          == (single / "generate" / "circuit" / "locality.json").read_text())


# ------------------------------------------------------------------ shares
def test_shares_cover_every_item_once_and_differ_by_one_at_most():
  for n in (0, 1, 7, 8, 33):
    for count in (1, 2, 3, 8):
      shares = [hosts.share(n, p, count) for p in range(count)]
      assert sorted(i for s in shares for i in s) == list(range(n))
      assert max(map(len, shares)) - min(map(len, shares)) <= 1
  assert hosts.share(10, 1, 3) == [1, 4, 7]

"""The console says what a user can act on, once; library chatter goes to the run's af_jax.log."""

import logging
import pathlib
import subprocess
import sys

import ml_collections

from af_jax import log_setup
from af_jax.training import train
from conftest import subprocess_env

LIBRARY_NOTICE = "Given directory is read only=/runs/boot/checkpoints"


def test_library_warnings_go_to_the_file_and_ours_to_the_console(tmp_path, capsys):
  root_handlers = list(logging.getLogger().handlers)
  with log_setup.routed("demo", ["--quick", f"--out={tmp_path}"]) as path:
    logging.getLogger("absl").warning(LIBRARY_NOTICE)
    logging.getLogger("absl").warning("Using custom data configuration: SyntheticConfig(...)")
    logging.getLogger("af_jax.training.train").warning("the VGG perceptual loss is off")
    logging.getLogger("af_jax.training.train").info("stage boot: 4 steps")
    logging.getLogger("orbax").error("cannot save the checkpoint")
  assert path == tmp_path / "af_jax.log"
  err = capsys.readouterr().err
  assert LIBRARY_NOTICE not in err and "Using custom data" not in err
  assert err.splitlines() == [
      f"(library warnings, e.g. from TFDS and Orbax, are logged in {path})",
      "WARNING: the VGG perceptual loss is off",
      "ERROR: cannot save the checkpoint"]
  logged = path.read_text()
  assert logged.startswith("---- ") and f"af-jax demo --quick --out={tmp_path}" in logged
  for message in (LIBRARY_NOTICE, "Using custom data", "VGG", "stage boot", "cannot save"):
    assert message in logged
  assert logging.getLogger().handlers == root_handlers  # Nothing left behind.


def test_train_shows_its_own_info_and_a_verb_without_a_folder_keeps_library_warnings(
    tmp_path, capsys):
  with log_setup.routed("train", ["--config", "c.py", "--workdir", str(tmp_path / "run")]):
    logging.getLogger("af_jax.training.train").info("resumed from step 2")
    logging.getLogger("absl").info("Finished saving checkpoint")
  assert capsys.readouterr().err == "INFO: resumed from step 2\n"
  assert "Finished saving checkpoint" in (tmp_path / "run" / "af_jax.log").read_text()
  with log_setup.routed("convert-weights", ["a.pth", "b.npz"]) as path:
    logging.getLogger("absl").warning(LIBRARY_NOTICE)
  assert path is None and capsys.readouterr().err == f"WARNING: {LIBRARY_NOTICE}\n"


def test_an_unwritable_log_folder_is_silently_skipped(tmp_path, capsys):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with log_setup.routed("localize", ["--workdir", str(blocker / "run"), "--out", "x"]):
    logging.getLogger("absl").warning(LIBRARY_NOTICE)
    logging.getLogger("af_jax.commands").warning("edge method differs")
  err = capsys.readouterr().err
  assert "Logging error" not in err and "Traceback" not in err
  assert "WARNING: edge method differs" in err


def test_help_writes_no_log_file(tmp_path):
  assert log_setup.log_file("demo", ["--help"]) == pathlib.Path("demo_out/af_jax.log")
  assert log_setup.log_file("train", ["--config", "c.py"]) is None
  proc = subprocess.run([sys.executable, "-m", "af_jax.cli", "prepare", "--help",
                         "--data_dir", str(tmp_path / "data")], env=subprocess_env(),
                        capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0 and not (tmp_path / "data").exists()


def test_the_vgg_fact_is_said_once_in_words(caplog):
  config = ml_collections.ConfigDict(dict(loss=dict(vgg=10.0, vgg_weights="")))
  train._warn_once.cache_clear()  # pylint: disable=protected-access
  with caplog.at_level(logging.INFO, logger="af_jax.training.train"):
    for _ in range(3):  # The demo's three stages.
      assert train.load_vgg(config) is None
    config.loss.vgg = 0.0
    assert train.load_vgg(config) is None  # Off by choice: nothing to say.
  assert [r.getMessage() for r in caplog.records if r.name == "af_jax.training.train"] == [
      "the VGG perceptual loss is off: no VGG19 weights were given (config.loss.vgg_weights: "
      "torchvision's vgg19 as .npz, .safetensors or .pth)"]


def test_prepare_in_a_pipe_prints_plain_lines_and_no_library_notices(tmp_path):
  """A real verb with stdout and stderr captured as pipes, as in CI logs."""
  data_dir = tmp_path / "data"
  proc = subprocess.run(
      [sys.executable, "-m", "af_jax.cli", "prepare", "--dataset", "synthetic", "--data_dir",
       str(data_dir), "--size", "32", "--edges", "canny", "--categories", "circuit"],
      env=subprocess_env(), capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr
  printed = proc.stdout + proc.stderr
  assert "\x1b[" not in printed and "\r" not in printed
  for notice in ("Using custom data configuration", "Downloading and preparing",
                 "Subsequent calls will reuse"):
    assert notice not in printed
  assert "prepare synthetic: done, 60 img in " in proc.stderr
  assert proc.stderr.count("af_jax.log") == 1
  logged = (data_dir / "af_jax.log").read_text()
  assert "Using custom data configuration" in logged and "building synthetic/circuit" in logged

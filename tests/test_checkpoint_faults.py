"""Checkpoints gone bad on disk: found by their checksums, skipped on resume, named on restore.

Real checkpoints of the session's tiny runs, corrupted the way disks and copies corrupt them:
cut short, bytes overwritten, an item folder missing. (A corrupt newest checkpoint that a
resumed run skips, continuing bitwise like an uninterrupted one: tests/training/test_train.py.)
"""

import logging
import os
import shutil

import numpy as np
import pytest

from af_jax import checkpoint
from af_jax import checkpoint_check
from af_jax import cli
from af_jax import infer
from af_jax import input_pipeline
from af_jax.training import train
from conftest import copy_run, corrupt_bytes, largest_file
from tiny_config import tiny_config


def _truncate(path):
  os.truncate(path, path.stat().st_size // 2)


CORRUPTIONS = {
    "cut short": (lambda step: _truncate(largest_file(step / "train")),
                  r"train/\S+ is \d+ bytes, \d+ when saved \(truncated"),
    "overwritten": (lambda step: corrupt_bytes(largest_file(step / "generator")),
                    r"generator/\S+ differs from when it was saved \(SHA-256 mismatch"),
    "item folder missing": (lambda step: shutil.rmtree(step / "data"),
                            "its data item folder is missing"),
    "manifest overwritten": (lambda step: corrupt_bytes(step / checkpoint_check.MANIFEST, 0, 40),
                             "checksum manifest af_jax_checksums.json is unreadable"),
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_every_kind_of_damage_is_found(runs, tmp_path, kind):
  step = copy_run(runs[0] / "boot", tmp_path / "boot") / checkpoint.CHECKPOINT_DIR / "2"
  assert checkpoint_check.verify(step, checkpoint.ITEMS)
  damage, reason = CORRUPTIONS[kind]
  damage(step)
  with pytest.raises(checkpoint_check.CorruptStepError, match=reason):
    checkpoint_check.verify(step, checkpoint.ITEMS)


def _with_step_1(src, dst):
  """A copy of a run whose step 2 is also there as step 1 (the same bytes)."""
  run = copy_run(src, dst)
  folder = run / checkpoint.CHECKPOINT_DIR
  shutil.copytree(folder / "2", folder / "1")
  return run


def test_inference_of_a_corrupt_step_names_it_and_the_intact_steps(runs, tmp_path, capsys):
  root, data_dir, names = runs
  flare = _with_step_1(root / "flare", tmp_path / "flare")
  corrupt_bytes(largest_file(flare / checkpoint.CHECKPOINT_DIR / "2" / "generator"))
  with pytest.raises(checkpoint.CheckpointError,
                     match=rf"checkpoint step 2 of {flare} is corrupt: generator/\S+ differs .*"
                           r"; intact steps: 1; choose one with --step N"):
    infer.Generator(flare)
  assert infer.Generator(flare, step=1).step == 1
  code = cli.main(["generate", "--workdir", str(flare), "--dataset", f"synthetic/{names[0]}",
                   "--data_dir", str(data_dir), "--out", str(tmp_path / "out")])
  err = capsys.readouterr().err
  # One error line, last (a note naming the log file of library warnings may come first).
  lines = err.strip().splitlines()
  assert code == 1 and "Traceback" not in err and lines[-1].startswith("af-jax generate: error:")
  assert sum("error:" in line for line in lines) == 1, err
  assert "--step N" in err and not (tmp_path / "out").exists()


def test_a_corrupt_teacher_step_names_the_option_to_choose_another(runs, tmp_path):
  root, data_dir, names = runs
  boot = _with_step_1(root / "boot", tmp_path / "boot")
  _truncate(largest_file(boot / checkpoint.CHECKPOINT_DIR / "2" / "generator"))
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"step 2 of .*boot is corrupt: generator/\S+ is \d+ bytes.*; intact "
                           r"steps: 1; choose one with --config.teacher_step=N"):
    train.train(tiny_config("flare", data_dir, names, teacher=boot), str(tmp_path / "flare"))


def test_resume_with_no_intact_step_stops_and_moves_nothing(runs, tmp_path):
  boot = copy_run(runs[0] / "boot", tmp_path / "boot")
  step = boot / checkpoint.CHECKPOINT_DIR / "2"
  _truncate(largest_file(step / "train"))
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"no intact checkpoint in .*: step 2: train/\S+ is \d+ bytes"):
    checkpoint.Checkpointer(boot).restore_latest(None, None, None)
  assert step.is_dir() and not (boot / checkpoint_check.CORRUPT_DIR).exists()


def test_a_checkpoint_without_manifest_that_cannot_be_read_is_skipped(runs, tmp_path, caplog):
  """Steps saved before manifests existed: a failed full restore marks them corrupt."""
  root, data_dir, names = runs
  boot = _with_step_1(root / "boot", tmp_path / "boot")
  folder = boot / checkpoint.CHECKPOINT_DIR
  for step in ("1", "2"):
    (folder / step / checkpoint_check.MANIFEST).unlink()
  _truncate(largest_file(folder / "2" / "train"))
  config = tiny_config("boot", data_dir, names, steps=2)
  config.model.num_d, config.model.n_layers_d = 1, 1  # As the runs fixture trained it.
  with caplog.at_level(logging.WARNING, logger="af_jax.checkpoint"):
    train.train(config, str(boot))
  (warning,) = [r.getMessage() for r in caplog.records if "is corrupt" in r.getMessage()]
  assert warning.startswith(f"checkpoint 2 of {boot} is corrupt: unreadable (OUT_OF_RANGE")
  assert "resumed from step 1" in warning
  assert (boot / checkpoint_check.CORRUPT_DIR / "2" / "train").is_dir()
  assert checkpoint.Checkpointer(boot).latest_step() == 2  # Trained again from step 1.
  assert checkpoint_check.verify(folder / "2", checkpoint.ITEMS)


def test_a_full_disk_stops_the_save_and_keeps_the_previous_checkpoint(tiny_synthetic,
                                                                       small_disk):
  data_dir, names = tiny_synthetic
  workdir = small_disk(1 << 20)
  config = tiny_config("boot", data_dir, names)
  data = input_pipeline.make_train_iterator(config.data, global_batch_size=4, seed=0)
  ckpt = checkpoint.Checkpointer(workdir)
  ckpt.save(1, {"w": np.ones(1000, np.float32)}, {"step": np.int32(1)}, data)
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"saving checkpoint 2 in .* failed: .*No space left on device"
                           r".*the latest intact checkpoint is step 1"):
    # 2 MB that no compression shrinks, for a 1 MB disk.
    ckpt.save(2, {"w": np.random.default_rng(0).random(1 << 19, np.float32)},
              {"step": np.int32(2)}, data)
  assert checkpoint.Checkpointer(workdir).latest_step() == 1
  assert checkpoint_check.verify(workdir / checkpoint.CHECKPOINT_DIR / "1", checkpoint.ITEMS)

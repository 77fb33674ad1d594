"""Training: the three stages chain, resume is exact after SIGKILL or from the newest intact
checkpoint, failures stop cleanly.

(Sharded and multi-process equivalence: tests/training/test_scale_out.py.)
"""

import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from af_jax import checkpoint
from af_jax import checkpoint_check
from af_jax.training import losses
from af_jax.training import train
from conftest import copy_run, corrupt_bytes, largest_file, subprocess_env
from tiny_config import tiny_config


def _leaves(workdir):
  params, _ = checkpoint.restore_generator(workdir)
  return [np.asarray(x) for x in jax.tree.leaves(params)]


def test_three_stages_train_and_write_everything(runs):
  root, _, _ = runs
  for stage in ("boot", "flare", "blaze"):
    workdir = root / stage
    assert checkpoint.load_config(workdir).stage == stage
    assert checkpoint.Checkpointer(workdir).latest_step() == 2
    acc = event_accumulator.EventAccumulator(str(workdir / "metrics")).Reload()
    tags = acc.Tags()
    assert {"g_loss", "d_loss", "g_gan", "g_feature_matching", "learning_rate",
            "images_per_sec"} <= set(tags["scalars"]), tags
    assert ("g_heatmap" in tags["scalars"]) == (stage != "boot")
    assert all(np.isfinite(e.value) for e in acc.Scalars("g_loss"))
    assert tags["images"], f"no image grid written for {stage}"
  # Each stage trained its own generator: a Flare checkpoint differs from its Boot teacher.
  assert any(not np.array_equal(a, b)
             for a, b in zip(_leaves(root / "boot"), _leaves(root / "flare")))


def test_wrong_or_missing_teacher_is_refused(runs, tmp_path):
  root, data_dir, names = runs
  with pytest.raises(checkpoint.CheckpointError, match="'boot' run.*'flare'"):
    train.train(tiny_config("blaze", data_dir, names, teacher=root / "boot"), str(tmp_path / "b"))
  with pytest.raises(ValueError, match="teacher_workdir"):
    train.train(tiny_config("flare", data_dir, names), str(tmp_path / "f"))
  with pytest.raises(checkpoint.CheckpointError, match="not an af_jax training workdir"):
    train.train(tiny_config("flare", data_dir, names, teacher=tmp_path / "nowhere"),
                str(tmp_path / "g"))


_TRAIN_SCRIPT = """
  import os, signal, sys
  from af_jax import checkpoint
  from af_jax.training import train
  from tiny_config import tiny_config
  data_dir, names, workdir, kill_after = sys.argv[1], sys.argv[2].split(","), sys.argv[3], int(sys.argv[4])
  config = tiny_config("boot", data_dir, names, steps=4)
  save = checkpoint.Checkpointer.save
  def save_then_die(self, step, *args):
    save(self, step, *args)
    if step == kill_after:
      os.kill(os.getpid(), signal.SIGKILL)
  checkpoint.Checkpointer.save = save_then_die
  train.train(config, workdir)
"""


def test_resume_after_sigkill_is_exact(tiny_synthetic, tmp_path):
  data_dir, names = tiny_synthetic

  def run(workdir, kill_after):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(_TRAIN_SCRIPT), str(data_dir),
                           ",".join(names), str(workdir), str(kill_after)],
                          env=subprocess_env(), capture_output=True, text=True, timeout=600)

  straight = tmp_path / "straight"
  proc = run(straight, -1)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # Killed right after the step-2 checkpoint; the same command then resumes to 4.
  resumed = tmp_path / "resumed"
  proc = run(resumed, 2)
  assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-3000:])
  assert checkpoint.Checkpointer(resumed).latest_step() == 2
  # A checkpoint interrupted while being written is never listed or restored.
  partial = resumed / checkpoint.CHECKPOINT_DIR / "3.orbax-checkpoint-tmp-1234"
  (partial / "generator").mkdir(parents=True)
  assert checkpoint.Checkpointer(resumed).latest_step() == 2
  proc = run(resumed, -1)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert checkpoint.Checkpointer(resumed).latest_step() == 4
  for x, y in zip(_leaves(straight), _leaves(resumed)):
    np.testing.assert_array_equal(x, y)

  # Bytes of the newest checkpoint overwritten on disk: the same command resumes from step 2
  # instead (one warning; step 4 moved aside, not deleted) and, from step 2's data iterator
  # state, ends bitwise where the straight run did.
  corrupted = copy_run(straight, tmp_path / "corrupted")
  corrupt_bytes(largest_file(corrupted / checkpoint.CHECKPOINT_DIR / "4" / "train"))
  proc = run(corrupted, -1)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (warning,) = [line for line in proc.stderr.splitlines() if "is corrupt" in line]
  assert f"checkpoint 4 of {corrupted} is corrupt: train/" in warning
  assert "SHA-256 mismatch" in warning and "resumed from step 2" in warning
  assert (corrupted / checkpoint_check.CORRUPT_DIR / "4" / "train").is_dir()
  assert checkpoint.Checkpointer(corrupted).latest_step() == 4
  for x, y in zip(_leaves(straight), _leaves(corrupted)):
    np.testing.assert_array_equal(x, y)


def test_nan_loss_stops_with_step_and_term_and_keeps_checkpoint(tiny_synthetic, tmp_path,
                                                                monkeypatch):
  data_dir, names = tiny_synthetic
  train.train(tiny_config("boot", data_dir, names, steps=4), str(tmp_path))
  good = _leaves(tmp_path)
  monkeypatch.setattr(losses, "lsgan_generator_loss", lambda outputs: np.float32(np.nan))
  with pytest.raises(train.NonFiniteLossError, match=r"step 5: g_gan=nan"):
    train.train(tiny_config("boot", data_dir, names, steps=8), str(tmp_path))
  assert checkpoint.Checkpointer(tmp_path).latest_step() == 4
  for x, y in zip(good, _leaves(tmp_path)):
    np.testing.assert_array_equal(x, y)

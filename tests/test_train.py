"""Training: the three stages chain, resume is exact after SIGKILL, failures stop cleanly,
and the sharded / multi-process step equals the single-device one."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from af_jax import checkpoint, losses, train
from tiny_config import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run_script(code: str, *, env_extra=None, timeout=600, check=True):
  env = dict(os.environ, PYTHONPATH=f"{REPO}:{REPO / 'tests'}", JAX_PLATFORMS="cpu",
             **(env_extra or {}))
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                        capture_output=True, text=True, timeout=timeout)
  if check and proc.returncode != 0:
    raise AssertionError(f"script failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
  return proc


def _params(workdir):
  params, step = checkpoint.restore_generator(workdir)
  return params, step


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def chain(tiny_synthetic, tmp_path_factory):
  """Boot -> Flare -> Blaze, 4 steps each, on the tiny synthetic set."""
  data_dir, names = tiny_synthetic
  root = tmp_path_factory.mktemp("runs")
  metrics, teacher = {}, ""
  for stage in ("boot", "flare", "blaze"):
    metrics[stage] = train.train(tiny_config(stage, data_dir, names, teacher=teacher),
                                 str(root / stage))
    teacher = root / stage
  return root, metrics


def test_three_stages_train_and_write_everything(chain):
  root, metrics = chain
  assert "g_heatmap" not in metrics["boot"]
  for stage in ("boot", "flare", "blaze"):
    m = metrics[stage]
    assert all(np.isfinite(v) for v in m.values()), m
    assert m["images_per_sec"] > 0 and m["g_loss"] > 0 and m["d_loss"] > 0
    if stage != "boot":
      assert m["g_heatmap"] >= 0
    workdir = root / stage
    assert checkpoint.load_config(workdir).stage == stage
    assert checkpoint.Checkpointer(workdir).latest_step() == 4
    events = list((workdir / "metrics").glob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file in {workdir / 'metrics'}"
    from tensorboard.backend.event_processing import event_accumulator
    acc = event_accumulator.EventAccumulator(str(workdir / "metrics")).Reload()
    assert "g_loss" in acc.Tags()["scalars"] and acc.Tags()["images"], acc.Tags()
  # The teacher's params were really used: a Flare checkpoint differs from its Boot teacher.
  boot, _ = _params(root / "boot")
  flare, _ = _params(root / "flare")
  assert any(not np.array_equal(a, b) for a, b in zip(_leaves(boot), _leaves(flare)))


def test_wrong_or_missing_teacher_is_refused(chain, tiny_synthetic, tmp_path):
  root, _ = chain
  data_dir, names = tiny_synthetic
  with pytest.raises(checkpoint.CheckpointError, match="'boot' run.*'flare'"):
    train.train(tiny_config("blaze", data_dir, names, teacher=root / "boot"), str(tmp_path / "b"))
  with pytest.raises(ValueError, match="teacher_workdir"):
    train.train(tiny_config("flare", data_dir, names), str(tmp_path / "f"))
  with pytest.raises(checkpoint.CheckpointError, match="not an af_jax training workdir"):
    train.train(tiny_config("flare", data_dir, names, teacher=tmp_path / "nowhere"),
                str(tmp_path / "g"))


_TRAIN_SCRIPT = """
  import os, signal, sys
  from af_jax import checkpoint, train
  from tiny_config import tiny_config
  data_dir, names, workdir, kill_after = sys.argv[1], sys.argv[2].split(","), sys.argv[3], int(sys.argv[4])
  config = tiny_config("boot", data_dir, names, steps=6)
  config.checkpoint_every_steps = 3
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
  common = [str(data_dir), ",".join(names)]
  # Straight through to step 6.
  straight = tmp_path / "straight"
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_TRAIN_SCRIPT), *common,
                         str(straight), "-1"], env=_env(), capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # Killed right after the step-3 checkpoint, then the same command resumes to 6.
  resumed = tmp_path / "resumed"
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_TRAIN_SCRIPT), *common,
                         str(resumed), "3"], env=_env(), capture_output=True, text=True)
  assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-3000:])
  assert checkpoint.Checkpointer(resumed).latest_step() == 3
  # A checkpoint interrupted while being written is never listed or restored.
  partial = resumed / checkpoint.CHECKPOINT_DIR / "4.orbax-checkpoint-tmp-1234"
  (partial / "generator").mkdir(parents=True)
  assert checkpoint.Checkpointer(resumed).latest_step() == 3
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_TRAIN_SCRIPT), *common,
                         str(resumed), "-1"], env=_env(), capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  a, step_a = _params(straight)
  b, step_b = _params(resumed)
  assert step_a == step_b == 6
  for x, y in zip(_leaves(a), _leaves(b)):
    np.testing.assert_array_equal(x, y)


def _env(**extra):
  return dict(os.environ, PYTHONPATH=f"{REPO}:{REPO / 'tests'}", JAX_PLATFORMS="cpu", **extra)


def test_nan_loss_stops_with_step_and_term_and_keeps_checkpoint(tiny_synthetic, tmp_path,
                                                                monkeypatch):
  data_dir, names = tiny_synthetic
  config = tiny_config("boot", data_dir, names, steps=2)
  train.train(config, str(tmp_path))
  good, _ = _params(tmp_path)
  monkeypatch.setattr(losses, "lsgan_generator_loss", lambda outputs: np.float32(np.nan))
  config = tiny_config("boot", data_dir, names, steps=6)
  with pytest.raises(train.NonFiniteLossError, match=r"step 3: g_gan=nan"):
    train.train(config, str(tmp_path))
  assert checkpoint.Checkpointer(tmp_path).latest_step() == 2
  after, _ = _params(tmp_path)
  for x, y in zip(_leaves(good), _leaves(after)):
    np.testing.assert_array_equal(x, y)

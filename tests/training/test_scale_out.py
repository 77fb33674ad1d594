"""Scale-out: a step on a sharded mesh equals the 1-device step, and a 2-process run trains
in lockstep on disjoint halves of each batch and writes checkpoints that restore.

The device count is fixed when JAX starts, so every run here is a subprocess with simulated
CPU devices (`--xla_force_host_platform_device_count`). XLA's CPU backend optimizes slowly
and these models are tiny, so the subprocesses compile without LLVM's expensive passes.
"""

import hashlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from af_jax import checkpoint
from af_jax import input_pipeline
import conftest

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
TIMEOUT_S = 240


def _env(num_devices: int, **extra) -> dict:
  return dict(os.environ, PYTHONPATH=conftest.PYTHONPATH, JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices} {FAST_COMPILE}",
              **extra)


def _run(script: str, *args, num_devices: int) -> None:
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
                        env=_env(num_devices), capture_output=True, text=True,
                        timeout=TIMEOUT_S)
  assert proc.returncode == 0, f"subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}"


def _digest(array) -> str:
  array = np.ascontiguousarray(array)
  return hashlib.sha1(array.tobytes() + str((array.shape, array.dtype)).encode()).hexdigest()


# ------------------------------------------------------------------ one step on three meshes

_MESH_SCRIPT = """
  import json, sys
  import jax, numpy as np
  from af_jax import input_pipeline
  from af_jax import sharding
  from af_jax.training import train
  from tiny_config import tiny_config

  data_dir, names, out = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
  config = tiny_config("boot", data_dir, names, batch_size=8)
  local_batch = next(input_pipeline.make_train_iterator(
      config.data, global_batch_size=8, seed=config.seed, process_index=0, process_count=1))
  specs = {}
  for name, fsdp, devices in (("single", 1, jax.devices()[:1]), ("data8", 1, jax.devices()),
                              ("data4_fsdp2", 2, jax.devices())):
    mesh = sharding.make_mesh(fsdp, devices)
    program = train.build_program(config, mesh, num_steps=4)
    state = program.init(jax.random.PRNGKey(config.seed))
    init = jax.device_get(state)
    batch = input_pipeline.make_global_batch(local_batch, mesh, axis=sharding.DATA_AXES)
    state, metrics = program.step(state, batch, None, None)
    specs[name] = {jax.tree_util.keystr(p): [leaf.shape, str(leaf.sharding.spec)]
                   for p, leaf in jax.tree_util.tree_leaves_with_path(state)}
    groups = dict(init=init, metrics=metrics, step=state.step, rng=state.rng,
                  generator=state.generator, g_mu=state.g_opt[0].mu, g_nu=state.g_opt[0].nu,
                  discriminator=state.discriminator, d_mu=state.d_opt[0].mu,
                  d_nu=state.d_opt[0].nu)
    flat = {f"{group}/{jax.tree_util.keystr(path)}": np.asarray(leaf)
            for group, tree in groups.items()
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
    np.savez(f"{out}/{name}.npz", **flat)
  with open(f"{out}/specs.json", "w") as f:
    json.dump(specs, f)
"""


@pytest.fixture(scope="module")
def mesh_runs(tiny_synthetic, tmp_path_factory):
  """One boot step (batch 8) on 1 device, on 8 (data) and on 4 x 2 (data x fsdp)."""
  data_dir, names = tiny_synthetic
  out = tmp_path_factory.mktemp("mesh_runs")
  _run(_MESH_SCRIPT, data_dir, ",".join(names), out, num_devices=8)
  runs = {name: dict(np.load(out / f"{name}.npz"))
          for name in ("single", "data8", "data4_fsdp2")}
  return runs, json.loads((out / "specs.json").read_text())


def _group(run: dict, group: str) -> dict:
  return {k.split("/", 1)[1]: v for k, v in run.items() if k.startswith(group + "/")}


def _assert_same_step(reference: dict, other: dict) -> None:
  """Same init, losses, gradients and (where defined by the gradient) updated parameters."""
  assert reference.keys() == other.keys()
  for group, rtol, atol in (("init", 1e-6, 1e-9), ("metrics", 1e-5, 1e-6),
                            ("g_mu", 1e-4, 1e-6), ("d_mu", 1e-4, 1e-6),
                            ("g_nu", 1e-4, 1e-8), ("d_nu", 1e-4, 1e-8)):
    for key, value in _group(reference, group).items():
      np.testing.assert_allclose(_group(other, group)[key], value, rtol=rtol, atol=atol,
                                 err_msg=f"{group} {key}")
  for group in ("step", "rng"):
    for key, value in _group(reference, group).items():
      np.testing.assert_array_equal(_group(other, group)[key], value, err_msg=group)
  # After one step Adam's moments are (1 - b1) g and (1 - b2) g^2, compared above. Its update
  # is lr * g / (|g| + eps): where g is round-off (biases in front of an instance norm, whose
  # true gradient is 0) the update is an arbitrary value in [-lr, lr], elsewhere it is exact.
  learning_rate = float(_group(reference, "metrics")["['learning_rate']"])
  defined = total = 0
  for params, moment in (("generator", "g_mu"), ("discriminator", "d_mu")):
    gradients = _group(reference, moment)
    for key, value in _group(reference, params).items():
      new = _group(other, params)[key]
      mask = np.abs(gradients[key]) > 1e-5
      np.testing.assert_allclose(new[mask], value[mask], rtol=1e-6, atol=1e-7, err_msg=key)
      assert np.all(np.abs(new - value) <= 2 * learning_rate * (1 + 1e-3)), key
      defined, total = defined + mask.sum(), total + mask.size
  assert defined > 0.9 * total, f"only {defined} of {total} gradients are above round-off"


def test_data_parallel_step_equals_single_device_step(mesh_runs):
  runs, specs = mesh_runs
  assert {spec for _, spec in specs["data8"].values()} == {"P()"}
  _assert_same_step(runs["single"], runs["data8"])


def test_fsdp_step_shards_parameters_and_equals_single_device_step(mesh_runs):
  runs, specs = mesh_runs
  # Kernels (and their Adam moments) are split over their output channels; biases, the step
  # and the RNG are replicated. The split arrays hold nearly all parameters.
  split = replicated = 0
  for key, (shape, spec) in specs["data4_fsdp2"].items():
    if len(shape) == 4 and shape[-1] % 2 == 0:
      assert spec == "P(None, None, None, 'fsdp')", (key, shape, spec)
      split += np.prod(shape)
    else:
      assert spec == "P()", (key, shape, spec)
      replicated += np.prod(shape)
  assert split > 0.9 * (split + replicated)
  assert specs["data4_fsdp2"][".generator['params']['encoder']['down_1']['kernel']"][1] != "P()"
  _assert_same_step(runs["single"], runs["data4_fsdp2"])


# ------------------------------------------------------------------ two processes

_WORKER_SCRIPT = """
  import itertools, json, sys
  import jax, numpy as np
  from af_jax import checkpoint
  from af_jax import input_pipeline
  from af_jax.commands import train

  process_id, port, config_file, workdir, out = sys.argv[1:6]
  make_global_batch, save = input_pipeline.make_global_batch, checkpoint.Checkpointer.save
  batch_number = itertools.count(1)

  def recording_make_global_batch(local_batch, mesh, axis):
    np.savez(f"{out}/batch_{next(batch_number)}.npz", **local_batch)
    return make_global_batch(local_batch, mesh, axis)

  def held_copy(x):
    # What this process holds: its shards, assembled; NaN where it holds nothing.
    copy = np.full(x.shape, np.nan, x.dtype)
    for shard in x.addressable_shards:
      copy[shard.index] = np.asarray(shard.data)
    return copy

  def recording_save(self, step, generator, train_part, data_iterator):
    save(self, step, generator, train_part, data_iterator)
    leaves = jax.tree_util.tree_leaves_with_path(generator)
    np.savez(f"{out}/params_{step}.npz",
             **{jax.tree_util.keystr(p): held_copy(x) for p, x in leaves})
    with open(f"{out}/mesh.json", "w") as f:
      json.dump(dict(process_count=jax.process_count(), devices=jax.device_count(),
                     local_devices=jax.local_device_count(),
                     fully_addressable=[x.is_fully_addressable for _, x in leaves],
                     specs=[str(x.sharding.spec) for _, x in leaves]), f)

  input_pipeline.make_global_batch = recording_make_global_batch
  checkpoint.Checkpointer.save = recording_save
  train.main(["--config", config_file, "--workdir", workdir,
              "--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2",
              "--process_id", process_id])
"""

_CONFIG_FILE = """
from tiny_config import tiny_config

def get_config():
  config = tiny_config("boot", {data_dir!r}, {names!r}, steps=3, batch_size=8)
  config.mesh.fsdp = 2
  config.checkpoint_every_steps = 2
  config.image_every_steps = 2
  return config
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _train_two_processes(config_file, workdir, out, cache_dir) -> list[pathlib.Path]:
  """Runs `af-jax train` as processes 0 and 1 (2 CPU devices each); returns their out dirs.

  A process that fails leaves its peer waiting in a collective, so the first failure (or the
  deadline) ends both.
  """
  port = _free_port()
  outs = [out / f"process_{i}" for i in range(2)]
  procs = []
  try:
    for i, process_out in enumerate(outs):
      process_out.mkdir(parents=True)
      with open(process_out / "log.txt", "w") as log:
        procs.append(subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_WORKER_SCRIPT), str(i), str(port),
             str(config_file), str(workdir), str(process_out)],
            env=_env(2, JAX_COMPILATION_CACHE_DIR=str(cache_dir)), stdout=log,
            stderr=subprocess.STDOUT))
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
      codes = [proc.poll() for proc in procs]
      if all(code == 0 for code in codes) or any(code not in (None, 0) for code in codes):
        break
      time.sleep(0.2)
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  for proc, process_out in zip(procs, outs):
    assert proc.returncode == 0, (
        f"{process_out.name} exited with {proc.returncode} (-9: killed after the other failed "
        f"or after {TIMEOUT_S} s):\n{(process_out / 'log.txt').read_text()[-4000:]}")
  return outs


@pytest.fixture(scope="module")
def two_process_run(tiny_synthetic, tmp_path_factory):
  """3 boot steps on 2 processes (checkpoints at 2 and 3), then a resume from step 2."""
  data_dir, names = tiny_synthetic
  root = tmp_path_factory.mktemp("two_processes")
  config_file = root / "tiny_boot.py"
  config_file.write_text(_CONFIG_FILE.format(data_dir=str(data_dir), names=list(names)))
  workdir = root / "run"
  straight = _train_two_processes(config_file, workdir, root / "straight", root / "cache")
  resumed_workdir = root / "resumed_run"
  shutil.copytree(workdir, resumed_workdir,
                  ignore=lambda folder, _: ["3"] if folder.endswith(checkpoint.CHECKPOINT_DIR)
                  else [])
  resumed = _train_two_processes(config_file, resumed_workdir, root / "resumed",
                                 root / "cache")
  return dict(workdir=workdir, straight=straight, resumed=resumed)


def _local_batches(process_out: pathlib.Path) -> list[dict]:
  files = sorted(process_out.glob("batch_*.npz"), key=lambda f: int(f.stem.split("_")[1]))
  return [dict(np.load(f)) for f in files]


def _examples(batch: dict) -> list[tuple[str, int]]:
  return [(_digest(image), int(source)) for image, source in zip(batch["image"], batch["source"])]


def _held_params(process_out: pathlib.Path, step: int) -> dict:
  return dict(np.load(process_out / f"params_{step}.npz"))


def test_two_processes_read_disjoint_halves_of_the_single_process_batches(two_process_run):
  config = checkpoint.load_config(two_process_run["workdir"])
  single = input_pipeline.make_train_iterator(config.data, global_batch_size=config.batch_size,
                                              seed=config.seed,
                                              process_index=0, process_count=1)
  per_process = [_local_batches(out) for out in two_process_run["straight"]]
  assert [len(b) for b in per_process] == [3, 3]
  for step, (first, second) in enumerate(zip(*per_process), start=1):
    expected = _examples(next(single))
    assert len(set(expected)) == config.batch_size, "a batch repeats an image: ambiguous test"
    first, second = _examples(first), _examples(second)
    assert len(first) == len(second) == config.batch_size // 2, step
    assert not set(first) & set(second), f"step {step}: both processes read the same example"
    assert sorted(first + second) == sorted(expected), step


def test_two_processes_hold_identical_parameters(two_process_run):
  first, second = two_process_run["straight"]
  mesh = json.loads((first / "mesh.json").read_text())
  assert (mesh["process_count"], mesh["devices"], mesh["local_devices"]) == (2, 4, 2)
  # The arrays span both processes, and fsdp really splits some of them.
  assert not any(mesh["fully_addressable"])
  assert any("fsdp" in spec for spec in mesh["specs"])
  for step in (2, 3):
    mine, theirs = _held_params(first, step), _held_params(second, step)
    assert mine.keys() == theirs.keys()
    for key in mine:
      assert not np.isnan(mine[key]).any(), f"process 0 holds only part of {key}"
      np.testing.assert_array_equal(theirs[key], mine[key], err_msg=f"step {step} {key}")
  step_2, step_3 = _held_params(first, 2), _held_params(first, 3)
  assert any(not np.array_equal(step_2[k], step_3[k]) for k in step_2)


def test_checkpoints_of_two_process_run_restore_on_one_device(two_process_run):
  """A run trained on 4 devices read here (1 device), as such and the way inference does."""
  from af_jax import runs
  workdir = two_process_run["workdir"]
  for step in (2, 3):
    held = _held_params(two_process_run["straight"][0], step)
    host_arrays, restored_step = checkpoint.restore_generator(workdir, step=step)
    assert restored_step == step
    for restored in (host_arrays, runs.load_run(workdir, "boot", step=step).params):
      leaves = jax.tree_util.tree_leaves_with_path(restored)
      assert {jax.tree_util.keystr(p) for p, _ in leaves} == held.keys()
      for path, leaf in leaves:
        key = jax.tree_util.keystr(path)
        np.testing.assert_array_equal(np.asarray(leaf), held[key], err_msg=f"step {step} {key}")


def test_two_processes_log_once(two_process_run):
  lines = (two_process_run["workdir"] / "metrics" / "metrics.jsonl").read_text().splitlines()
  records = [json.loads(line) for line in lines]
  assert [r["step"] for r in records if r["kind"] == "scalars"] == [1, 2, 3]
  assert [r["step"] for r in records if r["kind"] == "images"] == [2]


def test_two_process_run_resumes_exactly(two_process_run):
  for straight, resumed in zip(two_process_run["straight"], two_process_run["resumed"]):
    # The resumed run restored step 2 and ran step 3 only: same data slice, same parameters.
    (resumed_batch,) = _local_batches(resumed)
    assert _examples(resumed_batch) == _examples(_local_batches(straight)[2])
    assert not (resumed / "params_2.npz").exists()
    for key, value in _held_params(straight, 3).items():
      np.testing.assert_array_equal(_held_params(resumed, 3)[key], value, err_msg=key)


def test_mesh_refuses_an_fsdp_size_that_does_not_divide_the_devices():
  from af_jax import sharding
  devices = jax.devices()
  assert sharding.make_mesh(len(devices)).shape == {"data": 1, "fsdp": len(devices)}
  for fsdp in (0, len(devices) + 1, 1.5):
    with pytest.raises(ValueError, match=rf"mesh.fsdp={fsdp} must be a positive int dividing"):
      sharding.make_mesh(fsdp)

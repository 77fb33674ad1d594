"""Orbax checkpoints of a training run, and the run's config beside them.

A workdir holds:
  config.json                 the full config of the run (the teacher's and inference's source
                              of truth for model sizes, the stage and the data facts); one
                              that uses a moved field is refused naming the new one.
  checkpoints/<step>/generator  generator parameters only (what teachers and inference read),
  checkpoints/<step>/train      everything else: discriminator, both optimizer states, step, RNG,
  checkpoints/<step>/data       the grain iterator state, one file per process.

Orbax writes each step into a temporary directory and renames it when every item is complete,
so a checkpoint interrupted while being written is never listed, never restored.
"""

import json
import pathlib

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from af_jax import stage_registry

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
  """A workdir holds no usable checkpoint, or one of another kind."""


def save_config(workdir, config: ml_collections.ConfigDict) -> None:
  """Writes config.json (process 0 only), atomically."""
  if jax.process_index() != 0:
    return
  path = pathlib.Path(workdir) / CONFIG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(config.to_json_best_effort(indent=2, sort_keys=True))
  tmp.replace(path)


def load_config(workdir) -> ml_collections.ConfigDict:
  """The config a run was trained with; a clear error when the workdir is not a run."""
  path = pathlib.Path(workdir) / CONFIG_FILE
  if not path.is_file():
    raise CheckpointError(f"{path} not found: {workdir} is not an af_jax training workdir "
                          "(train one with `af-jax train --workdir ...`)")
  config = ml_collections.ConfigDict(json.loads(path.read_text()))
  stage_registry.check_config(config, str(path))
  return config


def _manager(workdir, keep: int | None = None, read_only: bool = False):
  directory = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only,
      enable_async_checkpointing=False, cleanup_tmp_directories=not read_only)
  return ocp.CheckpointManager(
      directory, options=options,
      item_handlers={"generator": ocp.StandardCheckpointHandler(),
                     "train": ocp.StandardCheckpointHandler(),
                     "data": grain.checkpoint.CheckpointHandler()})


class Checkpointer:
  """Saves and restores the full training state of one workdir."""

  def __init__(self, workdir, keep: int = 3):
    self._manager = _manager(workdir, keep)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, generator, train, data_iterator) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        generator=ocp.args.StandardSave(generator),
        train=ocp.args.StandardSave(train),
        data=grain.checkpoint.CheckpointSave(data_iterator)))
    self._manager.wait_until_finished()

  def restore(self, step: int, abstract_generator, abstract_train, data_iterator):
    """Restores into the shapes/shardings of the abstract trees; sets the iterator's state."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        generator=ocp.args.StandardRestore(abstract_generator),
        train=ocp.args.StandardRestore(abstract_train),
        data=grain.checkpoint.CheckpointRestore(data_iterator)))
    return restored["generator"], restored["train"]

  def close(self) -> None:
    self._manager.close()


def restore_generator(workdir, abstract_params=None, step: int = -1):
  """Generator parameters of a run (latest step when step < 0), nothing else.

  `abstract_params` (a tree of jax.ShapeDtypeStruct with shardings) places them on devices and
  checks their shapes; without it they land on this process's first device.
  """
  manager = _manager(workdir, read_only=True)
  steps = manager.all_steps()
  if not steps:
    raise CheckpointError(f"no complete checkpoint in {pathlib.Path(workdir) / CHECKPOINT_DIR} "
                          "(an interrupted save is never used)")
  step = max(steps) if step < 0 else step
  if step not in steps:
    raise CheckpointError(f"step {step} is not among the checkpoints of {workdir}: {sorted(steps)}")
  # Without target shardings, arrays saved from many devices land on this process's first
  # device (a run trained on 8 GPUs restores on a laptop).
  fallback = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        generator=ocp.args.StandardRestore(abstract_params, fallback_sharding=fallback)))
  except (ValueError, KeyError) as e:
    raise CheckpointError(f"checkpoint {step} of {workdir} does not match the expected generator "
                          f"(wrong stage or model config?): {e}") from e
  finally:
    manager.close()
  return restored["generator"], step

"""Orbax checkpoints of a training run, and the run's config beside them.

A workdir holds:
  config.json                 the full config of the run (the teacher's and inference's source
                              of truth for model sizes, the stage and the data facts); one
                              that uses a moved field is refused naming the new one.
  checkpoints/<step>/generator  generator parameters only (what teachers and inference read),
  checkpoints/<step>/train      everything else: discriminator, both optimizer states, step, RNG,
  checkpoints/<step>/data       the grain iterator state, one file per process.
  checkpoints/<step>/af_jax_checksums.json  size and SHA-256 of every file above.
  corrupt_checkpoints/<step>  steps found corrupt when resuming, moved aside (never deleted).

Orbax writes each step into a temporary directory and renames it when every item is complete,
so a checkpoint interrupted while being written is never listed, never restored.

Faults on disk (a copy cut short, a bad disk, a deleted folder) are found before a step is
used, by `af_jax.checkpoint_check`: each step carries a checksum manifest of every file, and
  * resuming (`Checkpointer.restore_latest`) skips corrupt steps, newest first, restores the
    newest intact one and moves the corrupt ones aside into `corrupt_checkpoints/` (never
    deleting them), one warning line each;
  * a teacher or inference restore (`restore_generator`) of a corrupt step stops, naming the
    workdir, the step, why, and the intact steps to choose instead.
A failed save (disk full, write error) raises `CheckpointError`; Orbax never lists the partly
written step, so the previous checkpoint stays the latest.
"""

import json
import logging
import pathlib

import grain
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from af_jax import checkpoint_check
from af_jax import files
from af_jax import stage_registry

log = logging.getLogger(__name__)

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
  files.write_text(path, config.to_json_best_effort(indent=2, sort_keys=True))


def load_config(workdir) -> ml_collections.ConfigDict:
  """The config a run was trained with; a clear error when the workdir is not a run."""
  path = pathlib.Path(workdir) / CONFIG_FILE
  if not path.is_file():
    raise CheckpointError(f"{path} not found: {workdir} is not an af_jax training workdir "
                          "(train one with `af-jax train --config CONFIG.py --workdir DIR`)")
  try:
    fields = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{path} is not valid JSON ({e}): the run's config is damaged; "
                          "restore it from a copy of the run") from e
  if not isinstance(fields, dict) or not all(k in fields for k in ("stage", "model", "data")):
    raise CheckpointError(f"{path} is not an af_jax run config (it lacks 'stage', 'model' or "
                          "'data'): the run's config is damaged; restore it from a copy of the "
                          "run")
  config = ml_collections.ConfigDict(fields)
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


ITEMS = ("generator", "train", "data")


def _first_line(error: BaseException) -> str:
  """The gist of a (possibly many-line) Orbax/TensorStore error: its root cause's first line
  (Orbax wraps TensorStore's precise message in a generic one that dumps a spec)."""
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  return (str(error).strip().splitlines() or [type(error).__name__])[0][:600]


class Checkpointer:
  """Saves and restores the full training state of one workdir (module docstring)."""

  def __init__(self, workdir, keep: int = 3):
    self.workdir = pathlib.Path(workdir)
    self._manager = _manager(workdir, keep)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def _step_dir(self, step: int) -> pathlib.Path:
    return self.workdir.absolute() / CHECKPOINT_DIR / str(step)

  def save(self, step: int, generator, train, data_iterator) -> None:
    """Saves a step and its checksum manifest; a failed write raises CheckpointError.

    Orbax commits a step by renaming its temporary folder once every item is written, so
    when the disk fills up or a write fails, the step is never listed and the previous
    checkpoint stays the latest, intact.
    """
    try:
      self._manager.save(step, args=ocp.args.Composite(
          generator=ocp.args.StandardSave(generator),
          train=ocp.args.StandardSave(train),
          data=grain.checkpoint.CheckpointSave(data_iterator)))
      self._manager.wait_until_finished()
      if jax.process_index() == 0:  # After the commit every process's files are there.
        checkpoint_check.write_manifest(self._step_dir(step))
    except (OSError, ValueError) as e:  # TensorStore reports write errors as ValueError.
      previous = [s for s in self._manager.all_steps() if s < step]
      kept = (f"the latest intact checkpoint is step {max(previous)}" if previous
              else "no earlier checkpoint exists")
      raise CheckpointError(
          f"saving checkpoint {step} in {self.workdir / CHECKPOINT_DIR} failed: "
          f"{_first_line(e)}; training stopped, {kept} (free disk space or fix the disk, then "
          "re-run the same command to resume)") from e

  def restore(self, step: int, abstract_generator, abstract_train, data_iterator):
    """Restores into the shapes/shardings of the abstract trees; sets the iterator's state."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        generator=ocp.args.StandardRestore(abstract_generator),
        train=ocp.args.StandardRestore(abstract_train),
        data=grain.checkpoint.CheckpointRestore(data_iterator)))
    return restored["generator"], restored["train"]

  def _newest_usable(self, steps: list[int], corrupt: dict[int, str]) -> int | None:
    """The newest of `steps` whose files pass the manifest check (or that has no manifest),
    adding the failing ones to `corrupt`; decided by process 0, which reads the files once,
    and followed by every other process."""
    choice = -1
    if jax.process_index() == 0:
      for step in steps:
        try:
          checkpoint_check.verify(self._step_dir(step), ITEMS)
        except checkpoint_check.CorruptStepError as e:
          corrupt[step] = e.reason
          continue
        choice = step
        break
    if jax.process_count() > 1:
      choice = int(multihost_utils.broadcast_one_to_all(np.int32(choice)))
    return None if choice < 0 else choice

  def restore_latest(self, abstract_generator, abstract_train, data_iterator):
    """(step, generator, train) of the newest intact checkpoint, or None when there is none.

    Corrupt newer steps (module docstring) are moved aside, one warning each, once an intact
    step has been restored; when no step is intact nothing is moved and CheckpointError lists
    every step's problem. An unverified step (no manifest) that fails to restore counts as
    corrupt in a single-process run; in a multi-process run a failed collective restore
    cannot be retried safely, so it stops, naming the step to move aside.
    """
    remaining = sorted(self._manager.all_steps(), reverse=True)
    if not remaining:
      return None
    corrupt: dict[int, str] = {}
    while (step := self._newest_usable(remaining, corrupt)) is not None:
      verified = (self._step_dir(step) / checkpoint_check.MANIFEST).is_file()
      try:
        generator, train = self.restore(step, abstract_generator, abstract_train, data_iterator)
      except Exception as e:  # pylint: disable=broad-except  # Orbax raises bare Exceptions.
        if verified:  # Bytes as saved that do not fit: another model config, not a bad disk.
          raise CheckpointError(f"checkpoint {step} of {self.workdir} is intact but does not "
                                f"match this run's config: {_first_line(e)}") from e
        if jax.process_count() > 1:
          raise CheckpointError(
              f"checkpoint {step} of {self.workdir} (saved without a checksum manifest) cannot "
              f"be read: {_first_line(e)}; move {self._step_dir(step)} aside to resume from "
              "an earlier step") from e
        corrupt[step] = f"unreadable ({_first_line(e)})"
        remaining = [s for s in remaining if s < step]
        continue
      self._move_aside(corrupt, step)
      return step, generator, train
    raise CheckpointError(
        f"no intact checkpoint in {self.workdir / CHECKPOINT_DIR}: "
        + "; ".join(f"step {s}: {why}" for s, why in sorted(corrupt.items()))
        + ". Move those step folders aside (or use a new workdir) to train from scratch")

  def _move_aside(self, corrupt: dict[int, str], resumed: int) -> None:
    """Process 0 moves the corrupt steps (only it knows them); then every process rescans."""
    if jax.process_index() == 0:
      for step, why in sorted(corrupt.items()):
        where = checkpoint_check.move_aside(self._step_dir(step))
        log.warning("checkpoint %d of %s is corrupt: %s; moved it to %s and resumed from "
                    "step %d", step, self.workdir, why, where, resumed)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("af_jax corrupt checkpoints moved aside")
    self._manager.reload()  # Forget the moved steps.

  def close(self) -> None:
    self._manager.close()


def _intact_steps(folder: pathlib.Path, steps, but: int) -> list[int]:
  """The steps other than `but` whose generator item passes the manifest check."""
  intact = []
  for step in sorted(set(steps) - {but}):
    try:
      checkpoint_check.verify(folder / str(step), ("generator",))
    except checkpoint_check.CorruptStepError:
      continue
    intact.append(step)
  return intact


def restore_generator(workdir, abstract_params=None, step: int = -1,
                      choose_with: str = "--step N"):
  """Generator parameters of a run (latest step when step < 0), nothing else.

  `abstract_params` (a tree of jax.ShapeDtypeStruct with shardings) places them on devices and
  checks their shapes; without it they land on this process's first device. The generator
  item's files are checked first (module docstring); a corrupt step stops with an error naming
  the intact steps, to choose one with `choose_with` (the caller's option).
  """
  folder = pathlib.Path(workdir) / CHECKPOINT_DIR
  manager = _manager(workdir, read_only=True)
  steps = manager.all_steps()
  if not steps:
    manager.close()
    raise CheckpointError(f"no complete checkpoint in {folder} (an interrupted save is never "
                          "used)")
  step = max(steps) if step < 0 else step
  if step not in steps:
    manager.close()
    raise CheckpointError(f"step {step} is not among the checkpoints of {workdir}: {sorted(steps)}")

  def corrupt(why: str) -> CheckpointError:
    intact = _intact_steps(folder, steps, step)
    choose = (f"intact steps: {', '.join(map(str, intact))}; choose one with {choose_with}"
              if intact else "no other step is intact")
    return CheckpointError(f"checkpoint step {step} of {workdir} is corrupt: {why}; {choose}")

  # Without target shardings, arrays saved from many devices land on this process's first
  # device (a run trained on 8 GPUs restores on a laptop).
  fallback = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  try:
    verified = checkpoint_check.verify(folder / str(step), ("generator",))
    restored = manager.restore(step, args=ocp.args.Composite(
        generator=ocp.args.StandardRestore(abstract_params, fallback_sharding=fallback)))
  except checkpoint_check.CorruptStepError as e:
    raise corrupt(e.reason) from e
  except Exception as e:  # pylint: disable=broad-except  # Orbax raises bare Exceptions.
    if not verified:
      raise corrupt(f"unreadable ({_first_line(e)})") from e
    raise CheckpointError(f"checkpoint {step} of {workdir} does not match the expected generator "
                          f"(wrong stage or model config?): {e}") from e
  finally:
    manager.close()
  return restored["generator"], step

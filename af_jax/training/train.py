"""The one training loop of BootGenerator, FlareGenerator and BlazeDetector: `train(config, workdir)`.

`af-jax train` (`af_jax/commands/train.py`) parses a config and calls it. Re-running on an
existing workdir resumes from its latest complete checkpoint, with the data iterator where it
was, so the run sees exactly the batches it would have seen. A corrupt newest checkpoint costs
one warning: training resumes from the newest intact one and moves the corrupt one aside
(`af_jax/checkpoint.py`). One trainer per workdir: a second one started on it is refused
(`af_jax/run_lock.py`). Multi-host: every process calls `train` after `jax.distributed`
is initialized; each reads its own slice of the data.

The loop below reads top-down: setup, data, models, teacher, state, step, loop.
"""

import copy
import functools
import logging
import pathlib
import time
from typing import Any, Callable, NamedTuple

from clu import parameter_overview
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from af_jax import checkpoint
from af_jax import input_pipeline
from af_jax.models import build
from af_jax import pixels
from af_jax.evidence import patch_memory
from af_jax.evidence import reference
from af_jax import run_lock
from af_jax import runs
from af_jax import sharding
from af_jax import stage_registry
from af_jax.training import losses
from af_jax.training import stage_inputs
from af_jax.training import train_step as step_lib
from af_jax.training import writers

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or Inf; the last saved checkpoint is the last good state."""


def _check_finite(step: int, metrics: dict) -> None:
  bad = sorted(k for k, v in metrics.items() if not np.isfinite(v))
  if bad:
    raise NonFiniteLossError(
        f"non-finite loss at step {step}: {', '.join(f'{k}={metrics[k]}' for k in bad)}; "
        "training stopped, the last checkpoint in the workdir is intact")


def total_steps(config, steps_per_epoch: int) -> int:
  return config.num_steps if config.num_steps > 0 else config.num_epochs * steps_per_epoch


def load_teacher(config, mesh):
  """The frozen generator of `config.teacher_workdir` (params only), replicated on the mesh."""
  expected = stage_registry.get(config.stage).teacher
  if expected is None:
    return None, None
  if not config.teacher_workdir:
    raise ValueError(f"stage {config.stage!r} needs --config.teacher_workdir=<a {expected} run>")
  run = runs.load_run(config.teacher_workdir, expected, step=config.teacher_step,
                      dtype=build.compute_dtype(config.model), sharding=sharding.replicated(mesh),
                      choose_step_with="--config.teacher_step=N",
                      needed_by=f"the {config.stage} stage")
  log.info("teacher: %s run %s at step %d", expected, config.teacher_workdir, run.step)
  teacher = stage_inputs.Teacher(run.generator, run.params,
                                 region_input=stage_registry.guide_channels(run.config) > 0)
  return teacher, run.params


@functools.cache
def _warn_once(message: str) -> None:
  """Logs `message` the first time only: the demo trains three stages in one process."""
  log.warning(message)


def load_vgg(config):
  """VGG19 parameters when the perceptual term is on (`losses.vgg_enabled`), else None."""
  if config.loss.vgg > 0 and not config.loss.vgg_weights:
    _warn_once("the VGG perceptual loss is off: no VGG19 weights were given "
               "(config.loss.vgg_weights: torchvision's vgg19 as .npz, .safetensors or .pth)")
  if not losses.vgg_enabled(config.loss):
    return None
  from af_jax.models import vgg  # pylint: disable=g-import-not-at-top
  return vgg.load_vgg19_params(config.loss.vgg_weights)


def build_patch_memory(config, workdir: pathlib.Path) -> patch_memory.PatchMemory | None:
  """The categories' patch memories of a Blaze run with `blaze.patch_guide` (saved in the
  workdir by process 0; every process builds the same), else None."""
  if not stage_registry.uses_patch_guide(config):
    return None
  images = input_pipeline.normal_images(config.data)
  memory = patch_memory.build(config, {name: it for name, (_, it) in images.items()},
                              {name: count for name, (count, _) in images.items()})
  if jax.process_index() == 0:
    path = memory.save(workdir)
    log.info("patch memories of %d categories (%d patches each): %s", len(memory.names),
             memory.patches.shape[1], path)
  return memory


class StageProgram(NamedTuple):
  """The compiled pieces of one stage on one mesh."""
  init: Callable            # key -> TrainState, laid out on the mesh.
  step: Callable            # (state, batch, frozen, vgg_params) -> (state, metrics).
  preview: Callable         # (state, batch, frozen, key) -> dict of images.
  abstract_state: Any
  state_sharding: Any


def build_program(config, mesh, num_steps: int, teacher=None) -> StageProgram:
  """Networks, optimizer, stage inputs and the jitted init/step/preview of `config.stage`."""
  generator = build.generator(config.model)
  discriminator = build.discriminator(config.model)
  schedule = step_lib.learning_rate_schedule(config.optim, num_steps)
  tx = step_lib.make_optimizer(config.optim, schedule)
  edge_fn = None
  if stage_registry.reextracts_edges(config):
    from af_jax.ops import edges  # pylint: disable=g-import-not-at-top
    edge_fn = edges.make_edge_fn(dtype=build.compute_dtype(config.model))
  inputs_fn = stage_inputs.make_inputs_fn(config, teacher, edge_fn)

  init_fn = lambda key: step_lib.init_state(key, config, generator, discriminator, tx)
  abstract_state = jax.eval_shape(init_fn, jax.random.PRNGKey(config.seed))
  repl = sharding.replicated(mesh)
  state_sharding = sharding.param_sharding(mesh, abstract_state).replace(step=repl, rng=repl)
  step = jax.jit(
      step_lib.make_train_step(config, generator, discriminator, tx, schedule, inputs_fn),
      in_shardings=(state_sharding, sharding.batch_sharding(mesh), repl, repl),
      out_shardings=(state_sharding, repl), donate_argnums=(0,))
  return StageProgram(
      init=jax.jit(init_fn, out_shardings=state_sharding),
      step=step,
      preview=jax.jit(step_lib.make_preview_fn(config, generator, inputs_fn)),
      abstract_state=abstract_state, state_sharding=state_sharding)


def image_grid(images: dict, max_rows: int = 4) -> np.ndarray:
  """Columns edges | reference | target | output | heatmap | region mask, one row per example."""
  def rgb(x):
    x = np.asarray(x[:max_rows], np.float32)
    return pixels.signed_to_unit(x) if x.shape[-1] == 3 else np.repeat(x, 3, -1)
  columns = [rgb(images[k])
             for k in ("edges", "reference", "target", "output", "heatmap", "region_mask")]
  rows = np.concatenate(columns, axis=2)
  return pixels.unit_to_uint8(np.concatenate(list(rows), axis=0))


def with_data_facts(config: ml_collections.ConfigDict, facts: dict) -> ml_collections.ConfigDict:
  """A copy of `config` recording the prepared data's facts as `config.data_facts`."""
  config = copy.deepcopy(config)
  with config.unlocked():
    config.data_facts = ml_collections.ConfigDict(facts)
  return config


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) one stage in `workdir`; returns the last logged metrics.

  Holds the workdir's lock throughout: a second trainer on it is refused
  (`run_lock.RunLockedError`) before it reads or writes anything there.
  """
  stage_registry.check_config(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with run_lock.RunLock(workdir, jax.process_index()):
    return _train(config, workdir)


def _train(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, Any]:
  """`train` once the workdir is locked: the loop reads top-down from here."""
  # ---------------------------------------------------------------- setup
  config = with_data_facts(config, input_pipeline.read_data_facts(config.data))
  checkpoint.save_config(workdir, config)
  mesh = sharding.make_mesh(config.mesh.fsdp)
  writer = writers.create_default_writer(str(workdir / "metrics"))
  if config.batch_size % jax.device_count():
    raise ValueError(f"batch_size {config.batch_size} must be a multiple of the "
                     f"{jax.device_count()} devices")

  # ---------------------------------------------------------------- data
  moments = None
  if stage_registry.uses_reference(config):
    moments = input_pipeline.reference_moments(config.data)
    if jax.process_index() == 0:
      path = reference.References.from_moments(moments).save(workdir)
      log.info("references of %d categories: %s", len(moments), path)
  memory = build_patch_memory(config, workdir)
  data_iter = input_pipeline.make_train_iterator(
      config.data, global_batch_size=config.batch_size, seed=config.seed, references=moments,
      example_index=memory is not None)
  steps_per_epoch = input_pipeline.steps_per_epoch(config.data, config.batch_size)
  num_steps = total_steps(config, steps_per_epoch)

  # ---------------------------------------------------------------- models, teacher, VGG
  teacher, teacher_params = load_teacher(config, mesh)
  frozen = stage_inputs.Frozen(
      teacher_params, None if memory is None
      else jax.device_put(memory.arrays(), sharding.replicated(mesh)))
  vgg_params = load_vgg(config)
  program = build_program(config, mesh, num_steps, teacher)

  # ---------------------------------------------------------------- state (init or resume)
  ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_checkpoints)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          program.abstract_state, program.state_sharding)
  restored = ckpt.restore_latest(abstract.generator, abstract.train_part(), data_iter)
  if restored is None:
    state = program.init(jax.random.PRNGKey(config.seed))
    start = 0
  else:
    start, g, rest = restored
    state = step_lib.TrainState.from_parts(g, rest)
    log.info("resumed from step %d of %s", start, workdir)
  train_step, preview = program.step, program.preview
  if jax.process_index() == 0:
    log.info("parameters:\n%s", parameter_overview.get_parameter_overview(
        dict(generator=state.generator, discriminator=state.discriminator), include_stats=False))

  # ---------------------------------------------------------------- loop
  log.info("stage %s: %d steps (%d per epoch), global batch %d on %d devices",
           config.stage, num_steps, steps_per_epoch, config.batch_size, jax.device_count())
  progress = writers.ProgressLine(num_steps)
  pending, history, last = None, [], {}
  tick, tick_step = time.perf_counter(), start

  def finish(step_done, metrics):
    """Host side of a finished step: NaN check, logging (one step behind the device)."""
    nonlocal tick, tick_step, last
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    _check_finite(step_done, metrics)
    history.append(metrics)
    if step_done % config.log_every_steps == 0 or step_done == num_steps:
      elapsed = time.perf_counter() - tick
      rate = (step_done - tick_step) * config.batch_size / max(elapsed, 1e-9)
      last = {k: float(np.mean([h[k] for h in history])) for k in history[0]}
      last.update(images_per_sec=rate, step_time=elapsed / max(step_done - tick_step, 1),
                  epoch=step_done / steps_per_epoch)
      writer.write_scalars(step_done, last)
      history.clear()
      tick, tick_step = time.perf_counter(), step_done
    if jax.process_index() == 0 and (step_done % config.progress_every_steps == 0
                                     or step_done == num_steps):
      progress.update(step_done, metrics, images_per_sec=last.get("images_per_sec"))

  for step in range(start + 1, num_steps + 1):
    batch = input_pipeline.make_global_batch(next(data_iter), mesh, axis=sharding.DATA_AXES)
    state, metrics = train_step(state, batch, frozen, vgg_params)
    if pending is not None:
      finish(*pending)
    pending = (step, metrics)
    if config.image_every_steps and step % config.image_every_steps == 0:
      images = preview(state, batch, frozen, jax.random.PRNGKey(step))
      images = multihost_utils.process_allgather(images, tiled=True)
      writer.write_images(step, {"grid": image_grid(images)[None]})
    if step % config.checkpoint_every_steps == 0 or step == num_steps:
      finish(*pending)  # Never save a state whose losses were not checked.
      pending = None
      ckpt.save(step, state.generator, state.train_part(), data_iter)
  if pending is not None:
    finish(*pending)
  writer.flush()
  ckpt.close()

  # ---------------------------------------------------------------- evidence trust
  if stage_registry.uses_evidence_trust(config) and jax.process_index() == 0:
    # After the last checkpoint, so an interrupted fit is redone by rerunning the stage.
    from af_jax.inference import detector  # pylint: disable=g-import-not-at-top
    trust = detector.fit_trust(workdir, config, input_pipeline.normal_images(config.data),
                               moments)
    log.info("evidence trust of %d categories: %s", len(trust.names),
             workdir / detector.trust_lib.FILE_NAME)
  return last

"""A trained run's generator, loaded the one way teachers and inference both load it.

A run is a workdir that `af-jax train` wrote: `config.json` (the stage, the model, the options
it was trained with) and Orbax checkpoints. `load_run` restores the generator parameters only
(never the optimizer or the data iterator) into the network its config describes, and refuses
a run of another stage, a step that does not exist, a corrupt step (naming the intact ones)
and parameters that do not fit the config, each with a `checkpoint.CheckpointError` that says
which.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from af_jax import checkpoint
from af_jax.models import build
from af_jax import stage_registry


class TrainedRun(NamedTuple):
  config: ml_collections.ConfigDict  # The run's config.json.
  generator: Any                     # The flax module built from it.
  params: Any                        # Its restored parameters.
  step: int                          # The checkpoint step they come from.


def load_run(workdir, stages: str | tuple[str, ...], *, step: int = -1, dtype=None,
             sharding: jax.sharding.Sharding | None = None,
             choose_step_with: str = "--step N", needed_by: str = "") -> TrainedRun:
  """The generator of a run of one of `stages` at `step` (latest when < 0).

  Args:
    workdir: the run's directory.
    stages: the stage (or stages) the run must be of.
    step: checkpoint step; < 0 is the latest complete one.
    dtype: compute dtype of the built network (default: the run's `model.compute_dtype`).
    sharding: where the parameters go (default: this process's first device).
    choose_step_with: how the caller's user picks another step (named in corrupt-step errors).
    needed_by: who needs the run, for the wrong-stage error (e.g. "the flare stage").
  """
  if step < -1:
    raise ValueError(f"a checkpoint step is >= 0 (or -1 for the latest), got {step}")
  config = checkpoint.load_config(workdir)
  allowed = (stages,) if isinstance(stages, str) else tuple(stages)
  if config.stage not in allowed:
    others = "".join(f" (or a {s!r} run)" for s in allowed[1:])
    who = f"; {needed_by} learns from it" if needed_by else ""
    raise checkpoint.CheckpointError(
        f"{workdir} holds a {config.stage!r} run, expected a {allowed[0]!r} run{others}{who}")
  generator = build.generator(config.model, dtype=dtype)
  abstract = build.abstract_generator_params(generator, config.data.image_size, sharding,
                                             guide=stage_registry.guide_channels(config))
  if sharding is not None:
    # Restored straight into global arrays: every host of a multi-host mesh reads its part.
    params, step = checkpoint.restore_generator(workdir, abstract, step, choose_step_with)
    return TrainedRun(config, generator, params, step)
  stored, step = checkpoint.restore_generator(workdir, step=step, choose_with=choose_step_with)
  # Compared here rather than by Orbax, whose failed restores leave reads pending.
  _check_shapes(stored, abstract, f"checkpoint {step} of {workdir}")
  params = jax.tree.map(lambda x, a: jnp.asarray(x, a.dtype), stored, abstract)
  return TrainedRun(config, generator, params, step)


def _check_shapes(stored, expected, where: str) -> None:
  """Raises naming the parameters a checkpoint lacks, has in excess or holds in other shapes."""
  def shapes(tree):
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): tuple(np.shape(x)) for path, x in leaves}
  stored, expected = shapes(stored), shapes(expected)
  problems = ([f"{k} missing" for k in expected if k not in stored]
              + [f"{k} not in the model" for k in stored if k not in expected]
              + [f"{k} is {stored[k]}, the model needs {v}" for k, v in expected.items()
                 if k in stored and stored[k] != v])
  if problems:
    raise checkpoint.CheckpointError(
        f"{where} does not match the generator its config.json describes (wrong stage or "
        f"model config?): {'; '.join(problems[:3])}"
        + (f" and {len(problems) - 3} more" if len(problems) > 3 else ""))

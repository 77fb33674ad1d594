"""What the Generator and the Detector share: a run's generator on devices, its size and edges.

Loading. The generator parameters only, from the latest (or a given) checkpoint step, into the
model the run's `config.json` describes (`af_jax.runs.load_run`, the loader teachers use too).
Layers compute in `dtype` (default: the run's `model.compute_dtype`; bfloat16 suits
accelerators); parameters stay float32.

Devices. One jitted function per model runs fixed-size batches (short ones are padded), so one
compile serves every call. Without `mesh` it runs on the default device; with a mesh of this
process's devices (`sharding.local_mesh()`, or `sharding.make_mesh(devices=...)`), batches are
split over all its devices and parameters laid out like in training (replicated, or split
over `fsdp`); `batch_size` must be a multiple of the mesh size (`batching.round_up` makes
one). A multi-host run gives each process its own share of the images
(`af_jax.inference.hosts`), never one batch across hosts.

Edges. The networks were trained on edge maps of one extractor and must see the same one. By
default it is the one the run recorded (`stage_registry.training_edge_method`); an explicit
method that differs from it is used, with a warning.
"""

import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from af_jax import pixels
from af_jax import runs
from af_jax import sharding
from af_jax import stage_registry
from af_jax.inference import batching
from af_jax.inference import defaults
from af_jax.ops import edges as edges_lib


class TrainedNetwork:
  """A run's generator on devices, with the resizing and edge extraction its inputs need."""

  stages: tuple[str, ...] = ()  # The run stages it loads (`runs.load_run`).

  def __init__(self, workdir, *, step: int = -1, dtype=None, edge_method: str | None = None,
               batch_size: int = defaults.BATCH_SIZE, mesh: jax.sharding.Mesh | None = None):
    if batch_size < 1 or (mesh is not None and batch_size % mesh.size):
      raise ValueError(f"batch_size must be a positive multiple of the {mesh.size if mesh else 1}"
                       f" devices, got {batch_size}")
    if mesh is not None and any(d.process_index != jax.process_index() for d in mesh.devices.flat):
      raise ValueError("the mesh must hold this process's devices only (sharding.local_mesh()): "
                       "each process of a multi-host run localizes its own share of the images")
    if dtype is not None:
      try:
        dtype = jnp.dtype(dtype)
      except TypeError as e:
        raise ValueError(f"unknown compute dtype {dtype!r}; expected a dtype name such as "
                         "float32 or bfloat16") from e
    self.workdir = pathlib.Path(workdir)
    run = runs.load_run(workdir, self.stages, step=step, dtype=dtype,
                        sharding=self._restore_sharding(mesh))
    self.config, self.generator, self.step = run.config, run.generator, run.step
    self.size = self.config.data.image_size
    self.edge_threshold = self.config.edge_threshold
    self.edge_method = self._choose_edge_method(edge_method)
    self.batch_size = batch_size
    self.mesh = mesh
    self.params = (run.params if mesh is None
                   else jax.device_put(run.params, sharding.param_sharding(mesh, run.params)))

  @staticmethod
  def _restore_sharding(mesh) -> jax.sharding.Sharding | None:
    """Where a multi-process program restores the parameters: this process's devices, said
    explicitly, for Orbax would otherwise place them where they were saved (devices of
    another process). One process restores them onto its first device (`runs.load_run`)."""
    if jax.process_count() == 1:
      return None
    return (jax.sharding.SingleDeviceSharding(jax.local_devices()[0]) if mesh is None
            else sharding.replicated(mesh))

  def _choose_edge_method(self, requested: str | None) -> str:
    trained = stage_registry.training_edge_method(self.config)
    if requested is None:
      return trained
    if requested not in pixels.EDGE_METHODS:
      raise ValueError(f"unknown edge method {requested!r}; expected one of "
                       f"{pixels.EDGE_METHODS}")
    if requested != trained:
      warnings.warn(f"edge method {requested!r} differs from the {trained!r} edges the run in "
                    f"{self.workdir} was trained on; results will suffer", stacklevel=3)
    return requested

  def edges(self, images: np.ndarray) -> np.ndarray:
    """Edge probabilities [N, S, S] of model-size uint8 images."""
    return edges_lib.compute_edges(images, method=self.edge_method)

  def device_batch(self, x: np.ndarray):
    """A padded batch, split over the mesh when there is one."""
    x = batching.pad(x, self.batch_size)
    return x if self.mesh is None else jax.device_put(x, sharding.batch_sharding(self.mesh))

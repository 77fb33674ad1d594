"""Device mesh and shardings: data parallel over a `data` axis, optional `fsdp` axis.

The batch is split over every device (`data` x `fsdp`). Parameters and optimizer
state are replicated, or, when the mesh has an `fsdp` axis larger than 1, each
array of rank >= 2 is split along its last dimension when that divides evenly
(the generator's 1024-channel kernels hold almost all of its 188M parameters).
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXES = ("data", "fsdp")


def make_mesh(fsdp: int = 1, devices=None) -> Mesh:
  """A 2-D mesh (`data`, `fsdp`) over all (or the given) devices.

  Devices are laid out process by process, so each process's devices hold one contiguous
  block of the batch (what `jax.make_array_from_process_local_data` assembles from the
  processes' local batches) and, when `fsdp` divides the local device count, every fsdp
  group stays inside one host.
  """
  devices = jax.devices() if devices is None else list(devices)
  if not isinstance(fsdp, int) or fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f"mesh.fsdp={fsdp!r} must be a positive int dividing the "
                     f"{len(devices)} devices")
  # A stable sort: the given (e.g. topology-aware) order within each process is kept.
  devices = np.asarray(sorted(devices, key=lambda d: d.process_index))
  return Mesh(devices.reshape(devices.size // fsdp, fsdp), DATA_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over all mesh axes."""
  return NamedSharding(mesh, P(DATA_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device of the mesh."""
  return NamedSharding(mesh, P())


def param_sharding(mesh: Mesh, tree):
  """Shardings for a pytree of parameters (or their shapes): replicated or fsdp-split."""
  fsdp = mesh.shape["fsdp"]

  def spec(leaf):
    shape = np.shape(leaf)
    if fsdp > 1 and len(shape) >= 2 and shape[-1] % fsdp == 0:
      return NamedSharding(mesh, P(*([None] * (len(shape) - 1)), "fsdp"))
    return replicated(mesh)

  return jax.tree.map(spec, tree)



def local_mesh() -> Mesh:
  """A `data` mesh over this process's devices: what inference splits its batches over.

  Inference needs no cross-host collectives: in a multi-host run each process localizes (or
  generates) its own share of the images on its own devices (`af_jax.inference.hosts`).
  """
  return make_mesh(devices=jax.local_devices())

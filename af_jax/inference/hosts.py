"""Inference over several hosts: each process takes a share of the images, process 0 merges.

A multi-host `generate`, `localize` or `evaluate` is one process per host, started with the
same flags as `af-jax train` (`af_jax.commands.host_flags`). Inference needs no collective
inside the network: every process runs its share of the work on its own devices
(`sharding.local_mesh`), and the processes meet only to agree on the output folder and to
hand their results to process 0:

* `share`: which items a process takes: every `count`-th one of the sorted list, from its
  index on, so that shares differ by at most one item and mixed image sizes spread evenly.
* `barrier`: every process waits for all the others (a tiny collective over all devices).
* `gather`: rows computed by each process's share, back on every process in list order
  (how `evaluate` scores metrics over all the test images).

Single-process runs (no `jax.distributed`) take every item, and barriers return at once.
"""

import jax
import numpy as np


def is_main() -> bool:
  """Whether this is process 0, the one that writes the merged outputs."""
  return jax.process_index() == 0


def share(n: int, process: int | None = None, count: int | None = None) -> list[int]:
  """Indices of the `n` items that `process` (default: this one) of `count` takes."""
  process = jax.process_index() if process is None else process
  count = jax.process_count() if count is None else count
  return list(range(process, n, count))


def barrier(name: str) -> None:
  """Returns once every process reached the barrier of this `name` (the same on all)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def gather(local: np.ndarray, n: int) -> np.ndarray:
  """[n, ...]: the rows of every process's `share(n)`, in list order, on every process.

  `local` holds this process's rows (possibly none), of one shape and dtype on all processes.
  They travel as bytes, so values come back bit for bit (float64 too, which JAX would round
  to float32 when 64-bit types are off).
  """
  count = jax.process_count()
  if count == 1:
    return local
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  local = np.ascontiguousarray(local)
  row_bytes = local.dtype.itemsize * int(np.prod(local.shape[1:]))
  padded = np.zeros((-(-n // count), row_bytes), np.uint8)  # Shares differ by one at most.
  padded[:len(local)] = local.view(np.uint8).reshape(len(local), row_bytes)
  everyone = np.asarray(multihost_utils.process_allgather(padded))
  rows = np.empty((n, row_bytes), np.uint8)
  for process in range(count):
    mine = share(n, process, count)
    rows[mine] = everyone[process, :len(mine)]
  return rows.view(local.dtype).reshape((n, *local.shape[1:]))


def localize_shares(model, images) -> tuple[np.ndarray, np.ndarray]:
  """(heatmaps float32 [N, H, W], scores float64 [N]) of `model.localize` on images of one
  size, each process localizing its share (`share`) and every process getting all of them.

  `model`: an `infer.Detector` or a fitted floor of `af_jax.evidence.baseline`; results do not depend
  on which other images share a call, so the shares give the single-process results.
  """
  mine = share(len(images))
  if mine:
    result = model.localize([images[i] for i in mine])
    heatmaps, scores = result.heatmaps, result.scores
  else:  # More processes than images.
    heatmaps, scores = np.zeros((0, *np.shape(images[0])[:2])), np.zeros(0)
  return (gather(np.asarray(heatmaps, np.float32), len(images)),
          gather(np.asarray(scores, np.float64), len(images)))

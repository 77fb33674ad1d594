"""Batches through the heavy inference arrays one image at a time on a CPU, whole elsewhere.

On a CPU, a batch's activations leave the cache: PiDiNet's at 128 px are 4 MiB per image and
126 MiB for 32 images, and the demo's network and PiDiNet ran 2-4x slower per image at batch
32 than at batch 1 (`benchmarks/inference.py`). Taken one image at a time inside the same
compiled program, a batch costs what its images cost alone. Accelerators want the whole batch
at once (one small image leaves most of their cores idle), so they get it.
`jax.lax.platform_dependent` picks when the program is lowered for its device, so an exported
function (`af-jax export-detector`) runs the right one wherever it is compiled.
"""

import jax


def on_cpu(fn):
  """`fn(*batches) -> pytree of batches` [N, ...], run image by image on a CPU (`lax.map`)
  and on the whole batch elsewhere; jittable, for any N (also a symbolic one)."""
  def one_at_a_time(*batches):
    return jax.lax.map(lambda xs: jax.tree.map(lambda y: y[0], fn(*(x[None] for x in xs))),
                       batches)

  def run(*batches):
    return jax.lax.platform_dependent(*batches, cpu=one_at_a_time, default=fn)

  return run

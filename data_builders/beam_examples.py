"""A split's examples as an Apache Beam transform, for TFDS's own Beam builds.

When `download_and_prepare` gets Beam options (`tfds.download.DownloadConfig(beam_options=...)`,
`af-jax prepare --beam_pipeline_options`, or `tfds build --beam_pipeline_options`), the af_jax
builders hand TFDS this transform instead of a generator; TFDS runs it on the runner the
options name and writes the same ArrayRecord files (same keys, same shuffling by key) as
without Beam.

The records are cut into the very batches the single-process build annotates
(`common.EDGE_BATCH` records in listed order), so the edge network sees the same batches and
both builds store the same edges; a reshuffle spreads the batches over the workers (without
it a runner may fuse everything behind the one-element source onto one worker). Each worker
decodes, resizes and annotates whole batches, running the edge network on its own
accelerator when it has one. `apache-beam` is imported only here, only for such builds.
"""

from collections.abc import Callable, Iterable, Sequence
import os
from typing import Any

from tensorflow_datasets.core.utils.lazy_imports_utils import apache_beam as beam


def examples(batches: Sequence[Sequence[Any]],
             make_examples: Callable[[Sequence[Any]], Iterable[tuple[str, dict]]]):
  """The beam.PTransform yielding the (key, example) pairs of one split.

  Args:
    batches: the split's records, batched as the single-process build batches them.
    make_examples: picklable `fn(batch) -> (key, example) pairs` (it runs on the workers).
  """
  return (beam.Create([tuple(batch) for batch in batches])
          | "SpreadOverWorkers" >> beam.Reshuffle()
          | "Annotate" >> beam.FlatMap(_on_worker, make_examples))


def _on_worker(batch, make_examples):
  # Several workers of one machine may share an accelerator: JAX's default of reserving most
  # of its memory in the first process would leave none to the others.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  return list(make_examples(batch))

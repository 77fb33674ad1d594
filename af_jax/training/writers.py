"""Metric writers in the style of `clu.metric_writers`, without TensorFlow.

`clu.metric_writers` imports TensorFlow, which many accelerator images lack, so
this module offers the same small interface on top of pieces that need no TF:

* `TensorBoardWriter`: TensorBoard event files written by tensorboardX (numpy
  and protobuf only): scalars, and images as PNGs.
* `LoggingWriter`: one concise absl log line per write.
* `JsonlWriter`: one JSON object per write and line, easy to read back from
  scripts and tests (images are recorded by shape only).
* `MultiWriter`: forwards every call to several writers.

`create_default_writer` combines them and writes from process 0 only, so a
multi-host run logs each metric once. `ProgressLine` prints a console line
with step, speed, chosen metrics and ETA.
"""

import abc
from collections.abc import Iterable, Mapping
import datetime
import json
import os
import sys
import time
from typing import Any, TextIO

from absl import logging
import jax
import numpy as np

import tensorboardX

from af_jax import pixels

Scalar = int | float | np.number | np.ndarray | jax.Array


class MetricWriter(abc.ABC):
  """What every writer offers; `step` is the training step the values belong to."""

  @abc.abstractmethod
  def write_scalars(self, step: int, scalars: Mapping[str, Scalar]) -> None:
    """Writes scalar values (Python, numpy or JAX scalars)."""

  @abc.abstractmethod
  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    """Writes images: [N, H, W, C] or [H, W, C] arrays with C in {1, 3, 4}.

    uint8 arrays are taken as is; float arrays must hold values in [0, 1]
    (values outside are clipped).
    """

  def flush(self) -> None:
    """Makes everything written so far visible to readers."""

  def close(self) -> None:
    """Flushes and releases files; the writer must not be used afterwards."""
    self.flush()


def _scalar(value: Scalar) -> float:
  array = np.asarray(value)
  if array.size != 1:
    raise ValueError(f"expected a scalar metric, got an array of shape {array.shape}")
  return float(array.reshape(()))


def _image_batch(name: str, images) -> np.ndarray:
  """Returns uint8 [N, H, W, C] from uint8 or [0, 1] float [N, H, W, C] / [H, W, C]."""
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
    raise ValueError(f"image {name!r}: expected [N, H, W, C] or [H, W, C] with C in "
                     f"(1, 3, 4), got shape {images.shape}")
  if images.dtype == np.uint8:
    return images
  if not np.issubdtype(images.dtype, np.floating):
    raise ValueError(f"image {name!r}: expected uint8 or float values in [0, 1], got "
                     f"dtype {images.dtype}")
  return pixels.unit_to_uint8(images)


class TensorBoardWriter(MetricWriter):
  """Writes TensorBoard event files into `logdir` (created if missing).

  A batch of N > 1 images named `name` becomes tags `name/0` ... `name/N-1`;
  a single image keeps the tag `name`. Events are flushed every 30 s, on
  `flush()` and on `close()`.
  """

  def __init__(self, logdir: str | os.PathLike):
    os.makedirs(logdir, exist_ok=True)
    self._writer = tensorboardX.SummaryWriter(os.fspath(logdir), flush_secs=30)

  def write_scalars(self, step, scalars):
    for name, value in scalars.items():
      self._writer.add_scalar(name, _scalar(value), int(step))

  def write_images(self, step, images):
    for name, batch in images.items():
      batch = _image_batch(name, batch)
      for index, image in enumerate(batch):
        tag = name if len(batch) == 1 else f"{name}/{index}"
        self._writer.add_image(tag, image, int(step), dataformats="HWC")

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()


class LoggingWriter(MetricWriter):
  """Logs every write as one line through absl logging (INFO)."""

  def write_scalars(self, step, scalars):
    values = ", ".join(f"{name}={_scalar(value):.6g}" for name, value in scalars.items())
    logging.info("[%d] %s", step, values)

  def write_images(self, step, images):
    shapes = ", ".join(f"{name}{tuple(np.shape(batch))}" for name, batch in images.items())
    logging.info("[%d] images: %s", step, shapes)


class JsonlWriter(MetricWriter):
  """Appends one JSON object per write to `path` (parent folders are created).

  Records look like `{"kind": "scalars", "step": 10, "values": {"loss": 0.5}}`;
  kinds are scalars and images (values: name -> shape). Each record is flushed at once, so readers always see whole lines.
  """

  def __init__(self, path: str | os.PathLike):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self._file = open(path, "a", encoding="utf-8")

  def _write(self, record: dict) -> None:
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()

  def write_scalars(self, step, scalars):
    self._write({"kind": "scalars", "step": int(step),
                 "values": {name: _scalar(value) for name, value in scalars.items()}})

  def write_images(self, step, images):
    self._write({"kind": "images", "step": int(step),
                 "values": {name: list(np.shape(batch)) for name, batch in images.items()}})

  def close(self):
    self._file.close()


class MultiWriter(MetricWriter):
  """Forwards every call to each of `writers`; with none it writes nothing."""

  def __init__(self, writers: Iterable[MetricWriter]):
    self._writers = list(writers)

  def write_scalars(self, step, scalars):
    for writer in self._writers:
      writer.write_scalars(step, scalars)

  def write_images(self, step, images):
    for writer in self._writers:
      writer.write_images(step, images)

  def flush(self):
    for writer in self._writers:
      writer.flush()

  def close(self):
    for writer in self._writers:
      writer.close()


def create_default_writer(logdir: str | os.PathLike, just_logging: bool = False,
                          json: bool = True) -> MetricWriter:
  """The writer a training run uses.

  On process 0: log lines, plus (unless `just_logging`) TensorBoard event
  files in `logdir` and, if `json`, `logdir/metrics.jsonl`. On every other
  process: a writer that does nothing, so multi-host runs write once.
  """
  if jax.process_index() != 0:
    return MultiWriter([])
  writers: list[MetricWriter] = [LoggingWriter()]
  if not just_logging:
    writers.append(TensorBoardWriter(logdir))
    if json:
      writers.append(JsonlWriter(os.path.join(logdir, "metrics.jsonl")))
  return MultiWriter(writers)


class ProgressLine:
  """A console progress line: step, speed, chosen metrics and ETA.

  The ETA extrapolates the average time per step since the first `update`.

  Args:
    total_steps: the step count at which training ends.
    metric_names: which metrics to show, in this order; None shows all given.
    stream: where to print (default: sys.stdout at print time).
  """

  def __init__(self, total_steps: int, metric_names: Iterable[str] | None = None,
               stream: TextIO | None = None):
    self._total_steps = int(total_steps)
    self._metric_names = None if metric_names is None else list(metric_names)
    self._stream = stream
    self._start: tuple[float, int] | None = None

  def _eta(self, step: int) -> str:
    now = time.monotonic()
    if self._start is None:
      self._start = (now, step)
    start_time, start_step = self._start
    if step <= start_step:
      return "?"
    seconds = (now - start_time) / (step - start_step) * max(self._total_steps - step, 0)
    return str(datetime.timedelta(seconds=round(seconds)))

  def update(self, step: int, metrics: Mapping[str, Scalar] | None = None,
             images_per_sec: float | None = None) -> str:
    """Prints and returns the line for `step`."""
    step = int(step)
    metrics = metrics or {}
    names = metrics if self._metric_names is None else [
        name for name in self._metric_names if name in metrics]
    parts = [f"step {step}/{self._total_steps} "
             f"({100 * step / max(self._total_steps, 1):.1f}%)"]
    if images_per_sec is not None:
      parts.append(f"{images_per_sec:.1f} img/s")
    if names:
      parts.append(" ".join(f"{name} {_scalar(metrics[name]):.4g}" for name in names))
    parts.append(f"ETA {self._eta(step)}")
    line = " | ".join(parts)
    print(line, file=self._stream or sys.stdout, flush=True)
    return line

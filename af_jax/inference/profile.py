"""Where inference time goes: `part(name)` marks a stretch of host code, timed while `recording()`.

  with profile.recording() as seconds:
    detector.localize(images)
  seconds  # {'edges': 0.41, 'patch': 1.2, 'network': 0.9, ...}

`Detector.localize` marks its parts (edges, each evidence channel, the network, the
post-processing; `benchmarks/inference.py` prints them). Each part ends holding host (numpy)
arrays, so its time includes the device work it waited for. Outside `recording()` a part
costs one list check, so the marks stay in the product code instead of a copy of it in the
benchmark. Parts do not nest: a part inside another would be counted twice.
"""

import collections
import contextlib
import time

# The parts of the detector's work, in order (`af_jax.inference.exported_detector` names its
# parts alike): decoding files and resizing them to the model's size, PiDiNet edges, each
# evidence channel (the per-pixel reference, the network's patch distances, the evidence's own
# patch distances), the network (all flipped views), and the post-processing (the evidence's fusion or smoothing, scores, resizing back).
PARTS = ("decode+resize", "edges", "reference", "patch", "patch evidence", "network",
         "post-processing")

_recordings: list[dict] = []  # One per `recording()` open now.


@contextlib.contextmanager
def part(name: str):
  """Adds the seconds spent inside to `name` of every open `recording()`."""
  if not _recordings:
    yield
    return
  start = time.perf_counter()
  try:
    yield
  finally:
    elapsed = time.perf_counter() - start
    for seconds in _recordings:
      seconds[name] += elapsed


@contextlib.contextmanager
def recording():
  """Yields {part name: seconds}, filled by the `part`s run until the block ends."""
  seconds = collections.defaultdict(float)
  _recordings.append(seconds)
  try:
    yield seconds
  finally:
    _recordings.remove(seconds)

"""Compiled detectors kept on disk (`af_jax.inference.compile_cache`): a process after the first
finds the detector compiled."""

import subprocess
import sys
import textwrap

from af_jax import cli
from af_jax.inference import compile_cache
from conftest import subprocess_env

_CALL = """
  import sys
  import jax
  import numpy as np
  import af_jax
  events = []
  jax.monitoring.register_event_listener(lambda name, **kwargs: events.append(name))
  detector = af_jax.load_detector(sys.argv[1])
  images = np.random.default_rng(0).integers(0, 256, (2, detector.size, detector.size, 3),
                                             dtype=np.uint8)  # Colour, as its references.
  detector(images, *([0] if detector.categories else []))
  print(events.count("/jax/compilation_cache/cache_hits"))
"""


def _hits(folder, cache) -> int:
  """Compiled programs a fresh process calling the detector in `folder` found in `cache`."""
  env = subprocess_env(**{compile_cache.ENV: str(cache)})
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # The suite's own cache would stand instead.
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_CALL), str(folder)], env=env,
                        capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return int(proc.stdout.split()[-1])


def test_a_second_process_finds_the_detector_compiled(pidinet_runs, tmp_path):
  root, _ = pidinet_runs
  folder, cache = tmp_path / "detector", tmp_path / "cache"
  assert cli.main(["export-detector", "--workdir", str(root / "blaze_patch"), "--out",
                   str(folder)]) == 0
  assert _hits(folder, cache) == 0 and any(cache.iterdir())
  assert _hits(folder, cache) >= 1
  assert _hits(folder, "") == 0  # An empty folder keeps nothing.

"""Where inference time goes: `profile` marks, and `benchmarks/inference.py` printing them (on the
CPU, as it would on a lent accelerator with `--device gpu`)."""

import subprocess
import sys

from af_jax.inference import profile
from conftest import REPO, subprocess_env


def test_parts_are_timed_only_while_recording():
  with profile.part("edges"):
    pass
  with profile.recording() as seconds:
    with profile.part("edges"):
      pass
    with profile.part("edges"):
      pass
  with profile.part("network"):
    pass
  assert set(seconds) == {"edges"} and seconds["edges"] >= 0


def test_the_benchmark_prints_each_part_of_both_paths(pidinet_runs):
  root, _ = pidinet_runs
  proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "inference.py"), "--workdir",
                         str(root / "blaze_patch"), "--batches", "1,2", "--repeats", "1",
                         "--device", "cpu"], env=subprocess_env(), capture_output=True,
                        text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  for batch in (1, 2):
    assert any(line.startswith(f"32 px, batch {batch}: Detector.localize ") for line in lines)
  for part in profile.PARTS + ("other", "whole"):
    rows = [line for line in lines if line.startswith(f"| {part} |")]
    assert len(rows) == 2, (part, proc.stdout)

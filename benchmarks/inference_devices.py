"""Localize throughput on 1 vs 8 devices: images/s of `Detector.localize` with its batches split
over every device of the process (`sharding.local_mesh`, what `af-jax localize` does).

  python benchmarks/inference_devices.py                       # simulated CPU devices
  python benchmarks/inference_devices.py --workdir runs/blaze --devices 1,8 --batch 64

Without `--workdir` it makes a run of the demo's network at `--size` px
(`inference.demo_network_run`). Each device count runs in its own process, since JAX fixes it
at start-up: on a CPU-only machine as simulated devices
(`--xla_force_host_platform_device_count`), which share the same cores, so the figures show
the plumbing works, not a speed-up; on a machine with N accelerators, `--devices 1,N` uses
the first 1 and all N of them.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def measure(workdir: str, devices: int, batch: int, repeats: int) -> float:
  """Images/s of `localize` on `devices` devices of this process (after a warm-up call)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  from af_jax import sharding  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh(devices=jax.local_devices()[:devices])
  detector = infer.Detector(workdir, batch_size=batch, mesh=mesh)
  images = np.random.default_rng(0).integers(0, 256, (batch, detector.size, detector.size, 3),
                                             dtype=np.uint8)
  detector.localize(images)  # Compile and warm up.
  start = time.perf_counter()
  for _ in range(repeats):
    detector.localize(images)
  return repeats * batch / (time.perf_counter() - start)


def run_measure(workdir: str, devices: int, batch: int, repeats: int) -> float:
  """`measure` in a fresh process that sees `devices` devices (simulated where on CPU)."""
  env = dict(os.environ, PYTHONPATH=f"{REPO}:{os.environ.get('PYTHONPATH', '')}")
  env["XLA_FLAGS"] = (f"{env.get('XLA_FLAGS', '')} "
                      f"--xla_force_host_platform_device_count={devices}")
  proc = subprocess.run([sys.executable, __file__, "--workdir", workdir, "--measure",
                         str(devices), "--batch", str(batch), "--repeats", str(repeats)],
                        env=env, capture_output=True, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(f"measuring on {devices} devices failed:\n{proc.stderr[-3000:]}")
  return float(proc.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", help="a trained Blaze run (default: make a demo-network run)")
  parser.add_argument("--size", type=int, default=64, help="size of the run to make")
  parser.add_argument("--devices", default="1,8", help="device counts to compare")
  parser.add_argument("--batch", type=int, default=32, help="images per localize call")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)  # In the child process.
  args = parser.parse_args()
  if args.measure:
    print(measure(args.workdir, args.measure, args.batch, args.repeats))
    return
  with tempfile.TemporaryDirectory() as root:
    workdir = args.workdir
    if workdir is None:
      sys.path.insert(0, str(REPO))
      from benchmarks import inference  # pylint: disable=g-import-not-at-top
      workdir = str(inference.demo_network_run(pathlib.Path(root), args.size))
    print("| devices | batch | localize img/s |\n| --- | --- | --- |")
    for devices in map(int, args.devices.split(",")):
      rate = run_measure(workdir, devices, args.batch, args.repeats)
      print(f"| {devices} | {args.batch} | {rate:.1f} |", flush=True)


if __name__ == "__main__":
  main()

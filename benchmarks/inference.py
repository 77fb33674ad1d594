"""Inference throughput: images/s of `Detector.localize` and of the exported detector.

  python benchmarks/inference.py                          # sizes 64,256; batches 1,32
  python benchmarks/inference.py --workdir demo_out/runs/blaze --batches 1,32

Without `--workdir` it makes, per size, a run of the demo's network (configs/demo.py: ngf 16,
2 downsamplings, 3 blocks, blaze.reference on) trained one step per stage on a few synthetic
images with PiDiNet edges: the cost of inference does not depend on how long a run trained.
For each run and batch size it times, after a warm-up call, `Detector.localize` (edges, the
reference, flip averaging, smoothing, resizing back: what `af-jax localize` does per batch)
and the exported function (`af-jax export-detector`, loaded with `jax.export.deserialize`),
on the default JAX device, and prints one table.
"""

import argparse
import pathlib
import tempfile
import time

import jax
from jax import export
import numpy as np

from af_jax import infer
from af_jax.inference import exported_detector
from af_jax.training import train
from af_jax.configs import demo as demo_config
from af_jax.configs import mix82
from af_jax.data_builders import synthetic


def demo_network_run(root: pathlib.Path, size: int) -> pathlib.Path:
  """A Blaze run of the demo's network at `size` px, one training step per stage."""
  names = synthetic.build(root / "data", size=size, edges="pidinet", num_train=4,
                          num_test_normal=1, num_test_anomalous=1)
  teacher = ""
  for stage in ("boot", "flare", "blaze"):
    config = demo_config.get_config(stage)
    config.data = mix82.get_data_config(data_dir=str(root / "data"), image_size=size,
                                        sources=mix82.sources_for("synthetic", names))
    config.data.num_workers = 0
    config.num_steps, config.checkpoint_every_steps = 1, 1
    config.teacher_workdir = teacher
    train.train(config, str(root / stage))
    teacher = str(root / stage)
  return root / "blaze"


def images_per_second(fn, batch, repeats: int) -> float:
  fn(batch)  # Compile and warm up.
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn(batch))
  return repeats * len(batch) / (time.perf_counter() - start)


def measure(workdir: pathlib.Path, batches: list[int], repeats: int) -> list[tuple]:
  """(size, batch, localize img/s, exported img/s) of one run, each row printed as measured."""
  detector = infer.Detector(workdir, batch_size=max(batches))
  serialized, _ = exported_detector.export_detector(detector)
  exported = export.deserialize(serialized)
  rows = []
  for batch in batches:
    images = np.random.default_rng(0).integers(0, 256, (batch, detector.size, detector.size, 3),
                                               dtype=np.uint8)
    category = (np.zeros(batch, np.int32),) if detector.references is not None else ()
    detector.batch_size = batch  # One device call per localize, as a production loop makes.
    localize = images_per_second(lambda x: detector.localize(x).heatmaps, images, repeats)
    function = images_per_second(lambda x: exported.call(x, *category)[0], images, repeats)
    rows.append((detector.size, batch, localize, function))
    print(f"| {detector.size} | {batch} | {localize:.1f} | {function:.1f} |", flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", help="a trained Blaze run (default: make demo-network runs)")
  parser.add_argument("--sizes", default="64,256", help="sizes of the runs to make")
  parser.add_argument("--batches", default="1,32")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  batches = [int(b) for b in args.batches.split(",")]
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})")
  print("| size | batch | Detector.localize img/s | exported function img/s |")
  print("|---|---|---|---|", flush=True)  # Rows follow as they are measured.
  if args.workdir:
    measure(pathlib.Path(args.workdir), batches, args.repeats)
    return
  with tempfile.TemporaryDirectory() as tmp:
    for size in (int(s) for s in args.sizes.split(",")):
      measure(demo_network_run(pathlib.Path(tmp) / str(size), size), batches, args.repeats)


if __name__ == "__main__":
  main()

"""`af-jax serve-folder` on real images: sustained images/s and latency from file to verdict.

  python benchmarks/serve_folder.py                      # 64 px, the demo's network
  python benchmarks/serve_folder.py --detector detector/ --category NAME

Without `--detector` it exports a run of the demo's network at `--size` px (benchmarks/
inference.py's `demo_network_run`: one training step per stage, which does not change the cost
of inference). Two measurements, on the default JAX device, with MVTec AD bottle test images
(256 px PNGs, so decoding, resizing and the 256 px heatmap and overlay PNGs count):

1. backlog: `--images` images already in the folder, `--once`: the images/s the loop sustains;
2. stream: the same number of images written one by one (write, then rename) at `--rate`
   images/s (default: half the backlog's rate): latency from each file to its verdict line.

The loop's compiled shapes are cached in a temporary JAX compilation cache, so the second
start does not compile again (as `JAX_COMPILATION_CACHE_DIR` makes a restarted loop do).
"""

import argparse
import logging
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import threading
import time

import jax

import af_jax
from af_jax import cli
from af_jax.commands import serve_folder
from af_jax.commands import verdict_file

SHARED = os.environ.get("AF_JAX_SHARED", pathlib.Path(__file__).resolve().parents[2] / "shared")
BOTTLE = pathlib.Path(SHARED) / "data" / "mvtec_ad" / "bottle"  # As tests/conftest.py finds it.


def export_demo_network(root: pathlib.Path, size: int) -> tuple[pathlib.Path, str]:
  """(an exported detector of the demo's network at `size` px, its first category)."""
  sys.path.insert(0, str(pathlib.Path(__file__).parent))
  from inference import demo_network_run  # pylint: disable=g-import-not-at-top
  workdir = demo_network_run(root / "run", size)
  assert cli.main(["export-detector", "--workdir", str(workdir), "--out",
                   str(root / "detector")]) == 0
  return root / "detector", af_jax.load_detector(root / "detector").categories[0]


def serve(detector, category, watch, out, *extra) -> dict:
  argv = ["--detector", str(detector), "--watch", str(watch), "--out", str(out), *extra]
  if category:
    argv += ["--category", category]
  return serve_folder.serve(serve_folder.parser().parse_args(argv))


def _verdicts(out: pathlib.Path) -> int:
  path = out / verdict_file.NAME
  return path.read_bytes().count(b"\n") if path.is_file() else 0


class Watching(logging.Handler):
  """Set once the loop logs that it watches its folder (compiled, ready for images)."""

  def __init__(self):
    super().__init__()
    self.event = threading.Event()

  def emit(self, record):
    if record.getMessage().startswith("serve-folder: watching"):
      self.event.set()


def feed(sources, watch: pathlib.Path, out: pathlib.Path, rate: float,
         watching: threading.Event) -> None:
  """Writes the images into `watch` at `rate` a second once the loop watches it, then stops the
  loop once each has its verdict line (SIGTERM, as a service manager would)."""
  watching.wait()
  start = time.monotonic()
  for k, source in enumerate(sources):
    time.sleep(max(0.0, k / rate - (time.monotonic() - start)))
    tmp = watch / f"{k:04d}.png.part"
    shutil.copy(source, tmp)
    os.rename(tmp, watch / f"{k:04d}.png")
  while _verdicts(out) < len(sources):
    time.sleep(0.05)
  os.kill(os.getpid(), signal.SIGTERM)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--detector", help="an exported detector (default: the demo's network)")
  parser.add_argument("--category", help="its category (with --detector)")
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--images", type=int, default=96)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--max_wait_s", type=float, default=1.0)
  parser.add_argument("--rate", type=float, help="stream images/s (default: half the backlog's)")
  args = parser.parse_args()
  logging.basicConfig(format="%(levelname)s: %(message)s")
  logging.getLogger("af_jax").setLevel(logging.INFO)  # The loop's own progress lines.
  sources = sorted(BOTTLE.glob("test/*/*.png"))
  sources = (sources * (args.images // len(sources) + 1))[:args.images]
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    jax.config.update("jax_compilation_cache_dir", str(tmp / "xla_cache"))
    detector, category = ((pathlib.Path(args.detector), args.category) if args.detector
                          else export_demo_network(tmp, args.size))
    flags = ["--batch_size", str(args.batch_size), "--max_wait_s", str(args.max_wait_s),
             "--log_every", str(args.images)]
    (tmp / "backlog").mkdir()
    for k, source in enumerate(sources):
      shutil.copy(source, tmp / "backlog" / f"{k:04d}.png")
    backlog = serve(detector, category, tmp / "backlog", tmp / "out_backlog", "--once", *flags)
    rate = args.rate or backlog["images_per_s"] / 2
    (tmp / "stream").mkdir()
    watching = Watching()
    logging.getLogger("af_jax").addHandler(watching)
    threading.Thread(target=feed, daemon=True, args=(sources, tmp / "stream", tmp / "out_stream",
                                                     rate, watching.event)).start()
    stream = serve(detector, category, tmp / "stream", tmp / "out_stream", *flags)
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {os.cpu_count()} "
        f"CPUs, load average {os.getloadavg()[1]:.1f} (other processes share them); "
        f"{args.images} bottle images (256 px) to a {args.size} px detector, batch "
        f"{args.batch_size}, max wait {args.max_wait_s} s")
  print(f"backlog: {backlog['images_per_s']:.1f} images/s sustained")
  print(f"stream at {rate:.1f} images/s: latency file to verdict p50 "
        f"{stream['latency_s']['p50']:.2f} s, p95 {stream['latency_s']['p95']:.2f} s, max "
        f"{stream['latency_s']['max']:.2f} s ({stream['images_per_s']:.1f} images/s while busy)")


if __name__ == "__main__":
  main()

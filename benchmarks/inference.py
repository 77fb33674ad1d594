"""Inference speed, and where it goes: `Detector.localize` and the exported detector, part by part.

  python benchmarks/inference.py                          # sizes 64,256; batches 1,32
  python benchmarks/inference.py --workdir demo_out/runs/blaze --batches 1,32
  python benchmarks/inference.py --device gpu             # the same on an accelerator
  python benchmarks/inference.py --dtype bfloat16         # the network and edges in bfloat16
  python benchmarks/inference.py --evidence_stride 2      # patch evidence every other pixel
  python benchmarks/inference.py --no-flip_views          # the network on the image alone

Without `--workdir` it makes, per size, a run of the demo's network (configs/demo.py: ngf 16,
2 downsamplings, 3 blocks, reference, patch guide and evidence trust on) trained one step per
stage on a few synthetic images with PiDiNet edges: the cost of inference does not depend on
how long a run trained. `--runs DIR` keeps those runs there (made once, reused after).

For each run and batch size, after a warm-up call, it times what a production loop does per
batch: decode the image files and resize them to the model's size (`--images`, default the
shared MVTec AD bottle test images; random images where absent), then

* `Detector.localize` (edges, the reference, the patch distances, the network on each flipped
  view, the evidence's fusion and image scores, resizing back), its parts timed by the marks
  it carries (`af_jax.inference.profile`);
* the exported function (`af-jax export-detector`, loaded with `af_jax.load_detector`), whole,
  and its parts (`exported_detector.detector_function`'s) compiled and timed one by one: one
  program fuses across them, so they add up to about, not exactly, the whole.

It prints images/s of both, then one table per size and batch: seconds per batch of each part
and its share of the whole; "other" is what no part holds (Python, copies, flips).
`--device cpu|gpu` picks JAX's platform (default: JAX's own choice); on CPU it is what the
tests run, on a lent accelerator the same breakdown there.
"""

import argparse
import os
import pathlib
import tempfile
import time

import numpy as np

from af_jax.configs import demo as demo_config
from af_jax.configs import mix82

DEFAULT_IMAGES = pathlib.Path(os.environ.get(
    "AF_JAX_SHARED", pathlib.Path(__file__).resolve().parents[2] / "shared")
) / "data" / "mvtec_ad" / "bottle" / "test"


def demo_network_run(root: pathlib.Path, size: int) -> pathlib.Path:
  """A Blaze run of the demo's network at `size` px, one training step per stage (reused when
  `root` holds a finished one)."""
  from af_jax.data_builders import synthetic  # pylint: disable=g-import-not-at-top
  from af_jax.training import train  # pylint: disable=g-import-not-at-top
  done = root / "blaze" / "evidence_trust.npz"  # Written last, at the end of Blaze.
  if done.is_file():
    return root / "blaze"
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


def image_files(folder: pathlib.Path, count: int, root: pathlib.Path) -> list[pathlib.Path]:
  """`count` PNG files: those under `folder` (repeated as needed), else random 256 px images
  written to `root`."""
  from af_jax import files  # pylint: disable=g-import-not-at-top
  from af_jax import pixels  # pylint: disable=g-import-not-at-top
  paths = sorted(folder.glob("**/*.png")) if folder.is_dir() else []
  if not paths:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    paths = [root / f"{i}.png" for i in range(count)]
    for path in paths:
      files.write_bytes(path, pixels.encode_png(rng.integers(0, 256, (256, 256, 3), np.uint8)))
  return [paths[i % len(paths)] for i in range(count)]


def decoded(paths, size: int) -> np.ndarray:
  """The files decoded and resized to `size`, timed as the "decode+resize" part."""
  from af_jax import pixels  # pylint: disable=g-import-not-at-top
  from af_jax.inference import profile  # pylint: disable=g-import-not-at-top
  with profile.part("decode+resize"):
    return pixels.resize_images([pixels.read_rgb(p) for p in paths], size)


def timed_parts(name: str, fn):
  """A `part` for `exported_detector.detector_function`: `fn` compiled alone and timed."""
  import jax  # pylint: disable=g-import-not-at-top
  from af_jax.inference import profile  # pylint: disable=g-import-not-at-top
  compiled = jax.jit(fn)

  def run(*args):
    with profile.part(name):
      return jax.block_until_ready(compiled(*args))
  return run


def profiled(step, repeats: int) -> tuple[float, dict]:
  """(seconds per call, {part: seconds per call}) of `step()` after a warm-up call."""
  from af_jax.inference import profile  # pylint: disable=g-import-not-at-top
  step()  # Compile and warm up.
  with profile.recording() as seconds:
    start = time.perf_counter()
    for _ in range(repeats):
      step()
    whole = (time.perf_counter() - start) / repeats
  return whole, {name: s / repeats for name, s in seconds.items()}


def measure(workdir: pathlib.Path, batches: list[int], repeats: int, images: pathlib.Path,
            dtype: str | None, tmp: pathlib.Path, evidence_stride: int | None = None,
            flip_views: bool | None = None) -> None:
  """Prints both paths' images/s and parts for each batch size of the run in `workdir`, its
  patch evidence searched at `evidence_stride` and the flipped views averaged or not
  (`flip_views`) when given (speed only: the run's trust was fitted at its own
  `blaze.inference_patch_stride` and `blaze.flip_views`)."""
  import jax  # pylint: disable=g-import-not-at-top
  import af_jax  # pylint: disable=g-import-not-at-top
  from af_jax import files  # pylint: disable=g-import-not-at-top
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  from af_jax.inference import exported_detector  # pylint: disable=g-import-not-at-top
  from af_jax.inference import profile  # pylint: disable=g-import-not-at-top
  detector = infer.Detector(workdir, batch_size=max(batches), dtype=dtype)
  if evidence_stride:
    detector.config.blaze.inference_patch_stride = evidence_stride
  if flip_views is not None:
    detector.flip_tta = flip_views
  folder = tmp / f"export{detector.size}"
  folder.mkdir(exist_ok=True)
  function, metadata = exported_detector.export_detector(detector)
  files.write_bytes(folder / exported_detector.FUNCTION_FILE, function)
  files.write_text(folder / exported_detector.METADATA_FILE, metadata)
  exported = af_jax.load_detector(folder)
  parts = exported_detector.detector_function(detector, timed_parts)
  views = len(detector.views())
  for batch in batches:
    paths = image_files(images, batch, tmp / "images")
    category = None if exported.categories is None else np.zeros(batch, np.int32)
    detector.batch_size = batch  # One device call per localize, as a production loop makes.
    local = profiled(lambda: detector.localize(decoded(paths, detector.size)), repeats)

    def export_step(call):
      x = decoded(paths, detector.size)
      return jax.block_until_ready(call(x) if category is None else call(x, category))
    whole = profiled(lambda: export_step(exported), repeats)[0]
    split = profiled(lambda: export_step(parts), repeats)[1]
    print(f"\n{detector.size} px, batch {batch}: Detector.localize {batch / local[0]:.2f} img/s, "
          f"exported {batch / whole:.2f} img/s (seconds per batch; network: {views} views; "
          f"patch evidence every {detector.evidence_patch_stride} px)")
    print("| part | Detector.localize s | share | exported s (parts alone) | share |")
    print("|---|---|---|---|---|")
    for name in profile.PARTS + ("other",):
      a = local[1].get(name, local[0] - sum(local[1].values()) if name == "other" else 0.0)
      b = split.get(name, max(whole - sum(split.values()), 0.0) if name == "other" else 0.0)
      print(f"| {name} | {a:.4f} | {a / local[0]:.0%} | {b:.4f} | {b / whole:.0%} |")
    print(f"| whole | {local[0]:.4f} | | {whole:.4f} | |", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", help="a trained Blaze run (default: make demo-network runs)")
  parser.add_argument("--runs", help="where the demo-network runs are kept (default: a "
                      "temporary folder)")
  parser.add_argument("--sizes", default="64,256", help="sizes of the runs to make")
  parser.add_argument("--batches", default="1,32")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--images", type=pathlib.Path, default=DEFAULT_IMAGES,
                      help="folder of PNG images to decode (default: the shared bottle's)")
  parser.add_argument("--dtype", help="compute dtype, e.g. bfloat16 (default: the run's)")
  parser.add_argument("--device", choices=("cpu", "gpu"), help="JAX platform (default: JAX's)")
  parser.add_argument("--evidence_stride", type=int,
                      help="search the patch evidence every N pixels and rows (the option "
                      "blaze.inference_patch_stride; default: the run's, 1)")
  parser.add_argument("--flip_views", action=argparse.BooleanOptionalAction, default=None,
                      help="average the flipped views or not (the option blaze.flip_views; "
                      "default: the run's)")
  args = parser.parse_args()
  import jax  # pylint: disable=g-import-not-at-top
  if args.device:
    jax.config.update("jax_platforms", {"cpu": "cpu", "gpu": "cuda"}[args.device])
  batches = [int(b) for b in args.batches.split(",")]
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})", flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    runs = pathlib.Path(args.runs) if args.runs else tmp
    workdirs = ([pathlib.Path(args.workdir)] if args.workdir else
                [demo_network_run(runs / str(size), size) for size in
                 (int(s) for s in args.sizes.split(","))])
    for workdir in workdirs:
      measure(workdir, batches, args.repeats, args.images, args.dtype, tmp,
              args.evidence_stride, args.flip_views)


if __name__ == "__main__":
  main()

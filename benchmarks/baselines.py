"""Time and quality of the two no-learning floors (af_jax/evidence/baseline.py) on real categories.

  python benchmarks/baselines.py [--manual_root ../shared/data] [--sizes 64,128]

Fits the per-pixel Gaussian floor (DESIGN.md B.10) and the nearest-patch floor (B.11) on
MVTec AD bottle and MPDD metal_plate at each size and prints one table: the seconds of
fit + localize (images already read and resized; the nearest-patch search compiled once
beforehand, as its block shapes do not depend on the category or size) and px-AUROC / AUPRO
/ image AUROC. The search runs on JAX's default device. B.11's 64 px figures are the anchor.
"""

import argparse
import pathlib
import sys
import time

import jax
import numpy as np

from af_jax.evidence import baseline
from af_jax import pixels
from af_jax.metrics import localization

CATEGORIES = {"bottle": "mvtec_ad/bottle", "metal_plate": "mpdd/metal_plate"}
FLOORS = {"per-pixel Gaussian": baseline.PixelGaussianBaseline,
          "nearest patch": baseline.NearestPatchBaseline}
DEFAULT_ROOT = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def read_category(folder: pathlib.Path, size: int):
  """(train images, test images, test masks, test labels) at `size` px, as tests read them."""
  tests = _images(folder / "test", "*/*")
  if not tests:
    raise SystemExit(f"no test images under {folder / 'test'} (MVTec AD layout expected)")
  train = _images(folder / "train" / "good", "*")
  return (pixels.resize_images([pixels.read_rgb(f) for f in train], size),
          pixels.resize_images([pixels.read_rgb(f) for f in tests], size),
          [_mask(folder, f, size) for f in tests], [int(f.parent.name != "good") for f in tests])


def _images(folder: pathlib.Path, pattern: str) -> list[pathlib.Path]:
  return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in pixels.IMAGE_SUFFIXES)


def _mask(folder: pathlib.Path, test_file: pathlib.Path, size: int) -> np.ndarray:
  """uint8 [S, S] ground truth of a test image (all zero for a good one), nearest-neighbour."""
  if test_file.parent.name == "good":
    return np.zeros((size, size), np.uint8)
  gt = folder / "ground_truth" / test_file.parent.name / f"{test_file.stem}_mask.png"
  return pixels.resize_labels(pixels.read_mask(gt).astype(np.uint8), size)


def _compile_search() -> None:
  """One search on random images, so no timed run includes compiling it."""
  images = np.random.default_rng(0).integers(0, 256, (20, 64, 64, 3), np.uint8)
  baseline.NearestPatchBaseline().fit(images).localize(images[:1])


def _row(name: str, size: int, floor_name: str, data) -> str:
  train, images, masks, labels = data
  start = time.perf_counter()
  result = FLOORS[floor_name]().fit(train).localize(images)
  seconds = time.perf_counter() - start
  figures = (localization.pixel_auroc(result.heatmaps, masks),
             localization.aupro(result.heatmaps, masks),
             localization.image_auroc(result.scores, labels))
  return (f"| {name} | {size} | {floor_name} | {seconds:.1f} | "
          f"{' / '.join(f'{100 * f:.1f}' for f in figures)} |")


def parser_with_manual_root(doc: str, holding: str) -> argparse.ArgumentParser:
  """A benchmark's argument parser (`doc` its help) with --manual_root, the folder `holding`
  the real parts it reads (`read_category`)."""
  parser = argparse.ArgumentParser(description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--manual_root", type=pathlib.Path, default=DEFAULT_ROOT,
                      help=f"the folder holding {holding} (default: ../shared/data beside the "
                           "repository)")
  return parser


def main(argv: list[str]) -> int:
  parser = parser_with_manual_root(__doc__, "mvtec_ad/bottle and mpdd/metal_plate")
  parser.add_argument("--sizes", default="64,128")
  args = parser.parse_args(argv)
  print(f"device: {jax.devices()[0]}", flush=True)
  _compile_search()
  print("| category | px | floor | fit + localize s | px-AUROC / AUPRO / img-AUROC |")
  print("|---|---|---|---|---|", flush=True)
  for name, relative in CATEGORIES.items():
    for size in [int(s) for s in args.sizes.split(",")]:
      data = read_category(args.manual_root / relative, size)
      for floor_name in FLOORS:
        print(_row(name, size, floor_name, data), flush=True)  # Rows as they finish.
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

"""Build time and quality of the evidence memory (af_jax/evidence/patch_memory.py) on real parts.

  python benchmarks/evidence_memory.py [--manual_root ../shared/data] [--pools 131072,262144]
                                       [--seeds 0,1] [--parts bottle,metal_plate,magnetic_tile]

For each part at 64 px, coreset pool (`blaze.evidence_pool`) and seed (the draw of the pool,
the projection and the first pick): builds the part's evidence memory from its normal
training images as a Blaze run does (`patch_memory.build(..., evidence=True)`, the demo's
config), and prints the seconds of the build and its patch distances alone on the part's test
set, searched at every pixel as the detector searches its evidence memory, blurred 1 px
(px-AUROC / AUPRO / image AUROC). Seeds show how much the draw moves a part; pools what a
larger one buys for its time. The nearest-patch floor (`benchmarks/baselines.py`) is the bar.
"""

import functools
import sys
import time

import jax
import numpy as np

from af_jax.configs import demo
from af_jax.evidence import baseline
from af_jax.evidence import patch_memory
from af_jax import pixels
from af_jax.metrics import localization
from baselines import parser_with_manual_root, read_category

PARTS = {"bottle": "mvtec_ad/bottle", "metal_plate": "mpdd/metal_plate",
         "magnetic_tile": "magnetic_tile/magnetic_tile"}
SIZE = 64
BATCH = 8


# Compiled once for every part, pool and seed (a memory's shape does not change with them).
_channel = jax.jit(functools.partial(patch_memory.category_channel, pixel_levels=True),
                   static_argnames=("patch_size",))


def _patch_distances(memory: patch_memory.PatchMemory, images: np.ndarray,
                     patch_size: int) -> np.ndarray:
  """[N, S, S]: the evidence channel of uint8 images against the memory's only category."""
  maps = []
  for start in range(0, len(images), BATCH):
    batch = pixels.uint8_to_signed(images[start:start + BATCH])
    maps.append(np.asarray(_channel(batch, np.zeros(len(batch), np.int32), memory.arrays(),
                                    patch_size=patch_size))[..., 0])
  return np.concatenate(maps)


def main(argv: list[str]) -> int:
  parser = parser_with_manual_root(
      __doc__, "mvtec_ad/bottle, mpdd/metal_plate and magnetic_tile/magnetic_tile")
  parser.add_argument("--pools", default="131072")
  parser.add_argument("--seeds", default="0,1")
  parser.add_argument("--parts", default=",".join(PARTS))
  args = parser.parse_args(argv)
  config = demo.get_config("blaze")
  print("| part | pool | seed | build s | px-AUROC / AUPRO / img-AUROC |")
  print("|---|---|---|---|---|", flush=True)
  for part in args.parts.split(","):
    train, images, masks, labels = read_category(args.manual_root / PARTS[part], SIZE)
    for pool in [int(p) for p in args.pools.split(",")]:
      for seed in [int(s) for s in args.seeds.split(",")]:
        config.blaze.evidence_pool, config.seed = pool, seed
        start = time.perf_counter()
        memory = patch_memory.build(config, {part: train}, {part: len(train)}, evidence=True)
        seconds = time.perf_counter() - start
        maps = baseline.opencv_blur(_patch_distances(memory, images, config.blaze.patch_size), 1.0)
        figures = (localization.pixel_auroc(maps, masks), localization.aupro(maps, masks),
                   localization.image_auroc(maps.reshape(len(maps), -1).max(1), labels))
        print(f"| {part} | {pool} | {seed} | {seconds:.0f} | "
              f"{' / '.join(f'{100 * f:.1f}' for f in figures)} |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

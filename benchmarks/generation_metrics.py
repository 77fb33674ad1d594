"""Speed of the generation metrics, and what the paper's per-category protocol costs.

Times, on the default JAX device (CPU, or a GPU when there is one), after a compiling call:
* the IS network (Inception at 299 px, any input size): images/s;
* LPIPS-VGG at --size: images/s through the network (one forward per image);
* IC-LPIPS end to end on --num_generated images around --num_real real ones;
then estimates the paper's protocol (Sec. 4.4): per category, 1,000 generated images and 100
real test images, IS over all of them and IC-LPIPS, whose generated images pass through VGG16
twice (assignment, then the pairs inside each cluster) and the real ones once.

The weights are random (drawn with the shapes of the real ones): speed does not depend on
them, and no metric is reported.

  python benchmarks/generation_metrics.py                       # 256 px, small timed sets
  python benchmarks/generation_metrics.py --size 256 --num_images 128 --batch_size 64  # GPU
"""

import time

from absl import app
from absl import flags
import jax
import numpy as np

from af_jax.metrics import generation
from af_jax.models import inception as inception_lib
from af_jax.models import lpips as lpips_lib

_SIZE = flags.DEFINE_integer("size", 256, "Generated image size (LPIPS runs at this size).")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Images per device call.")
_NUM = flags.DEFINE_integer("num_images", 16, "Images timed per network.")
_NUM_GENERATED = flags.DEFINE_integer("num_generated", 16, "IC-LPIPS run: generated images.")
_NUM_REAL = flags.DEFINE_integer("num_real", 4, "IC-LPIPS run: real images.")
_PROTOCOL = (1000, 100)  # Generated and real images per category in the paper.


def _random_variables(abstract, seed: int):
  """Variables of the right shapes: N(0, 1/fan_in) kernels, zero biases and means, else 1."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(np.float32)
    return np.full(leaf.shape, 0.0 if name in ("bias", "mean", "shift") else 1.0, np.float32)

  return jax.tree_util.tree_map_with_path(draw, abstract)


def _images(n: int, size: int, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _rate(fn, n: int) -> tuple[float, float]:
  """(images/s of a timed call on n images, seconds), after one call that compiles."""
  fn()
  started = time.perf_counter()
  fn()
  seconds = time.perf_counter() - started
  return n / seconds, seconds


def main(_):
  size, batch = _SIZE.value, _BATCH.value
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"{_NUM.value} images of {size} px, batch {batch}")
  inception = generation.InceptionModel(
      jax.device_put(_random_variables(inception_lib.abstract_variables(), 0)), batch)
  variables = jax.device_put(_random_variables(lpips_lib.abstract_variables(), 1))
  lpips = generation.LPIPSModel(variables, lpips_lib.head_vectors(variables), batch)

  images = _images(_NUM.value, size, 2)
  is_rate, _ = _rate(lambda: generation.inception_features(inception, images), len(images))
  print(f"Inception (IS):   {is_rate:8.2f} img/s")
  vgg_rate, _ = _rate(lambda: generation.lpips(lpips, images, images[::-1]), 2 * len(images))
  print(f"LPIPS-VGG:        {vgg_rate:8.2f} img/s through the network at {size} px")

  generated = _images(_NUM_GENERATED.value, size, 3)
  real = _images(_NUM_REAL.value, size, 4)
  _, ic_seconds = _rate(lambda: generation.ic_lpips(lpips, generated, real), 1)
  print(f"IC-LPIPS:         {ic_seconds:8.2f} s for {len(generated)} generated around "
        f"{len(real)} real ({(len(real) + 2 * len(generated)) / ic_seconds:.2f} network img/s)")

  n_gen, n_real = _PROTOCOL
  is_s = n_gen / is_rate
  ic_s = (n_real + 2 * n_gen) / vgg_rate
  print(f"paper protocol per category ({n_gen} generated, {n_real} real, {size} px): "
        f"IS {is_s / 60:.1f} min + IC-LPIPS {ic_s / 60:.1f} min (at most) = "
        f"{(is_s + ic_s) / 60:.1f} min")


if __name__ == "__main__":
  app.run(main)

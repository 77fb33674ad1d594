"""The no-learning floors a detector must beat (DESIGN.md B.10, B.11).

Both are fitted on normal images of one size S (values in [0, 1]), need no training and no
pretrained network, give each test image a score map blurred by a Gaussian of `sigma` pixels
(default 4 px per 256 px of image side: 1 px at 64 px), and score the image by the map's
maximum.

* `PixelGaussianBaseline` (B.10): per pixel and channel, the mean m and standard deviation s
  of the normal images (`af_jax.evidence.reference`, which also feeds BlazeDetector with
  `blaze.reference`); the map is the mean over channels of |x - m| / (s + `eps`). Strong on
  aligned objects; rotated, shifted or textured parts defeat it.
* `NearestPatchBaseline` (B.11): PatchCore's idea on raw pixels; the map is the distance of
  each pixel's 7x7x3 patch to the nearest of a random sample of the normal images' patches.
  It needs no alignment, so it wins where per-pixel statistics fail, and loses where the
  object is aligned and the defect is a subtle change of a normal-looking patch.

The floor of a category is the better of the two, metric by metric: a learned detector that
does not beat it there has learned nothing useful (`af-jax evaluate --baseline` and the demo
report both floors, and the floor, next to BlazeDetector: `af_jax.commands.evaluate`). `FLOORS`
names them. B.11's anchors at 64 px, px-AUROC / AUPRO / image AUROC, per-pixel then nearest
patch: MVTec AD bottle 93.9 / 75.8 / 98.7 and 90.7 / 73.9 / 93.7; MPDD metal_plate 84.7 / 48.3
/ 79.9 and 95.9 / 76.7 / 99.2.
"""

import dataclasses
import typing

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from af_jax import pixels
from af_jax.evidence import patch_memory
from af_jax.evidence import reference
from af_jax import postprocess

# Nearest-patch search in blocks of queries x memory patches: 4096 x 8192 float32 distances
# (128 MiB) at a time, whatever the number of test pixels or the memory size.
QUERY_CHUNK = 4096
MEMORY_CHUNK = 8192
# B.11's nearest-patch memory: 80,000 patches, those of 20 normal images at 64 px.
MEMORY_SIZE = 80_000


@dataclasses.dataclass
class BaselineResult:
  heatmaps: np.ndarray  # float32 [N, S, S] score maps at the fitted size.
  scores: np.ndarray    # float64 [N] image scores (map maxima).


def default_sigma(size: int) -> float:
  """The score maps' blur: 4 px per 256 px of image side (B.10, B.11)."""
  return 4.0 * size / 256


class _Floor:
  """What both floors share: input checks, the fitted size, the blur and the image scores.

  A floor implements `_fit` (uint8 [N, S, S, 3] normal images), `_score_maps` (uint8 images
  of the fitted size -> [N, S, S] unblurred maps) and `_smooth` (maps, sigma -> blurred).
  """

  title = ""  # What tables call it.

  def __init__(self, sigma: float | None):
    self.sigma = sigma
    self.image_shape = None  # (S, S, 3) of the images fit() saw.

  def check_normal_images(self, count: int, height: int, width: int) -> None:
    """Raises ValueError when `count` normal images of height x width px are too few to fit
    on: callers can refuse a category before reading its images (or training on it)."""
    if count < 2:  # One image says nothing of how normal images vary.
      raise ValueError(f"a floor needs at least 2 normal images, got {count}")

  def fit(self, normal_images) -> typing.Self:
    """`normal_images`: uint8 [S, S, 3] images of one size (an array or a list), as prepared
    datasets store them."""
    images = pixels.check_uint8_rgb(normal_images, batch=True)
    self.check_normal_images(*images.shape[:3])
    self._fit(images)
    self.image_shape = images.shape[1:]
    return self

  def localize(self, images) -> BaselineResult:
    """Score maps and image scores of uint8 images of the fitted size (an array or a list)."""
    if self.image_shape is None:
      raise ValueError("fit() the baseline on normal images first")
    images = pixels.check_uint8_rgb(images, batch=True)
    if images.shape[1:] != self.image_shape:
      raise ValueError(f"images of shape {images.shape[1:]} do not match the "
                       f"{self.image_shape} images the baseline was fitted on")
    sigma = self.sigma if self.sigma is not None else default_sigma(images.shape[1])
    maps = self._smooth(self._score_maps(images), sigma).astype(np.float32)
    return BaselineResult(heatmaps=maps, scores=postprocess.image_scores(maps))

  def _fit(self, images: np.ndarray) -> None:
    raise NotImplementedError

  def _score_maps(self, images: np.ndarray) -> np.ndarray:
    raise NotImplementedError

  def _smooth(self, maps: np.ndarray, sigma: float) -> np.ndarray:
    raise NotImplementedError


class PixelGaussianBaseline(_Floor):
  """Per-pixel mean/std of normal images; scores are normalized absolute deviations."""
  title = "per-pixel Gaussian floor"

  def __init__(self, eps: float = 0.02, sigma: float | None = None):
    super().__init__(sigma)
    self.eps = eps
    self.mean = self.std = None

  def _fit(self, images):
    self.mean, self.std = reference.Moments.of(images).statistics()

  def _score_maps(self, images):
    x = pixels.uint8_to_unit(images)
    return np.mean(reference.deviation(x, self.mean, self.std, self.eps), axis=-1)

  def _smooth(self, maps, sigma):
    return postprocess.smooth_heatmaps(maps, sigma)  # B.10's figures were measured with it.


class NearestPatchBaseline(_Floor):
  """Distance of each pixel's patch to its nearest patch among the normal images' (B.11).

  A patch is the `patch_size` x `patch_size` x 3 neighbourhood of a pixel (numpy 'reflect'
  padding at the borders), values in [0, 1], flattened in its own array order: patch rows,
  then columns, then channels. The memory keeps `memory_size` of all the normal images'
  patches (images in the given order, pixels row-major), drawn by
  `np.random.default_rng(seed).choice(total, memory_size, replace=False)`. The search runs
  on JAX's default device (a GPU when there is one) in float32, in bounded blocks
  (`QUERY_CHUNK` x `MEMORY_CHUNK`).
  """
  title = "nearest-patch floor"

  def __init__(self, memory_size: int = MEMORY_SIZE, patch_size: int = 7, seed: int = 0,
               sigma: float | None = None):
    if memory_size < 1:
      raise ValueError(f"memory_size must be at least 1, got {memory_size}")
    if patch_size < 1 or patch_size % 2 == 0:
      raise ValueError(f"patch_size must be odd and positive (a pixel's patch is centred on "
                       f"it), got {patch_size}")
    super().__init__(sigma)
    self.memory_size = memory_size
    self.patch_size = patch_size
    self.seed = seed
    self.memory = None  # float32 [memory_size, patch_size**2 * 3], the kept patches.
    self._search = None  # (centre, memory blocks with their squared norms) on the device.

  def check_normal_images(self, count, height, width):
    super().check_normal_images(count, height, width)
    total = count * height * width
    if total < self.memory_size:
      raise ValueError(f"{count} normal images of {height}x{width} px give only {total} "
                       f"patches; the nearest-patch memory needs {self.memory_size} (give more "
                       f"images, or keep at most {total}: memory_size={total}, or --patch_memory "
                       f"{total} in af-jax evaluate and demo)")

  def _fit(self, images):
    total = int(np.prod(images.shape[:3]))
    keep = np.random.default_rng(self.seed).choice(total, self.memory_size, replace=False)
    self.memory = pixels.uint8_to_unit(patches(self._padded(images), keep, self.patch_size))
    self._search = _search_arrays(self.memory)

  def _score_maps(self, images):
    padded = self._padded(images)
    total = int(np.prod(images.shape[:3]))
    blocks = []
    for start in range(0, total, QUERY_CHUNK):
      # The last block repeats the last pixel, so every block has one shape (one compile).
      # Calls return before the device is done: it searches while the next block is gathered.
      flat = np.minimum(np.arange(start, start + QUERY_CHUNK), total - 1)
      blocks.append(_nearest_distances(patches(padded, flat, self.patch_size), *self._search))
    distances = np.concatenate([np.asarray(b) for b in blocks] or [np.zeros(0, np.float32)])
    return distances[:total].reshape(images.shape[:3])

  def _smooth(self, maps, sigma):
    return opencv_blur(maps, sigma)

  def _padded(self, images: np.ndarray) -> np.ndarray:
    r = self.patch_size // 2
    return np.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")


# Both floors by the names metrics.json gives them (`af_jax.commands.evaluate`).
FLOORS = {"pixel_gaussian": PixelGaussianBaseline, "nearest_patch": NearestPatchBaseline}


def patches(padded: np.ndarray, flat_indices, patch_size: int) -> np.ndarray:
  """[K, patch_size**2 * C] patches (same dtype) of the pixels `flat_indices` of [N, H, W]
  images, from those images padded by patch_size // 2 on each side ([N, H + 2r, W + 2r, C]).

  Flattened in the patch's array order: rows, then columns, then channels.
  """
  r = patch_size // 2
  count, height, width = padded.shape[0], padded.shape[1] - 2 * r, padded.shape[2] - 2 * r
  n, y, x = np.unravel_index(np.asarray(flat_indices, np.int64), (count, height, width))
  offsets = np.arange(patch_size)
  rows = (y[:, None] + offsets)[:, :, None]
  cols = (x[:, None] + offsets)[:, None, :]
  return padded[n[:, None, None], rows, cols].reshape(len(n), -1)


def opencv_blur(maps: np.ndarray, sigma: float) -> np.ndarray:
  """B.11's blur of [N, H, W] maps: OpenCV GaussianBlur with the kernel size from `sigma`
  (ksize 0: 2 * round(4 sigma) + 1 taps on float maps) and OpenCV's default border
  (reflect-101). `postprocess.smooth_heatmaps` (scipy) truncates and reflects borders
  differently, hence this one. 0 returns the maps unblurred."""
  if sigma < 0:
    raise ValueError(f"smoothing sigma must be >= 0, got {sigma}")
  maps = np.asarray(maps, np.float32)
  if sigma == 0:
    return maps
  out = np.empty_like(maps)
  for i, heatmap in enumerate(maps):
    out[i] = cv2.GaussianBlur(heatmap, (0, 0), sigmaX=sigma, sigmaY=sigma)
  return out


def _search_arrays(memory: np.ndarray) -> tuple[jax.Array, jax.Array]:
  """(centre [D], memory [B, M, D + 3] in blocks, `patch_memory.folded_memory`'s bfloat16
  operand) on the default device, in 8-bit levels (the memory's [0, 1] values times 255,
  whole numbers).

  Patches are centred on the memory's mean rounded to a whole level: distances do not
  change, but the norms whose difference float32 takes in |q|^2 - 2 q.m + |m|^2 shrink, so
  less of it cancels, and every centred value stays a whole number in [-255, 255], which
  bfloat16 holds exactly (`_nearest_distances`). Blocks are filled up with zero rows whose
  squared norm is infinite, so they are never nearest.
  """
  levels = np.round(memory * 255.0)
  centre = np.round(levels.mean(axis=0, dtype=np.float64)).astype(np.float32)
  centred = (levels - centre).astype(np.float32)
  count, dim = centred.shape
  num_blocks = -(-count // MEMORY_CHUNK)
  block = -(-count // num_blocks)  # As even as possible: 80,000 -> 10 blocks of 8,000.
  filled = np.zeros((num_blocks * block, dim), np.float32)
  filled[:count] = centred
  norms = np.full(num_blocks * block, np.inf, np.float32)
  norms[:count] = np.einsum("md,md->m", centred, centred)
  operand = patch_memory.folded_memory([jnp.asarray(filled, jnp.bfloat16)],  # Exact.
                                       jnp.asarray(norms))
  return jnp.asarray(centre), operand.reshape(num_blocks, block, -1)


@jax.jit
def _nearest_distances(queries, centre, memory):
  """float32 [Q]: for each uint8 query patch [Q, D], the L2 distance (in [0, 1] units) to its
  nearest memory patch; `_search_arrays` gives the other arguments.

  Squared distances come from |q|^2 - 2 q.m + |m|^2 (one matmul per memory block gives the
  last two, `patch_memory.folded_memory`), so they carry float32 rounding of a few ulp of
  those norms, which can put an identical patch a few 1e-3 away instead of 0. Finding which
  patch is nearest, to recompute its distance directly, would cost about 5x the time on a
  CPU (XLA's argmin there) for no change in the B.11 figures. The centred levels are whole
  numbers of at most 8 bits, exact in bfloat16: the matmul multiplies in bfloat16 and sums
  in float32, the same products, 3x faster on a CPU with AMX or AVX512-BF16.
  """
  q = queries.astype(jnp.float32) - centre
  q_operand = patch_memory.folded_queries(q.astype(jnp.bfloat16))

  def nearer(best, m):
    # HIGHEST: GPUs would otherwise sum in reduced precision.
    # Both operands contracted on their last axis: as a matmul with the memory transposed,
    # XLA's CPU backend took the bfloat16 product 3x slower (no faster than float32).
    d2 = jnp.einsum("qd,md->qm", q_operand, m, precision=jax.lax.Precision.HIGHEST,
                    preferred_element_type=jnp.float32)
    return jnp.minimum(best, jnp.min(d2, axis=1)), None

  best, _ = jax.lax.scan(nearer, jnp.full(q.shape[0], jnp.inf, jnp.float32), memory)
  # |q|^2 is the same for every memory patch, so it is added after the minimum; rounding can
  # leave a squared distance slightly below zero.
  return jnp.sqrt(jnp.maximum(best + jnp.sum(q * q, axis=1), 0.0)) / 255.0

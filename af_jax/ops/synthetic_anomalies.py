"""Classic synthetic anomalies made from the training images themselves, on device.

Reconstruction + discriminative detectors (DRAEM, CutPaste, and their successors) learn to
localize from anomalies pasted into normal images: a random blob-shaped mask is filled with
pixels that do not belong there, and the mask is an exact target. BlazeDetector can mix them
with FlareGenerator's anomalies (`config.blaze.synthetic_fraction`): Flare's anomalies follow
the edited structure of the object, these follow no structure at all, and both teach the
detector that what differs from the learned normal appearance is the anomaly.

Per example (every draw is its own):
  * mask: smooth noise (bilinearly upsampled uniform noise on `noise_grids` coarse grids,
    summed with random weights) under a Gaussian window at a random centre, thresholded so
    that a fraction ~ Uniform(`area`) of the image is covered: one blob of irregular outline,
    like the Perlin-noise masks of DRAEM.
  * fill: with probability `self_donor_prob` the example's own image, otherwise another
    example of the batch (a random cyclic permutation, so never itself; the batch may mix
    categories), flipped with probability 1/2 per axis and rolled by a random offset, so the
    pasted texture is real but out of place; then its colours are jittered per channel (gain
    1 + Uniform(+-`color_jitter`), offset Uniform(+-`color_jitter`)).
  * anomaly = image * (1 - o M) + fill * o M with opacity o ~ Uniform(`opacity`).
  * edges: inside the mask, the union of the image's and the (moved) fill's edges, as a
    `merge` edit of af_jax.ops.manipulate would make them; outside, unchanged.
"""

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SyntheticAnomalyConfig:
  """Rules of the pasted anomalies (module docstring).

  Attributes:
    noise_grids: sizes of the coarse noise grids summed into the mask noise (coarser = larger
      blobs).
    area: range of the fraction of the image the mask covers.
    opacity: range of the fill's opacity inside the mask.
    self_donor_prob: probability that the fill comes from the example's own image. Misplaced
      patches of the object itself (as CutPaste makes them) teach more than foreign ones: on
      real bottle images 0.8 gave image AUROC 93.6 where 0.5 gave 84.0 (pixel AUROC 86.9 both).
    color_jitter: largest per-channel gain change and offset of the fill (image range [-1, 1]).
  """
  noise_grids: tuple[int, ...] = (4, 8)
  area: tuple[float, float] = (0.005, 0.08)
  opacity: tuple[float, float] = (0.6, 1.0)
  self_donor_prob: float = 0.8
  color_jitter: float = 0.3

  def __post_init__(self):
    if not self.noise_grids or min(self.noise_grids) < 1:
      raise ValueError(f"noise_grids must be positive grid sizes, got {self.noise_grids}")
    for name in ("area", "opacity"):
      low, high = getattr(self, name)
      if not 0 < low <= high <= 1:
        raise ValueError(f"{name} must be a range 0 < low <= high <= 1, got {(low, high)}")
    if not 0 <= self.self_donor_prob <= 1:
      raise ValueError(f"self_donor_prob must be in [0, 1], got {self.self_donor_prob}")


def blob_masks(key, batch: int, height: int, width: int, config: SyntheticAnomalyConfig):
  """[B, H, W, 1] float {0, 1} masks: one irregular blob each (module docstring)."""
  k_weights, k_area, k_centre, k_radius, *k_grids = jax.random.split(
      key, 4 + len(config.noise_grids))
  weights = jax.random.uniform(k_weights, (batch, len(config.noise_grids)), minval=0.2)
  noise = 0.0
  for i, (k, g) in enumerate(zip(k_grids, config.noise_grids)):
    coarse = jax.random.uniform(k, (batch, g + 1, g + 1, 1))
    noise = noise + weights[:, i, None, None, None] * jax.image.resize(
        coarse, (batch, height, width, 1), "bilinear")
  noise = noise / jnp.sum(weights, axis=1)[:, None, None, None]
  area = jax.random.uniform(k_area, (batch,), minval=config.area[0], maxval=config.area[1])
  # A Gaussian window around a random centre keeps the thresholded noise in one place, so the
  # mask is one blob of irregular outline rather than scattered specks.
  centre = jax.random.uniform(k_centre, (batch, 2)) * jnp.array([height, width])
  radius = jnp.sqrt(area * height * width / jnp.pi) * jax.random.uniform(
      k_radius, (batch,), minval=1.0, maxval=2.0)
  rows = jnp.arange(height, dtype=jnp.float32)[None, :, None] - centre[:, 0, None, None]
  cols = jnp.arange(width, dtype=jnp.float32)[None, None, :] - centre[:, 1, None, None]
  window = jnp.exp(-(rows**2 + cols**2) / (2 * radius[:, None, None] ** 2))[..., None]
  field = window * (0.5 + noise)
  flat = jnp.sort(field.reshape(batch, -1), axis=1)
  rank = jnp.clip(((1 - area) * flat.shape[1]).astype(jnp.int32), 0, flat.shape[1] - 1)
  threshold = jnp.take_along_axis(flat, rank[:, None], axis=1)
  return (field >= threshold[:, :, None, None]).astype(jnp.float32)


def _move(key, x):
  """Each example flipped (p 1/2 per axis) and rolled by a random offset."""
  k_lr, k_ud, k_dy, k_dx = jax.random.split(key, 4)
  b, h, w, _ = x.shape
  lr = jax.random.bernoulli(k_lr, 0.5, (b, 1, 1, 1))
  ud = jax.random.bernoulli(k_ud, 0.5, (b, 1, 1, 1))
  x = jnp.where(lr, x[:, :, ::-1], x)
  x = jnp.where(ud, x[:, ::-1], x)
  dy = jax.random.randint(k_dy, (b,), 0, h)
  dx = jax.random.randint(k_dx, (b,), 0, w)
  return jax.vmap(lambda xi, y, z: jnp.roll(xi, (y, z), axis=(0, 1)))(x, dy, dx)


def paste_anomalies(key, image, edges, config: SyntheticAnomalyConfig):
  """(anomaly [B, H, W, 3] in [-1, 1], edges [B, H, W, 1], mask [B, H, W, 1]).

  `image` is in [-1, 1], `edges` binary in [0, 1].
  """
  b, h, w, _ = image.shape
  k_mask, k_perm, k_self, k_move, k_gain, k_offset, k_opacity = jax.random.split(key, 7)
  mask = blob_masks(k_mask, b, h, w, config)
  shift = jax.random.randint(k_perm, (), 1, max(b, 2))
  other = (jnp.arange(b) + shift) % b
  own = jax.random.bernoulli(k_self, config.self_donor_prob, (b, 1, 1, 1))
  donor = jnp.concatenate([image, edges], axis=-1)
  donor = _move(k_move, jnp.where(own, donor, donor[other]))
  fill, fill_edges = donor[..., :3], donor[..., 3:]
  j = config.color_jitter
  gain = 1 + jax.random.uniform(k_gain, (b, 1, 1, 3), minval=-j, maxval=j)
  offset = jax.random.uniform(k_offset, (b, 1, 1, 3), minval=-j, maxval=j)
  fill = jnp.clip(fill * gain + offset, -1.0, 1.0)
  opacity = jax.random.uniform(k_opacity, (b, 1, 1, 1), minval=config.opacity[0],
                               maxval=config.opacity[1])
  alpha = opacity * mask
  anomaly = image * (1 - alpha) + fill * alpha
  new_edges = jnp.where(mask > 0, jnp.maximum(edges, fill_edges), edges)
  return anomaly, new_edges, mask

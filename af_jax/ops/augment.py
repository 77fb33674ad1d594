"""Geometric augmentations for training the BootGenerator, on device.

The BootGenerator learns to combine the structure of a target edge map with the
appearance of a reference image; it only learns that if the two disagree
(paper Sec. 3.2). Each training example therefore draws two independent
transforms, T_a and T_b:

  target edge  = T_a(edge)     target image = T_a(image)     reference = T_b(image)

A transform composes, in this order, three augmentations (paper Sec. 3.2,
Fig. 7):

1. Local thin-plate-spline (TPS) warp. A square-ish window (each side a
   fraction `tps_window` of the image side, placed uniformly inside the image)
   holds a 3x3 grid of control points at 1/4, 1/2 and 3/4 of the window; each
   is shifted by Uniform(-d, d) x the window side per axis, d =
   `tps_displacement`. The window's 4 corners and 4 edge midpoints are pinned
   (zero shift). The spline (kernel U(r) = r^2 log r, plus an affine part)
   interpolates these 17 shifts. Because a TPS has global support, its field
   is then faded to exactly zero at the window border by a smoothstep ramp over
   the outer quarter of the window on each side (the moving control points
   sit where the ramp is 1, so their shifts are kept). Pixels outside the
   window are never moved.
2. Resize-translation-padding. The content is scaled about the image centre by
   s ~ Uniform(`scale_range`) and shifted by Uniform(-`shift_range`,
   `shift_range`) x the image size per axis; the output keeps the input size,
   and places with no source content are filled per `pad_mode`.
3. Left-right and top-bottom flips, each with its own probability.

A `Transform` stores the composition as a dense sampling grid: for every
output pixel, the input coordinate it reads from. The grid is computed
analytically from output to input (flips undone first, then the resize, then
the TPS), so content is resampled only once, with bilinear interpolation.
Coordinates are in pixels with pixel centres at integers, so flips are exact
and zero strengths give exactly the identity.

Out-of-range coordinates follow `pad_mode`: 'reflect' mirrors about the border
pixel centres (no repeated border pixel, like numpy's 'reflect'), 'edge'
repeats the border pixel, 'constant' reads zeros (a mid-grey image in
[-1, 1], no edge in an edge map).

Edge maps (`kind='edges'`, float in [0, 1]) are sampled bilinearly like images,
then clipped to [0, 1]. With `edge_threshold=None` (the default, because the
datasets store soft PiDiNet probabilities) they stay soft; with a threshold
they are re-binarized (value >= threshold -> 1, else 0) so binary edge maps
stay binary.

Everything is pure jnp, key first, batched ([B, H, W, C]), jit- and
vmap-able; `sample_transform` needs `batch_size`, `height`, `width` and
`config` static under jit.
"""

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

PAD_MODES = ('reflect', 'edge', 'constant')
KINDS = ('image', 'edges')


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Strengths of the geometric augmentations; zero strengths give the identity.

  Attributes:
    local_tps: apply the local TPS warp (off by default: the paper uses it in the Boot stage
      only, which turns it on in its stage record, `af_jax.stage_registry`).
    tps_window: range of the TPS window side, as a fraction of the image side.
    tps_displacement: largest control point shift, as a fraction of the window side.
    scale_range: range of the resize factor (> 1 enlarges and crops, < 1 shrinks and pads).
    shift_range: largest translation, as a fraction of the image size, per axis.
    pad_mode: how to fill places with no source content: 'reflect', 'edge' or 'constant' (zeros).
    flip_lr_prob: probability of a left-right flip.
    flip_ud_prob: probability of a top-bottom flip.
    edge_threshold: if not None, edge maps are re-binarized at this value after sampling.
  """
  local_tps: bool = False
  tps_window: tuple[float, float] = (0.25, 0.5)
  tps_displacement: float = 0.1
  scale_range: tuple[float, float] = (0.8, 1.2)
  shift_range: float = 0.1
  pad_mode: str = 'reflect'
  flip_lr_prob: float = 0.5
  flip_ud_prob: float = 0.5
  edge_threshold: float | None = None

  def __post_init__(self):
    def fail(field, expected):
      raise ValueError(f'AugmentConfig.{field} must be {expected}, got {getattr(self, field)!r}')

    if not 0 < self.tps_window[0] <= self.tps_window[1] <= 1:
      fail('tps_window', '(low, high) with 0 < low <= high <= 1')
    if self.tps_displacement < 0:
      fail('tps_displacement', '>= 0')
    if not 0 < self.scale_range[0] <= self.scale_range[1]:
      fail('scale_range', '(low, high) with 0 < low <= high')
    if self.shift_range < 0:
      fail('shift_range', '>= 0')
    if self.pad_mode not in PAD_MODES:
      fail('pad_mode', f'one of {PAD_MODES}')
    for field in ('flip_lr_prob', 'flip_ud_prob'):
      if not 0 <= getattr(self, field) <= 1:
        fail(field, 'in [0, 1]')
    if self.edge_threshold is not None and not 0 < self.edge_threshold <= 1:
      fail('edge_threshold', 'None or in (0, 1]')


@flax.struct.dataclass
class Transform:
  """A batch of sampled geometric transforms.

  Attributes:
    grid: float32 [B, H, W, 2]: for each output pixel, the (row, col) input
      coordinate it reads from, in pixels; may lie outside the image.
    pad_mode: how out-of-range coordinates are read (see `AugmentConfig`).
    edge_threshold: re-binarization threshold for edge maps, or None.
  """
  grid: jax.Array
  pad_mode: str = flax.struct.field(pytree_node=False, default='reflect')
  edge_threshold: float | None = flax.struct.field(pytree_node=False, default=None)


def sample_transform(key: jax.Array, batch_size: int, height: int, width: int,
                     config: AugmentConfig = AugmentConfig()) -> Transform:
  """Draws one independent transform per example for images of `height` x `width`."""
  tps_key, resize_key, flip_key = jax.random.split(key, 3)
  rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                            jnp.arange(width, dtype=jnp.float32), indexing='ij')
  coords = jnp.broadcast_to(jnp.stack([rows, cols], -1), (batch_size, height, width, 2))
  # Walk from output back to input: the last augmentation applied is undone first.
  coords = _undo_flips(flip_key, coords, height, width, config)
  coords = _undo_resize_translate(resize_key, coords, height, width, config)
  if config.local_tps:
    coords = _undo_local_tps(tps_key, coords, height, width, config)
  return Transform(grid=coords, pad_mode=config.pad_mode, edge_threshold=config.edge_threshold)


def apply_transform(transform: Transform, x: jax.Array, *, kind: str = 'image') -> jax.Array:
  """Resamples `x` [B, H, W, C] through `transform`; returns the same shape and dtype.

  `kind='image'` samples bilinearly. `kind='edges'` (values in [0, 1]) also
  clips to [0, 1] and re-binarizes at the transform's `edge_threshold` when it
  is set. The same transform moves every input identically, whatever `kind`.
  """
  if kind not in KINDS:
    raise ValueError(f'apply_transform: kind must be one of {KINDS}, got {kind!r}')
  if x.ndim != 4 or x.shape[:3] != transform.grid.shape[:3]:
    raise ValueError(f'apply_transform: x must be [B, H, W, C] with [B, H, W] = '
                     f'{list(transform.grid.shape[:3])} (the transform), got shape {list(x.shape)}')
  out = _sample_bilinear(x.astype(jnp.float32), transform.grid, transform.pad_mode)
  if kind == 'edges':
    out = jnp.clip(out, 0.0, 1.0)
    if transform.edge_threshold is not None:
      out = (out >= transform.edge_threshold).astype(jnp.float32)
  return out.astype(x.dtype)


def _undo_flips(key, coords, height, width, config):
  lr_key, ud_key = jax.random.split(key)
  batch_size = coords.shape[0]
  flip_lr = jax.random.bernoulli(lr_key, float(config.flip_lr_prob), (batch_size, 1, 1))
  flip_ud = jax.random.bernoulli(ud_key, float(config.flip_ud_prob), (batch_size, 1, 1))
  rows = jnp.where(flip_ud, height - 1 - coords[..., 0], coords[..., 0])
  cols = jnp.where(flip_lr, width - 1 - coords[..., 1], coords[..., 1])
  return jnp.stack([rows, cols], -1)


def _undo_resize_translate(key, coords, height, width, config):
  scale_key, shift_key = jax.random.split(key)
  batch_size = coords.shape[0]
  scale = jax.random.uniform(scale_key, (batch_size, 1, 1, 1), minval=config.scale_range[0],
                             maxval=config.scale_range[1])
  size = jnp.array([height, width], jnp.float32)
  shift = size * jax.random.uniform(shift_key, (batch_size, 1, 1, 2), minval=-config.shift_range,
                                    maxval=config.shift_range)
  centre = (size - 1) / 2
  return centre + (coords - centre - shift) / scale


def _tps_kernel(squared_distance, xp=jnp):
  """U(r) = r^2 log r, written in r^2 (= r^2 log(r^2) / 2), with U(0) = 0."""
  safe = xp.maximum(squared_distance, 1e-20)
  return xp.where(squared_distance > 0, 0.5 * squared_distance * xp.log(safe), 0.0)


@functools.cache
def _tps_control_points() -> tuple[np.ndarray, int, np.ndarray]:
  """Control points in window coordinates and the inverse TPS system matrix.

  The points are the same for every example (only their shifts are random),
  so the 20x20 TPS system is inverted once, in float64, and solving for a
  whole batch is a matrix product.
  """
  moving = np.array([(u, v) for u in (0.25, 0.5, 0.75) for v in (0.25, 0.5, 0.75)])
  pinned = np.array([(u, v) for u in (0.0, 0.5, 1.0) for v in (0.0, 0.5, 1.0)
                     if (u, v) != (0.5, 0.5)])
  points = np.concatenate([moving, pinned])
  squared = ((points[:, None] - points[None]) ** 2).sum(-1)
  kernel = _tps_kernel(squared, xp=np)
  affine = np.concatenate([np.ones((len(points), 1)), points], 1)
  system = np.block([[kernel, affine], [affine.T, np.zeros((3, 3))]])
  return points.astype(np.float32), len(moving), np.linalg.inv(system).astype(np.float32)


def _smoothstep_ramp(t):
  """0 at and beyond the window border, rising smoothly to 1 a quarter window inside."""
  t = jnp.clip(jnp.minimum(t, 1 - t) / 0.25, 0.0, 1.0)
  return t * t * (3 - 2 * t)


def _undo_local_tps(key, coords, height, width, config):
  points, num_moving, inverse_system = _tps_control_points()
  size_key, corner_key, shift_key = jax.random.split(key, 3)
  batch_size = coords.shape[0]
  size = jnp.array([height - 1, width - 1], jnp.float32)
  window = size * jax.random.uniform(size_key, (batch_size, 1), minval=config.tps_window[0],
                                     maxval=config.tps_window[1])
  corner = (size - window) * jax.random.uniform(corner_key, (batch_size, 2))
  shifts = jax.random.uniform(shift_key, (batch_size, num_moving, 2),
                              minval=-config.tps_displacement, maxval=config.tps_displacement)
  values = jnp.zeros((batch_size, inverse_system.shape[0], 2)).at[:, :num_moving].set(shifts)
  weights = jnp.einsum('ij,bjc->bic', inverse_system, values)
  kernel_weights, affine_weights = weights[:, :len(points)], weights[:, len(points):]

  local = (coords - corner[:, None, None]) / window[:, None, None]
  squared = ((local[..., None, :] - points) ** 2).sum(-1)
  displacement = (jnp.einsum('bhwk,bkc->bhwc', _tps_kernel(squared), kernel_weights)
                  + affine_weights[:, None, None, 0]
                  + jnp.einsum('bhwi,bic->bhwc', local, affine_weights[:, 1:]))
  fade = _smoothstep_ramp(local[..., :1]) * _smoothstep_ramp(local[..., 1:])
  return coords + fade * displacement * window[:, None, None]


def _reflect(t, last):
  """Mirrors coordinates about 0 and `last` (the border pixel centres)."""
  period = 2 * max(last, 1)
  t = jnp.mod(jnp.abs(t), period)
  return jnp.clip(jnp.where(t > last, period - t, t), 0, last)


def _sample_bilinear(x, grid, pad_mode):
  batch_size, height, width, channels = x.shape
  rows, cols = grid[..., 0], grid[..., 1]
  if pad_mode == 'reflect':
    rows, cols = _reflect(rows, height - 1), _reflect(cols, width - 1)
  elif pad_mode == 'edge':
    rows, cols = jnp.clip(rows, 0, height - 1), jnp.clip(cols, 0, width - 1)
  row0, col0 = jnp.floor(rows), jnp.floor(cols)
  row_frac, col_frac = rows - row0, cols - col0
  flat = x.reshape(batch_size, height * width, channels)
  out = jnp.zeros_like(x)
  for d_row, d_col in ((0, 0), (0, 1), (1, 0), (1, 1)):
    r, c = row0 + d_row, col0 + d_col
    weight = (row_frac if d_row else 1 - row_frac) * (col_frac if d_col else 1 - col_frac)
    # In 'constant' mode taps outside the image read zero; in the other modes
    # coordinates are already inside, and the clip only guards the far tap,
    # whose weight is then zero.
    inside = (r >= 0) & (r <= height - 1) & (c >= 0) & (c <= width - 1)
    index = (jnp.clip(r, 0, height - 1) * width + jnp.clip(c, 0, width - 1)).astype(jnp.int32)
    taps = jax.vmap(lambda image, i: image[i])(flat, index.reshape(batch_size, -1))
    out += (weight * inside)[..., None] * taps.reshape(x.shape)
  return out

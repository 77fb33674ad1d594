"""Where the object is, found without labels: the pixels that stand out from the backdrop.

Inspection photographs put a part in front of a plain backdrop that fills the image border.
Per image: the backdrop colour is the median CIE Lab colour (OpenCV's 8-bit scale) of the
2-pixel border ring; each pixel's distance to it, rounded to 0..255, is split in two by Otsu's
threshold, and the pixels above it are the object. When more than a fifth of the border ring
itself lies above the threshold, the image has no backdrop (a texture, or a part that fills
the frame), and when nothing stands out by `MIN_CONTRAST`, nothing is apart from the backdrop
(a flat image): every pixel is object.

Pure JAX, so it runs inside jitted and exported functions. Used by generation to keep
anomalies on the part (`manipulate.on_object`, `infer.Generator`), by
`af_jax.metrics.locality` to report how much of a generated anomaly lies on the object
(`on_object`), and by BlazeDetector's image score with `blaze.score_on_object`.
"""

import jax
import jax.numpy as jnp
import numpy as np

RING = 2  # Border pixels that show the backdrop.
MIN_CONTRAST = 10.0  # Lab units (8-bit scale): less is noise, not an object.
MAX_BORDER_ABOVE = 0.2  # Share of the border ring above the threshold that rules out a backdrop.
_RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]], np.float32)
_WHITE = np.array([0.950456, 1.0, 1.088754], np.float32)  # D65.


def lab(unit_rgb):
  """CIE Lab on OpenCV's 8-bit scale (L in [0, 255], a and b offset by 128) of RGB in [0, 1]."""
  linear = jnp.where(unit_rgb <= 0.04045, unit_rgb / 12.92, ((unit_rgb + 0.055) / 1.055) ** 2.4)
  xyz = linear @ _RGB_TO_XYZ.T / _WHITE
  f = jnp.where(xyz > 0.008856, jnp.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
  lightness = jnp.where(xyz[..., 1] > 0.008856, 116.0 * f[..., 1] - 16.0, 903.3 * xyz[..., 1])
  return jnp.stack([lightness * 255.0 / 100.0, 500.0 * (f[..., 0] - f[..., 1]) + 128.0,
                    200.0 * (f[..., 1] - f[..., 2]) + 128.0], -1)


def _otsu(levels):
  """Otsu's threshold of integer levels 0..255 [N]: the level t that best splits <= t and > t."""
  histogram = jnp.zeros(256, jnp.float32).at[levels].add(1.0)
  p = histogram / levels.size
  weight = jnp.cumsum(p)
  mean = jnp.cumsum(p * jnp.arange(256))
  between = (mean[-1] * weight - mean) ** 2 / jnp.maximum(weight * (1.0 - weight), 1e-12)
  return jnp.argmax(jnp.where((weight > 0) & (weight < 1), between, -1.0))


def _one(unit_rgb):
  colours = lab(unit_rgb)
  h, w = colours.shape[:2]
  border = np.ones((h, w), bool)
  border[RING:-RING, RING:-RING] = False
  ring = colours[border]
  distance = jnp.sqrt(jnp.sum((colours - jnp.median(ring, axis=0)) ** 2, -1))
  levels = jnp.clip(jnp.round(distance), 0, 255).astype(jnp.int32)
  threshold = _otsu(levels.ravel())
  mask = levels > threshold
  no_backdrop = (threshold < MIN_CONTRAST) | (jnp.mean(mask[border]) > MAX_BORDER_ABOVE)
  return mask | no_backdrop


@jax.jit
def foreground_batch(unit_rgb):
  """bool [N, H, W]: the object pixels of RGB images [N, H, W, 3] in [0, 1]; jittable."""
  return jax.vmap(_one)(unit_rgb.astype(jnp.float32))


def foreground(image: np.ndarray) -> np.ndarray:
  """bool [H, W]: the object pixels of one uint8 RGB image [H, W, 3] (module docstring)."""
  return np.asarray(foreground_batch(jnp.asarray(image)[None] / 255.0))[0]

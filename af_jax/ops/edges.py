"""Edge maps: PiDiNet (the paper's choice, shipped weights) or Canny (OpenCV fallback).

`pidinet_edges` and `canny_edges` work on host numpy batches (dataset building, `generate`);
`make_edge_fn` gives a pure function for use inside jitted training and inference steps.

PiDiNet outputs the fused edge probability without any threshold, as the official code does (the
paper feeds these soft maps to the generator). It was trained on BSDS photos of about 480 x 320
px, where object parts span many pixels; on small images (the 64 px demo data) it sees one thick
outline around the object and none of its parts. So images whose shorter side is below
`PIDINET_MIN_SIZE` are upsampled (bicubic) by the smallest integer factor reaching it, and the
edge probabilities are averaged back over each factor x factor block: on a 64 px circuit board the
components' outlines appear instead of the board's outline alone. Both the host and the jitted
paths do this, so training and inference see the same edges.

Canny gives hard {0, 1} edges of the grayscale image with OpenCV's hysteresis thresholds `low` and
`high` (on the 0..255 gradient scale).
"""

import functools
import math
import pathlib
from typing import Any, Callable

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from af_jax.models import pidinet
from af_jax import per_image
from af_jax import pixels

PIDINET_MIN_SIZE = 128  # Shorter image side PiDiNet works at (see the module docstring).


def pidinet_upscale(height: int, width: int) -> int:
  """The integer factor PiDiNet upsamples an image of this size by (1 from PIDINET_MIN_SIZE)."""
  return max(1, math.ceil(PIDINET_MIN_SIZE / max(1, min(height, width))))


@functools.lru_cache(maxsize=4)
def make_edge_fn(checkpoint: str | pathlib.Path | None = None,
                 dtype: Any = jnp.float32) -> Callable[[jax.Array], jax.Array]:
  """Returns a pure, jittable `fn(images) -> edges` backed by PiDiNet weights.

  Args:
    checkpoint: PiDiNet weights (`.npz` or `.pth`); None uses the weights shipped with af_jax.
    dtype: computation dtype of the convolutions (e.g. jnp.bfloat16 on accelerators); the
      parameters and the returned probabilities stay float32.

  Returns:
    `fn(images)`: float RGB images in [-1, 1], [B, H, W, 3] -> edge probability [B, H, W, 1] in
    [0, 1] (float32). `fn` is a `jax.tree_util.Partial` holding the weights as its pytree leaves,
    so it can be closed over or passed as an argument to jitted functions and placed or sharded
    like any pytree. Calls with the same arguments return the same `fn` (cached), so repeated
    calls reuse one set of device weights and one compilation.
  """
  params = jax.device_put(pidinet.load_pidinet_params(checkpoint))
  model = pidinet.model_for_params(params, dtype)
  return jax.tree_util.Partial(functools.partial(_signed_images_to_edges, model), params)


def _signed_images_to_edges(model: pidinet.PiDiNet, params: dict, images: jax.Array
                            ) -> jax.Array:
  # Image by image on a CPU, where a batch's activations leave the cache.
  return per_image.on_cpu(functools.partial(_edges_of_batch, model, params))(images)


def _edges_of_batch(model: pidinet.PiDiNet, params: dict, images: jax.Array) -> jax.Array:
  b, h, w, c = images.shape
  factor = pidinet_upscale(h, w)
  x = pixels.signed_to_unit(images.astype(jnp.float32))
  if factor > 1:
    x = jnp.clip(jax.image.resize(x, (b, h * factor, w * factor, c), "cubic"), 0, 1)
  edges = model.apply({"params": params}, x)
  return edges.reshape(b, h, factor, w, factor, 1).mean(axis=(2, 4))


@jax.jit
def _uint8_batch_to_edges(edge_fn: Callable, images: jax.Array) -> jax.Array:
  return edge_fn(pixels.uint8_to_signed(images))[..., 0]


def pidinet_edges(images: np.ndarray, checkpoint: str | pathlib.Path | None = None,
                  batch_size: int = 16) -> np.ndarray:
  """PiDiNet fused edge probability for a batch of uint8 RGB images.

  Images go to the default JAX device in chunks of `batch_size`; a short chunk is padded (to the
  next power of two, at most `batch_size`) so that one compiled program serves all calls with the
  same image size and a single image does not pay for a whole batch.

  Args:
    images: uint8 RGB, [N, H, W, 3].
    checkpoint: PiDiNet weights; None uses the weights shipped with af_jax.
    batch_size: images per device call.

  Returns:
    float32 [N, H, W] in [0, 1].
  """
  images = pixels.check_uint8_rgb(images, batch=True)
  if not len(images):
    return np.zeros(images.shape[:3], np.float32)
  edge_fn = make_edge_fn(checkpoint)
  chunks = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    padded = min(batch_size, 1 << (len(chunk) - 1).bit_length())
    edges = _uint8_batch_to_edges(
        edge_fn, np.pad(chunk, ((0, padded - len(chunk)), (0, 0), (0, 0), (0, 0))))
    chunks.append(np.asarray(edges)[:len(chunk)])
  return np.concatenate(chunks, axis=0)


def canny_edges(images: np.ndarray, low: float = 100, high: float = 200) -> np.ndarray:
  """OpenCV Canny edges of the grayscale images: float32 [N, H, W] with values in {0, 1}."""
  images = pixels.check_uint8_rgb(images, batch=True)
  edges = np.zeros(images.shape[:3], np.float32)
  for index, image in enumerate(images):
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    edges[index] = pixels.uint8_to_unit(cv2.Canny(gray, low, high))
  return edges


def compute_edges(images: np.ndarray, method: str = "pidinet") -> np.ndarray:
  """Edge maps float32 [N, H, W] in [0, 1] of uint8 RGB [N, H, W, 3] images.

  `method` is 'pidinet' (soft probabilities, shipped weights) or 'canny' (binary).
  """
  if method == "pidinet":
    return pidinet_edges(images)
  if method == "canny":
    return canny_edges(images)
  raise ValueError(f"unknown edge method {method!r}; expected one of {pixels.EDGE_METHODS}")

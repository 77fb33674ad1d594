"""The one pixel convention of af_jax: reading, resizing, value ranges, edge binarisation, PNG.

Dataset builders (at `af-jax prepare`), training and inference all go through these
functions, so a model sees at test time exactly the arrays it was trained on. numpy and
OpenCV only (no JAX import): the builders and `--help` stay light. The value conversions
use only array methods and operators, so they work unchanged on numpy and JAX arrays.

Conventions:
- Images are uint8 RGB [H, W, 3]; grayscale sources are repeated to three channels.
- Resizing (`resize_image`) stretches to S x S, never crops, so non-square sources keep their
  whole field of view and masks stay aligned. Rule: every side longer than S is first shrunk
  by area averaging (each output pixel averages the source pixels folded into it: no aliasing
  of fine texture), then every side shorter than S is enlarged bilinearly. A side that shrinks
  while the other grows gets each treatment on its own axis (one OpenCV call with either
  interpolation would alias the shrinking side).
- Masks and region label maps are resized nearest-neighbour, so labels stay labels.
- Network inputs are float in [-1, 1]: images from uint8 by x / 127.5 - 1, edge maps
  (probabilities in [0, 1], stored as round(p x 255)) binarised at a threshold, then x 2 - 1.
"""

import os

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# The extractors an edge map can come from (`af_jax.ops.edges` runs them).
EDGE_METHODS = ("pidinet", "canny")


# ------------------------------------------------------------------ reading
def _decode(path: str | os.PathLike, what: str, flags: int) -> np.ndarray:
  """The decoded image file, or a ValueError naming it: missing, empty, corrupt, not an image,
  or of zero height or width."""
  try:
    data = np.fromfile(path, np.uint8)  # imdecode, unlike imread, takes any path encoding.
  except OSError as e:
    raise ValueError(f"cannot read {what} {path} ({e.strerror or e})") from e
  if not data.size:
    raise ValueError(f"cannot read {what} {path} (the file is empty: 0 bytes)")
  try:
    image = cv2.imdecode(data, flags)
  except cv2.error:
    image = None
  if image is None or not image.size:
    raise ValueError(f"cannot read {what} {path} (corrupt or not an image)")
  return image


def read_rgb(path: str | os.PathLike) -> np.ndarray:
  """uint8 [H, W, 3] RGB; grayscale and 16-bit sources are converted.

  Raises ValueError naming the file when it is missing, empty, corrupt or not an image.
  """
  return cv2.cvtColor(_decode(path, "image", cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def read_mask(path: str | os.PathLike) -> np.ndarray:
  """bool [H, W]: True where any colour channel is non-zero (datasets encode defect types in
  the value). Raises ValueError naming the file when it cannot be read."""
  mask = _decode(path, "mask", cv2.IMREAD_UNCHANGED)
  if mask.ndim == 3:
    mask = mask[..., :3].max(axis=-1)
  return mask > 0


def as_rgb(image, index: int = 0) -> np.ndarray:
  """uint8 [H, W, 3] from uint8 RGB or grayscale ([H, W] or [H, W, 1]); `index` names it in
  the error for anything else."""
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, -1)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f"image {index}: expected uint8 [H, W, 3] (or [H, W]), got "
                     f"{image.dtype} {image.shape}")
  if not image.size:
    raise ValueError(f"image {index} is empty: its shape is {image.shape}")
  return image


def image_list(images, what: str = "images") -> list:
  """Images given as a sequence of [H, W(, C)] arrays or as one [N, H, W, C] array, as a list.

  One image as an array ([H, W, 3] or [H, W]) is refused: its rows would be read as images.
  `what` names the argument in the error.
  """
  if isinstance(images, np.ndarray) or hasattr(images, "__array__") and hasattr(images, "ndim"):
    if np.ndim(images) != 4:
      raise ValueError(f"{what}: expected a list of images or an [N, H, W, C] array, got one "
                       f"array of shape {np.shape(images)}; for a single image pass [image] "
                       "(or image[None])")
  return list(images)


# ------------------------------------------------------------------ resizing
def check_uint8_rgb(images, *, batch: bool) -> np.ndarray:
  """`images` as an array, if it is uint8 RGB: [N, H, W, 3] (`batch`) or one [H, W, 3]."""
  x = np.asarray(images)
  if x.dtype != np.uint8 or x.ndim != (4 if batch else 3) or x.shape[-1] != 3:
    raise ValueError(f"expected uint8 RGB images {'[N, H, W, 3]' if batch else '[H, W, 3]'}, "
                     f"got {x.dtype} {x.shape}")
  return x


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
  """`image` stretched to `size` x `size` by the one resize rule (module docstring)."""
  height, width = image.shape[:2]
  if height > size or width > size:
    image = cv2.resize(image, (min(width, size), min(height, size)), interpolation=cv2.INTER_AREA)
  if image.shape[:2] != (size, size):
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
  return image


def resize_images(images, size: int) -> np.ndarray:
  """uint8 RGB or grayscale images (a list of any sizes, or an array) -> uint8 [N, S, S, 3]."""
  out = [resize_image(as_rgb(image, i), size) for i, image in enumerate(images)]
  return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def resize_labels(labels: np.ndarray, size: int) -> np.ndarray:
  """An integer label map (or mask) [H, W] stretched to size x size, nearest-neighbour."""
  if labels.shape[:2] == (size, size):
    return labels
  return cv2.resize(labels, (size, size), interpolation=cv2.INTER_NEAREST)


def resize_back(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """A model-size map or image back to an image's own (H, W), bilinear."""
  height, width = shape
  if x.shape[:2] == (height, width):
    return x
  return cv2.resize(x, (width, height), interpolation=cv2.INTER_LINEAR)


# ------------------------------------------------------------------ value ranges
def uint8_to_signed(x):
  """uint8 [0, 255] -> float32 [-1, 1] (numpy or JAX arrays)."""
  return x.astype(np.float32) / 127.5 - 1.0


def signed_to_uint8(x) -> np.ndarray:
  """float [-1, 1] -> uint8 [0, 255], rounded, on the host."""
  return np.clip(np.rint((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def unit_to_uint8(x) -> np.ndarray:
  """float [0, 1] (probabilities, heatmaps, masks) -> uint8 [0, 255], rounded, on the host."""
  return np.round(np.clip(np.asarray(x, np.float32), 0.0, 1.0) * 255).astype(np.uint8)


def uint8_to_unit(x):
  """uint8 [0, 255] -> float32 [0, 1] (stored edge maps and masks; numpy or JAX arrays)."""
  return x.astype(np.float32) / 255.0


def signed_to_unit(x):
  """[-1, 1] -> [0, 1] (numpy or jax arrays)."""
  return (x + 1.0) / 2.0


def unit_to_signed(x):
  """[0, 1] -> [-1, 1], the range every network input lives in (numpy or JAX arrays)."""
  return x * 2.0 - 1.0


def binarize_edges(edges, threshold: float | None):
  """Edge probabilities -> {0, 1} at `threshold` (None keeps them soft); numpy or JAX arrays.

  The builders store round(p x 255), and round(p x 255) / 255 >= 0.5 exactly when p >= 0.5,
  so stored and freshly computed edges binarise alike at the default threshold.
  """
  return edges if threshold is None else (edges >= threshold).astype(edges.dtype)


# ------------------------------------------------------------------ colour scale
def heat_colours(level) -> np.ndarray:
  """uint8 RGB [..., 3] of levels in [0, 1] (clipped) on the JET scale, blue 0 to red 1.

  The one colour scale of heatmap overlays and of the demo report's heatmaps and colour bars.
  """
  shape = np.shape(level)
  bgr = cv2.applyColorMap(unit_to_uint8(level).reshape(-1, 1), cv2.COLORMAP_JET)
  return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).reshape(*shape, 3)


# ------------------------------------------------------------------ encoding
def encode_png(image: np.ndarray) -> bytes:
  """PNG bytes of uint8 [H, W, 3] RGB, [H, W, 4] RGBA, [H, W, 1] or [H, W] gray."""
  if image.ndim == 3 and image.shape[-1] == 3:
    image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
  elif image.ndim == 3 and image.shape[-1] == 4:
    image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
  ok, encoded = cv2.imencode(".png", image)
  if not ok:
    raise ValueError(f"cannot PNG-encode an array of shape {image.shape} and dtype {image.dtype}")
  return encoded.tobytes()


def overlay(image: np.ndarray, heatmap: np.ndarray, threshold: float,
            alpha: float = 0.6) -> np.ndarray:
  """The image, coloured only where the heatmap nears or passes the pixel `threshold`.

  Colour: `heat_colours` over [0, 2 x threshold] (green at the threshold, red at twice
  it). Opacity: none up to half the threshold, rising to `alpha` at the threshold, so the
  image keeps its own colours where the heatmap is low (a heatmap of 0 leaves it unchanged)
  and the coloured parts are those its binary mask marks or nearly marks.
  """
  level = np.asarray(heatmap, np.float32) / max(2 * threshold, 1e-12)
  weight = alpha * np.clip(4 * level - 1, 0, 1)[..., None]
  blended = image * (1 - weight) + heat_colours(level) * weight
  return np.round(blended).astype(np.uint8)

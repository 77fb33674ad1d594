"""The one pixel convention of af_jax: reading, resizing, value ranges, edge binarisation, PNG.

Dataset builders (at `af-jax prepare`), training and inference all go through these
functions, so a model sees at test time exactly the arrays it was trained on. numpy and
OpenCV only (no JAX import): the builders and `--help` stay light. The value conversions
use only array methods and operators, so they work unchanged on numpy and JAX arrays.

Conventions:
- Images are uint8 RGB [H, W, 3]; grayscale sources are repeated to three channels.
- Gray and colour are never compared: an image is gray when its channels agree (their spread,
  max - min, averages under `GRAY_SPREAD` levels: a gray camera's file, 8 or 16 bits, or saved
  as colour), and the detector compares each image only with a normal reference of its own
  kind (`af_jax.evidence.reference`), so a gray reference never scores colour images, nor the
  reverse: a colour part seen in gray differs from its reference at every pixel.
- Resizing (`resize_image`) stretches to S x S, never crops, so non-square sources keep their
  whole field of view and masks stay aligned. Rule: every side longer than S is first shrunk
  by area averaging (each output pixel averages the source pixels folded into it: no aliasing
  of fine texture), then every side shorter than S is enlarged bilinearly. A side that shrinks
  while the other grows gets each treatment on its own axis (one OpenCV call with either
  interpolation would alias the shrinking side).
- 16-bit images (PNG, TIFF) often hold a sensor's 10, 12 or 14 bits (0..4095 for 12-bit
  data); scaled from 0..65535 they would come out almost black. Each one is read at the
  smallest of `BIT_DEPTHS` that holds its maximum value (0..2^b - 1 -> 0..255), with a
  warning naming the file, its value range and the depth, once per depth and folder. Images
  of one camera whose brightest pixels fall into different depths (a dark 12-bit image whose
  maximum is below 1024 reads as 10-bit) are scaled differently: the warnings name every
  depth met in a folder, and data stored at the full 16-bit range reads alike.
- Masks: a mask of at most `LABEL_LEVELS` distinct values holds labels (datasets encode defect
  types in the value: VisA 1..K, MVTec LOCO), and any non-zero pixel is defect. A JPEG mask, or
  one of more levels (anti-aliased edges), is graded: compression ringing and soft edges are
  not defect, so it is binarized at half its dtype's range (>= 128 of 255), with a warning
  once per folder.
- Masks and region label maps are resized nearest-neighbour, so labels stay labels.
- Network inputs are float in [-1, 1]: images from uint8 by x / 127.5 - 1, edge maps
  (probabilities in [0, 1], stored as round(p x 255)) binarised at a threshold, then x 2 - 1.
"""

import logging
import os
import pathlib

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# The extractors an edge map can come from (`af_jax.ops.edges` runs them).
EDGE_METHODS = ("pidinet", "canny")
# The bit depths a 16-bit image is read at (module docstring).
BIT_DEPTHS = (8, 10, 12, 14, 16)
# A mask of at most this many distinct values holds labels; more is a graded mask.
LABEL_LEVELS = 16
LOSSY_SUFFIXES = (".jpg", ".jpeg")
# An image whose channels differ by less than this on average (levels of 255) is gray; colour
# photos of even dull grey parts differ by several levels (MPDD metal_plate 25-38, MVTec AD
# bottle 8), a gray camera's by none.
GRAY_SPREAD = 1.0

log = logging.getLogger(__name__)
_warned: set[tuple[str, str]] = set()  # (folder, what): warned once per process.


def _warn_once(path, what: str, message: str) -> None:
  """Logs `message` for the first file of `path`'s folder that `what` applies to."""
  key = (str(pathlib.Path(path).parent), what)
  if key not in _warned:
    _warned.add(key)
    log.warning("%s (further such files in %s are not named)", message, key[0])


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


def _to_uint8(image: np.ndarray, path) -> np.ndarray:
  """8-bit samples as they are, 16-bit ones scaled by their bit depth (module docstring)."""
  if image.dtype == np.uint8:
    return image
  if image.dtype != np.uint16:
    raise ValueError(f"cannot read image {path} ({image.dtype} samples; expected 8- or 16-bit "
                     "integers: save it as an 8- or 16-bit PNG)")
  low, high = int(image.min()), int(image.max())
  bits = next(b for b in BIT_DEPTHS if high < 2 ** b)
  if bits < 16:
    _warn_once(path, f"{bits}-bit", f"{path}: a 16-bit image with values {low}..{high}, read "
               f"as {bits}-bit data (0..{2 ** bits - 1} scaled to 0..255)")
  return np.rint(image * (255.0 / (2 ** bits - 1))).astype(np.uint8)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
  """uint8 [H, W, 3] RGB; grayscale sources are repeated, 16-bit ones scaled by their bit depth
  (module docstring).

  Raises ValueError naming the file when it is missing, empty, corrupt or not an image.
  """
  image = _decode(path, "image", cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
  return cv2.cvtColor(_to_uint8(image, path), cv2.COLOR_BGR2RGB)


def read_mask(path: str | os.PathLike) -> np.ndarray:
  """bool [H, W] of a label mask (True where any colour channel is non-zero) or of a graded
  one (JPEG, anti-aliased: True from half range on), as the module docstring says. Raises
  ValueError naming the file when it cannot be read."""
  mask = _decode(path, "mask", cv2.IMREAD_UNCHANGED)
  if mask.ndim == 3:
    mask = mask[..., :3].max(axis=-1)
  levels = len(np.unique(mask))
  lossy = pathlib.Path(path).suffix.lower() in LOSSY_SUFFIXES
  if not lossy and levels <= LABEL_LEVELS:
    return mask > 0
  half = 0.5 if mask.dtype.kind == "f" else (int(np.iinfo(mask.dtype).max) + 1) // 2
  _warn_once(path, "graded mask", f"{path}: a {'JPEG' if lossy else 'graded'} mask of "
             f"{levels} grey levels, binarized at half range (>= {half}) so that compression "
             "ringing and soft edges are not defect")
  return mask >= half


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


def is_gray(images, unit: float = 255.0) -> np.ndarray:
  """bool [N]: which of images [N, H, W, 3] are gray (module docstring); `unit` is the value
  of white (255 for uint8, 1 for a reference's mean and std in [0, 1])."""
  x = np.asarray(images, np.float32) * (255.0 / unit)
  spread = x.max(-1) - x.min(-1)
  return spread.mean(axis=tuple(range(1, spread.ndim))) < GRAY_SPREAD


def kind(gray: bool) -> str:
  return "grayscale" if gray else "colour"


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

"""An exported detector (`af-jax export-detector`) loaded back with its file checked first.

  detector = af_jax.load_detector("detector/")
  heatmaps, scores = detector(images)              # uint8 [N, S, S, 3]
  heatmaps, scores = detector(images, category)    # a run trained with blaze.reference
  ng = scores >= detector.threshold("image", category)   # that category's calibrated one

`detector.json` records the size and SHA-256 of `detector.stablehlo`; the loader compares
them before `jax.export.deserialize` sees a byte, because a damaged file does not fail
cleanly there: a truncated one is a `struct.error`, flipped bytes a `TypeError`, a segfault,
or a function that loads and runs with other weights. Any damage is one ValueError naming the
file and saying to export it again.

The call checks what the serialized function would reject with a JAX shape error, or would
not check at all: the images' dtype and shape, and each category index, which the function
itself clamps to the last category when it is out of range. A batch of 0 images gives empty
outputs (the function's symbolic batch size must be at least 1). An image of another kind than
its category's reference (gray or colour, `af_jax.pixels`) is refused, as by the Detector. Only numpy and JAX are
needed; the README shows the same check in plain JAX.
"""

import hashlib
import json
import pathlib

import numpy as np

from af_jax.inference import compile_cache
from af_jax.inference import thresholds as thresholds_lib
from af_jax import pixels

FUNCTION_FILE = "detector.stablehlo"
METADATA_FILE = "detector.json"


def sha256(data: bytes) -> str:
  """The hex SHA-256 that `detector.json` records of `detector.stablehlo`'s bytes."""
  return hashlib.sha256(data).hexdigest()


def _again(folder: pathlib.Path) -> str:
  return (f"export it again (af-jax export-detector --workdir RUN --out {folder} "
          "--overwrite)")


def _metadata(folder: pathlib.Path) -> dict:
  path = folder / METADATA_FILE
  try:
    metadata = json.loads(path.read_text())
  except OSError as e:
    raise ValueError(f"cannot read {path} ({e.strerror or e}); {_again(folder)}") from None
  except ValueError as e:  # Not JSON, or not UTF-8.
    raise ValueError(f"{path} is damaged (not JSON: {e}); {_again(folder)}") from None
  wanted = {"size": int, "sha256": str, "bytes": int, "categories": (list, type(None))}
  wrong = [key for key, kind in wanted.items()
           if not isinstance(metadata, dict) or not isinstance(metadata.get(key), kind)]
  if wrong:
    raise ValueError(f"{path} lacks {', '.join(wrong)} (damaged, or written by an af_jax "
                     f"that recorded no checksum); {_again(folder)}")
  return metadata


class ExportedDetector:
  """A checked `detector.stablehlo` with its `detector.json` (module docstring).

  Attributes:
    folder: the export's folder.
    size: the image size S it takes.
    categories: the names of its references in index order, or None (no category input).
    metadata: all of `detector.json` (thresholds, af_jax version, ...).
    exported: the deserialized `jax.export.Exported`.
  """

  def __init__(self, folder: pathlib.Path, metadata: dict, exported):
    import jax  # pylint: disable=g-import-not-at-top
    self.folder = folder
    self.metadata = metadata
    self.size = metadata["size"]
    self.categories = metadata["categories"]
    self.exported = exported
    # Compiled once per batch size, kept by jit for this process and on disk for the next
    # (`compile_cache`).
    self._call = jax.jit(exported.call)

  def _indices(self, category, count: int) -> np.ndarray:
    """int32 [count] of `category` (one index for all images, or one per image), each checked
    against `categories`."""
    named = ", ".join(f"{i} {name}" for i, name in enumerate(self.categories))
    index = np.asarray(category)
    if not np.issubdtype(index.dtype, np.integer) or index.ndim > 1:
      raise ValueError(f"category: expected an integer index or one per image into the "
                       f"categories of {self.folder} ({named}), got {index.dtype} {index.shape}")
    index = np.broadcast_to(index, (count,)) if index.ndim == 0 else index
    if index.shape != (count,):
      raise ValueError(f"category: expected one index per image ({count}), got {len(index)}")
    outside = index[(index < 0) | (index >= len(self.categories))]
    if outside.size:
      raise ValueError(f"category index {outside[0]} is out of range: the detector in "
                       f"{self.folder} has {len(self.categories)} categories ({named})")
    return index.astype(np.int32)

  def __call__(self, images, category=None):
    """(heatmaps float32 [N, S, S] in [0, 1], scores float32 [N]) of uint8 [N, S, S, 3]
    images; `category`, an index into `categories` (one for all or one per image), is needed
    exactly when the detector has categories."""
    size = self.size
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != (size, size, 3) or images.ndim != 4:
      raise ValueError(f"images: the detector in {self.folder} takes uint8 [N, {size}, {size}, "
                       f"3], got {images.dtype} {images.shape} (resize with "
                       "af_jax.pixels.resize_images)")
    args = [images]
    if self.categories is None and category is not None:
      raise ValueError(f"category: the detector in {self.folder} has no categories (its run "
                       "was trained without blaze.reference); call it with the images alone")
    if self.categories is not None:
      if category is None:
        raise ValueError(f"category: the detector in {self.folder} needs each image's category,"
                         f" an index into {self.categories}")
      args.append(self._indices(category, len(images)))
      self._check_kinds(images, args[-1])
    if not len(images):
      return np.zeros((0, size, size), np.float32), np.zeros((0,), np.float32)
    return self._call(*args)

  def _check_kinds(self, images: np.ndarray, index: np.ndarray) -> None:
    """Gray and colour are never compared (`af_jax.pixels`): an image of the other kind than
    its category's reference is refused, naming both (an export recording no kinds, from
    before af_jax did, is not checked)."""
    if self.metadata.get("gray") is None:
      return
    gray, wanted = pixels.is_gray(images), np.asarray(self.metadata["gray"], bool)[index]
    for i in np.flatnonzero(gray != wanted)[:1]:
      raise ValueError(f"image {i} is {pixels.kind(gray[i])} but category {index[i]} "
                       f"({self.categories[index[i]]}) of the detector in {self.folder} is "
                       f"{pixels.kind(wanted[i])}: gray and colour are never compared; export "
                       "the detector with a --reference of this camera's normal images")

  def threshold(self, kind: str, category=None) -> float:
    """The calibrated pixel/image threshold of `category` (an index into `categories`, or its
    name; none for a detector without categories) that `detector.json` carries; a ValueError
    naming the category and the calibrated ones when it has none."""
    if kind not in thresholds_lib.KINDS:
      raise ValueError(f"threshold kind must be one of {thresholds_lib.KINDS}, got {kind!r}")
    if self.categories is None:
      name = thresholds_lib.ANY
    elif category is None:
      raise ValueError(f"category: the detector in {self.folder} keeps thresholds per "
                       f"category; name one of {self.categories} (or its index)")
    else:
      name = (category if isinstance(category, str)
              else self.categories[int(self._indices(category, 1)[0])])
    kept = self.metadata.get("thresholds")
    kept = kept if isinstance(kept, dict) else {}
    if not isinstance(kept.get(name), dict) or not isinstance(kept[name].get(kind), float):
      raise ValueError(f"{self.folder / METADATA_FILE} carries no calibrated {kind} threshold "
                       f"for {'its images' if name == thresholds_lib.ANY else name} (calibrated:"
                       f" {', '.join(kept) or 'none'}); calibrate it (af-jax localize "
                       f"--calibrate DIR) and {_again(self.folder)}")
    return kept[name][kind]


def load_detector(folder, compilation_cache: str | None = None) -> ExportedDetector:
  """The export in `folder` (`detector.stablehlo` and `detector.json`), checked against its
  recorded size and SHA-256 before it is deserialized; a ValueError naming the file when it is
  missing or damaged. Its compiled programs are kept in `compilation_cache` (default:
  `compile_cache.default_folder()`; '' keeps none)."""
  from jax import export  # pylint: disable=g-import-not-at-top
  compile_cache.use(compilation_cache)
  folder = pathlib.Path(folder)
  metadata = _metadata(folder)
  path = folder / FUNCTION_FILE
  try:
    data = path.read_bytes()
  except OSError as e:
    raise ValueError(f"cannot read {path} ({e.strerror or e}); {_again(folder)}") from None
  if len(data) != metadata["bytes"]:
    raise ValueError(f"{path} is damaged: {len(data)} bytes, where {metadata['bytes']} were "
                     f"exported (truncated or appended to); {_again(folder)}")
  if sha256(data) != metadata["sha256"]:
    raise ValueError(f"{path} is damaged: its SHA-256 differs from the one "
                     f"{folder / METADATA_FILE} recorded at export; {_again(folder)}")
  try:
    exported = export.deserialize(data)
  except Exception as e:  # pylint: disable=broad-except
    # The bytes are those exported, so the JAX reading them differs from the one that wrote them.
    import jax  # pylint: disable=g-import-not-at-top
    raise ValueError(f"{path} is the exported file, but jax {jax.__version__} cannot load it "
                     f"({type(e).__name__}: {e}); load it with the jax it was exported with, "
                     f"or {_again(folder)}") from None
  return ExportedDetector(folder, metadata, exported)

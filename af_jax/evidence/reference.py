"""What normal looks like at each pixel: per-category statistics of normal images.

A category's reference is the per-pixel, per-channel mean and standard deviation of its normal
training images (values in [0, 1], model size). Two things use it:

* The per-pixel Gaussian baseline (`af_jax.evidence.baseline`): the deviation map is the score itself.
* BlazeDetector with `blaze.reference` on (`af_jax.training.stage_inputs`, `af_jax.inference`):
  the deviation map is three extra input channels, so the network sees, beside the image, how
  far each pixel is from what that category's normal images hold there. A convolutional network
  cannot memorize a category's exact normal appearance per position from a few thousand
  examples; a per-pixel mean can (it is why the no-learning baseline is strong on aligned
  objects), and the network learns from its synthetic anomalies when to trust that map (aligned
  objects) and when not (textures, rotated parts), instead of relearning it.

Deviation: d = |x - mean| / (std + eps) per channel; the network gets d / (1 + d), scaled to
[-1, 1] like its other inputs (bounded, and still ordered where d is large).

Training images are part of their own category's statistics, so their deviations would be
smaller than those of unseen normal images; training therefore uses leave-one-out statistics
(`leave_one_out`): each example is compared with its category's other images, as a test image
is.

Files: a Blaze run keeps its categories' references in `<workdir>/reference_statistics.npz`
(`save` / `load`), written before its first step; at inference each image uses the reference
of the category whose mean image is nearest to it (`References.nearest`), or a named one.
"""

import dataclasses
import pathlib

import jax.numpy as jnp
import numpy as np

from af_jax import files
from af_jax import pixels

FILE_NAME = "reference_statistics.npz"
CHANNELS = 3  # The deviation map's channels: one per colour channel.


@dataclasses.dataclass(frozen=True)
class Moments:
  """Running sums of one category's normal images, float64 [S, S, 3] each, values in [0, 1]."""
  total: np.ndarray
  total_sq: np.ndarray
  count: int

  @classmethod
  def of(cls, images) -> "Moments":
    """Moments of uint8 images [N, S, S, 3] (an array or an iterable of arrays)."""
    total = total_sq = None
    count = 0
    for image in images:
      x = _unit(image).astype(np.float64)
      total = x if total is None else total + x
      total_sq = x * x if total_sq is None else total_sq + x * x
      count += 1
    if count < 2:
      raise ValueError(f"a reference needs at least 2 normal images, got {count}")
    return cls(total, total_sq, count)

  def statistics(self) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std), float32 [S, S, 3]."""
    return _mean_std(self.total, self.total_sq, self.count)

  def leave_one_out(self, image: np.ndarray) -> np.ndarray:
    """float32 [S, S, 6]: (mean, std) of the category without uint8 `image` (one of its own)."""
    x = _unit(image).astype(np.float64)
    mean, std = _mean_std(self.total - x, self.total_sq - x * x, self.count - 1)
    return np.concatenate([mean, std], axis=-1)


def _mean_std(total, total_sq, count) -> tuple[np.ndarray, np.ndarray]:
  mean = total / count
  var = np.maximum(total_sq / count - mean * mean, 0.0)  # Rounding can dip below zero.
  return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def _unit(image, batch: bool = False) -> np.ndarray:
  return pixels.uint8_to_unit(pixels.check_uint8_rgb(image, batch=batch))


def deviation(unit_image, mean, std, eps: float):
  """|x - mean| / (std + eps) per channel; all in [0, 1]. numpy or jax arrays, any batch shape."""
  xp = jnp if isinstance(unit_image, jnp.ndarray) else np
  return xp.abs(unit_image - mean) / (std + eps)


def network_channels(signed_image, mean_std, eps: float):
  """The network's deviation input [..., 3] in [-1, 1], from an image in [-1, 1] and
  `mean_std` [..., 6] (mean, then std, in [0, 1]); jittable."""
  d = deviation(pixels.signed_to_unit(signed_image), mean_std[..., :CHANNELS],
                mean_std[..., CHANNELS:], eps)
  return 2.0 * d / (1.0 + d) - 1.0


@dataclasses.dataclass(frozen=True)
class References:
  """Named per-category references: mean and std float32 [C, S, S, 3]."""
  names: tuple[str, ...]
  mean: np.ndarray
  std: np.ndarray

  @classmethod
  def from_moments(cls, moments: dict[str, Moments]) -> "References":
    stats = [m.statistics() for m in moments.values()]
    return cls(tuple(moments), np.stack([s[0] for s in stats]), np.stack([s[1] for s in stats]))

  def mean_std(self, index) -> np.ndarray:
    """float32 [..., S, S, 6] of reference `index` (an int or an int array)."""
    return np.concatenate([self.mean[index], self.std[index]], axis=-1)

  @property
  def gray(self) -> np.ndarray:
    """bool [C]: which references are of gray images (`pixels.is_gray`: mean and std alike
    in every channel)."""
    return pixels.is_gray(self.mean, unit=1.0) & pixels.is_gray(self.std, unit=1.0)

  def nearest(self, images: np.ndarray, names=None) -> np.ndarray:
    """int [N]: for uint8 images [N, S, S, 3] of the references' size, the reference of its
    own kind (gray or colour, `pixels` docstring) whose mean image is nearest (mean squared
    difference); ValueError naming the first image (by `names`, else its index) of a kind
    no reference has."""
    x = _unit(images, batch=True)
    if x.shape[1:] != self.mean.shape[1:]:
      raise ValueError(f"images of shape {x.shape[1:]} do not match the references' "
                       f"{self.mean.shape[1:]}")
    flat_x, flat_m = x.reshape(len(x), -1), self.mean.reshape(len(self.names), -1)
    distance = ((flat_x ** 2).sum(1)[:, None] - 2 * flat_x @ flat_m.T
                + (flat_m ** 2).sum(1)[None])
    gray = pixels.is_gray(images)
    other_kind = gray[:, None] != self.gray[None]
    for i in np.flatnonzero(other_kind.all(axis=1))[:1]:
      raise ValueError(f"{_named(names, i)} is {pixels.kind(gray[i])} and no reference is "
                       f"({', '.join(self.names)}): gray and colour are never compared; give "
                       "the normal images of its own camera as --reference DIR")
    return np.argmin(np.where(other_kind, np.inf, distance), axis=1)

  def check_kinds(self, images: np.ndarray, which: np.ndarray, names=None) -> None:
    """ValueError naming the first of uint8 images [N, S, S, 3] (by `names`, else its index)
    whose kind, gray or colour, differs from that of its reference `which` (`pixels`)."""
    gray, wanted = pixels.is_gray(images), self.gray[which]
    for i in np.flatnonzero(gray != wanted)[:1]:
      raise ValueError(
          f"{_named(names, i)} is {pixels.kind(gray[i])} but the reference "
          f"{self.names[which[i]]} is {pixels.kind(wanted[i])}: gray and colour are never "
          "compared (its scores would shift at every pixel); give the normal images of its own "
          "camera as --reference DIR")

  def with_reference(self, name: str, moments: Moments) -> "References":
    """These references plus (or with a new) `name` from `moments`."""
    mean, std = moments.statistics()
    if mean.shape != self.mean.shape[1:]:
      raise ValueError(f"a reference of shape {mean.shape} does not match the run's "
                       f"{self.mean.shape[1:]}")
    keep = [i for i, n in enumerate(self.names) if n != name]
    return References(tuple(self.names[i] for i in keep) + (name,),
                      np.concatenate([self.mean[keep], mean[None]]),
                      np.concatenate([self.std[keep], std[None]]))

  def index(self, name: str) -> int:
    """The reference `name` names: whole ('synthetic/circuit-64px-...'), its build
    ('circuit-64px-...') or its category ('circuit', as an MVTec-layout folder names it)."""
    matches = [i for i, n in enumerate(self.names)
               if name in (n, n.split("/")[-1], _category_of(n))]
    if len(matches) != 1:
      raise KeyError(f"no single reference named {name!r}; the run has {list(self.names)}")
    return matches[0]

  def save(self, workdir) -> pathlib.Path:
    """Writes `<workdir>/reference_statistics.npz` atomically (a rename)."""
    path = pathlib.Path(workdir) / FILE_NAME
    return files.write_npz(path, names=np.asarray(self.names), mean=self.mean, std=self.std)


def _category_of(name: str) -> str | None:
  """The category of a reference named 'dataset/build' (None for another name)."""
  from af_jax import input_pipeline  # pylint: disable=g-import-not-at-top  (it imports this)
  dataset, _, build = name.rpartition("/")
  return input_pipeline.category_of_build(dataset, build) if dataset else None


def _named(names, i: int) -> str:
  return str(names[i]) if names is not None else f"image {i}"


def check_one_kind(images, name: str, names=None) -> None:
  """ValueError when uint8 images [N, S, S, 3], the normal images of reference `name`, mix
  gray and colour (`pixels`): a reference is of one kind."""
  gray = pixels.is_gray(images)
  if gray.any() and not gray.all():
    i = int(np.flatnonzero(gray != gray[0])[0])
    raise ValueError(f"the normal images of {name} mix grayscale and colour ({_named(names, 0)} "
                     f"is {pixels.kind(gray[0])}, {_named(names, i)} "
                     f"{pixels.kind(gray[i])}): a reference is of one camera's kind")


def load(workdir) -> References:
  """The references a Blaze run saved; a clear error when absent or unreadable."""
  path = pathlib.Path(workdir) / FILE_NAME
  f = files.read_npz(path, what="a reference file", why_here="the run was trained with "
                     "blaze.reference on and saved its references there before its first step",
                     fields=("names", "mean", "std"))
  refs = References(tuple(str(n) for n in f["names"]), f["mean"], f["std"])
  if refs.mean.shape != refs.std.shape or refs.mean.shape[0] != len(refs.names):
    raise ValueError(f"{path} holds inconsistent shapes: {len(refs.names)} names, mean "
                     f"{refs.mean.shape}, std {refs.std.shape}")
  return refs

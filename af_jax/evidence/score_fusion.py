"""Image scores that weigh the learned heatmap with the per-pixel reference (`blaze.image_score`).

The heatmap ranks defects well pixel by pixel, but its maximum over an image can be raised by
normal structure it has not learned to accept (on a bottle, the reflections of its rim), while
the per-pixel reference (`af_jax.evidence.reference`) already knows how much each pixel of a normal
part varies. With `blaze.image_score = 'fused'` the image score adds the two kinds of evidence,
each measured in standard deviations of what the category's normal training images give:

  raw_e   = max over the scored pixels of map_e    e in (heatmap, reference)
  z_e     = (raw_e - mean_e[category]) / std_e[category]
  score   = sigmoid((z_heatmap + z_reference) / 2)     in (0, 1); 0.5 is a typical normal image

The reference map is the network's reference input mapped to [0, 1] (d / (1 + d) of the
deviation |x - mean| / (std + eps)), averaged over colours and blurred as the per-pixel floor
blurs it (`baseline.default_sigma`: 4 px per 256 px; the heatmap's wider blur smeared the
reference's fine evidence: bottle's image AUROC 95.2 instead of 97.4, seed 1). Both maxima run
over the same pixels (the object with `blaze.score_on_object`).

Statistics: per category, the mean and std of raw_heatmap and raw_reference over up to
`blaze.score_statistics_images` of its normal training images (evenly spaced in their order),
each scored leave-one-out (its own image out of the reference and of the patch memory, as an
unseen image would be); fitted by training's end (`af_jax.training.train`) and by
`Detector.add_reference`, saved as `<workdir>/score_statistics.npz`, categories in the order of
the references.
"""

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from af_jax.evidence import baseline
from af_jax import files
from af_jax.evidence import reference
from af_jax import postprocess

FILE_NAME = "score_statistics.npz"
MIN_STD = 1e-4  # A category whose normal images all score alike still divides safely.


def statistics_indices(count: int, limit: int) -> np.ndarray:
  """The indices of the up to `limit` of a category's `count` normal images that its
  statistics use: evenly spaced over their order."""
  return np.unique(np.linspace(0, count - 1, min(limit, count)).round().astype(int))


def reference_maps(guide):
  """[N, S, S] in [0, 1]: the reference evidence of guide inputs [N, S, S, G >= 3] in [-1, 1]
  (numpy or jax)."""
  unit = (guide[..., :reference.CHANNELS] + 1.0) / 2.0
  return postprocess.smooth_heatmaps(unit.mean(-1), baseline.default_sigma(guide.shape[1]))


def raw_scores(heatmaps, guide, on):
  """[N, 2]: each image's maximum of its (smoothed) heatmap and of its reference map, over
  `on` (bool [N, S, S] or None)."""
  xp = jnp if isinstance(heatmaps, jax.Array) else np
  return xp.stack([postprocess.image_scores(heatmaps, on),
                   postprocess.image_scores(reference_maps(guide), on)], axis=-1)


def fuse(raw, mean, std):
  """[N] scores in (0, 1) of `raw_scores` [N, 2], with each image's category statistics
  `mean` and `std` [N, 2]."""
  xp = jnp if isinstance(raw, jax.Array) else np
  z = ((raw - mean) / std).mean(-1)
  return 1.0 / (1.0 + xp.exp(-z))


@dataclasses.dataclass(frozen=True)
class ScoreStatistics:
  """Named per-category statistics of `raw_scores` on normal images: mean, std float32 [C, 2]."""
  names: tuple[str, ...]
  mean: np.ndarray
  std: np.ndarray

  @classmethod
  def of(cls, name: str, raw: np.ndarray) -> "ScoreStatistics":
    """One category's statistics from its normal images' `raw_scores` [N, 2] (N >= 2)."""
    if len(raw) < 2:
      raise ValueError(f"{name}: image score statistics need at least 2 normal images, got "
                       f"{len(raw)}")
    return cls((name,), raw.mean(0, keepdims=True).astype(np.float32),
               np.maximum(raw.std(0, keepdims=True), MIN_STD).astype(np.float32))

  def of_indices(self, which) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) [N, 2] of categories `which` [N]."""
    return self.mean[which], self.std[which]

  def merged(self, other: "ScoreStatistics") -> "ScoreStatistics":
    """These statistics plus (or with new ones for) `other`'s categories, which come last."""
    keep = [i for i, n in enumerate(self.names) if n not in other.names]
    return ScoreStatistics(tuple(self.names[i] for i in keep) + other.names,
                           np.concatenate([self.mean[keep], other.mean]),
                           np.concatenate([self.std[keep], other.std]))

  def save(self, workdir) -> pathlib.Path:
    """Writes `<workdir>/score_statistics.npz` atomically (a rename)."""
    return files.write_npz(pathlib.Path(workdir) / FILE_NAME, names=np.asarray(self.names),
                           mean=self.mean, std=self.std)


EMPTY = ScoreStatistics((), np.zeros((0, 2), np.float32), np.ones((0, 2), np.float32))


def load(workdir) -> ScoreStatistics:
  """The statistics a Blaze run with `blaze.image_score = 'fused'` saved; clear errors."""
  path = pathlib.Path(workdir) / FILE_NAME
  f = files.read_npz(path, what="an image score statistics file", why_here="the run was "
                     "trained with blaze.image_score='fused' and saved them at its end",
                     fields=("names", "mean", "std"))
  stats = ScoreStatistics(tuple(str(n) for n in f["names"]), f["mean"], f["std"])
  if stats.mean.shape != (len(stats.names), 2) or stats.std.shape != stats.mean.shape:
    raise ValueError(f"{path} holds inconsistent shapes: {len(stats.names)} names, mean "
                     f"{stats.mean.shape}, std {stats.std.shape}")
  return stats

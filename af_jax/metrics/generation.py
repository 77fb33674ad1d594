"""Generation quality as the AnomalyFactory paper measures it: Inception Score and IC-LPIPS.

    inception = load_inception("weights-inception-2015-12-05-6726825d.pth")
    features = inception_features(inception, images)          # uint8 [N, H, W, 3], any size
    is_mean, is_std = inception_score(features["logits_unbiased"])
    net = load_lpips("vgg16-397923af.pth")                    # heads: the shipped lpips ones
    d = lpips(net, images_a, images_b)                        # [N]
    result = ic_lpips(net, generated, real)                   # result.value

Networks (exact ports, `af_jax.models.inception` and `af_jax.models.lpips`): torch-fidelity's
`inception-v3-compat` and the `lpips` package's `LPIPS(net='vgg')`. Weights are a file path
(`.pth` read without running pickled code, `.npz`, `.safetensors`) or a dict of numpy arrays,
in the reference implementation's state-dict layout; keys and shapes are checked, and an
error names the offending key. Nothing is downloaded, and there are no random weights.

Inception Score (torch-fidelity's `isc`): logits_unbiased in float64, p(y|x) = softmax, per
split exp(mean_x KL(p(y|x) || mean_x p(y|x))); mean and (population) std over `splits`
contiguous splits of the images after torch-fidelity's default shuffle (a
`numpy.random.RandomState(2020)` permutation; `shuffle_seed=None` keeps the given order).

IC-LPIPS (cluster-based LPIPS; AnomalyDiffusion and the paper follow DFMGAN's `compute_clpips`
with `lpips.LPIPS(net='vgg')`): every real image is a cluster centre; each generated image,
in the given order, joins the centre at the lowest LPIPS (ties: the first), unless that
cluster already holds `max_per_cluster` (50) members, in which case it is left out, as in
DFMGAN. The value is the mean over *all* centres of the mean pairwise LPIPS inside each
cluster. A cluster with fewer than two members has no pair: like DFMGAN it counts as 0 and
stays in the mean (so collapsing onto few real images lowers the score, as it should for a
diversity metric). `ICLPIPS.populated` also reports the mean over clusters of at least two
members only (DFMGAN's second, "rz" number, up to clusters of identical images).

Cost. Every image goes through each network once, except that IC-LPIPS runs the generated
images through VGG16 twice (assignment, then the pairs inside each cluster). It keeps the real
set's features and one cluster's in memory, about 34 MB per image at 256 px; a cluster holds
at most `max_per_cluster` images per scored subset. Distances between sets come from matrix
products (`af_jax.models.lpips.cross_distances`).
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from af_jax.models import inception as inception_lib
from af_jax.models import lpips as lpips_lib
from af_jax.models import torch_weights
from af_jax import package_data
from af_jax import pixels

SHIPPED_LPIPS_HEADS = "lpips_vgg_heads.npz"  # In af_jax/pretrained (`package_data`).
IS_SPLITS = 10
IS_SHUFFLE_SEED = 2020        # torch-fidelity's default `rng_seed`, used to shuffle before splits.
MAX_PER_CLUSTER = 50          # DFMGAN / AnomalyDiffusion.
DEFAULT_BATCH_SIZE = 16

ProgressFn = Callable[[int], Any] | None  # Called with the images each batch finished.


@dataclasses.dataclass(frozen=True, eq=False)
class InceptionModel:
  """Loaded IS network: its variables and the batch size of each device call."""
  variables: Any
  batch_size: int = DEFAULT_BATCH_SIZE


@dataclasses.dataclass(frozen=True, eq=False)
class LPIPSModel:
  """Loaded LPIPS-VGG: its variables, head vectors and the batch size of each device call."""
  variables: Any
  heads: list
  batch_size: int = DEFAULT_BATCH_SIZE


def _state_dict(weights) -> tuple[dict, str]:
  """(state dict, description for errors) from a path or a dict of arrays."""
  if isinstance(weights, Mapping):
    return dict(weights), "the given state dict"
  if weights is None:
    raise ValueError("no weights given: pass a weights file or a state dict")
  return torch_weights.load_state_dict(weights), str(weights)


def load_inception(weights, batch_size: int = DEFAULT_BATCH_SIZE) -> InceptionModel:
  """torch-fidelity's Inception weights (file or state dict) -> a model for the functions here."""
  state, source = _state_dict(weights)
  variables = inception_lib.load_inception_variables(state, source)
  return InceptionModel(jax.device_put(variables), _check_batch_size(batch_size))


def load_lpips(weights, batch_size: int = DEFAULT_BATCH_SIZE, heads=None) -> LPIPSModel:
  """LPIPS-VGG from a VGG16 backbone (file or state dict; lpips or torchvision key names).

  The scaling layer and the linear heads come from `weights` when it has them, else from
  `heads` (a file or dict; default: the `lpips` package's, shipped in `af_jax/pretrained`).
  """
  state, source = _state_dict(weights)
  head_state = shipped_lpips_heads() if heads is None else _state_dict(heads)[0]
  variables = jax.device_put(lpips_lib.load_lpips_variables(state, head_state, source))
  return LPIPSModel(variables, lpips_lib.head_vectors(variables), _check_batch_size(batch_size))


def shipped_lpips_heads() -> dict:
  """The `lpips` package's scaling layer and linear heads, shipped in `af_jax/pretrained`."""
  with package_data.pretrained_file(SHIPPED_LPIPS_HEADS) as path:
    return torch_weights.load_state_dict(path)


def _check_batch_size(batch_size: int) -> int:
  if int(batch_size) < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  return int(batch_size)


# ------------------------------------------------------------------ batching
def _as_uint8_images(images, what: str = "images") -> np.ndarray:
  """uint8 [N, H, W, 3] from an array or a list of equally sized [H, W, 3] arrays."""
  if not isinstance(images, np.ndarray):
    images = list(images)
    sizes = sorted({np.shape(im) for im in images})
    if len(sizes) > 1:
      raise ValueError(f"{what}: expected images of one size, got sizes {sizes[:4]}")
    images = np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"{what}: expected uint8 RGB images [N, H, W, 3], got {images.dtype} "
                     f"{images.shape}")
  return images


def _batches(images: np.ndarray, batch_size: int):
  """(start, stop, batch padded to batch_size by repeating its last image)."""
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    pad = batch_size - len(batch)
    if pad:
      batch = np.concatenate([batch, np.repeat(batch[-1:], pad, 0)])
    yield start, min(start + batch_size, len(images)), batch


def _report(progress: ProgressFn, count: int) -> None:
  if progress is not None:
    progress(count)


# ------------------------------------------------------------------ Inception Score
@jax.jit
def _inception_apply(variables, images):
  return inception_lib.InceptionV3Compat().apply(variables, images)


def inception_features(model: InceptionModel, images, progress: ProgressFn = None
                       ) -> dict[str, np.ndarray]:
  """{'pool': [N, 2048], 'logits_unbiased': [N, 1008]} (float32) of uint8 RGB images.

  `images` is an array [N, H, W, 3] or a list of [H, W, 3] arrays of any sizes (each size is
  compiled once).
  """
  if not isinstance(images, np.ndarray):
    images = list(images)
    by_size: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
      by_size.setdefault(np.shape(image), []).append(i)
    out = {name: np.zeros((len(images), width), np.float32) for name, width in
           (("pool", inception_lib.POOL_FEATURES), ("logits_unbiased", inception_lib.NUM_LOGITS))}
    for indices in by_size.values():
      part = inception_features(model, _as_uint8_images([images[i] for i in indices]), progress)
      for name in out:
        out[name][indices] = part[name]
    return out
  images = _as_uint8_images(images)
  pool, logits = [], []
  for start, stop, batch in _batches(images, model.batch_size):
    result = _inception_apply(model.variables, batch)
    pool.append(np.asarray(result["pool"])[:stop - start])
    logits.append(np.asarray(result["logits_unbiased"])[:stop - start])
    _report(progress, stop - start)
  if not pool:
    return {"pool": np.zeros((0, inception_lib.POOL_FEATURES), np.float32),
            "logits_unbiased": np.zeros((0, inception_lib.NUM_LOGITS), np.float32)}
  return {"pool": np.concatenate(pool), "logits_unbiased": np.concatenate(logits)}


def inception_score(logits, splits: int = IS_SPLITS,
                    shuffle_seed: int | None = IS_SHUFFLE_SEED) -> tuple[float, float]:
  """(mean, std) of the Inception Score over `splits` splits (module docstring), in float64."""
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2:
    raise ValueError(f"logits must be [N, classes], got shape {logits.shape}")
  n = len(logits)
  if not 1 <= splits <= n:
    raise ValueError(f"the Inception Score of {n} images cannot use {splits} splits "
                     "(each split needs an image)")
  if shuffle_seed is not None:
    logits = logits[np.random.RandomState(shuffle_seed).permutation(n)]
  log_p = logits - _logsumexp(logits)
  p = np.exp(log_p)
  scores = []
  for i in range(splits):
    chunk = slice(i * n // splits, (i + 1) * n // splits)
    log_q = np.log(p[chunk].mean(axis=0, keepdims=True))
    kl = np.sum(p[chunk] * (log_p[chunk] - log_q), axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


def _logsumexp(x: np.ndarray) -> np.ndarray:
  top = x.max(axis=1, keepdims=True)
  return top + np.log(np.exp(x - top).sum(axis=1, keepdims=True))


# ------------------------------------------------------------------ LPIPS
@jax.jit
def _lpips_apply(variables, a, b):
  return lpips_lib.LPIPS().apply(variables, pixels.uint8_to_signed(a),
                                 pixels.uint8_to_signed(b))


@jax.jit
def _lpips_features(variables, images):
  return lpips_lib.LPIPS().apply(variables, pixels.uint8_to_signed(images),
                                 method=lpips_lib.LPIPS.features)


@jax.jit
def _cross(features, heads, others, others_self):
  return lpips_lib.cross_distances(features, others, heads, self1=others_self)


_pairwise = jax.jit(lambda features, heads: lpips_lib.cross_distances(features, features, heads))
_self_terms = jax.jit(lpips_lib.self_terms)


def lpips(model: LPIPSModel, a, b, progress: ProgressFn = None) -> np.ndarray:
  """LPIPS-VGG [N] between two uint8 RGB batches [N, H, W, 3] of equal shape."""
  a, b = _as_uint8_images(a, "a"), _as_uint8_images(b, "b")
  if a.shape != b.shape:
    raise ValueError(f"lpips needs batches of equal shape, got {a.shape} and {b.shape}")
  out = []
  for (start, stop, batch_a), (_, _, batch_b) in zip(_batches(a, model.batch_size),
                                                    _batches(b, model.batch_size)):
    out.append(np.asarray(_lpips_apply(model.variables, batch_a, batch_b))[:stop - start])
    _report(progress, stop - start)
  return np.concatenate(out) if out else np.zeros(0, np.float32)


def _features(model: LPIPSModel, images: np.ndarray, progress: ProgressFn = None):
  """Per batch: (start, stop, the batch's five feature maps, padded rows included)."""
  for start, stop, batch in _batches(images, model.batch_size):
    features = _lpips_features(model.variables, batch)
    _report(progress, stop - start)
    yield start, stop, features


# ------------------------------------------------------------------ IC-LPIPS
@dataclasses.dataclass
class ICLPIPS:
  """IC-LPIPS of a generated set (module docstring)."""
  value: float                  # Mean over all clusters; clusters below 2 members count 0.
  populated: float              # Mean over clusters of >= 2 members (nan when there is none).
  cluster_lpips: np.ndarray     # [M] mean pairwise LPIPS inside each cluster (0 below 2).
  cluster_sizes: np.ndarray     # [M] members of each cluster (at most max_per_cluster).
  subsets: dict = dataclasses.field(default_factory=dict)  # name -> ICLPIPS of that subset.


def lpips_matrix(model: LPIPSModel, a, b, progress: ProgressFn = None) -> np.ndarray:
  """LPIPS-VGG of every pair [N, M] of two uint8 RGB sets of one image size.

  Each image goes through the network once; `b`'s features stay in memory.
  """
  a, b = _as_uint8_images(a, "a"), _as_uint8_images(b, "b")
  if a.shape[1:] != b.shape[1:]:
    raise ValueError(f"LPIPS compares images of one size, got {a.shape[1:3]} and "
                     f"{b.shape[1:3]}: resize one set first")
  if not len(a) or not len(b):
    return np.zeros((len(a), len(b)), np.float32)
  parts = [(stop - start, f) for start, stop, f in _features(model, b, progress)]
  others = [jnp.concatenate([f[layer][:n] for n, f in parts]) for layer in range(len(parts[0][1]))]
  others_self = _self_terms(others, model.heads)
  rows = [np.asarray(_cross(features, model.heads, others, others_self))[:stop - start]
          for start, stop, features in _features(model, a, progress)]
  return np.concatenate(rows)


def nearest_real(model: LPIPSModel, generated, real, progress: ProgressFn = None
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(index of the real image at the lowest LPIPS [N], that LPIPS [N]) per generated image.

  Ties go to the first real image.
  """
  if not len(real):
    raise ValueError("IC-LPIPS needs at least one real image")
  distances = lpips_matrix(model, generated, real, progress)
  return distances.argmin(axis=1), distances.min(axis=1)


def _cluster_members(nearest: np.ndarray, selection: Sequence[int], num_clusters: int,
                     max_per_cluster: int) -> list[list[int]]:
  """Members of each cluster: the first `max_per_cluster` of `selection` (in its order)."""
  members = [[] for _ in range(num_clusters)]
  for i in selection:
    cluster = members[nearest[i]]
    if len(cluster) < max_per_cluster:
      cluster.append(int(i))
  return members


def _bucket(n: int) -> int:
  """Padded cluster size: a power of two, so a handful of shapes is ever compiled."""
  return max(2, 1 << (n - 1).bit_length())


def _within_cluster_distances(model: LPIPSModel, generated: np.ndarray,
                              clusters: list[list[int]], progress: ProgressFn = None
                              ) -> list[np.ndarray | None]:
  """LPIPS matrix among the members of each cluster of >= 2 members (None for the others).

  The members of all such clusters stream through the network in fixed-size batches, cluster
  after cluster; a cluster's features are kept only until its matrix is computed.
  """
  todo = [c for c, members in enumerate(clusters) if len(members) >= 2]
  order = np.asarray([i for c in todo for i in clusters[c]], np.int64)
  ends = np.cumsum([len(clusters[c]) for c in todo]).tolist()
  matrices: list[np.ndarray | None] = [None] * len(clusters)
  pending: list[tuple[Any, int, int]] = []  # (batch features, first row, stop row) of a cluster.
  current, begin = 0, 0
  for start, stop, features in _features(model, generated[order], progress):
    row = start
    while current < len(todo) and row < stop:
      end = min(ends[current], stop)
      pending.append((features, row - start, end - start))
      row = end
      if end == ends[current]:
        size = ends[current] - begin
        stacked = [jnp.concatenate([f[layer][a:b] for f, a, b in pending])
                   for layer in range(len(features))]
        pad = _bucket(size) - size
        stacked = [jnp.pad(s, ((0, pad),) + ((0, 0),) * (s.ndim - 1)) for s in stacked]
        matrices[todo[current]] = np.asarray(_pairwise(stacked, model.heads))[:size, :size]
        pending, begin, current = [], ends[current], current + 1
  return matrices


def _summarize(members: list[list[int]], union: list[list[int]],
               matrices: list[np.ndarray | None]) -> ICLPIPS:
  """IC-LPIPS of one selection from the distance matrices of the clusters' member unions."""
  values = np.zeros(len(members))
  for c, chosen in enumerate(members):
    if len(chosen) >= 2:
      position = {i: k for k, i in enumerate(union[c])}
      rows = [position[i] for i in chosen]
      block = matrices[c][np.ix_(rows, rows)]
      values[c] = block[np.triu_indices(len(rows), 1)].mean()
  sizes = np.asarray([len(m) for m in members])
  populated = values[sizes >= 2]
  return ICLPIPS(value=float(values.mean()),
                 populated=float(populated.mean()) if populated.size else float("nan"),
                 cluster_lpips=values, cluster_sizes=sizes)


def ic_lpips(model: LPIPSModel, generated, real, *, max_per_cluster: int = MAX_PER_CLUSTER,
             subsets: Mapping[str, Sequence[int]] | None = None,
             progress: ProgressFn = None) -> ICLPIPS:
  """IC-LPIPS of generated images clustered around real ones (module docstring).

  Args:
    model: from `load_lpips`.
    generated: uint8 RGB [N, H, W, 3] (or a list), in generation order (the cap keeps the
      first members).
    real: uint8 RGB [M, H, W, 3], the cluster centres, at the generated images' size.
    max_per_cluster: members kept per cluster.
    subsets: optional name -> indices into `generated` (e.g. one edit type): each is also
      scored on its own (clustered around the same centres, capped in its own order), from
      the same two passes through the network.
    progress: called with the number of images each network batch finished.

  Returns:
    The whole set's `ICLPIPS`, its `subsets` holding one `ICLPIPS` per given subset.
  """
  if max_per_cluster < 2:
    raise ValueError(f"max_per_cluster must be >= 2 (a cluster needs a pair), got "
                     f"{max_per_cluster}")
  generated, real = _as_uint8_images(generated, "generated"), _as_uint8_images(real, "real")
  nearest, _ = nearest_real(model, generated, real, progress)
  selections = {"": range(len(generated))}
  for name, indices in (subsets or {}).items():
    indices = [int(i) for i in indices]
    if any(not 0 <= i < len(generated) for i in indices):
      raise ValueError(f"subset {name!r} holds indices outside 0..{len(generated) - 1}")
    selections[name] = indices
  members = {name: _cluster_members(nearest, selection, len(real), max_per_cluster)
             for name, selection in selections.items()}
  union = [sorted({i for m in members.values() for i in m[c]}) for c in range(len(real))]
  matrices = _within_cluster_distances(model, generated, union, progress)
  result = _summarize(members.pop(""), union, matrices)
  result.subsets = {name: _summarize(m, union, matrices) for name, m in members.items()}
  return result


# ------------------------------------------------------------------ both, as reported
def generation_metrics(generated, real=None, *, inception: InceptionModel | None = None,
                       lpips_model: LPIPSModel | None = None,
                       subsets: Mapping[str, Sequence[int]] | None = None,
                       splits: int = IS_SPLITS, max_per_cluster: int = MAX_PER_CLUSTER,
                       progress: ProgressFn = None) -> dict[str, dict]:
  """IS and IC-LPIPS of a generated set and of each subset, as flat metric dicts.

  Returns {'all': metrics, <subset name>: metrics, ...}; each holds `num_generated`, and
  `is_mean`, `is_std`, `is_splits` when `inception` is given, `ic_lpips`,
  `ic_lpips_populated`, `clusters_with_pairs`, `num_real` when `lpips_model` is. A set
  smaller than `splits` uses one split per image (recorded as `is_splits`).
  """
  generated = _as_uint8_images(generated, "generated")
  selections = {"all": np.arange(len(generated)),
                **{name: np.asarray(list(idx), np.int64) for name, idx in (subsets or {}).items()}}
  out = {name: {"num_generated": int(len(idx))} for name, idx in selections.items()}
  if inception is not None:
    logits = inception_features(inception, generated, progress)["logits_unbiased"]
    for name, idx in selections.items():
      if len(idx):
        used = min(splits, len(idx))
        mean, std = inception_score(logits[idx], used)
        out[name].update(is_mean=mean, is_std=std, is_splits=used)
  if lpips_model is not None:
    if real is None:
      raise ValueError("IC-LPIPS needs the real images (cluster centres)")
    real = _as_uint8_images(real, "real")
    result = ic_lpips(lpips_model, generated, real, max_per_cluster=max_per_cluster,
                      subsets={k: v for k, v in selections.items() if k != "all"},
                      progress=progress)
    for name, r in [("all", result), *result.subsets.items()]:
      out[name].update(ic_lpips=r.value, ic_lpips_populated=r.populated,
                       clusters_with_pairs=int(np.sum(r.cluster_sizes >= 2)),
                       num_real=int(len(real)))
  return out


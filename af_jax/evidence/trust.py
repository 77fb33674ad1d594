"""How far to trust each kind of evidence, per category, fitted from anomalies of its normal images.

BlazeDetector holds three kinds of evidence about each pixel:

  network    the heatmap its network outputs (averaged over the flipped views), as log-odds;
  patch      the distance of the pixel's patch to the category's normal patches (its
             evidence memory, a coreset of its stored images' patches: `patch_memory`), as
             the log of its ratio to the typical normal distance;
  reference  the pixel's deviation from the category's per-pixel normal statistics
             (`reference`, the network's reference input), as log(1 + mean over colours).

The network is given the other two as inputs, and may still throw them away: on a rotated,
thin part a network trained on other parts ranked defects 10 px-AUROC points below its own
patch input. So the detector does not take the network's word alone. Per category c, each
evidence map is measured in standard deviations of what c's normal images give
(z_e = (m_e - mean_e) / std_e), blurred at its own scale, and the heatmap is their weighted sum:

  F       = sum_e w_e[c] gaussian_blur(z_e, sigma_e[c])        w_e >= 0, sum_e w_e = 1
  G       = sum_e v_e[c] gaussian_blur(z_e, sigma_e[c])        v_e >= 0, sum_e v_e = 1
  heatmap = sigmoid((F - pixel_mean[c]) / pixel_std[c] - HEAT_OFFSET)
  score   = sigmoid((max G over the scored pixels - image_mean[c]) / image_std[c])

so 0.5 is a pixel HEAT_OFFSET standard deviations above normal, and a typical normal image.
The image score has its own weights v: which evidence ranks whole images best is not which
ranks pixels best (on the magnetic tile the patch distances rank pixels best and images
worst).

The fit (`fit`) sees nothing but the category's normal images. Each normal image is scored
leave-one-out (its own pixels out of the reference and of the patch memory), as an unseen image
would be, and anomalies are made from the same images (and scored with the same images left
out): FlareGenerator's anomalies (the paper's thesis: generated anomalies stand in for real
ones) and pasted ones (`af_jax.ops.synthetic_anomalies`). The network was trained on Flare's
kind, so that kind alone overrates it; a kind it never saw measures what it learned in general,
as a real defect does. A pixel is anomalous where the image changed by at least half of
`blaze.change_scale` inside the edited region. Anomalies are scored by the mean of pixel AUROC,
the per-anomaly partial AUROC up to a false-positive rate of 0.3 (AUPRO's range, each anomaly
weighing the same, as a region does in AUPRO) and image AUROC. Each source's blur is the one
of `blaze.trust_sigmas` that scores it best alone; the weights (a grid over the simplex, step
`GRID_STEP`) are those that score best, less `blaze.trust_network_prior` for each unit of
weight moved off the network, then pulled `blaze.trust_shrinkage` of the way toward equal
weights over the sources whose objective alone is above chance (0.5). A source that ranks the
anomalies' pixels no higher than normal ones (pixel AUROC <= 0.5) gets no weight. For the
image weights v each point of the same grid (same sources and blurs) is scored by how well its
maxima rank the anomalous images above the normal ones (image AUROC); v is the mean of the
points within one standard error (Hanley and McNeil's) of the best.

Why the mean of the points near the best: 16 normal images and their anomalies rank whole
images too coarsely to pick one point. The best point alone put all of the magnetic tile's
image weight on the patch distances in one run (image AUROC 55.2 on its real defects, where
its network alone scored 63.8) and all of synthetic gear's on the patch distances, 6.3 under
its floor; the mean hedges among what the sample cannot tell apart.

Why no prior on the network (`blaze.trust_network_prior`, default 0): it was there while the
patch evidence was the network's own patch input, distances to augmented patches that no test
image shows. Raw, that evidence found the generated anomalies' bold changes easily and real
defects poorly (bottle 74-82 px-AUROC alone), so the fit overrated it and a prior of 0.05 kept
weight on the network. The evidence memory (`patch_memory`) put the patch distances' AUPRO
above the nearest-patch floor's on every real part; the prior then kept weight on
a network that, on a part held out of training, ranks real defects worst: the held-out bottle
at seed 1 scored 92.4 px-AUROC with it, 1.6 under its patch distances alone (94.0), and 94.8
without it.

Why the shrinkage: 16 images and their anomalies rank weights that differ by a few hundredths
of the objective, and which of them wins moves with the seed: a part held out of training,
fitted alone, bottle at seed 1 once chose 0.8 network where its reference alone was best.

Measured on real parts (64 px, one model over the synthetic set, bottle, metal_plate and the
magnetic tile; seeds 0 and 1, each part trained on and held out, and two fresh runs: 18 fits
replayed on their cached maps; "passes": px-AUROC and AUPRO at or above the better no-learning
floor, image AUROC at most 2 under it, and the detector at or above its patch and reference
evidence alone; the first rows over the first 12 fits):

  patch evidence, prior, shrinkage, image weights    passes  keeps  means px / AUPRO / image
  the network's input, 0.05, 0.5, the pixel's         6 / 11  10/11   (another harness)
  the evidence memory, 0.05, 0.5, the pixel's          7 / 12  11/12  85.56 / 75.66 / 84.89
  the evidence memory, 0,    0.5, the pixel's          9 / 12  12/12  85.70 / 75.40 / 84.72
  the evidence memory, 0,    0,   the pixel's          9 / 12  10/12  85.45 / 75.37 / 84.80
  the evidence memory, 0,    0.5, the best mix        11 / 12  12/12  85.70 / 75.40 / 86.66
  ... the same, 18 fits                               16 / 18  18/18  85.68 / 75.87 / 86.24
  the evidence memory, 0,    0.5, mean within 1 SE    16 / 18  18/18  85.68 / 75.87 / 85.57

The best mix fell 3.2 image AUROC under the bar at worst (and 4.2 on synthetic gear), the
mean within one standard error 1.0 (and met gear's bar).

Files: `<workdir>/evidence_trust.npz` (`save`, `load`), categories in the order of the run's
references; a new part's is fitted by `Detector.add_reference`.
"""

import dataclasses
import itertools
import pathlib

import jax.numpy as jnp
import numpy as np

from af_jax import files
from af_jax import postprocess
from af_jax.evidence import reference

FILE_NAME = "evidence_trust.npz"
SOURCES = ("network", "patch", "reference")
HEAT_OFFSET = 3.0
GRID_STEP = 0.1
MAX_FPR = 0.3
MIN_IMAGES = 4         # Normal images a fit needs: leave-one-out statistics of 3 and a spread.
MIN_STD = 1e-4
_EPS = 1e-4            # Keeps log-odds and logarithms finite at saturated inputs.
ARRAYS = ("weights", "sigma", "source_mean", "source_std", "pixel_mean", "pixel_std",
          "image_mean", "image_std", "fit_quality", "image_weights", "flip_views")
# What files fitted before a field existed stand for: the image score's weights were the
# pixels', and every fit averaged the flipped views.
_OLDER = {"image_weights": lambda f: f["weights"],
          "flip_views": lambda f: np.ones(len(f["names"]), bool)}


def fit_indices(count: int, limit: int) -> np.ndarray:
  """The indices of the up to `limit` of a category's `count` normal images that its fit
  scores: evenly spaced over their order."""
  return np.unique(np.linspace(0, count - 1, min(limit, count)).round().astype(int))


def _xp(x):
  return np if isinstance(x, np.ndarray) else jnp


def source_maps(heatmaps, guide, has_reference: bool, patch_channel=None):
  """[N, S, S, 3] evidence of `SOURCES` from the network's (unblurred, view-averaged) heatmaps
  [N, S, S] in [0, 1], its guide inputs [N, S, S, G] in [-1, 1] (the reference's 3 channels
  first) and the patch evidence [N, S, S, 1] in [-1, 1] (`patch_memory.category_channel`: of
  the evidence memory, or the network's own patch input); a source the run lacks (None) is
  zeros. numpy or jax."""
  xp = _xp(heatmaps)
  h = xp.clip(heatmaps, _EPS, 1.0 - _EPS)
  zeros = xp.zeros_like(h)
  network = xp.log(h) - xp.log1p(-h)
  patch = reference_map = zeros
  if patch_channel is not None:  # The channel is 2r/(1+r) - 1 of the distance ratio r.
    g = xp.clip(patch_channel[..., 0], -1.0 + _EPS, 1.0 - _EPS)
    patch = xp.log1p(g) - xp.log1p(-g)
  if has_reference:  # Each channel is 2d/(1+d) - 1 of the deviation d.
    u = xp.clip((guide[..., :reference.CHANNELS] + 1.0) / 2.0, 0.0, 1.0 - _EPS)
    reference_map = xp.log1p((u / (1.0 - u)).mean(-1))
  return xp.stack([network, patch, reference_map], axis=-1)


@dataclasses.dataclass(frozen=True)
class Trust:
  """Per-category trust (module docstring): names, weights float32 [C, 3], sigma [C, 3] (each
  source's blur, model pixels), source_mean and source_std [C, 3], pixel_mean, pixel_std,
  image_mean, image_std [C], fit_quality [C, 4]: the fit's objective for each source alone
  and fused, image_weights [C, 3]: the image score's weights, and flip_views bool [C]:
  whether the network's evidence was averaged over the flipped views (`Detector.views`)
  when fitted; its statistics hold for those views only."""
  names: tuple[str, ...]
  weights: np.ndarray
  sigma: np.ndarray
  source_mean: np.ndarray
  source_std: np.ndarray
  pixel_mean: np.ndarray
  pixel_std: np.ndarray
  image_mean: np.ndarray
  image_std: np.ndarray
  fit_quality: np.ndarray
  image_weights: np.ndarray
  flip_views: np.ndarray

  def index(self, name: str) -> int:
    if name not in self.names:
      raise ValueError(f"no evidence trust fitted for {name!r}; it is fitted for "
                       f"{list(self.names)} (Detector.add_reference fits a new part)")
    return self.names.index(name)

  def merged(self, other: "Trust") -> "Trust":
    """These categories plus (or with new ones for) `other`'s, which come last."""
    keep = [i for i, n in enumerate(self.names) if n not in other.names]
    return Trust(tuple(self.names[i] for i in keep) + other.names,
                 *(np.concatenate([getattr(self, a)[keep], getattr(other, a)]) for a in ARRAYS))

  def row(self, name: str) -> dict:
    """One category's trust as plain numbers (reports, `metrics.json`)."""
    i = self.index(name)
    return dict(weights=dict(zip(SOURCES, self.weights[i].round(3).tolist())),
                image_weights=dict(zip(SOURCES, self.image_weights[i].round(3).tolist())),
                sigma=dict(zip(SOURCES, self.sigma[i].round(3).tolist())),
                fit_quality=dict(zip((*SOURCES, "detector"),
                                     self.fit_quality[i].round(4).tolist())),
                flip_views=bool(self.flip_views[i]))

  def save(self, workdir) -> pathlib.Path:
    """Writes `<workdir>/evidence_trust.npz` atomically (a rename)."""
    return files.write_npz(pathlib.Path(workdir) / FILE_NAME, names=np.asarray(self.names),
                           **{a: getattr(self, a) for a in ARRAYS})


EMPTY = Trust((), *(np.zeros((0,) + s, np.float32) for s in
                    ((3,), (3,), (3,), (3,), (), (), (), (), (4,), (3,))), np.zeros(0, bool))


def load(workdir) -> Trust:
  """The trust a Blaze run with `blaze.evidence_trust` fitted at its end; clear errors."""
  path = pathlib.Path(workdir) / FILE_NAME
  f = files.read_npz(path, what="an evidence trust file", why_here="the run was trained with "
                     "blaze.evidence_trust and fitted it at the end of its training",
                     fields=("names", *(a for a in ARRAYS if a not in _OLDER)))
  trust = Trust(tuple(str(n) for n in f["names"]),
                *(f[a] if a in f else _OLDER[a](f) for a in ARRAYS))
  c = len(trust.names)
  if any(getattr(trust, a).shape[:1] != (c,) for a in ARRAYS):
    raise ValueError(f"{path} holds inconsistent shapes: {c} names, "
                     + ", ".join(f"{a} {getattr(trust, a).shape}" for a in ARRAYS))
  return trust


# ------------------------------------------------------------------ applying it
def blurred(maps, sigma_of_images, sigmas):
  """Each image's map [N, S, S] blurred by its own sigma (`sigma_of_images` [N]), one of the
  concrete values `sigmas`."""
  xp = _xp(maps)
  out = xp.zeros_like(maps)
  for s in sigmas:
    blur = postprocess.smooth_heatmaps(maps, float(s)).astype(out.dtype)
    out = xp.where((sigma_of_images == s)[:, None, None], blur, out)
  return out


def _fused(trust: Trust, arrays: dict, maps):
  """(F, G) [N, S, S]: sum_e w_e blur(z_e, sigma_e) of evidence `maps` [N, S, S, 3] with the
  pixel weights, and with the image weights, of the per-image rows `arrays` of `trust`."""
  z = (maps - arrays["source_mean"][:, None, None]) / arrays["source_std"][:, None, None]
  each = [blurred(z[..., e], arrays["sigma"][:, e], np.unique(trust.sigma[:, e]))
          for e in range(len(SOURCES))]
  return tuple(sum(arrays[w][:, e, None, None] * each[e] for e in range(len(SOURCES)))
               for w in ("weights", "image_weights"))


def _sigmoid(x):
  """1 / (1 + exp(-x)), numpy or jax. For x below about -709 numpy's exp overflows to inf, and
  the result is its right limit, 0: not worth a warning to every user of a fresh run."""
  with np.errstate(over="ignore"):
    return 1.0 / (1.0 + _xp(x).exp(-x))


def apply(trust: Trust, maps, which, on=None):
  """(heatmaps [N, S, S] in (0, 1), image scores [N] in (0, 1)) of evidence `maps`
  [N, S, S, 3] (`source_maps`) of images compared with categories `which` [N] (int indices
  into `trust.names`), the score's maximum over `on` (bool [N, S, S]) when given. numpy or jax
  (with `trust`'s arrays as constants); module docstring."""
  xp = _xp(maps)
  arrays = {a: (getattr(trust, a) if xp is np else jnp.asarray(getattr(trust, a)))[which]
            for a in ARRAYS}
  fused, image_fused = _fused(trust, arrays, maps)
  z = (fused - arrays["pixel_mean"][:, None, None]) / arrays["pixel_std"][:, None, None]
  heat = _sigmoid(z - HEAT_OFFSET)
  top = postprocess.image_scores(image_fused if on is None
                                 else xp.where(on, image_fused, -xp.inf), None)
  score = _sigmoid((top - arrays["image_mean"]) / arrays["image_std"])
  return heat, score


# ------------------------------------------------------------------ fitting it
def _ranking(pos, pos_weight, neg_sorted):
  """(AUROC, per-anomaly partial AUROC to `MAX_FPR`, normalised) of positive scores [P]
  (weighted [P]) against sorted negative scores."""
  below = np.searchsorted(neg_sorted, pos, "left")
  ties = np.searchsorted(neg_sorted, pos, "right") - below
  n = len(neg_sorted)
  fpr_above = (n - below - ties) / n
  auroc = ((below + 0.5 * ties) / n).mean()
  partial = np.clip(1.0 - (fpr_above + 0.5 * ties / n) / MAX_FPR, 0.0, 1.0)
  return float(auroc), float((partial * pos_weight).sum() / pos_weight.sum())


def _image_auroc(anomalous, normal) -> float:
  neg = np.sort(normal)
  below = np.searchsorted(neg, anomalous, "left")
  ties = np.searchsorted(neg, anomalous, "right") - below
  return float(((below + 0.5 * ties) / len(neg)).mean())


def _auroc_standard_error(auroc: float, positives: int, negatives: int) -> float:
  """The standard error of an AUROC measured on `positives` and `negatives` (Hanley and
  McNeil's approximation)."""
  q1, q2 = auroc / (2.0 - auroc), 2.0 * auroc * auroc / (1.0 + auroc)
  variance = (auroc * (1.0 - auroc) + (positives - 1) * (q1 - auroc * auroc)
              + (negatives - 1) * (q2 - auroc * auroc)) / (positives * negatives)
  return float(np.sqrt(max(variance, 0.0)))


def _objective(fused_normal, fused_anomalous, masks, weight, on_normal, on_anomalous):
  """(the fit's objective (module docstring), its image AUROC term) of fused maps of normal
  [K, S, S] and anomalous [M, S, S] images."""
  neg = np.sort(np.concatenate([fused_normal.ravel(), fused_anomalous[~masks]]))
  auroc, partial = _ranking(fused_anomalous[masks], weight, neg)
  image = _image_auroc(np.where(on_anomalous, fused_anomalous, -np.inf).max((1, 2)),
                       np.where(on_normal, fused_normal, -np.inf).max((1, 2)))
  return (auroc + partial + image) / 3.0, image


def _simplex(active: list[int]) -> list[np.ndarray]:
  """Weights [3] on a grid of step `GRID_STEP` over the sources `active`, summing to 1."""
  steps = int(round(1 / GRID_STEP))
  grid = []
  for parts in itertools.product(range(steps + 1), repeat=len(active)):
    if sum(parts) == steps:
      w = np.zeros(len(SOURCES))
      w[active] = np.asarray(parts) / steps
      grid.append(w)
  return grid


def fit(name: str, normal_maps: np.ndarray, anomalous_maps: np.ndarray, masks: np.ndarray,
        sigmas, on_normal=None, on_anomalous=None, available=(True, True, True),
        network_prior: float = 0.0, shrinkage: float = 0.0, flip_views: bool = True) -> Trust:
  """One category's `Trust` from evidence maps [K, S, S, 3] of its normal images (scored
  leave-one-out) and [M, S, S, 3] of anomalies made from them with their masks bool [M, S, S]
  (module docstring). `available`: which sources the run has. `on_*`: the pixels image scores
  look at (default all). `network_prior`: what each unit of weight moved off the network must
  gain in the objective. `shrinkage`: how far the weights are pulled toward equal weights over
  the sources that score above chance (0.5) alone. `flip_views`: whether the maps' network
  heatmaps averaged the flipped views (recorded: inference must average the same)."""
  if len(normal_maps) < MIN_IMAGES:
    raise ValueError(f"{name}: fitting its evidence trust needs at least {MIN_IMAGES} normal "
                     f"images, got {len(normal_maps)}")
  keep = masks.reshape(len(masks), -1).any(-1)
  if not keep.any():
    raise ValueError(f"{name}: none of the anomalies made from its normal images changed a "
                     "pixel; its evidence trust cannot be fitted")
  anomalous_maps, masks = anomalous_maps[keep], masks[keep]
  on_normal = np.ones(normal_maps.shape[:3], bool) if on_normal is None else on_normal
  on_anomalous = (np.ones(anomalous_maps.shape[:3], bool) if on_anomalous is None
                  else on_anomalous[keep])
  flat = normal_maps.reshape(-1, len(SOURCES)).astype(np.float64)
  mean, std = flat.mean(0), np.maximum(flat.std(0), MIN_STD)
  z_normal, z_anomalous = (normal_maps - mean) / std, (anomalous_maps - mean) / std
  area = masks.reshape(len(masks), -1).sum(-1)
  weight = np.repeat(1.0 / area, area)  # Each anomaly weighs the same (AUPRO's regions do).

  def objective(normal, anomalous):
    return _objective(normal, anomalous, masks, weight, on_normal, on_anomalous)

  # Each source alone, at each blur: its blur is its best one.
  blurred_maps, sigma, alone, pixel_auroc = [], np.zeros(len(SOURCES)), np.zeros(4), []
  for e in range(len(SOURCES)):
    candidates = [(postprocess.smooth_heatmaps(z_normal[..., e], s),
                   postprocess.smooth_heatmaps(z_anomalous[..., e], s), s) for s in sigmas]
    scores = [objective(n, a)[0] for n, a, _ in candidates]
    best = int(np.argmax(scores))
    blurred_maps.append(candidates[best][:2])
    sigma[e], alone[e] = candidates[best][2], scores[best] if available[e] else 0.0
    normal_e, anomalous_e = blurred_maps[-1]
    # A source that ranks the anomalies' pixels no higher than normal ones gets no weight.
    pixel_auroc.append(_ranking(anomalous_e[masks], weight, np.sort(np.concatenate(
        [normal_e.ravel(), anomalous_e[~masks]])))[0] if available[e] else 0.0)
  active = [e for e in range(len(SOURCES)) if available[e] and pixel_auroc[e] > 0.5]
  if not active:
    raise ValueError(f"{name}: no evidence source ranks the anomalies made from its normal "
                     f"images above them (pixel AUROC {dict(zip(SOURCES, pixel_auroc))})")

  def fused(w, which):
    return sum(w[e] * blurred_maps[e][which] for e in active)

  grid = _simplex(active)
  scored = np.asarray([objective(fused(w, 0), fused(w, 1)) for w in grid])  # [G, 2]
  # Of equal objectives, the first point of the grid.
  best = max(range(len(grid)), key=lambda k: (
      scored[k, 0] - network_prior * (1.0 - grid[k][0]), -k))
  above_chance = [e for e in active if alone[e] > 0.5] or active
  weights = (1.0 - shrinkage) * grid[best] + shrinkage * np.isin(
      np.arange(len(SOURCES)), above_chance) / len(above_chance)
  alone[3] = objective(fused(weights, 0), fused(weights, 1))[0]

  image_auroc = scored[:, 1]
  # Every point within one standard error of the best ranks the images as well as these few
  # can tell; their mean hedges among them instead of betting on the sample's winner.
  top_auroc = image_auroc.max()
  plateau = image_auroc >= top_auroc - _auroc_standard_error(
      top_auroc, len(anomalous_maps), len(normal_maps)) - 1e-12
  image_weights = np.asarray(grid)[plateau].mean(0)
  normal_fused = fused(weights, 0)
  top = np.where(on_normal, fused(image_weights, 0), -np.inf).max((1, 2))
  f32 = lambda *v: np.asarray(v if len(v) == 1 else [v], np.float32)  # One category's row.
  return Trust((name,), f32(*weights), f32(*sigma), f32(*mean), f32(*std),
               f32(normal_fused.mean()), f32(max(normal_fused.std(), MIN_STD)), f32(top.mean()),
               f32(max(top.std(), MIN_STD)), f32(*alone), f32(*image_weights),
               np.asarray([flip_views]))

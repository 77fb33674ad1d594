"""Localize anomalies with a trained BlazeDetector: images in, heatmaps, repaired images, scores out.

  det = Detector("runs/blaze")
  det.calibrate(normal_images, fpr=0.01, category="bottle")  # thresholds without anomalies
  loc = det.localize(test_images, category="bottle")         # one size H x W per call
  masks = loc.heatmaps >= det.threshold("pixel", category="bottle")  # bool [N, H, W]

(`category` for a run trained with `blaze.reference`: its thresholds are kept per category,
`thresholds`.)

Sizes. Images of any size are resized to the model's training size by the rule the dataset
builders applied to its training data (`af_jax.pixels.resize_image`); heatmaps and repaired
images are resized back to the images' size (bilinear) and returned stacked, so one `localize`
call takes images of one size (`batching.batches_by_size` splits a mixed list).

Heatmaps are the network's heatmap, averaged over flipped views when `flip_tta` is on, then
blurred by a Gaussian of `smoothing_sigma` pixels at the model's size (`postprocess`).

* Flip test-time augmentation: the image (with its edge map) is also run mirrored left-right,
  top-bottom and both, as far as the run's training augmentation drew those flips (so every
  view is one the network was trained on), and the heatmaps, mirrored back, are averaged.
  Each view errs differently, so the average ranks defects above normal structure more
  reliably, for 4x the network time (README, Performance). The repaired image comes from the
  unflipped view. By default as the run chose (`blaze.flip_views`); a run with an evidence
  trust averages the views its trust was fitted with, and refuses the other choice.
* Smoothing removes the pixel-scale speckle of the decoder, which otherwise ranks isolated
  normal pixels above the body of a defect. 0 keeps the unblurred heatmap.

The image score is the maximum of the final heatmap; with `blaze.score_on_object` (a run's
config field), the maximum over the object (`af_jax.ops.foreground`, found without labels):
a part's defects are on the part, and the backdrop's shading and dust then cannot outrank
them. Calibrated thresholds record the settings (`thresholds`).

A run trained with `blaze.evidence_trust` keeps its evidence (`af_jax.evidence.trust`): the
heatmap is the network's heatmap, the patch distances (searched in the category's evidence
memory, `blaze.evidence_memory`: stored normal patches, where the network's input searches
augmented ones) and the per-pixel reference, each in standard deviations of the category's
normal images, weighted and blurred as fitted for that category (`smoothing_sigma` is then not
used), and the image score is such a map's maximum (with weights of its own) against the
category's normal images. `add_reference` builds a new part's memories and fits its trust from
its normal images and anomalies the run's FlareGenerator makes of them (`flare_workdir`: where
that run is, when it moved).
"""

import collections
import dataclasses
import functools
import hashlib
import logging
import pathlib
import typing

import jax
import numpy as np

from af_jax import config_dataclasses
from af_jax.evidence import patch_memory
from af_jax.evidence import reference
from af_jax.evidence import trust as trust_lib
from af_jax.inference import batching
from af_jax.inference import defaults
from af_jax.inference import profile
from af_jax.inference import thresholds as thresholds_lib
from af_jax.inference import trained_network
from af_jax.ops import foreground
from af_jax.ops import synthetic_anomalies
from af_jax import per_image
from af_jax import pixels
from af_jax import postprocess
from af_jax import stage_registry

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LocalizationResult:
  """`Detector.localize` of N images of one size H x W (the size they came in)."""
  heatmaps: np.ndarray      # float32 [N, H, W] in [0, 1]: per-pixel anomaly heatmaps.
  repaired: np.ndarray      # uint8 [N, H, W, 3] in [0, 255]: the repaired (normal) images.
  scores: np.ndarray        # float64 [N] in [0, 1]: image anomaly scores (heatmap maxima, or
                            # the evidence's against normal images, blaze.evidence_trust).
  references: list | None = None  # The reference each image was compared with (a run with
                                  # `blaze.reference`), else None.


@functools.lru_cache(maxsize=8)
def _localize_fn(generator):
  """jit of (params, binary edges, image, guide) -> (heatmap [B, S, S], repaired texture
  [B, S, S, 3]); a guide of 0 channels is none."""
  def run(params, edges, image, guide):
    def apply(edges, image, guide):  # Image by image on a CPU (`per_image`).
      out = generator.apply(params, pixels.unit_to_signed(edges), image,
                            guide if guide.shape[-1] else None)
      return out["heatmap"][..., 0], out["texture"]
    return per_image.on_cpu(apply)(edges, image, guide)

  return jax.jit(run)


# The trust fit's pasted anomalies, compiled: op by op they took 2 s per category at 64 px.
_paste_anomalies = jax.jit(synthetic_anomalies.paste_anomalies, static_argnums=3)


@functools.lru_cache(maxsize=8)
def _patch_channel_fn(patch_size: int, stride: int, pixel_levels: bool):
  # Images here are uint8: whole levels, which the search multiplies exactly in bfloat16.
  return jax.jit(functools.partial(patch_memory.category_channel, patch_size=patch_size,
                                   stride=stride, pixel_levels=pixel_levels, query_levels=True))


@dataclasses.dataclass
class EvidenceChannel:
  """One evidence source (`trust_lib.SOURCES`) of a Detector with evidence trust, scored
  alone: its map blurred as the detector blurs it for the image's category, the image
  score its maximum over the scored pixels; or, as source `FUSED`, the detector itself (its
  `localize` heatmaps and scores, from the same maps). `localize` as the Detector's (the
  evidence block of `af-jax evaluate` and the demo). Channels given one `shared` dict compute
  each batch's evidence maps once between them (the network's views are most of the work):
  scoring the detector beside its sources costs one pass, not two."""
  FUSED: typing.ClassVar[str] = "fused"
  detector: "Detector"
  source: str
  category: str | None = None
  shared: dict = dataclasses.field(default_factory=dict)

  def localize(self, images) -> LocalizationResult:
    d = self.detector
    images = pixels.image_list(images)
    resized = pixels.resize_images(images, d.size)
    which = d.reference_indices(resized, self.category)
    key = hashlib.sha1(resized.tobytes() + np.asarray(which).tobytes()).digest()
    if key not in self.shared:
      self.shared[key] = d.evidence_maps(resized, which)
    maps, on = self.shared[key]
    if self.source == self.FUSED:  # As `Detector._localize_resized` weighs them.
      heat, scores = trust_lib.apply(d.trust, maps, d.trust_indices(which), on)
    else:
      source = trust_lib.SOURCES.index(self.source)
      heat = trust_lib.blurred(maps[..., source], d.trust.sigma[d.trust_indices(which), source],
                               np.unique(d.trust.sigma[:, source]))
      scores = postprocess.image_scores(heat if on is None else np.where(on, heat, -np.inf))
    heatmaps = np.stack([pixels.resize_back(hm.astype(np.float32), np.shape(images[0])[:2])
                         for hm in heat])
    return LocalizationResult(heatmaps=heatmaps, repaired=None, scores=scores)


def _trust_images(config) -> int:
  return config.blaze.get("trust_images", 16)


def _left_out_sources(signed: np.ndarray, left_out) -> np.ndarray:
  """The memory source each image leaves out (`Detector._inputs`' `left_out`), -1 for none."""
  return np.full(len(signed), -1) if left_out is None else left_out[1]


class Detector(trained_network.TrainedNetwork):
  """A trained BlazeDetector (module docstring)."""

  stages = (stage_registry.serving("localize").name,)

  def __init__(self, workdir, *, smoothing_sigma: float = defaults.SMOOTHING_SIGMA,
               flip_tta: bool | None = None,
               trust: trust_lib.Trust | None = None, flare_workdir=None, **kwargs):
    if not np.isfinite(smoothing_sigma) or smoothing_sigma < 0:
      raise ValueError(f"smoothing_sigma must be finite and >= 0, got {smoothing_sigma}")
    super().__init__(workdir, **kwargs)
    self.smoothing_sigma = smoothing_sigma
    self._run = _localize_fn(self.generator)
    self.references = (reference.load(self.workdir) if stage_registry.uses_reference(self.config)
                       else None)
    # The categories an older thresholds file's one set stands for (`thresholds`).
    self._trained = (thresholds_lib.ANY,) if self.references is None else self.references.names
    self.thresholds = thresholds_lib.load(self.workdir, self._trained)
    self._calibrated = {}  # The last `calibrate`'s, which `save_thresholds` writes.
    self.patch_memory = (patch_memory.load(self.workdir)
                         if stage_registry.uses_patch_guide(self.config) else None)
    self._patch_arrays = (None if self.patch_memory is None  # On device once, not per call.
                          else self.patch_memory.arrays())
    if self.patch_memory is not None:
      self._check_categories("patch memory", self.patch_memory.names)
    # Given (training's end fits it into trust_lib.EMPTY), else the run's file.
    self.trust = trust
    if stage_registry.uses_evidence_trust(self.config) and trust is None:
      self.trust = trust_lib.load(self.workdir)
      self._check_categories("evidence trust", self.trust.names)
    self.flip_tta = self._choose_flip_views(flip_tta)
    # The patch evidence's own memory (`patch_memory`); a run fitted before it existed weighs
    # the network's patch input instead.
    self.evidence_memory = None
    if self.trust is not None and stage_registry.uses_evidence_memory(self.config):
      self.evidence_memory = patch_memory.load(self.workdir, patch_memory.EVIDENCE_FILE_NAME)
      self._check_categories("evidence memory", self.evidence_memory.names)
    self._evidence_arrays = (None if self.evidence_memory is None
                             else self.evidence_memory.arrays())
    if self.trust is None and self.config.blaze.get("image_score", "heatmap") != "heatmap":
      log.warning("%s was trained with blaze.image_score=%r, which af_jax no longer has: its "
                  "images are scored by the heatmap's maximum; retrain Blaze with "
                  "blaze.evidence_trust to weigh its evidence", self.workdir,
                  self.config.blaze.image_score)
    self._flare_workdir = flare_workdir or self.config.get("teacher_workdir")
    self._flare = None

  def _check_categories(self, what: str, names: tuple[str, ...]) -> None:
    """Refuses a run file (`what`) whose categories are not the references', in their order."""
    if names != self.references.names:
      raise ValueError(f"{self.workdir}: the {what}'s categories {list(names)} differ from the "
                       f"references' {list(self.references.names)}; restore both files of the "
                       "run")

  def _choose_flip_views(self, requested: bool | None) -> bool:
    """Whether the flipped views are averaged: as `requested`, else as the run's evidence
    trust was fitted, else `blaze.flip_views`. A trust fitted with the other choice holds
    the network's statistics for other views: refused, naming both ways out."""
    fitted = set() if self.trust is None else set(self.trust.flip_views.tolist())
    if len(fitted) > 1:
      raise ValueError(f"{self.workdir}: its evidence trust was fitted with the flipped views "
                       "for some categories and without them for others; refit it")
    default = next(iter(fitted)) if fitted else self.config.blaze.get("flip_views", True)
    if requested is not None and bool(requested) != default and fitted:
      raise ValueError(
          f"{self.workdir}: its evidence trust was fitted {'with' if default else 'without'} "
          f"the flipped views, and its statistics hold for those; drop "
          f"{'--no-flip_tta' if default else '--flip_tta'} (flip_tta=), or refit the trust "
          f"with blaze.flip_views={not default}")
    return default if requested is None else bool(requested)

  def views(self) -> list[tuple[bool, bool]]:
    """(left-right, top-bottom) flips of the views averaged; (False, False) is the image."""
    aug = self.config.augment
    lr = [False, True] if self.flip_tta and aug.flip_lr_prob > 0 else [False]
    ud = [False, True] if self.flip_tta and aug.flip_ud_prob > 0 else [False]
    return [(a, b) for b in ud for a in lr]

  def network_inputs(self, images, category: str | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the network sees of uint8 images of any size: (edges [N, S, S, 1] binarised to
    {0, 1}, images [N, S, S, 3] in [-1, 1], guide [N, S, S, G] in [-1, 1]), as training
    decodes its prepared batches. The guide is the deviation from the reference (G = 3) of
    `category`, or of each image's nearest category, for a run with `blaze.reference`, then
    the distance to that category's normal patches (G = 4) with `blaze.patch_guide`; G = 0
    otherwise."""
    resized = pixels.resize_images(images, self.size)
    return self._inputs(resized, self.reference_indices(resized, category))

  def _inputs(self, resized: np.ndarray, which: np.ndarray | None, left_out=None):
    """`network_inputs` of model-size images compared with references `which` (or none).
    `left_out` (mean_std [N, S, S, 6], sources [N]) compares a category's own normal images
    as unseen ones: each with the reference and the patch memory without it."""
    with profile.part("edges"):
      edge_maps = pixels.binarize_edges(self.edges(resized)[..., None], self.edge_threshold)
    signed = pixels.uint8_to_signed(resized)
    guide = np.zeros(signed.shape[:3] + (0,), np.float32)
    if which is not None:
      with profile.part("reference"):
        mean_std = self.references.mean_std(which) if left_out is None else left_out[0]
        guide = reference.network_channels(signed, mean_std,
                                           self.config.blaze.reference_eps).astype(np.float32)
    if self.patch_memory is not None:
      with profile.part("patch"):
        channel = self._patch_channel(signed, which, _left_out_sources(signed, left_out),
                                      self._patch_arrays, self.patch_stride)
        guide = np.concatenate([guide, channel], axis=-1)
    return edge_maps, signed, guide

  def patch_evidence(self, signed: np.ndarray, which: np.ndarray, guide: np.ndarray,
                     left_out=None) -> np.ndarray | None:
    """The patch evidence [N, S, S, 1] in [-1, 1] of model-size images (`_inputs`' `signed`,
    `guide` and `left_out`): their distances to the evidence memory, or the network's patch
    input for a run without one; None for a run with neither."""
    if self.evidence_memory is None:
      return None if self.patch_memory is None else guide[..., -1:]
    with profile.part("patch evidence"):
      return self._patch_channel(signed, which, _left_out_sources(signed, left_out),
                                 self._evidence_arrays, self.evidence_patch_stride,
                                 pixel_levels=True)

  def _patch_channel(self, signed: np.ndarray, which: np.ndarray, sources: np.ndarray,
                     arrays, stride: int, pixel_levels: bool = False) -> np.ndarray:
    """[N, S, S, 1]: `patch_memory.category_channel` of model-size images against memory
    `arrays`, in batches (`pixel_levels`: the evidence memory's stored 8-bit patches; else
    the network's augmented ones, which the images' 8-bit levels meet in two bfloat16
    terms, `query_levels`)."""
    out = []
    for start, stop in batching.spans(len(signed), self.batch_size):
      channel = _patch_channel_fn(self.config.blaze.patch_size, stride, pixel_levels)(
          batching.pad(signed[start:stop], self.batch_size),
          batching.pad(which[start:stop].astype(np.int32), self.batch_size), arrays,
          exclude=batching.pad(sources[start:stop].astype(np.int32), self.batch_size))
      out.append(np.asarray(channel, np.float32)[:stop - start])
    return np.concatenate(out)

  def reference_indices(self, resized: np.ndarray, category: str | None, names=None
                        ) -> np.ndarray | None:
    """int [N]: the reference each model-size image is compared with (`category`'s, else
    each image's nearest of its kind); None for a run without references. Gray and colour
    are never compared (`af_jax.pixels`): ValueError naming the image (by `names`, else its
    index) otherwise."""
    if self.references is None:
      return None
    if category is None:
      return self.references.nearest(resized, names)
    which = np.full(len(resized), self.references.index(category))
    self.references.check_kinds(resized, which, names)
    return which

  def compared_with(self, images, category: str | None = None, names=None
                    ) -> list[str] | None:
    """The reference each of uint8 images (any sizes) is compared with, checked as `localize`
    checks it (`reference_indices`), without localizing: commands refuse before writing."""
    if self.references is None or not len(images):
      return None if self.references is None else []
    which = self.reference_indices(pixels.resize_images(images, self.size), category, names)
    return [self.references.names[i] for i in which]

  def network_outputs(self, edge_maps: np.ndarray, signed: np.ndarray, guide: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One view: (heatmaps [N, S, S], textures [N, S, S, 3] in [-1, 1]) of `network_inputs`."""
    heat, texture = [], []
    with profile.part("network"):
      for start, stop in batching.spans(len(signed), self.batch_size):
        h, t = self._run(self.params, self.device_batch(edge_maps[start:stop]),
                         self.device_batch(signed[start:stop]),
                         self.device_batch(guide[start:stop]))
        heat.append(np.asarray(h, np.float32)[:stop - start])
        texture.append(np.asarray(t, np.float32)[:stop - start])
    return np.concatenate(heat), np.concatenate(texture)

  def localize(self, images, category: str | None = None) -> LocalizationResult:
    """Heatmaps, repaired images and scores of uint8 RGB images [H, W, 3] of one size.

    Any H x W goes in; the outputs come back at that size (`LocalizationResult`: heatmaps
    float32 [N, H, W] in [0, 1], repaired uint8 [N, H, W, 3], scores [N] in [0, 1]). Images
    of different sizes go in separate calls (`batching.batches_by_size` groups them); mixing
    them in one call is a ValueError naming the sizes.

    `category`: for a run with `blaze.reference`, the training category whose reference the
    images are compared with (default: each image's nearest, `af_jax.evidence.reference`).
    """
    images = pixels.image_list(images)
    shapes = sorted({np.shape(im)[:2] for im in images})
    if not shapes:
      raise ValueError("localize() got no images")
    if len(shapes) > 1:
      raise ValueError("localize() needs images of one size (its outputs are stacked "
                       f"arrays); got {len(images)} images of sizes (H, W) {shapes}: call it "
                       "once per size")
    with profile.part("decode+resize"):
      resized = pixels.resize_images(images, self.size)
    with profile.part("reference"):
      which = self.reference_indices(resized, category)
    heat, texture, scores = self._localize_resized(resized, which)
    with profile.part("post-processing"):
      heatmaps = np.stack([pixels.resize_back(hm, shapes[0]) for hm in heat])
      repaired = np.stack([pixels.resize_back(pixels.signed_to_uint8(tx), shapes[0])
                           for tx in texture])
    names = None if which is None else [self.references.names[i] for i in which]
    return LocalizationResult(heatmaps=heatmaps, repaired=repaired, scores=np.asarray(scores),
                              references=names)

  def _localize_resized(self, resized: np.ndarray, which: np.ndarray | None):
    """(final heatmaps [N, S, S], textures [N, S, S, 3], image scores [N]) of model-size
    images compared with references `which`: the evidence weighed by the category's trust,
    or the network's smoothed heatmap and its maximum."""
    inputs = self._inputs(resized, which)
    heat, (_, texture) = postprocess.average_views(self.network_outputs, self.views(), *inputs)
    if self.trust is not None:
      patch = self.patch_evidence(inputs[1], which, inputs[2])
    with profile.part("post-processing"):
      on = self.scored_pixels(resized)
      if self.trust is not None:
        heat, scores = trust_lib.apply(self.trust, self.source_maps(heat, inputs[2], patch),
                                       self.trust_indices(which), on)
        return heat.astype(np.float32), texture, scores
      heat = postprocess.smooth_heatmaps(heat, self.smoothing_sigma).astype(np.float32)
      return heat, texture, postprocess.image_scores(heat, on)

  def source_maps(self, heat: np.ndarray, guide: np.ndarray, patch) -> np.ndarray:
    """`trust_lib.source_maps` of view-averaged, unblurred heatmaps, their guide inputs and
    patch evidence (`patch_evidence`)."""
    return trust_lib.source_maps(heat, guide, self.references is not None, patch)

  def trust_indices(self, which: np.ndarray) -> np.ndarray:
    """The rows of `self.trust` of reference indices `which` (both ordered by name)."""
    rows = {i: self.trust.index(self.references.names[i]) for i in np.unique(which)}
    return np.asarray([rows[i] for i in which], np.int64)

  def evidence_maps(self, resized: np.ndarray, which: np.ndarray, left_out=None
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """(evidence [N, S, S, 3] of `trust_lib.SOURCES`, the scored pixels) of model-size images
    compared with references `which` (`_inputs`' `left_out` leaves their own image out)."""
    maps, on = [], []
    for start, stop in batching.spans(len(resized), self.batch_size):
      part = None if left_out is None else tuple(x[start:stop] for x in left_out)
      inputs = self._inputs(resized[start:stop], which[start:stop], part)
      heat, _ = postprocess.average_views(self.network_outputs, self.views(), *inputs)
      patch = self.patch_evidence(inputs[1], which[start:stop], inputs[2], part)
      maps.append(self.source_maps(heat, inputs[2], patch))
      on.append(self.scored_pixels(resized[start:stop]))
    return np.concatenate(maps), (None if on[0] is None else np.concatenate(on))

  def flare(self, category: str):
    """The FlareGenerator whose anomalies fit the evidence trust of `category` (the run's
    teacher, or the `flare_workdir` given), loaded once."""
    if self._flare is None:
      from af_jax.inference import generator  # pylint: disable=g-import-not-at-top
      path = self._flare_workdir
      if not path or not (pathlib.Path(path) / "config.json").is_file():
        raise ValueError(f"{category}: its evidence trust is fitted from FlareGenerator "
                         f"anomalies, but the Flare run of {self.workdir} "
                         f"({str(path or 'none recorded')!r}) is not there; pass "
                         "flare_workdir= (--flare_workdir) naming it")
      self._flare = generator.Generator(path, batch_size=self.batch_size)
    return self._flare

  def trust_of(self, name: str, images: np.ndarray, indices: np.ndarray,
               moments: reference.Moments) -> trust_lib.Trust:
    """`trust_lib.fit` of category `name` from model-size normal `images`, the `indices` of
    them among its normal images in the order its patch memory was built from, each left out
    of the reference (`moments`, of all of them) and of the memory, and anomalies made from
    them (`blaze.trust_anomalies`: Flare's and pasted ones), each scored with its source
    image left out likewise."""
    blaze = self.config.blaze
    if len(images) < trust_lib.MIN_IMAGES:
      raise ValueError(f"{name}: fitting its evidence trust needs at least "
                       f"{trust_lib.MIN_IMAGES} normal images, got {len(images)}")
    which = np.full(len(images), self.references.index(name))
    left_out = (np.stack([moments.leave_one_out(im) for im in images]), indices)
    normal_maps, normal_on = self.evidence_maps(images, which, left_out)
    anomalies, masks, sources = self._anomalies(name, images, indices)
    anomalous_maps, anomalous_on = self.evidence_maps(
        anomalies, which[sources], tuple(x[sources] for x in left_out))
    sigmas = [float(s) * self.size / 64 for s in blaze.get("trust_sigmas", (0.0, 1.0, 2.0, 4.0))]
    return trust_lib.fit(name, normal_maps, anomalous_maps, masks, sigmas, normal_on,
                         anomalous_on, (True, self.has_patch_evidence,
                                        self.references is not None),
                         blaze.get("trust_network_prior", 0.0),
                         blaze.get("trust_shrinkage", 0.5), self.flip_tta)

  def _anomalies(self, name: str, images: np.ndarray, indices: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(anomalies uint8 [M, S, S, 3], where each changed bool [M, S, S], the normal image each
    came from [M]) of the kinds `blaze.trust_anomalies`, one of each kind per normal image.
    A pixel changed where the image moved by half of `blaze.change_scale` inside the edit."""
    kinds = [k for k in self.config.blaze.get("trust_anomalies", "flare,pasted").split(",") if k]
    unknown = set(kinds) - {"flare", "pasted"}
    if unknown or not kinds:
      raise ValueError(f"blaze.trust_anomalies must name 'flare' and/or 'pasted', got "
                       f"{self.config.blaze.trust_anomalies!r}")
    signed = pixels.uint8_to_signed(images)
    made, regions = [], []
    if "flare" in kinds:
      generated = self.flare(name).generate(images, n_variants=1, seed=0, image_ids=indices)
      made.append(generated.images)
      regions.append(generated.region_masks)
    if "pasted" in kinds:
      edges = pixels.binarize_edges(self.edges(images)[..., None], self.edge_threshold)
      pasted, _, mask = _paste_anomalies(
          jax.random.PRNGKey(self.config.seed), signed, edges,
          config_dataclasses.from_config(synthetic_anomalies.SyntheticAnomalyConfig,
                                         self.config.blaze.synthetic))
      made.append(pixels.signed_to_uint8(np.asarray(pasted)))
      regions.append(np.asarray(mask)[..., 0] > 0.5)
    anomalies = np.concatenate(made)
    sources = np.tile(np.arange(len(images)), len(made))
    change = np.abs(pixels.uint8_to_signed(anomalies) - signed[sources]).mean(-1)
    masks = np.concatenate(regions) & (change >= self.config.blaze.change_scale / 2)
    return anomalies, masks, sources

  def scored_pixels(self, resized: np.ndarray) -> np.ndarray | None:
    """bool [N, S, S]: the pixels whose maximum is the image score (the object, found without
    labels, for a run with `blaze.score_on_object`), or None for all of them."""
    if not self.config.blaze.get("score_on_object", False):
      return None
    return np.asarray(foreground.foreground_batch(pixels.uint8_to_unit(resized)))

  def add_reference(self, name: str, normal_images) -> None:
    """Adds (or replaces) the normal reference `name` of a run trained with `blaze.reference`,
    from normal images of any size (at least 2), for a category it was not trained on; use it
    with `localize(images, category=name)` (or let the nearest-reference choice find it). It
    lives in this Detector only; the run's file is left as trained."""
    if self.references is None:
      raise ValueError(f"the run in {self.workdir} was trained without blaze.reference; it "
                       "takes no reference")
    resized = pixels.resize_images(pixels.image_list(normal_images), self.size)
    reference.check_one_kind(resized, name)
    if self.trust is not None and len(resized) < trust_lib.MIN_IMAGES:
      raise ValueError(f"{name}: fitting its evidence trust needs at least "
                       f"{trust_lib.MIN_IMAGES} normal images, got {len(resized)}")
    moments = reference.Moments.of(resized)
    self.references = self.references.with_reference(name, moments)
    if self.patch_memory is not None:
      self.patch_memory, self._patch_arrays = self._with_category(self.patch_memory, name,
                                                                  resized)
    if self.evidence_memory is not None:
      self.evidence_memory, self._evidence_arrays = self._with_category(
          self.evidence_memory, name, resized, evidence=True)
    if self.trust is not None:
      indices = trust_lib.fit_indices(len(resized), self.trust_images)
      self.trust = self.trust.merged(self.trust_of(name, resized[indices], indices, moments))

  def _with_category(self, memory: patch_memory.PatchMemory, name: str, resized: np.ndarray,
                     evidence: bool = False):
    """(`memory` with category `name` built from its model-size normal images, its arrays)."""
    memory = memory.with_category(name, patch_memory.build(
        self.config, {name: resized}, {name: len(resized)}, evidence=evidence))
    return memory, memory.arrays()

  @property
  def evidence_patch_stride(self) -> int:
    """Every how many pixels and rows the patch evidence is searched
    (`blaze.inference_patch_stride`; a run from before it searched as it was trained)."""
    return self.config.blaze.get("inference_patch_stride",
                                 self.config.blaze.get("patch_stride", 1))

  @property
  def patch_stride(self) -> int:
    """Every how many pixels and rows the network's patch input is searched: as trained where
    the evidence has its own memory, else as the evidence (it is the evidence)."""
    if self.evidence_memory is not None:
      return self.config.blaze.get("patch_stride", 1)
    return self.evidence_patch_stride

  @property
  def has_patch_evidence(self) -> bool:
    """Whether the trust weighs patch distances (of either memory)."""
    return self.evidence_memory is not None or self.patch_memory is not None

  @property
  def trust_images(self) -> int:
    """How many normal images per category the evidence trust's fit scores."""
    return _trust_images(self.config)

  # -------------------------------------------------------------- thresholds
  def settings(self) -> dict:
    """What calibrated thresholds depend on (`thresholds.MEASURED_WITH`), as now set."""
    return dict(step=self.step, edge_method=self.edge_method,
                smoothing_sigma=self.smoothing_sigma, flip_tta=self.flip_tta)

  def calibrate(self, normal_images, fpr: float = defaults.CALIBRATION_FPR, *,
                category: str | None = None, min_images: int = defaults.MIN_CALIBRATION_IMAGES,
                save: bool = True) -> dict:
    """Pixel and image thresholds at false-positive rate `fpr` on normal images, per category.

    The images may differ in size and are localized as `localize` does: with `category`'s
    reference, else each with its nearest. Each reference gets the thresholds of the images
    compared with it (a run without references one set, `thresholds.ANY`); fewer than
    `min_images` are too few (the (1 - fpr) quantile of a handful of images says little about
    unseen ones; lower it knowingly): such a category keeps what it had, with a warning, and
    an error when no category has enough. With `save` the thresholds are written to the run
    (`thresholds`, only the categories measured) at once; without it they serve this Detector
    until `save_thresholds()` writes them. Returns {category: thresholds} of those measured.
    """
    if not 0 < fpr < 1:
      raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    normal_images = pixels.image_list(normal_images, "normal_images")
    if len(normal_images) < max(min_images, 1):
      raise ValueError(f"calibration needs at least {max(min_images, 1)} normal images, got "
                       f"{len(normal_images)}")
    results = [self.localize([normal_images[i] for i in batch], category)
               for batch in batching.batches_by_size(normal_images)]
    heatmaps = [h for r in results for h in r.heatmaps]
    scores = np.concatenate([r.scores for r in results])
    names = [n for r in results for n in (r.references or [thresholds_lib.ANY] * len(r.scores))]
    groups = {name: [i for i, n in enumerate(names) if n == name] for name in sorted(set(names))}
    enough = max(min_images, 1)
    measured = {name: thresholds_lib.measure(np.concatenate([heatmaps[i].ravel() for i in rows]),
                                             scores[rows], fpr, self.settings())
                for name, rows in groups.items() if len(rows) >= enough}
    short = ", ".join(f"{name} {len(rows)}" for name, rows in groups.items()
                      if name not in measured)
    if not measured:
      raise ValueError(f"calibration needs at least {enough} normal images of a category; "
                       f"the nearest references of the {len(names)} given are: {short}")
    if short:
      log.warning("calibration: too few of the normal images (fewer than %d) were compared with "
                  "the reference of %s; its thresholds stay as they were", enough, short)
    self.thresholds = {**self.thresholds, **measured}
    self._calibrated = measured
    if save:
      self.save_thresholds()
    return measured

  def save_thresholds(self) -> None:
    """Writes the categories the last `calibrate` measured into the run's thresholds.json,
    keeping the other categories' (and the file before, as thresholds.json.bak)."""
    thresholds_lib.save(self.workdir, self._calibrated, self._trained)

  def threshold_category(self, category: str | None) -> str:
    """The key of `category`'s thresholds: its reference's full name (a short one, "circuit",
    finds "synthetic/circuit"), or `thresholds.ANY` for a run without references."""
    if self.references is None:
      return thresholds_lib.ANY
    if category is None:
      raise ValueError(f"the run in {self.workdir} keeps thresholds per category: name one "
                       f"(category=...; calibrated: {', '.join(self.thresholds) or 'none'})")
    try:
      return self.references.names[self.references.index(category)]
    except KeyError:  # No reference here; calibrated with its own, it has thresholds still.
      return category

  def threshold(self, kind: str, override: float | None = None, *,
                category: str | None = None) -> float:
    """The pixel/image threshold of `category` (for a run with references; the reference the
    images were compared with): the override, else its calibrated one, else an error naming
    the category and the calibrated ones."""
    key = thresholds_lib.ANY if override is not None else self.threshold_category(category)
    return thresholds_lib.choose(kind, self.thresholds, key, self.settings(), self.workdir,
                                 override)


def fit_trust(workdir, config, normal_images: dict, moments: dict) -> trust_lib.Trust:
  """Fits and saves the evidence trust (`trust_lib`) of the trained Blaze run of `config` in
  `workdir`, per category it was trained on, from `name -> (count, iterable of its uint8
  normal images at the model's size)` in the order its patch memory was built from and their
  `name -> reference.Moments`; first builds and saves its evidence memory from all of them
  (`blaze.evidence_memory`). Only the images the fit uses are kept."""
  fitted = {}
  limit = _trust_images(config)

  def keeping(name, count, images):  # Passes every image on, keeps the fit's.
    wanted = set(trust_lib.fit_indices(count, limit).tolist())
    kept = fitted.setdefault(name, [])
    for i, image in enumerate(images):
      if i in wanted:
        kept.append(image)
      yield image

  streams = {name: keeping(name, count, images) for name, (count, images) in normal_images.items()}
  if stage_registry.uses_evidence_memory(config):
    memory = patch_memory.build(config, streams, {n: c for n, (c, _) in normal_images.items()},
                                evidence=True)
    log.info("evidence memories of %d categories (%d patches each): %s", len(memory.names),
             memory.patches.shape[1], memory.save(workdir, patch_memory.EVIDENCE_FILE_NAME))
  else:
    for stream in streams.values():
      collections.deque(stream, maxlen=0)
  detector = Detector(workdir, trust=trust_lib.EMPTY)
  trust = trust_lib.EMPTY
  for name, (count, _) in normal_images.items():
    indices = trust_lib.fit_indices(count, limit)
    trust = trust.merged(detector.trust_of(name, np.stack(fitted[name]), indices, moments[name]))
  trust.save(workdir)
  return trust

"""Localize anomalies with a trained BlazeDetector: images in, heatmaps, repaired images, scores out.

  det = Detector("runs/blaze")
  det.calibrate(normal_images, fpr=0.01)                     # thresholds without anomalies
  loc = det.localize(test_images)                            # one size H x W per call
  masks = loc.heatmaps >= det.threshold("pixel")             # bool [N, H, W]

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
  unflipped view.
* Smoothing removes the pixel-scale speckle of the decoder, which otherwise ranks isolated
  normal pixels above the body of a defect. 0 keeps the unblurred heatmap.

The image score is the maximum of the final heatmap; with `blaze.score_on_object` (a run's
config field), the maximum over the object (`af_jax.ops.foreground`, found without labels):
a part's defects are on the part, and the backdrop's shading and dust then cannot outrank
them. With `blaze.image_score = 'fused'` it weighs that maximum with the reference's, each
against the category's normal images (`score_fusion`). Calibrated thresholds record the
settings (`thresholds`).
"""

import dataclasses
import functools

import jax
import numpy as np

from af_jax.evidence import patch_memory
from af_jax import pixels
from af_jax.evidence import reference
from af_jax import stage_registry
from af_jax.inference import batching
from af_jax.inference import defaults
from af_jax import postprocess
from af_jax.evidence import score_fusion
from af_jax.inference import thresholds as thresholds_lib
from af_jax.inference import trained_network
from af_jax.ops import foreground


@dataclasses.dataclass
class LocalizationResult:
  """`Detector.localize` of N images of one size H x W (the size they came in)."""
  heatmaps: np.ndarray      # float32 [N, H, W] in [0, 1]: per-pixel anomaly heatmaps.
  repaired: np.ndarray      # uint8 [N, H, W, 3] in [0, 255]: the repaired (normal) images.
  scores: np.ndarray        # float64 [N] in [0, 1]: image anomaly scores (heatmap maxima, or
                            # `score_fusion` with blaze.image_score = 'fused').
  references: list | None = None  # The reference each image was compared with (a run with
                                  # `blaze.reference`), else None.


@functools.lru_cache(maxsize=8)
def _localize_fn(generator):
  """jit of (params, binary edges, image, guide) -> (heatmap [B, S, S], repaired texture
  [B, S, S, 3]); a guide of 0 channels is none."""
  def run(params, edges, image, guide):
    out = generator.apply(params, pixels.unit_to_signed(edges), image,
                          guide if guide.shape[-1] else None)
    return out["heatmap"][..., 0], out["texture"]

  return jax.jit(run)


@functools.lru_cache(maxsize=8)
def _patch_channel_fn(patch_size: int, stride: int):
  return jax.jit(functools.partial(patch_memory.category_channel, patch_size=patch_size,
                                   stride=stride))


class Detector(trained_network.TrainedNetwork):
  """A trained BlazeDetector (module docstring)."""

  stages = (stage_registry.serving("localize").name,)

  def __init__(self, workdir, *, smoothing_sigma: float = defaults.SMOOTHING_SIGMA,
               flip_tta: bool = True,
               score_statistics: score_fusion.ScoreStatistics | None = None, **kwargs):
    if not np.isfinite(smoothing_sigma) or smoothing_sigma < 0:
      raise ValueError(f"smoothing_sigma must be finite and >= 0, got {smoothing_sigma}")
    super().__init__(workdir, **kwargs)
    self.smoothing_sigma = smoothing_sigma
    self.flip_tta = bool(flip_tta)
    self._run = _localize_fn(self.generator)
    self.thresholds = thresholds_lib.load(self.workdir)
    self.references = (reference.load(self.workdir) if stage_registry.uses_reference(self.config)
                       else None)
    self.patch_memory = (patch_memory.load(self.workdir)
                         if stage_registry.uses_patch_guide(self.config) else None)
    self._patch_arrays = (None if self.patch_memory is None  # On device once, not per call.
                          else self.patch_memory.arrays())
    if self.patch_memory is not None and self.patch_memory.names != self.references.names:
      raise ValueError(f"{self.workdir}: the patch memory's categories "
                       f"{list(self.patch_memory.names)} differ from the references' "
                       f"{list(self.references.names)}; restore both files of the run")
    # Given (training's end fits them into score_fusion.EMPTY), else the run's file.
    self.score_statistics = score_statistics
    if self.fused_scores and score_statistics is None:
      self.score_statistics = score_fusion.load(self.workdir)
      if self.score_statistics.names != self.references.names:
        raise ValueError(f"{self.workdir}: the image score statistics' categories "
                         f"{list(self.score_statistics.names)} differ from the references' "
                         f"{list(self.references.names)}; restore both files of the run")

  @property
  def fused_scores(self) -> bool:
    """Whether image scores fuse heatmap and reference evidence (`blaze.image_score`)."""
    # .get: runs saved before the field existed scored the heatmap alone.
    return self.config.blaze.get("image_score", "heatmap") == "fused"

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
    edge_maps = pixels.binarize_edges(self.edges(resized)[..., None], self.edge_threshold)
    signed = pixels.uint8_to_signed(resized)
    guide = np.zeros(signed.shape[:3] + (0,), np.float32)
    if which is not None:
      mean_std = self.references.mean_std(which) if left_out is None else left_out[0]
      guide = reference.network_channels(signed, mean_std,
                                         self.config.blaze.reference_eps).astype(np.float32)
    if self.patch_memory is not None:
      sources = np.full(len(signed), -1) if left_out is None else left_out[1]
      guide = np.concatenate([guide, self._patch_channel(signed, which, sources)], axis=-1)
    return edge_maps, signed, guide

  def _patch_channel(self, signed: np.ndarray, which: np.ndarray, sources: np.ndarray
                     ) -> np.ndarray:
    """[N, S, S, 1]: `patch_memory.category_channel` of model-size images, in batches."""
    out = []
    for start, stop in batching.spans(len(signed), self.batch_size):
      channel = _patch_channel_fn(self.config.blaze.patch_size,
                                  self.config.blaze.get("patch_stride", 1))(
          batching.pad(signed[start:stop], self.batch_size),
          batching.pad(which[start:stop].astype(np.int32), self.batch_size), self._patch_arrays,
          exclude=batching.pad(sources[start:stop].astype(np.int32), self.batch_size))
      out.append(np.asarray(channel, np.float32)[:stop - start])
    return np.concatenate(out)

  def reference_indices(self, resized: np.ndarray, category: str | None) -> np.ndarray | None:
    """int [N]: the reference each model-size image is compared with (`category`'s, else
    each image's nearest); None for a run without references."""
    if self.references is None:
      return None
    if category is None:
      return self.references.nearest(resized)
    return np.full(len(resized), self.references.index(category))

  def network_outputs(self, edge_maps: np.ndarray, signed: np.ndarray, guide: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One view: (heatmaps [N, S, S], textures [N, S, S, 3] in [-1, 1]) of `network_inputs`."""
    heat, texture = [], []
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
    resized = pixels.resize_images(images, self.size)
    which = self.reference_indices(resized, category)
    heat, texture, scores = self._localize_resized(resized, which)
    if self.fused_scores:
      scores = score_fusion.fuse(scores, *self.score_statistics.of_indices(which))
    heatmaps = np.stack([pixels.resize_back(hm, shapes[0]) for hm in heat])
    repaired = np.stack([pixels.resize_back(pixels.signed_to_uint8(tx), shapes[0])
                         for tx in texture])
    names = None if which is None else [self.references.names[i] for i in which]
    return LocalizationResult(heatmaps=heatmaps, repaired=repaired, scores=np.asarray(scores),
                              references=names)

  def _localize_resized(self, resized: np.ndarray, which: np.ndarray | None, left_out=None):
    """(smoothed heatmaps [N, S, S], textures [N, S, S, 3], raw image scores) of model-size
    images (`_inputs`): the heatmaps' maxima [N], or `score_fusion.raw_scores` [N, 2] for a
    run that fuses them."""
    inputs = self._inputs(resized, which, left_out)
    heat, (_, texture) = postprocess.average_views(self.network_outputs, self.views(), *inputs)
    heat = postprocess.smooth_heatmaps(heat, self.smoothing_sigma).astype(np.float32)
    on = self.scored_pixels(resized)
    if self.fused_scores:
      return heat, texture, score_fusion.raw_scores(heat, inputs[2], on)
    return heat, texture, postprocess.image_scores(heat, on)

  def score_statistics_of(self, name: str, images: np.ndarray, indices: np.ndarray,
                          moments: reference.Moments) -> score_fusion.ScoreStatistics:
    """`score_fusion` statistics of category `name` from model-size normal `images`, the
    `indices` (`score_fusion.statistics_indices`) of its normal images in the order its patch
    memory was built from, each left out of the reference (`moments`, of all of them) and of
    the memory."""
    which = np.full(len(images), self.references.index(name))
    raw = []
    for start, stop in batching.spans(len(images), self.batch_size):
      batch = images[start:stop]
      left_out = (np.stack([moments.leave_one_out(im) for im in batch]), indices[start:stop])
      raw.append(self._localize_resized(batch, which[start:stop], left_out)[2])
    return score_fusion.ScoreStatistics.of(name, np.concatenate(raw))

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
    moments = reference.Moments.of(resized)
    self.references = self.references.with_reference(name, moments)
    if self.patch_memory is not None:
      self.patch_memory = self.patch_memory.with_category(name, patch_memory.build(
          self.config, {name: resized}, {name: len(resized)}))
      self._patch_arrays = self.patch_memory.arrays()
    if self.fused_scores:
      indices = score_fusion.statistics_indices(len(resized), self.statistics_images)
      self.score_statistics = self.score_statistics.merged(
          self.score_statistics_of(name, resized[indices], indices, moments))

  @property
  def statistics_images(self) -> int:
    """How many normal images per category the score statistics use."""
    return self.config.blaze.get("score_statistics_images", 32)

  # -------------------------------------------------------------- thresholds
  def settings(self) -> dict:
    """What calibrated thresholds depend on (`thresholds.MEASURED_WITH`), as now set."""
    return dict(step=self.step, edge_method=self.edge_method,
                smoothing_sigma=self.smoothing_sigma, flip_tta=self.flip_tta)

  def calibrate(self, normal_images, fpr: float = defaults.CALIBRATION_FPR, *,
                category: str | None = None, min_images: int = defaults.MIN_CALIBRATION_IMAGES,
                save: bool = True) -> dict:
    """Pixel and image thresholds at false-positive rate `fpr` on normal images.

    The images may differ in size and are localized with `category`'s reference (as
    `localize`; recorded as `reference`); fewer than `min_images` are refused (the (1 - fpr)
    quantile of a handful of images says little about unseen ones; lower it knowingly).
    With `save` the thresholds are written to the run (`thresholds`) at once; without it they
    serve this Detector until `save_thresholds()` writes them. Returns them.
    """
    if not 0 < fpr < 1:
      raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    normal_images = pixels.image_list(normal_images, "normal_images")
    if len(normal_images) < max(min_images, 1):
      raise ValueError(f"calibration needs at least {max(min_images, 1)} normal images, got "
                       f"{len(normal_images)}")
    results = [self.localize([normal_images[i] for i in batch], category)
               for batch in batching.batches_by_size(normal_images)]
    self.thresholds = thresholds_lib.measure(
        np.concatenate([r.heatmaps.ravel() for r in results]),
        np.concatenate([r.scores for r in results]), fpr, self.settings())
    self.thresholds["reference"] = category
    if save:
      self.save_thresholds()
    return self.thresholds

  def save_thresholds(self) -> None:
    """Writes the thresholds of the last `calibrate` to the run's thresholds.json."""
    thresholds_lib.save(self.workdir, self.thresholds)

  def threshold(self, kind: str, override: float | None = None) -> float:
    """The pixel/image threshold: the override, else the calibrated one, else an error."""
    return thresholds_lib.choose(kind, self.thresholds, self.settings(), self.workdir, override)


def fit_score_statistics(workdir, normal_images: dict, moments: dict
                         ) -> score_fusion.ScoreStatistics:
  """Fits and saves the `score_fusion` statistics of the trained Blaze run in `workdir`, per
  category it was trained on, from `name -> (count, iterable of its uint8 normal images at the
  model's size)` in the order its patch memory was built from (`input_pipeline.normal_images`)
  and their `name -> reference.Moments`. Only the images the statistics use are kept."""
  detector = Detector(workdir, score_statistics=score_fusion.EMPTY)
  statistics = score_fusion.EMPTY
  for name, (count, images) in normal_images.items():
    indices = score_fusion.statistics_indices(count, detector.statistics_images)
    wanted = set(indices.tolist())
    chosen = np.stack([image for i, image in enumerate(images) if i in wanted])
    statistics = statistics.merged(
        detector.score_statistics_of(name, chosen, indices, moments[name]))
  statistics.save(workdir)
  return statistics

"""Use trained stages: generate anomalies (FlareGenerator) and localize them (BlazeDetector).

  gen = Generator("runs/flare")
  result = gen.generate(images, n_variants=4, seed=0)       # images uint8 [H, W, 3] each
  det = Detector("runs/blaze")
  det.calibrate(normal_images, fpr=0.01)                     # thresholds without anomalies
  loc = det.localize(test_images)                            # one size H x W per call
  masks = loc.heatmaps >= det.threshold("pixel")             # bool [N, H, W]

Loading. Both restore the generator parameters only, from the latest (or a given) checkpoint
step, into the model described by the run's `config.json`; a workdir that is not a run, has no
complete checkpoint, holds another stage, or whose checkpoint is corrupt (its files differ
from when they were saved; the error lists the intact steps to pass as `step`) or does not
fit its config raises `checkpoint.CheckpointError` saying which. Layers compute in `dtype`
(default: the run's `model.compute_dtype`; bfloat16 suits accelerators); parameters stay
float32.

Devices. One jitted function per stage runs fixed-size batches (short ones are padded), so one
compile serves every call. Without `mesh` it runs on the default device; with a (single-host)
`sharding.make_mesh()` mesh, batches are split over all its devices and parameters laid out
like in training (replicated, or split over `fsdp`); `batch_size` must be a multiple of the
mesh size.

Sizes. Images of any size are resized to the model's training size by the rule the dataset
builders applied to its training data (`af_jax.pixels.resize_image`); the detector resizes
heatmaps and repaired images back to the images' size (bilinear) and returns them stacked, so
one `localize` call takes images of one size (`batches_by_size` splits a mixed list).

Edges. The networks were trained on edge maps of one extractor and must see the same one. By
default (`edge_method=None`) it is the one the run's training data was prepared with, as the
run recorded it (`config.data_facts.edge_method`, see `af_jax.data_facts`), or PiDiNet for a
Blaze run trained with `blaze.reextract_edges`. An explicit method that differs from it is used, with a warning.

Generation is reproducible. Anomaly (i, v), variant v of input image i, draws everything
(region choice, edit, donor, generator noise) from `(seed, image_ids[i], v)` alone, so the
same seed gives the same output whatever the batch size or the order of the images. Replace
and merge edits take their donor edges from another image of the same call, chosen by that
draw among the others ranked by id, so the output does depend on which images are in the call
(a single image is its own donor, rotated by 180 degrees, as in training).

Generated anomalies can be kept inside the edited region (`bound_to_region`; by default the
run's `flare.bound_to_region`: off in the paper configs, on in the demo's): the heatmap is
multiplied by the region before the fusion I_in * (1 - H) + T * H, so no pixel outside the
region changes; the returned heatmap is that bounded one. Off, it is the paper's unbounded
fusion, which leaks where the network's heatmap is soft at the region's border (a 64 px demo
Flare: about a fifth of its change lay just outside its regions).

Binary masks of generated anomalies: heatmap >= `mask_threshold` inside the edited region
(the heatmap is the network's own estimate of where the image changed; the edited region
bounds it, so the mask never marks untouched parts of the image). When that leaves no pixel,
the mask falls back to the edited region itself.

Thresholds without anomalous data: `Detector.calibrate(normal_images, fpr)` sets the pixel
threshold to the (1 - fpr) quantile of all heatmap values of held-out normal images and the
image threshold to the (1 - fpr) quantile of their image scores, and saves both, with the
checkpoint step, edge method and heatmap post-processing (smoothing, flip averaging) they were
measured with, to `<workdir>/thresholds.json`. `threshold(kind, override)` returns the override
when given, else the saved value, and refuses thresholds measured with other settings.
"""

import dataclasses
import functools
import json
import pathlib
from typing import Any, NamedTuple
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from af_jax import checkpoint
from af_jax import edges as edges_lib
from af_jax import manipulate
from af_jax import pixels
from af_jax import reference
from af_jax import regions as regions_lib
from af_jax import sharding
from af_jax import stage_registry
from af_jax.metrics import localization
from af_jax.models import build
from af_jax.models.generator import fuse

THRESHOLDS_FILE = "thresholds.json"
THRESHOLD_KINDS = ("pixel", "image")
# What a calibrated threshold depends on; a detector differing in any of them recalibrates.
_MEASURED_WITH = ("step", "edge_method", "smoothing_sigma", "flip_tta")


class LoadedStage(NamedTuple):
  config: Any      # The run's ml_collections.ConfigDict.
  generator: Any   # The flax module built from it.
  params: Any      # Its restored parameters (host or default-device arrays).
  step: int        # The checkpoint step they come from.


def load_stage(workdir, stage: str | tuple[str, ...], step: int = -1, dtype=None) -> LoadedStage:
  """The generator of a `stage` run (or one of several) at `step` (latest when < 0).

  Errors say what is wrong.
  """
  config = checkpoint.load_config(workdir)
  allowed = (stage,) if isinstance(stage, str) else tuple(stage)
  if config.stage not in allowed:
    others = "".join(f" (or a {s!r} run)" for s in allowed[1:])
    raise checkpoint.CheckpointError(
        f"{workdir} holds a {config.stage!r} run, expected a {allowed[0]!r} run{others}")
  generator = build.generator(config.model, dtype=dtype)
  abstract = build.abstract_generator_params(generator, config.data.image_size,
                                             guide=build.guide_channels(config))
  stored, step = checkpoint.restore_generator(workdir, step=step)
  # Compared here rather than by Orbax, whose failed restores leave reads pending.
  _check_shapes(stored, abstract, f"checkpoint {step} of {workdir}")
  params = jax.tree.map(lambda x, a: jnp.asarray(x, a.dtype), stored, abstract)
  return LoadedStage(config, generator, params, step)


def _check_shapes(stored, expected, where: str) -> None:
  """Raises naming the parameters a checkpoint lacks, has in excess or holds in other shapes."""
  def shapes(tree):
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): tuple(np.shape(x)) for path, x in leaves}
  stored, expected = shapes(stored), shapes(expected)
  problems = ([f"{k} missing" for k in expected if k not in stored]
              + [f"{k} not in the model" for k in stored if k not in expected]
              + [f"{k} is {stored[k]}, the model needs {v}" for k, v in expected.items()
                 if k in stored and stored[k] != v])
  if problems:
    raise checkpoint.CheckpointError(
        f"{where} does not match the generator its config.json describes (wrong stage or "
        f"model config?): {'; '.join(problems[:3])}"
        + (f" and {len(problems) - 3} more" if len(problems) > 3 else ""))


def training_edge_method(config) -> str:
  """The edge extractor a run's networks saw (module docstring)."""
  if stage_registry.reextracts_edges(config):
    return "pidinet"
  return config.data_facts.edge_method


def _resize_labels(labels, size: int) -> np.ndarray:
  """Region label maps (any sizes, optional trailing 1) -> int32 [N, size, size], nearest."""
  out = []
  for i, label in enumerate(labels):
    label = np.asarray(label)
    label = label[..., 0] if label.ndim == 3 and label.shape[-1] == 1 else label
    if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
      raise ValueError(f"regions {i}: expected an integer label map [H, W], got "
                       f"{label.dtype} {label.shape}")
    if label.shape != (size, size):
      label = pixels.resize_labels(label.astype(np.uint8), size)
    out.append(label.astype(np.int32))
  return np.stack(out)


def _batches(n: int, batch_size: int):
  for start in range(0, n, batch_size):
    yield start, min(start + batch_size, n)


def flip(x: np.ndarray, left_right: bool, top_bottom: bool) -> np.ndarray:
  """Mirrors a batch [N, H, W, ...] (its own inverse)."""
  if left_right:
    x = x[:, :, ::-1]
  if top_bottom:
    x = x[:, ::-1]
  return np.ascontiguousarray(x)


def batches_by_size(images, batch_size: int | None = None) -> list[list[int]]:
  """Indices of `images` in batches of one size (H, W) each, at most `batch_size` long (default:
  all the images of a size), sizes in order of first appearance: how images of mixed sizes go
  through `Detector.localize`, which takes one size per call."""
  by_size = {}
  for i, image in enumerate(images):
    by_size.setdefault(np.shape(image)[:2], []).append(i)
  return [group[start:start + (batch_size or len(group))] for group in by_size.values()
          for start in range(0, len(group), batch_size or len(group))]


def _pad(x: np.ndarray, batch_size: int) -> np.ndarray:
  pad = batch_size - len(x)
  return np.concatenate([x, np.repeat(x[-1:], pad, 0)]) if pad else x


class _Stage:
  """Restore, device layout, resizing and edges shared by the Generator and the Detector."""

  stage: str | tuple[str, ...] = ""  # The run stage(s) it loads (`load_stage`).

  def __init__(self, workdir, *, step: int = -1, dtype=None, edge_method: str | None = None,
               batch_size: int = 16, mesh: jax.sharding.Mesh | None = None):
    self.workdir = pathlib.Path(workdir)
    self.config, self.generator, params, self.step = load_stage(workdir, self.stage, step, dtype)
    self.size = self.config.data.image_size
    self.edge_threshold = self.config.edge_threshold
    self.edge_method = self._choose_edge_method(edge_method)
    if batch_size < 1 or (mesh is not None and batch_size % mesh.size):
      raise ValueError(f"batch_size must be a positive multiple of the {mesh.size if mesh else 1}"
                       f" devices, got {batch_size}")
    self.batch_size = batch_size
    self.mesh = mesh
    self.params = (params if mesh is None
                   else jax.device_put(params, sharding.param_sharding(mesh, params)))

  def _choose_edge_method(self, requested: str | None) -> str:
    trained = training_edge_method(self.config)
    if requested is None:
      return trained
    if requested not in pixels.EDGE_METHODS:
      raise ValueError(f"unknown edge method {requested!r}; expected one of "
                       f"{pixels.EDGE_METHODS}")
    if requested != trained:
      warnings.warn(f"edge method {requested!r} differs from the {trained!r} edges the run in "
                    f"{self.workdir} was trained on; results will suffer", stacklevel=3)
    return requested

  def edges(self, images: np.ndarray) -> np.ndarray:
    """Edge probabilities [N, S, S] of model-size uint8 images."""
    return edges_lib.compute_edges(images, method=self.edge_method)

  def _device_batch(self, x: np.ndarray):
    """A padded batch, split over the mesh when there is one."""
    x = _pad(x, self.batch_size)
    return x if self.mesh is None else jax.device_put(x, sharding.batch_sharding(self.mesh))


# Compiled functions are cached per model, so every Generator/Detector of one model shares them.
@functools.lru_cache(maxsize=8)
def _generate_fn(generator, manipulate_config, edge_threshold, region_input, bound_to_region):
  """jit(vmap) of one anomaly from its own key: edit the edges in a region, then render (shown
  the region when the run was trained with `flare.region_input`; fused inside the region only
  with `bound_to_region`)."""
  binarize = lambda e: pixels.binarize_edges(e, edge_threshold)

  def one(params, key, edges, image, regions, donor):
    k_edit, k_noise = jax.random.split(key)
    new_edges, region_mask, info = manipulate.manipulate_edges(
        k_edit, binarize(edges)[None], regions[None], binarize(donor)[None],
        config=manipulate_config)
    new_edges = binarize(new_edges)
    guide = (pixels.unit_to_signed(region_mask),) if region_input else ()
    out = generator.apply(params, pixels.unit_to_signed(new_edges), image[None], *guide,
                          add_noise=True, rngs={"noise": k_noise})
    if bound_to_region:
      out["heatmap"] = out["heatmap"] * region_mask
      out["output"] = fuse(image[None], out["texture"], out["heatmap"])
    return (out["output"][0], out["heatmap"][0, ..., 0], new_edges[0, ..., 0],
            region_mask[0, ..., 0], info["region_kind"][0], info["edit_op"][0])

  return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0, 0, 0)))


@functools.lru_cache(maxsize=8)
def _localize_fn(generator):
  """jit of (params, binary edges, image, guide) -> (heatmap [B, S, S], repaired texture
  [B, S, S, 3]); a guide of 0 channels is none."""
  def run(params, edges, image, guide):
    out = generator.apply(params, pixels.unit_to_signed(edges), image,
                          guide if guide.shape[-1] else None)
    return out["heatmap"][..., 0], out["texture"]

  return jax.jit(run)


@dataclasses.dataclass
class GenerationResult:
  """M = N * n_variants anomalies, ordered by input image, then variant."""
  images: np.ndarray        # uint8 [M, S, S, 3] anomaly images.
  heatmaps: np.ndarray      # float32 [M, S, S] in [0, 1].
  masks: np.ndarray         # bool [M, S, S] (rule in the module docstring).
  edges: np.ndarray         # float32 [M, S, S]: the edited (binarized) edge maps.
  region_masks: np.ndarray  # bool [M, S, S]: the edited regions.
  source: np.ndarray        # int [M]: index of the input image each one came from.
  variant: np.ndarray       # int [M].
  donor: np.ndarray         # int [M]: index of the input image that lent replace/merge edges.
  region_kind: list         # 'semantic' | 'stochastic' per anomaly.
  edit_op: list             # 'remove' | 'replace' | 'merge' per anomaly.


class Generator(_Stage):
  """A trained FlareGenerator: normal images in, anomalies with heatmaps and masks out.

  A BootGenerator run works too: it renders the same edited edge maps, as it does when it
  teaches Flare, which is how the paper compares the two generators (Table 2's BootG).
  Its heatmaps were not trained to mark the edits (paper Fig. 8), so its masks are rougher.
  """

  # The generating stage, or the stage that teaches it (stage_registry).
  stage = (stage_registry.serving("generate").name,
           stage_registry.get(stage_registry.serving("generate").name).teacher)

  def __init__(self, workdir, *, manipulate_config: manipulate.ManipulateConfig | None = None,
               bound_to_region: bool | None = None, **kwargs):
    """`bound_to_region`: change no pixel outside the edited region (module docstring); None:
    as the run's config says."""
    super().__init__(workdir, **kwargs)
    if bound_to_region is None:  # .get: runs saved before the field existed are unbounded.
      bound_to_region = self.config.get("flare", {}).get("bound_to_region", False)
    self.bound_to_region = bool(bound_to_region)
    self.manipulate_config = manipulate_config or manipulate.ManipulateConfig(
        **{k: tuple(v) if isinstance(v, list) else v
           for k, v in self.config.manipulate.to_dict().items()})
    self._run = _generate_fn(self.generator, self.manipulate_config, self.edge_threshold,
                             build.guide_channels(self.config) > 0, self.bound_to_region)

  def generate(self, images, n_variants: int = 1, seed: int = 0, *, regions=None,
               image_ids=None, mask_threshold: float = 0.5,
               max_regions: int | None = None) -> GenerationResult:
    """`n_variants` anomalies per normal image; same seed, same output (module docstring).

    Args:
      images: uint8 RGB images [H, W, 3] of any size (a list or an array).
      n_variants: anomalies per image.
      seed: the seed of every random choice.
      regions: optional candidate region label maps, one per image (0 = background); by
        default they are proposed from each image (`af_jax.regions.propose_regions`).
      image_ids: one integer per image naming it in the random draws (default 0..N-1);
        callers that split a long list into calls pass the list positions.
      mask_threshold: heatmap level of the binary masks.
      max_regions: most candidate regions proposed per image (default: the run's).
    """
    images = pixels.resize_images(images, self.size)
    n = len(images)
    if n == 0:
      raise ValueError("generate() got no images")
    if n_variants < 1:
      raise ValueError(f"n_variants must be >= 1, got {n_variants}")
    image_ids = np.arange(n) if image_ids is None else np.asarray(image_ids, np.int64)
    if image_ids.shape != (n,):
      raise ValueError(f"image_ids must hold one id per image ({n}), got {image_ids.shape}")
    if regions is None:
      k = max_regions or self.config.data_facts.max_regions
      regions = [regions_lib.propose_regions(im, max_regions=k) for im in images]
    if len(regions) != n:
      raise ValueError(f"got {len(regions)} region maps for {n} images")
    regions = _resize_labels(regions, self.size)[..., None]
    edge_maps = self.edges(images)[..., None]
    signed = pixels.uint8_to_signed(images)

    source = np.repeat(np.arange(n), n_variants)
    variant = np.tile(np.arange(n_variants), n)
    draws = [np.random.default_rng([seed, image_ids[i], v]) for i, v in zip(source, variant)]
    # Donors are drawn by rank of id among the other images, so the call's order is irrelevant.
    by_id = np.argsort(image_ids, kind="stable")
    rank = np.argsort(by_id)
    picks = [rng.integers(max(n - 1, 1)) for rng in draws]
    donor = np.asarray([by_id[r + (r >= rank[i])] if n > 1 else i for i, r in zip(source, picks)])
    donor_edges = edge_maps[donor] if n > 1 else edge_maps[donor, ::-1, ::-1]
    keys = np.asarray(jax.vmap(jax.random.PRNGKey)(
        np.asarray([rng.integers(2**31) for rng in draws], np.int32)))
    outputs = []
    for start, stop in _batches(len(source), self.batch_size):
      idx = source[start:stop]
      out = self._run(self.params, *(self._device_batch(x) for x in (
          keys[start:stop], edge_maps[idx], signed[idx], regions[idx],
          donor_edges[start:stop])))
      outputs.append([np.asarray(x)[:stop - start] for x in out])
    fake, heat, new_edges, region_mask, kind, op = (np.concatenate(x) for x in zip(*outputs))
    region_mask = region_mask > 0.5
    heat = heat.astype(np.float32)
    masks = (heat >= mask_threshold) & region_mask
    empty = ~masks.any(axis=(1, 2))
    masks[empty] = region_mask[empty]
    return GenerationResult(
        images=pixels.signed_to_uint8(fake),
        heatmaps=heat, masks=masks, edges=new_edges.astype(np.float32),
        region_masks=region_mask, source=source, variant=variant, donor=donor,
        region_kind=[manipulate.REGION_KINDS[i] for i in kind],
        edit_op=[manipulate.EDIT_OPS[i] for i in op])


@dataclasses.dataclass
class LocalizationResult:
  """`Detector.localize` of N images of one size H x W (the size they came in)."""
  heatmaps: np.ndarray      # float32 [N, H, W] in [0, 1]: per-pixel anomaly heatmaps.
  repaired: np.ndarray      # uint8 [N, H, W, 3] in [0, 255]: the repaired (normal) images.
  scores: np.ndarray        # float64 [N] in [0, 1]: image anomaly scores (heatmap maxima).


class Detector(_Stage):
  """A trained BlazeDetector: images in, anomaly heatmaps, repaired images and scores out.

  Heatmaps are the network's heatmap, averaged over flipped views when `flip_tta` is on, then
  blurred by a Gaussian of `smoothing_sigma` pixels at the model's size.

  * Flip test-time augmentation: the image (with its edge map) is also run mirrored left-right,
    top-bottom and both, as far as the run's training augmentation drew those flips (so every
    view is one the network was trained on), and the heatmaps, mirrored back, are averaged.
    Each view errs differently, so the average ranks defects above normal structure more
    reliably (on the demo's synthetic test set: +0.025 to +0.04 pixel AUROC) for 4x the
    network time. The repaired image comes from the unflipped view.
  * Smoothing: the usual post-processing of anomaly maps (sigma 4, as PatchCore and PaDiM
    report); it removes the pixel-scale speckle of the decoder, which otherwise ranks isolated
    normal pixels above the body of a defect. 0 keeps the unblurred heatmap.

  The image score is the maximum of the final heatmap, so a single noisy pixel does not make
  an image NG. Calibrated thresholds record both settings (module docstring).
  """

  stage = stage_registry.serving("localize").name

  def __init__(self, workdir, *, smoothing_sigma: float = 4.0, flip_tta: bool = True,
               **kwargs):
    super().__init__(workdir, **kwargs)
    if smoothing_sigma < 0:
      raise ValueError(f"smoothing_sigma must be >= 0, got {smoothing_sigma}")
    self.smoothing_sigma = smoothing_sigma
    self.flip_tta = bool(flip_tta)
    self._run = _localize_fn(self.generator)
    self.thresholds = self._load_thresholds()
    self.references = (reference.load(self.workdir) if stage_registry.uses_reference(self.config)
                       else None)

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
    `category`, or of each image's nearest category, for a run with `blaze.reference`; G = 0
    otherwise."""
    resized = pixels.resize_images(images, self.size)
    edge_maps = pixels.binarize_edges(self.edges(resized)[..., None], self.edge_threshold)
    signed = pixels.uint8_to_signed(resized)
    guide = np.zeros(signed.shape[:3] + (0,), np.float32)
    if self.references is not None:
      which = (self.references.nearest(resized) if category is None
               else np.full(len(resized), self.references.index(category)))
      guide = reference.network_channels(signed, self.references.mean_std(which),
                                         self.config.blaze.reference_eps).astype(np.float32)
    return edge_maps, signed, guide

  def network_outputs(self, edge_maps: np.ndarray, signed: np.ndarray, guide: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One view: (heatmaps [N, S, S], textures [N, S, S, 3] in [-1, 1]) of `network_inputs`."""
    heat, texture = [], []
    for start, stop in _batches(len(signed), self.batch_size):
      h, t = self._run(self.params, self._device_batch(edge_maps[start:stop]),
                       self._device_batch(signed[start:stop]),
                       self._device_batch(guide[start:stop]))
      heat.append(np.asarray(h, np.float32)[:stop - start])
      texture.append(np.asarray(t, np.float32)[:stop - start])
    return np.concatenate(heat), np.concatenate(texture)

  def localize(self, images, category: str | None = None) -> LocalizationResult:
    """Heatmaps, repaired images and scores of uint8 RGB images [H, W, 3] of one size.

    Any H x W goes in; the outputs come back at that size (`LocalizationResult`: heatmaps
    float32 [N, H, W] in [0, 1], repaired uint8 [N, H, W, 3], scores [N] in [0, 1]). Images
    of different sizes go in separate calls (`batches_by_size` groups them); mixing them in
    one call is a ValueError naming the sizes.

    `category`: for a run with `blaze.reference`, the training category whose reference the
    images are compared with (default: each image's nearest, `af_jax.reference`).
    """
    shapes = sorted({np.shape(im)[:2] for im in images})
    if not shapes:
      raise ValueError("localize() got no images")
    if len(shapes) > 1:
      raise ValueError("localize() needs images of one size (its outputs are stacked "
                       f"arrays); got {len(images)} images of sizes (H, W) {shapes}: call it "
                       "once per size")
    inputs = self.network_inputs(images, category)
    views, heat = self.views(), 0.0
    for lr, ud in views:
      view_heat, view_texture = self.network_outputs(*(flip(x, lr, ud) for x in inputs))
      heat = heat + flip(view_heat, lr, ud)
      if not (lr or ud):
        texture = view_texture
    heat = localization.smooth_heatmaps(heat / len(views), self.smoothing_sigma
                                        ).astype(np.float32)
    scores = localization.image_scores_from_heatmaps(heat)
    heatmaps = np.stack([pixels.resize_back(hm, shapes[0]) for hm in heat])
    repaired = np.stack([pixels.resize_back(pixels.signed_to_uint8(tx), shapes[0])
                         for tx in texture])
    return LocalizationResult(heatmaps=heatmaps, repaired=repaired, scores=np.asarray(scores))

  def add_reference(self, name: str, normal_images) -> None:
    """Adds (or replaces) the normal reference `name` of a run trained with `blaze.reference`,
    from normal images of any size (at least 2), for a category it was not trained on; use it
    with `localize(images, category=name)` (or let the nearest-reference choice find it). It
    lives in this Detector only; the run's file is left as trained."""
    if self.references is None:
      raise ValueError(f"the run in {self.workdir} was trained without blaze.reference; it "
                       "takes no reference")
    moments = reference.Moments.of(pixels.resize_images(normal_images, self.size))
    self.references = self.references.with_reference(name, moments)

  # -------------------------------------------------------------- thresholds
  def calibrate(self, normal_images, fpr: float = 0.01) -> dict:
    """Pixel and image thresholds at false-positive rate `fpr` on normal images; saved.

    No anomalous image is needed (module docstring); the images may differ in size. Returns
    what was saved.
    """
    if not 0 < fpr < 1:
      raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    if not len(normal_images):
      raise ValueError("calibrate() got no images")
    results = [self.localize([normal_images[i] for i in batch])
               for batch in batches_by_size(normal_images)]
    pixels = np.concatenate([r.heatmaps.ravel() for r in results])
    scores = np.concatenate([r.scores for r in results])
    self.thresholds = dict(pixel=float(np.quantile(pixels, 1 - fpr)),
                           image=float(np.quantile(scores, 1 - fpr)),
                           fpr=fpr, num_images=len(scores), step=self.step,
                           edge_method=self.edge_method, smoothing_sigma=self.smoothing_sigma,
                           flip_tta=self.flip_tta)
    path = self.workdir / THRESHOLDS_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(self.thresholds, indent=2))
    tmp.replace(path)
    return self.thresholds

  def _load_thresholds(self) -> dict | None:
    path = self.workdir / THRESHOLDS_FILE
    if not path.is_file():
      return None
    try:
      thresholds = json.loads(path.read_text())
      missing = [k for k in (*THRESHOLD_KINDS, *_MEASURED_WITH) if k not in thresholds]
    except (json.JSONDecodeError, TypeError) as e:
      raise ValueError(f"{path} is not a thresholds file: {e}") from e
    if missing:
      raise ValueError(f"{path} lacks {missing}; recalibrate")
    return thresholds

  def threshold(self, kind: str, override: float | None = None) -> float:
    """The pixel/image threshold: the override, else the calibrated one, else an error."""
    if kind not in THRESHOLD_KINDS:
      raise ValueError(f"threshold kind must be one of {THRESHOLD_KINDS}, got {kind!r}")
    if override is not None:
      return float(override)
    path = self.workdir / THRESHOLDS_FILE
    if not self.thresholds:
      raise ValueError(f"no calibrated thresholds in {path}: run "
                       "Detector.calibrate(normal_images) (or `af-jax localize --calibrate DIR`) "
                       "or pass a threshold")
    measured = {k: self.thresholds[k] for k in _MEASURED_WITH}
    current = dict(step=self.step, edge_method=self.edge_method,
                   smoothing_sigma=self.smoothing_sigma, flip_tta=self.flip_tta)
    if measured != current:
      differ = ", ".join(f"{k} {measured[k]!r} (now {current[k]!r})" for k in _MEASURED_WITH
                         if measured[k] != current[k])
      raise ValueError(f"thresholds in {path} were calibrated with {differ}: recalibrate or "
                       "pass a threshold")
    return float(self.thresholds[kind])

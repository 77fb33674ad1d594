"""Generate anomalies with a trained FlareGenerator: normal images in, anomalies, heatmaps, masks out.

  gen = Generator("runs/flare")
  result = gen.generate(images, n_variants=4, seed=0)       # uint8 [H, W, 3] images

Generation is reproducible. Anomaly (i, v), variant v of input image i, draws everything
(region choice, edit, donor, generator noise) from `(seed, image_ids[i], v)` alone, so the
same seed gives the same output whatever the batch size or the order of the images. Replace
and merge edits take their donor edges from another image of the same call, chosen by that
draw among the others ranked by id, so the output does depend on which images are in the call
(a single image is its own donor, rotated by 180 degrees, as in training).

Generated anomalies can be kept inside the edited region (`bound_to_region`; by default the
run's `flare.bound_to_region`, `stage_registry.bounds_to_region`): the heatmap is multiplied
by the region before the fusion I_in * (1 - H) + T * H, so no pixel outside the region
changes; the returned heatmap is that bounded one. Off, it is the paper's unbounded fusion,
which leaks where the network's heatmap is soft at the region's border.

Binary masks: heatmap >= `mask_threshold` inside the edited region (the heatmap is the
network's own estimate of where the image changed; the edited region bounds it, so the mask
never marks untouched parts of the image). When that leaves no pixel, the mask falls back to
the edited region itself.
"""

import dataclasses
import functools

import jax
import numpy as np

from af_jax import config_dataclasses
from af_jax import pixels
from af_jax import stage_registry
from af_jax.inference import batching
from af_jax.inference import defaults
from af_jax.inference import thresholds as thresholds_lib
from af_jax.inference import trained_network
from af_jax.models.generator import fuse
from af_jax.ops import foreground
from af_jax.ops import manipulate
from af_jax.ops import regions as regions_lib


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


# Compiled functions are cached per model, so every Generator of one model shares them.
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


class Generator(trained_network.TrainedNetwork):
  """A trained FlareGenerator: normal images in, anomalies with heatmaps and masks out.

  A BootGenerator run works too: it renders the same edited edge maps, as it does when it
  teaches Flare, which is how the paper compares the two generators (Table 2's BootG).
  Its heatmaps were not trained to mark the edits (paper Fig. 8), so its masks are rougher.
  """

  # The generating stage, or the stage that teaches it (stage_registry).
  stages = (stage_registry.serving("generate").name,
            stage_registry.get(stage_registry.serving("generate").name).teacher)

  def __init__(self, workdir, *, manipulate_config: manipulate.ManipulateConfig | None = None,
               bound_to_region: bool | None = None, **kwargs):
    """`bound_to_region`: change no pixel outside the edited region (module docstring); None:
    as the run's config says."""
    super().__init__(workdir, **kwargs)
    if bound_to_region is None:
      bound_to_region = stage_registry.bounds_to_region(self.config)
    self.bound_to_region = bool(bound_to_region)
    self.manipulate_config = manipulate_config or config_dataclasses.from_config(
        manipulate.ManipulateConfig, self.config.manipulate)
    self._run = _generate_fn(self.generator, self.manipulate_config, self.edge_threshold,
                             stage_registry.guide_channels(self.config) > 0,
                             self.bound_to_region)

  def generate(self, images, n_variants: int = 1, seed: int = 0, *, regions=None,
               image_ids=None, mask_threshold: float = defaults.MASK_THRESHOLD,
               max_regions: int | None = None) -> GenerationResult:
    """`n_variants` anomalies per normal image; same seed, same output (module docstring).

    Args:
      images: uint8 RGB images [H, W, 3] of any size (a list or an [N, H, W, 3] array).
      n_variants: anomalies per image.
      seed: the seed of every random choice (>= 0).
      regions: optional candidate region label maps, one per image (0 = background); by
        default they are proposed from each image (`af_jax.ops.regions.propose_regions`).
      image_ids: one integer per image naming it in the random draws (default 0..N-1);
        callers that split a long list into calls pass the list positions.
      mask_threshold: heatmap level of the binary masks, in [0, 1].
      max_regions: most candidate regions proposed per image (default: the run's).
    """
    images = pixels.resize_images(pixels.image_list(images), self.size)
    n = len(images)
    if n == 0:
      raise ValueError("generate() got no images")
    if n_variants < 1:
      raise ValueError(f"n_variants must be >= 1, got {n_variants}")
    if int(seed) != seed or seed < 0:
      raise ValueError(f"seed must be an integer >= 0, got {seed}")
    thresholds_lib.check_value("mask_threshold", mask_threshold)
    image_ids = np.arange(n) if image_ids is None else np.asarray(image_ids, np.int64)
    if image_ids.shape != (n,):
      raise ValueError(f"image_ids must hold one id per image ({n}), got {image_ids.shape}")
    if regions is None:
      k = max_regions or self.config.data_facts.max_regions
      regions = [regions_lib.propose_regions(im, max_regions=k) for im in images]
    if len(regions) != n:
      raise ValueError(f"got {len(regions)} region maps for {n} images")
    regions = _resize_labels(regions, self.size)
    if self.manipulate_config.on_object:  # The backdrop is no place for a part's defect.
      regions = regions * np.stack([foreground.foreground(im) for im in images])
    regions = regions[..., None]
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
    for start, stop in batching.spans(len(source), self.batch_size):
      idx = source[start:stop]
      out = self._run(self.params, *(self.device_batch(x) for x in (
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

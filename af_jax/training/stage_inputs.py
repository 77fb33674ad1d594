"""What each stage feeds the network: inputs, targets, and the frozen teacher's part in them.

| stage | edge input        | image input          | target image           | heatmap target |
|-------|-------------------|----------------------|------------------------|----------------|
| boot  | T_a(edges)        | T_b(image)           | T_a(image)             | none           |
| flare | edit(T(edges))    | T(image)             | Boot(edited, T(image)) | region mask M  |
| blaze | edit(T(edges))    | Flare(edited, image) | T(image) (the normal)  | Flare heatmap  |

T, T_a, T_b are independent draws of `af_jax.ops.augment` transforms (local TPS only in Boot);
`edit` is `af_jax.ops.manipulate.manipulate_edges`. Everything runs inside the jitted step. The
rest of a stage's record (teacher, losses, config defaults) is in `af_jax.stage_registry`;
`INPUT_FNS` holds one inputs function per registered stage.

Edges travel as probabilities in [0, 1] and are binarized at `config.edge_threshold` (the
paper's edge maps are binary); the network sees them scaled to [-1, 1], like the image.
Blaze options (`config.blaze`): `reextract_edges` feeds PiDiNet edges of the anomaly image
instead of the edited map (what test time sees); `normal_fraction` keeps that share of examples
unedited, fed as the real normal image with an all-zero heatmap target; `heatmap_target` names
one of `BLAZE_HEATMAP_TARGETS`: the paper's 'flare' (the teacher's heatmap), 'flare_in_region'
(that heatmap limited to the edited region: drops the diffuse response of a briefly trained
teacher), 'region' (the region mask) or 'change_in_region' (the teacher's output pasted into
the edited region, as a perfect teacher heatmap would fuse it, supervised by how much each
pixel changed: |anomaly - normal| / `change_scale`, clipped to 1 — pixel-accurate even when
the teacher's heatmap is not). `reference` adds the deviation of the network's image from its
category's normal reference (`af_jax.evidence.reference`; the batch carries each example's leave-one-out
reference, warped by the example's transform) as extra input channels. `patch_guide` adds one more:
the distance of each pixel's patch to its category's normal patches, the example's own image
left out (`af_jax.evidence.patch_memory`, arrays passed in `Frozen`). `synthetic_fraction`
gives that share of the examples a classic pasted anomaly (`af_jax.ops.synthetic_anomalies`)
instead of Flare's, through the same heatmap target with the pasted mask as region and teacher
heatmap.
Flare options (`config.flare`): `target` 'boot' (paper) learns Boot's rendering everywhere,
'boot_in_region' only inside the edited region and the input image outside it;
`region_input` shows Flare the edited region as a guide channel (in [-1, 1]), so its heatmap
can mark exactly the region it edits (generation knows the region; the paper's Flare must
guess it from the edited edges).
"""

from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections

from af_jax import config_dataclasses
from af_jax.models.generator import GlobalGenerator, fuse
from af_jax.ops import augment
from af_jax.ops import manipulate
from af_jax.ops import synthetic_anomalies
from af_jax.evidence import patch_memory
from af_jax import pixels
from af_jax.evidence import reference as reference_lib
from af_jax import stage_registry


def decode_batch(batch, edge_threshold):
  """uint8 batch from the input pipeline -> float arrays on device (`af_jax.pixels` ranges).

  A batch's `reference` (per-example category mean and std, `af_jax.evidence.reference`), `source`
  (category) and `index` (position in the category's split) pass as they are.
  """
  data = dict(
      image=pixels.uint8_to_signed(batch["image"]),
      edges=pixels.binarize_edges(pixels.uint8_to_unit(batch["edges"]), edge_threshold),
      regions=batch["regions"].astype(jnp.int32),
  )
  for name in ("reference", "source", "index"):
    if name in batch:
      data[name] = batch[name]
  return data


@flax.struct.dataclass
class StageInputs:
  edges: jax.Array           # [B, H, W, 1] in [0, 1]: the generator's edge input.
  image: jax.Array           # [B, H, W, 3] in [-1, 1]: the generator's image input.
  target: jax.Array          # [B, H, W, 3] in [-1, 1]: what the output should look like.
  heatmap_target: jax.Array  # [B, H, W, 1] in [0, 1]; unused in Boot.
  region_mask: jax.Array     # [B, H, W, 1]: the edited region (zeros in Boot).
  guide: jax.Array           # [B, H, W, G] in [-1, 1]: extra input channels (G = 0 but in Blaze
                             # with `blaze.reference`: the deviation from the reference).


class Teacher(NamedTuple):
  """A frozen generator: its module (from the teacher run's config) and parameters.

  `region_input`: it is a Flare run trained with `flare.region_input`, so it is shown the
  edited region (as its guide channel) whenever it renders an edit.
  """
  generator: GlobalGenerator
  params: Any
  region_input: bool = False


class Frozen(NamedTuple):
  """What a step reads but never changes, besides the batch: the teacher's parameters, and
  for Blaze with `blaze.patch_guide` the patch memory's device arrays (patches, sources,
  scale; `af_jax.evidence.patch_memory`)."""
  teacher_params: Any = None
  patch_memory: tuple | None = None


def _teacher_render(ctx, params, new_edges, image, region_mask, **kwargs):
  """The teacher's outputs for edited edges (and the edited region, if it takes it)."""
  guide = (pixels.unit_to_signed(region_mask),) if ctx.teacher.region_input else ()
  return ctx.teacher.generator.apply(params, pixels.unit_to_signed(new_edges), image, *guide,
                                     **kwargs)


def _transform_regions(transform, regions, num_labels):
  """Label maps follow a geometric transform exactly: one-hot, resample, argmax."""
  one_hot = jax.nn.one_hot(regions[..., 0], num_labels, dtype=jnp.float32)
  return jnp.argmax(augment.apply_transform(transform, one_hot, kind="image"), -1)[..., None]


def augment_config(config) -> augment.AugmentConfig:
  return config_dataclasses.from_config(augment.AugmentConfig, config.augment)


def manipulate_config(config) -> manipulate.ManipulateConfig:
  return config_dataclasses.from_config(manipulate.ManipulateConfig, config.manipulate)


def synthetic_config(config) -> synthetic_anomalies.SyntheticAnomalyConfig:
  return config_dataclasses.from_config(synthetic_anomalies.SyntheticAnomalyConfig,
                                        config.blaze.synthetic)


class _Context(NamedTuple):
  """What every inputs function needs besides the key, the batch and the teacher's params."""
  config: ml_collections.ConfigDict
  augment: augment.AugmentConfig
  manipulate: manipulate.ManipulateConfig
  synthetic: synthetic_anomalies.SyntheticAnomalyConfig
  teacher: Teacher | None
  edge_fn: Callable | None

  @property
  def threshold(self):
    return self.config.edge_threshold


def _sample(ctx, key, data):
  b, h, w, _ = data["image"].shape
  return augment.sample_transform(key, b, h, w, ctx.augment)


def _warp(ctx, transform, data):
  """(edges, image) moved by one transform; edges re-binarized."""
  edges = augment.apply_transform(transform, data["edges"], kind="edges")
  return (pixels.binarize_edges(edges, ctx.threshold),
          augment.apply_transform(transform, data["image"], kind="image"))


def _no_guide(image):
  return jnp.zeros(image.shape[:3] + (0,), image.dtype)


def _edited(ctx, key, data):
  """(augmented edges, augmented image, edited edges, edited region mask, the transform)."""
  k_aug, k_edit = jax.random.split(key)
  transform = _sample(ctx, k_aug, data)
  edges, image = _warp(ctx, transform, data)
  num_labels = ctx.config.data_facts.max_regions + 1
  regions = _transform_regions(transform, data["regions"], num_labels)
  new_edges, region_mask, _ = manipulate.manipulate_edges(
      k_edit, edges, regions, config=ctx.manipulate)
  return (edges, image, pixels.binarize_edges(new_edges, ctx.threshold), region_mask,
          transform)


def boot_inputs(ctx, key, data, frozen) -> StageInputs:
  """Two independent augmentations of one image: rebuild the first from its edges + the second."""
  del frozen
  k_a, k_b = jax.random.split(key)
  edges, target = _warp(ctx, _sample(ctx, k_a, data), data)
  reference = augment.apply_transform(_sample(ctx, k_b, data), data["image"], kind="image")
  return StageInputs(edges=edges, image=reference, target=target,
                     heatmap_target=jnp.zeros_like(edges), region_mask=jnp.zeros_like(edges),
                     guide=_no_guide(target))


FLARE_TARGETS = ("boot", "boot_in_region")


def flare_inputs(ctx, key, data, frozen) -> StageInputs:
  """Edited edges + the image; Boot renders the target, the edited region is the heatmap."""
  _, image, new_edges, region_mask, _ = _edited(ctx, key, data)
  target = _teacher_render(ctx, frozen.teacher_params, new_edges, image, region_mask)["output"]
  if ctx.config.flare.target == "boot_in_region":
    target = fuse(image, target, region_mask)
  guide = (pixels.unit_to_signed(region_mask) if ctx.config.flare.region_input
           else _no_guide(image))
  return StageInputs(edges=new_edges, image=image, target=jax.lax.stop_gradient(target),
                     heatmap_target=region_mask, region_mask=region_mask, guide=guide)


# Blaze heatmap targets: (anomaly, heatmap, region_mask, image, options) -> (anomaly, heatmap).
def _flare_heatmap(anomaly, heatmap, region_mask, image, options):
  del region_mask, image, options
  return anomaly, heatmap


def _flare_heatmap_in_region(anomaly, heatmap, region_mask, image, options):
  del image, options
  return anomaly, heatmap * region_mask


def _region(anomaly, heatmap, region_mask, image, options):
  del heatmap, image, options
  return anomaly, region_mask


def _change_in_region(anomaly, heatmap, region_mask, image, options):
  del heatmap
  anomaly = fuse(image, anomaly, region_mask)  # Flare's output, pasted into the region only.
  change = jnp.mean(jnp.abs(anomaly - image), axis=-1, keepdims=True)
  return anomaly, jnp.clip(change / options.change_scale, 0.0, 1.0)


BLAZE_HEATMAP_TARGETS = {"flare": _flare_heatmap, "flare_in_region": _flare_heatmap_in_region,
                         "region": _region, "change_in_region": _change_in_region}


def blaze_inputs(ctx, key, data, frozen) -> StageInputs:
  """Flare's anomaly (of edited edges) in, the normal image out; heatmap per `blaze.*`.

  With `blaze.synthetic_fraction` > 0, that share of the examples gets a pasted synthetic
  anomaly (`af_jax.ops.synthetic_anomalies`) instead, its mask standing in for Flare's heatmap and
  edited region in the heatmap target.
  """
  options = ctx.config.blaze
  k_edit, k_noise, k_normal, k_paste, k_which = jax.random.split(key, 5)
  edges, image, new_edges, region_mask, transform = _edited(ctx, k_edit, data)
  fake = _teacher_render(ctx, frozen.teacher_params, new_edges, image, region_mask,
                         add_noise=True, rngs={"noise": k_noise})
  target_fn = BLAZE_HEATMAP_TARGETS[options.heatmap_target]
  anomaly, heatmap = target_fn(jax.lax.stop_gradient(fake["output"]),
                               jax.lax.stop_gradient(fake["heatmap"]), region_mask, image, options)
  edge_input = (pixels.binarize_edges(ctx.edge_fn(anomaly), ctx.threshold)
                if options.reextract_edges else new_edges)
  batch = (image.shape[0], 1, 1, 1)
  if options.synthetic_fraction > 0:
    pasted, pasted_edges, mask = synthetic_anomalies.paste_anomalies(
        k_paste, image, edges, ctx.synthetic)
    pasted, pasted_heatmap = target_fn(pasted, mask, mask, image, options)
    use = jax.random.uniform(k_which, batch) < options.synthetic_fraction
    anomaly, heatmap = jnp.where(use, pasted, anomaly), jnp.where(use, pasted_heatmap, heatmap)
    edge_input = jnp.where(use, pasted_edges, edge_input)
    region_mask = jnp.where(use, mask, region_mask)
  normal = jax.random.uniform(k_normal, batch) < options.normal_fraction
  network_image = jnp.where(normal, image, anomaly)
  guide = _no_guide(image)
  if options.reference:
    # The reference moves with the image, so the map compares the same object points.
    mean_std = augment.apply_transform(transform, data["reference"], kind="image")
    guide = reference_lib.network_channels(network_image, mean_std, options.reference_eps)
  if stage_registry.uses_patch_guide(ctx.config):
    guide = jnp.concatenate([guide, patch_memory.category_channel(
        network_image, data["source"], frozen.patch_memory, options.patch_size,
        options.get("patch_stride", 1), exclude=data["index"])], axis=-1)
  return StageInputs(
      edges=jnp.where(normal, edges, edge_input),
      image=network_image,
      target=image,
      heatmap_target=jnp.where(normal, 0.0, heatmap),
      region_mask=jnp.where(normal, 0.0, region_mask),
      guide=guide)


# One inputs function per stage of `af_jax.stage_registry.STAGES`.
INPUT_FNS = {"boot": boot_inputs, "flare": flare_inputs, "blaze": blaze_inputs}


def make_inputs_fn(config: ml_collections.ConfigDict, teacher: Teacher | None = None,
                   edge_fn: Callable | None = None):
  """Returns `inputs_fn(key, batch, frozen) -> StageInputs` for `config.stage` (`frozen`: a
  `Frozen`, or None for a stage that needs nothing frozen).

  `batch` is the input pipeline's uint8 batch; `config.data_facts` (recorded by `train` from
  the prepared data) gives the number of region labels.
  """
  stage = stage_registry.get(config.stage)
  if config.blaze.heatmap_target not in BLAZE_HEATMAP_TARGETS:
    raise ValueError(f"config.blaze.heatmap_target must be one of "
                     f"{tuple(BLAZE_HEATMAP_TARGETS)}, got {config.blaze.heatmap_target!r}")
  if stage.teacher and teacher is None:
    raise ValueError(f"stage {stage.name!r} needs a teacher (config.teacher_workdir)")
  if stage_registry.reextracts_edges(config) and edge_fn is None:
    raise ValueError("blaze.reextract_edges needs the PiDiNet edge function")
  if config.flare.target not in FLARE_TARGETS:
    raise ValueError(f"config.flare.target must be one of {FLARE_TARGETS}, "
                     f"got {config.flare.target!r}")
  ctx = _Context(config, augment_config(config), manipulate_config(config),
                 synthetic_config(config), teacher, edge_fn)
  stage_fn = INPUT_FNS[stage.name]

  def inputs_fn(key, batch, frozen):
    return stage_fn(ctx, key, decode_batch(batch, ctx.threshold),
                    Frozen() if frozen is None else frozen)

  return inputs_fn

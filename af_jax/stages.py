"""What differs between the three stages: inputs, targets and the frozen teacher.

| stage | edge input        | image input          | target image           | heatmap target |
|-------|-------------------|----------------------|------------------------|----------------|
| boot  | T_a(edges)        | T_b(image)           | T_a(image)             | none           |
| flare | edit(T(edges))    | T(image)             | Boot(edited, T(image)) | region mask M  |
| blaze | edit(T(edges))    | Flare(edited, image) | T(image) (the normal)  | Flare heatmap  |

T, T_a, T_b are independent draws of `af_jax.augment` transforms (local TPS only in Boot);
`edit` is `af_jax.manipulate.manipulate_edges`. Everything runs inside the jitted step.

Edges travel as probabilities in [0, 1] and are binarized at `config.edge_threshold` (the
paper's edge maps are binary); the network sees them scaled to [-1, 1], like the image.
Blaze options: `blaze_reextract_edges` feeds PiDiNet edges of the anomaly image instead of the
edited map (what test time sees); `blaze_normal_fraction` keeps that share of examples unedited,
fed as the real normal image with an all-zero heatmap target; `blaze_heatmap_target` is the
paper's 'flare' (the teacher's heatmap), 'flare_in_region' (that heatmap limited to the edited
region: drops the diffuse response of a briefly trained teacher), 'region' (the region mask) or
'change_in_region' (the teacher's output pasted into the edited region, as a perfect teacher
heatmap would fuse it, supervised by how much each pixel changed: |anomaly - normal| /
`blaze_change_scale`, clipped to 1 — pixel-accurate even when the teacher's heatmap is not).
"""

from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections

from af_jax import augment, manipulate, pixels
from af_jax.models.generator import Generator

def decode_batch(batch, edge_threshold):
  """uint8 batch from the input pipeline -> float arrays on device (`af_jax.pixels` ranges)."""
  return dict(
      image=pixels.uint8_to_signed(batch["image"]),
      edges=pixels.binarize_edges(pixels.uint8_to_unit(batch["edges"]), edge_threshold),
      regions=batch["regions"].astype(jnp.int32),
  )


BLAZE_HEATMAP_TARGETS = ("flare", "flare_in_region", "region", "change_in_region")


@flax.struct.dataclass
class StageInputs:
  edges: jax.Array           # [B, H, W, 1] in [0, 1]: the generator's edge input.
  image: jax.Array           # [B, H, W, 3] in [-1, 1]: the generator's image input.
  target: jax.Array          # [B, H, W, 3] in [-1, 1]: what the output should look like.
  heatmap_target: jax.Array  # [B, H, W, 1] in [0, 1]; unused in Boot.
  region_mask: jax.Array     # [B, H, W, 1]: the edited region (zeros in Boot).


class Teacher(NamedTuple):
  """A frozen generator: its module (from the teacher run's config) and parameters."""
  generator: Generator
  params: Any


def _transform_regions(transform, regions, num_labels):
  """Label maps follow a geometric transform exactly: one-hot, resample, argmax."""
  one_hot = jax.nn.one_hot(regions[..., 0], num_labels, dtype=jnp.float32)
  return jnp.argmax(augment.apply_transform(transform, one_hot, kind="image"), -1)[..., None]


def _as_dataclass(cls, fields: ml_collections.ConfigDict):
  """A frozen (hashable, jit-static) config dataclass from a ConfigDict; JSON lists -> tuples."""
  return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.to_dict().items()})


def augment_config(config) -> augment.AugmentConfig:
  return _as_dataclass(augment.AugmentConfig, config.augment)


def manipulate_config(config) -> manipulate.ManipulateConfig:
  return _as_dataclass(manipulate.ManipulateConfig, config.manipulate)


def make_inputs_fn(config: ml_collections.ConfigDict, teacher: Teacher | None = None,
                   edge_fn: Callable | None = None):
  """Returns `inputs_fn(key, batch, teacher_params) -> StageInputs` for `config.stage`."""
  aug_config = augment_config(config)
  manip_config = manipulate_config(config)
  threshold = config.edge_threshold
  num_labels = config.max_regions + 1

  def sample(key, data):
    b, h, w, _ = data["image"].shape
    return augment.sample_transform(key, b, h, w, aug_config)

  def warp(transform, data):
    """(edges, image) moved by one transform; edges re-binarized."""
    edges = augment.apply_transform(transform, data["edges"], kind="edges")
    return (pixels.binarize_edges(edges, threshold),
            augment.apply_transform(transform, data["image"], kind="image"))

  def boot(key, data, teacher_params):
    del teacher_params
    k_a, k_b = jax.random.split(key)
    edges, target = warp(sample(k_a, data), data)
    reference = augment.apply_transform(sample(k_b, data), data["image"], kind="image")
    return StageInputs(edges=edges, image=reference, target=target,
                       heatmap_target=jnp.zeros_like(edges), region_mask=jnp.zeros_like(edges))

  def edited(key, data):
    k_aug, k_edit = jax.random.split(key)
    transform = sample(k_aug, data)
    edges, image = warp(transform, data)
    regions = _transform_regions(transform, data["regions"], num_labels)
    new_edges, region_mask, _ = manipulate.manipulate_edges(
        k_edit, edges, regions, config=manip_config)
    return edges, image, pixels.binarize_edges(new_edges, threshold), region_mask

  def flare(key, data, teacher_params):
    _, image, new_edges, region_mask = edited(key, data)
    target = teacher.generator.apply(teacher_params, pixels.unit_to_signed(new_edges), image)["output"]
    return StageInputs(edges=new_edges, image=image, target=jax.lax.stop_gradient(target),
                       heatmap_target=region_mask, region_mask=region_mask)

  def blaze(key, data, teacher_params):
    k_edit, k_noise, k_normal = jax.random.split(key, 3)
    edges, image, new_edges, region_mask = edited(k_edit, data)
    fake = teacher.generator.apply(teacher_params, pixels.unit_to_signed(new_edges), image,
                                   add_noise=True, rngs={"noise": k_noise})
    anomaly = jax.lax.stop_gradient(fake["output"])
    heatmap = jax.lax.stop_gradient(fake["heatmap"])
    if config.blaze_heatmap_target == "flare_in_region":
      heatmap = heatmap * region_mask
    elif config.blaze_heatmap_target == "region":
      heatmap = region_mask
    elif config.blaze_heatmap_target == "change_in_region":
      anomaly = image * (1 - region_mask) + anomaly * region_mask
      change = jnp.mean(jnp.abs(anomaly - image), axis=-1, keepdims=True)
      heatmap = jnp.clip(change / config.blaze_change_scale, 0.0, 1.0)
    edge_input = (pixels.binarize_edges(edge_fn(anomaly), threshold)
                  if config.blaze_reextract_edges else new_edges)
    normal = jax.random.uniform(k_normal, (image.shape[0], 1, 1, 1)) < config.blaze_normal_fraction
    return StageInputs(
        edges=jnp.where(normal, edges, edge_input),
        image=jnp.where(normal, image, anomaly),
        target=image,
        heatmap_target=jnp.where(normal, 0.0, heatmap),
        region_mask=jnp.where(normal, 0.0, region_mask))

  stage_fns = dict(boot=boot, flare=flare, blaze=blaze)
  if config.blaze_heatmap_target not in BLAZE_HEATMAP_TARGETS:
    raise ValueError(f"config.blaze_heatmap_target must be one of {BLAZE_HEATMAP_TARGETS}, "
                     f"got {config.blaze_heatmap_target!r}")
  if config.stage != "boot" and teacher is None:
    raise ValueError(f"stage {config.stage!r} needs a teacher (config.teacher_workdir)")
  if config.stage == "blaze" and config.blaze_reextract_edges and edge_fn is None:
    raise ValueError("blaze_reextract_edges needs the PiDiNet edge function")
  stage_fn = stage_fns[config.stage]

  def inputs_fn(key, batch, teacher_params):
    return stage_fn(key, decode_batch(batch, threshold), teacher_params)

  return inputs_fn

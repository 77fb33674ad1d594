"""The stages of the method, one record each, and every rule that reads a run's stage options.

| stage | learns from (teacher) | heatmap loss | config defaults                          | serves   |
|-------|-----------------------|--------------|------------------------------------------|----------|
| boot  | -                     | off          | local TPS on, 30 epochs                  | -        |
| flare | a boot run            | on           | bottleneck noise 0.1 (diversity), 5 ep.  | generate |
| blaze | a flare run           | on           | 5 epochs                                 | localize |

`af_jax.configs.common.get_config(stage)` applies a record's `config_defaults`; training loads the
teacher the record names and adds the heatmap loss where it is on; inference finds the stage a
role is served by. What a stage feeds the network (its inputs function) is training code and
lives in `af_jax.training.stage_inputs.INPUT_FNS` under the same name, so inference reads this
module without importing training. Adding a stage (e.g. the LogicAL baseline) is one record
here, one inputs function there, a config file and tests.

The questions every part of af_jax asks about a run (does its generator take guide channels,
how many, does it bound generation to the edited region, which edge extractor did it see) are
answered here once, from its config, so training, teachers and inference cannot disagree.

Blaze's options live in `config.blaze` (one field per option, documented in
`configs/common.py`); fields that moved are listed in `MOVED_FIELDS` (`max_regions` became a
fact of the prepared data), and a config that still uses an old name (in a config file, a
`--config.X` override or an old run's config.json) is refused with the new name.
"""

import dataclasses
from typing import Any, Mapping

from af_jax.evidence import patch_memory
from af_jax.evidence import reference


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of the method.

  Attributes:
    name: the stage's name, `config.stage`.
    teacher: the stage whose frozen generator makes this one's inputs/targets; None = none.
    heatmap_loss: whether the heatmap decoder is supervised (L2 to the inputs' heatmap target).
    config_defaults: dotted config field -> value, set by `af_jax.configs.common.get_config(name)`.
    serves: the inference role of its trained generator ('generate', 'localize') or None.
  """
  name: str
  teacher: str | None
  heatmap_loss: bool
  config_defaults: Mapping[str, Any]
  serves: str | None = None


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("boot", teacher=None, heatmap_loss=False,
          config_defaults={"augment.local_tps": True, "num_epochs": 30}),
    Stage("flare", teacher="boot", heatmap_loss=True, serves="generate",
          config_defaults={"model.feature_noise_std": 0.1, "num_epochs": 5}),
    Stage("blaze", teacher="flare", heatmap_loss=True, serves="localize",
          config_defaults={"num_epochs": 5}),
)}

# Old config field -> where it went.
MOVED_FIELDS = {
    "blaze_reextract_edges": "blaze.reextract_edges",
    "blaze_normal_fraction": "blaze.normal_fraction",
    "blaze_heatmap_target": "blaze.heatmap_target",
    "blaze_change_scale": "blaze.change_scale",
    "max_regions": "data_facts.max_regions",  # A fact of the prepared data (af_jax/data_facts.py).
}


def get(name: str) -> Stage:
  """The record of stage `name`; a ValueError listing the stages otherwise."""
  if name not in STAGES:
    raise ValueError(f"unknown stage {name!r}; expected one of {', '.join(STAGES)}")
  return STAGES[name]


def serving(role: str) -> Stage:
  """The stage whose trained generator serves `role` ('generate' or 'localize')."""
  return next(s for s in STAGES.values() if s.serves == role)


def moved_field_error(name: str, where: str) -> ValueError | None:
  """The error for a config field `name` that moved, or None if it did not."""
  if name not in MOVED_FIELDS:
    return None
  new = MOVED_FIELDS[name]
  how = ("training records it from the prepared data" if new.startswith("data_facts.")
         else f"set --config.{new}=... (or config.{new} in a config file)")
  return ValueError(f"{where}: config field {name!r} is now {new!r}: {how}")


def check_config(config, where: str = "config") -> None:
  """Raises for an unknown stage or a field that moved (naming the new one)."""
  for name in config.keys():
    error = moved_field_error(name, where)
    if error:
      raise error
  get(config.stage)
  blaze = config.get("blaze", {})
  if config.stage == "blaze" and blaze.get("evidence_trust", False) and not blaze.get(
      "reference", False):
    raise ValueError(f"{where}: blaze.evidence_trust needs blaze.reference (each category's "
                     "trust goes with its reference); set --config.blaze.reference=True")
  if config.stage == "blaze" and blaze.get("evidence_trust", False):
    memory, pool = blaze.get("evidence_memory", 0), blaze.get("evidence_pool", 0)
    if memory < 0 or (memory > patch_memory.MEMORY_BLOCK and memory % patch_memory.MEMORY_BLOCK):
      raise ValueError(f"{where}: blaze.evidence_memory must be 0 (none), at most "
                       f"{patch_memory.MEMORY_BLOCK} or a multiple of it, got {memory}")
    if memory and pool < memory:
      raise ValueError(f"{where}: blaze.evidence_pool ({pool}) must be at least "
                       f"blaze.evidence_memory ({memory})")
  if config.stage == "blaze" and blaze.get("patch_guide", False):
    if not blaze.get("reference", False):
      raise ValueError(f"{where}: blaze.patch_guide needs blaze.reference (its categories pick "
                       "each image's patch memory at inference); set --config.blaze.reference"
                       "=True")
    size, memory = blaze.get("patch_size", 7), blaze.get("patch_memory", 8192)
    if size < 1 or size % 2 == 0:
      raise ValueError(f"{where}: blaze.patch_size must be odd and positive, got {size}")
    if memory < 1 or (memory > patch_memory.MEMORY_BLOCK and memory % patch_memory.MEMORY_BLOCK):
      raise ValueError(f"{where}: blaze.patch_memory must be at most {patch_memory.MEMORY_BLOCK} "
                       f"or a multiple of it, got {memory}")
    selection = blaze.get("patch_selection", "random")
    if selection not in patch_memory.SELECTIONS:
      raise ValueError(f"{where}: blaze.patch_selection must be one of "
                       f"{patch_memory.SELECTIONS}, got {selection!r}")
    if selection == "coreset" and blaze.get("patch_pool", 0) < memory:
      raise ValueError(f"{where}: blaze.patch_pool ({blaze.get('patch_pool', 0)}) must be at "
                       f"least blaze.patch_memory ({memory}) with 'coreset'")


def uses_reference(config) -> bool:
  """Whether the run's generator takes the reference deviation channels (`blaze.reference`)."""
  # .get: runs saved before the field existed did not use it.
  return config.stage == "blaze" and bool(config.blaze.get("reference", False))


def uses_evidence_trust(config) -> bool:
  """Whether the run's heatmaps weigh the network with its evidence (`blaze.evidence_trust`)."""
  return config.stage == "blaze" and bool(config.blaze.get("evidence_trust", False))


def uses_evidence_memory(config) -> bool:
  """Whether the run's evidence trust searches its own patch memory (`blaze.evidence_memory`;
  runs saved before the field existed weigh the network's patch input)."""
  return uses_evidence_trust(config) and bool(config.blaze.get("evidence_memory", 0))


def uses_patch_guide(config) -> bool:
  """Whether the run's generator takes the patch-distance channel (`blaze.patch_guide`)."""
  return uses_reference(config) and bool(config.blaze.get("patch_guide", False))


def uses_region_input(config) -> bool:
  """Whether the run's generator takes the edited region as input (`flare.region_input`)."""
  return config.stage == "flare" and bool(config.flare.get("region_input", False))


def reextracts_edges(config) -> bool:
  """Whether the run feeds PiDiNet edges of the anomaly image (Blaze's `reextract_edges`)."""
  return config.stage == "blaze" and bool(config.blaze.reextract_edges)


def guide_channels(config) -> int:
  """The generator's extra input channels in a run of `config`: Blaze's reference deviation
  map (`blaze.reference`) and patch distance (`blaze.patch_guide`), Flare's edited region
  (`flare.region_input`), or none."""
  if uses_reference(config):
    return reference.CHANNELS + (patch_memory.CHANNELS if uses_patch_guide(config) else 0)
  return 1 if uses_region_input(config) else 0


def bounds_to_region(config) -> bool:
  """Whether generation with the run keeps every change inside the edited region by default
  (`flare.bound_to_region`; runs saved before the field existed are unbounded)."""
  return bool(config.get("flare", {}).get("bound_to_region", False))


def training_edge_method(config) -> str:
  """The edge extractor whose maps the run's networks saw: the one the training data was
  prepared with, or PiDiNet for a Blaze run that re-extracts the edges of its anomalies."""
  return "pidinet" if reextracts_edges(config) else config.data_facts.edge_method

"""Facts about prepared data that a trained model depends on: recorded, checked, carried along.

Every dataset `af-jax prepare` builds records in its TFDS metadata (`metadata.json` beside
`dataset_info.json`, written by `af_jax.data_builders.common.AfBuilder`):

  edge_method   the extractor of its edge maps (`af_jax.pixels.EDGE_METHODS`);
  image_size    the side of its square images, edges, regions and masks;
  max_regions   the largest candidate region label K (regions hold 0 = background, 1..K).

Training reads them from every category of its mix (`input_pipeline`), refuses a mix whose
categories disagree on any of them (naming two that do), and records them, with each
category's dataset version, in the run's `config.data_facts`. Inference reads them back from
the run (the edge maps its networks must see). Nothing is parsed out of dataset names.
Free of numpy and JAX: builders and `--help` import it.
"""

from collections.abc import Mapping
from typing import Any

FACTS = ("edge_method", "image_size", "max_regions")


def from_builder_config(config) -> dict[str, Any]:
  """The facts a builder config (`af_jax.data_builders.config.AfBuilderConfig`) builds data with."""
  return dict(edge_method=config.edges, image_size=config.size, max_regions=config.max_regions)


def read(dataset_info, name: str) -> dict[str, Any]:
  """The facts of one built dataset (a TFDS `DatasetInfo`), plus its `name` and `version`."""
  metadata = dict(dataset_info.metadata or {})
  missing = [fact for fact in FACTS if fact not in metadata]
  if missing:
    raise ValueError(
        f"{name} in {dataset_info.data_dir} was prepared before af_jax recorded its data facts "
        f"({', '.join(missing)} missing from its metadata.json): delete that folder and "
        "re-run `af-jax prepare` for it")
  return dict({fact: metadata[fact] for fact in FACTS}, name=name,
              version=str(dataset_info.version))


def combine(sources: list[Mapping[str, Any]]) -> dict[str, Any]:
  """One record of the facts all `sources` (from `read`) share; error when two disagree.

  Returns:
    {edge_method, image_size, max_regions, datasets: [{name, version}, ...]}.
  """
  if not sources:
    raise ValueError("no prepared dataset to read data facts from")
  first = sources[0]
  for other in sources[1:]:
    for fact in FACTS:
      if other[fact] != first[fact]:
        raise ValueError(
            f"the prepared datasets {first['name']} and {other['name']} disagree on "
            f"{fact}: {first[fact]!r} vs {other[fact]!r}; one run trains on data prepared one "
            "way (re-prepare one of them, e.g. `af-jax prepare ... --edges/--size`)")
  return dict({fact: first[fact] for fact in FACTS},
              datasets=[dict(name=s["name"], version=s["version"]) for s in sources])

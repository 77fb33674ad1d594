"""The `synthetic` TFDS builder: procedural inspection images, no download needed.

One config per category of `render.CATEGORIES` (circuit, gear, fabric). Splits:

  train  `num_train` normal images, file names `train/good/NNN.png`.
  test   `num_test_normal` normal images (`test/good/NNN.png`, label 0, empty mask) and
         `num_test_anomalous` anomalous ones (`test/<defect>/NNN.png`, label 1, exact mask),
         the defects of the category taken in turn so each appears equally often.

Edges and candidate regions are computed at build time like every other builder
(`common.annotate`). The default size is 128 px, not the 256 px of the real datasets:
the rendered objects are simple enough to stay legible at 128 px, and building all
categories with the default counts and PiDiNet edges then takes about 30 s on two CPU
cores (PiDiNet and region proposals take most of it; rendering about 2 s).

Every example is rendered from its own generator seeded by (seed, category, split part,
index), so building twice stores identical bytes for every feature of every example, and
changing one count leaves the other examples unchanged. (The record files themselves can
differ between processes: TFDS serializes examples as protobuf maps, whose field order is
not fixed.)

Configs with options other than the registered ones get a name saying what differs (the
scheme of `common.config_for`), e.g. `circuit-32px-canny-train8`; `build` returns these
names, readable with `tfds.data_source(f'synthetic/{name}', data_dir=data_dir)`.
"""

import dataclasses
import os
import pathlib
import re
import zlib

import numpy as np
import tensorflow_datasets as tfds

from af_jax.data_builders import common
from af_jax.data_builders import config as config_lib
from af_jax.data_builders.synthetic import render

DEFAULT_SIZE = 128
# Build options that change the data, in the order their differences appear in a name.
_NAME_PARTS = {
    "size": lambda v: f"{v}px",
    "edges": str,
    "max_regions": lambda v: f"k{v}",
    "regions_dir": lambda v: "regions." + re.sub(r"[^\w.+]", "", pathlib.Path(v).name),
    "num_train": lambda v: f"train{v}",
    "num_test_normal": lambda v: f"good{v}",
    "num_test_anomalous": lambda v: f"bad{v}",
    "seed": lambda v: f"seed{v}",
}
# How names spell those options, for `common.parse_config_name`.
NAME_PATTERNS = {**common.NAME_PATTERNS, "num_train": r"train(\d+)",
                 "num_test_normal": r"good(\d+)", "num_test_anomalous": r"bad(\d+)",
                 "seed": r"seed(\d+)"}
# The smallest value each numeric option accepts.
_LEAST = dict(size=render.MIN_SIZE, num_train=0, num_test_normal=0, num_test_anomalous=0, seed=0)
# Seed stream of each part of the data, so the parts never share random draws.
_TRAIN, _TEST_NORMAL, _TEST_ANOMALOUS = 0, 1, 2


@dataclasses.dataclass(eq=False)
class SyntheticConfig(config_lib.AfBuilderConfig):
  """One synthetic category and how much of it to render.

  Attributes:
    num_train: normal training images.
    num_test_normal: normal test images.
    num_test_anomalous: anomalous test images, cycling through `render.DEFECTS[category]`.
    seed: base seed of all the random draws.
  """
  size: int = DEFAULT_SIZE
  num_train: int = 32
  num_test_normal: int = 8
  num_test_anomalous: int = 20
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class _Item:
  """One example to render: where it goes and which generator stream draws it."""
  file_name: str
  part: int
  index: int
  defect: str = "good"


class Synthetic(common.AfBuilder):
  """Synthetic industrial inspection images (circuit, gear, fabric) with exact masks."""
  name = "synthetic"
  BUILDER_CONFIGS = [
      SyntheticConfig(name=c, category=c, description=f"Synthetic {c}: defects "
                      f"{', '.join(render.DEFECTS[c])}.") for c in render.CATEGORIES]

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Everything is rendered.
    config = self.builder_config
    if not isinstance(config, SyntheticConfig):
      raise TypeError(f"synthetic builds need a SyntheticConfig (see data_builders.synthetic."
                      f"config_for), got {type(config).__name__} {config.name!r}")
    if self.category not in render.CATEGORIES:
      raise ValueError(f"unknown synthetic category {self.category!r}; expected one of "
                       f"{render.CATEGORIES}")
    defects = render.DEFECTS[self.category]
    anomalous = [(defects[k % len(defects)], k) for k in range(config.num_test_anomalous)]
    splits = {
        "train": [_Item(f"train/good/{k:03d}.png", _TRAIN, k) for k in range(config.num_train)],
        "test": ([_Item(f"test/good/{k:03d}.png", _TEST_NORMAL, k)
                  for k in range(config.num_test_normal)]
                 + [_Item(f"test/{defect}/{k // len(defects):03d}.png", _TEST_ANOMALOUS, k, defect)
                    for defect, k in anomalous]),
    }
    self._plan_progress(sum(map(len, splits.values())))
    return {name: self._generate_examples(items) for name, items in splits.items()}

  def _generate_examples(self, items: list[_Item]):
    config = self.builder_config
    category_seed = zlib.crc32(self.category.encode())
    for start in range(0, len(items), common.EDGE_BATCH):
      batch = items[start:start + common.EDGE_BATCH]
      images, masks = [], []
      for item in batch:
        rng = np.random.default_rng([config.seed, category_seed, item.part, item.index])
        if item.defect == "good":
          image = render.render_normal(rng, self.category, config.size)
          mask = np.zeros(image.shape[:2], bool)
        else:
          image, mask = render.render_anomalous(rng, self.category, config.size, item.defect)
        images.append(image)
        masks.append(mask)
      edges, regions = common.annotate(np.stack(images), [i.file_name for i in batch], config)
      for item, image, mask, edge, region in zip(batch, images, masks, edges, regions):
        yield item.file_name, common.example_dict(
            image=image, edges=edge, regions=region,
            mask=mask.astype(np.uint8)[..., None] * 255, label=int(item.defect != "good"),
            defect=item.defect, category=self.category, dataset=self.name,
            file_name=item.file_name)
      self._advance_progress(len(batch))


def config_for(category: str, **options) -> SyntheticConfig:
  """The config building `category` with `options` (any `SyntheticConfig` build option).

  Without options, or with options equal to the defaults, this is the registered config
  (name = category); otherwise a new config named after what differs.
  """
  if category not in render.CATEGORIES:
    raise ValueError(f"unknown synthetic category {category!r}; expected one of "
                     f"{render.CATEGORIES}")
  unknown = set(options) - set(_NAME_PARTS)
  if unknown:
    raise TypeError(f"unknown synthetic build options {sorted(unknown)}; expected some of "
                    f"{list(_NAME_PARTS)}")
  for key, least in _LEAST.items():
    value = options.get(key, least)
    if not isinstance(value, int) or value < least:
      raise ValueError(f"synthetic option {key} must be an integer >= {least}, got {value!r}")
  if "regions_dir" in options:  # '' and None both mean: no precomputed regions.
    options["regions_dir"] = os.fspath(options["regions_dir"]) if options["regions_dir"] else None
  registered = Synthetic.builder_configs[category]
  changed = [k for k in _NAME_PARTS if k in options and options[k] != getattr(registered, k)]
  if not changed:
    return registered
  name = "-".join([category] + [_NAME_PARTS[k](options[k]) for k in changed])
  return dataclasses.replace(registered, name=name, description=f"{registered.description} "
                             f"Options: {options}.", **options)


def build(data_dir: str | os.PathLike, categories=None, **config_overrides) -> list[str]:
  """Builds the synthetic categories (all by default) in `data_dir`; reuses built ones.

  Args:
    data_dir: the TFDS data folder.
    categories: names from `render.CATEGORIES`; None builds them all.
    **config_overrides: `SyntheticConfig` build options, e.g. size=64, edges='canny',
      num_train=100.

  Returns:
    The config names, each readable with
    `tfds.data_source(f'synthetic/{name}', data_dir=data_dir)`.
  """
  names = []
  for category in render.CATEGORIES if categories is None else categories:
    config = config_for(category, **config_overrides)
    Synthetic(config=config, data_dir=os.fspath(data_dir)).download_and_prepare()
    names.append(config.name)
  return names

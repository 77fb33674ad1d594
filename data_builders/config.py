"""The BuilderConfig every af_jax builder uses: one per category, plus build options."""

import dataclasses

import tensorflow_datasets as tfds

from af_jax.data_builders import features


@dataclasses.dataclass(eq=False)
class AfBuilderConfig(tfds.core.BuilderConfig):
  """One category of one dataset, and how to build it.

  Attributes:
    category: the dataset's category this config builds; empty means the config name.
      Configs with non-default options need another name (TFDS refuses a custom config
      named like a registered one), so they say their category here.
    size: images, edges, regions and masks are resized to `size` x `size`.
    edges: 'pidinet' (the paper's edge maps, shipped weights) or 'canny' (OpenCV fallback).
    regions_dir: optional folder of precomputed segmentation masks (e.g. SAM) used as
      candidate regions; when None an unsupervised segmentation is used.
    max_regions: at most this many candidate regions per image (K).
    skip_bad: skip corrupt images and unpaired masks (and report the count) instead of
      stopping with an error that names the file.
    train_per_category: build only this many training images, drawn at random from the
      train split as listed (`data_builders.train_sample`); None builds them all. The
      paper's mix trains on 200 images per VisA and 400 per Real-IAD category: building
      only those spares decoding the rest.
    sample_seed: seed of that draw (the same seed draws the same images).
  """
  category: str = ""
  size: int = features.DEFAULT_SIZE
  edges: str = "pidinet"
  regions_dir: str | None = None
  max_regions: int = 8
  skip_bad: bool = False
  train_per_category: int | None = None
  sample_seed: int = 0

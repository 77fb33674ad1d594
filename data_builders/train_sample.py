"""Building only a seeded random subset of a category's training images.

The paper trains on 200 images per VisA category and 400 per Real-IAD category (Sec. 4.2).
Real-IAD alone lists about 100,000 training images, so decoding, resizing and computing edges
for all of them to keep 12,000 wastes hours; a build with `train_per_category` set
(`AfBuilderConfig`) keeps only the drawn images, and only the train split is thinned: test
splits stay whole, so scores stay comparable.

The draw depends on the seed and the train split's records as listed (sorted by the
builders), nothing else, so the single-process and the Apache Beam builds of a config keep
the same images. It draws images, not physical samples: Real-IAD's five views of one sample
may be split. The build records what it drew in its metadata (`metadata.json`, beside the
data facts of `af_jax.data_facts`) as `train_sample`: {per_category, seed, listed}.
"""

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

Item = TypeVar("Item")


def draw(items: Sequence[Item], count: int | None, seed: int) -> list[Item]:
  """`count` of `items` drawn without replacement with `seed`, in their listed order.

  All of them when `count` is None or at least their number.
  """
  if count is None or count >= len(items):
    return list(items)
  chosen = np.random.default_rng(seed).choice(len(items), size=count, replace=False)
  return [items[i] for i in sorted(chosen)]


def facts(count: int | None, seed: int, listed: int) -> dict:
  """What a build records about its draw: how many it keeps, the seed, how many were listed."""
  return {"per_category": count, "seed": seed, "listed": listed}

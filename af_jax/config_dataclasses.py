"""Config dataclasses <-> ml_collections ConfigDicts, so each option's default lives in one place.

The array operations take frozen dataclasses (hashable, so jit can treat them as static):
`ops.augment.AugmentConfig`, `ops.manipulate.ManipulateConfig`,
`ops.synthetic_anomalies.SyntheticAnomalyConfig`. The training configs mirror them
(`to_config`, used by `configs/common.py`), and training and inference turn a run's config
groups back into them (`from_config`; JSON stores tuples as lists).
"""

import dataclasses

import ml_collections


def to_config(instance) -> ml_collections.ConfigDict:
  """A ConfigDict with the fields and values of a config dataclass instance."""
  return ml_collections.ConfigDict(dataclasses.asdict(instance))


def from_config(cls, fields: ml_collections.ConfigDict):
  """An instance of the config dataclass `cls` from a ConfigDict group; JSON lists -> tuples."""
  return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.to_dict().items()})

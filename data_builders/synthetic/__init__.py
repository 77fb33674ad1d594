"""The built-in synthetic data set, registered with TFDS as `synthetic`.

Procedural industrial inspection images (`render.CATEGORIES`: circuit, gear, fabric) with
structural and logical anomalies and exact masks; no download. Build it with

  from af_jax.data_builders import synthetic
  names = synthetic.build(data_dir)            # ['circuit', 'gear', 'fabric']
  splits = tfds.data_source(f'synthetic/{names[0]}', data_dir=data_dir)
"""

from af_jax.data_builders.synthetic import render
from af_jax.data_builders.synthetic.synthetic_builder import build
from af_jax.data_builders.synthetic.synthetic_builder import config_for
from af_jax.data_builders.synthetic.synthetic_builder import NAME_PATTERNS
from af_jax.data_builders.synthetic.synthetic_builder import Synthetic
from af_jax.data_builders.synthetic.synthetic_builder import SyntheticConfig

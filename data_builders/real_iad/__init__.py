"""Real-IAD builder, registered with TFDS as `real_iad`."""

from af_jax.data_builders.real_iad.builder import RealIad

"""VisA builder, registered with TFDS as `visa`."""

from af_jax.data_builders.visa.builder import Visa

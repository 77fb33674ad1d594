"""MADSim builder, registered with TFDS as `madsim`."""

from af_jax.data_builders.madsim.builder import Madsim

"""MVTec LOCO AD builder, registered with TFDS as `mvtec_loco`."""

from af_jax.data_builders.mvtec_loco.builder import MvtecLoco

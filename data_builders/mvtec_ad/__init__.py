"""MVTec AD builder, registered with TFDS as `mvtec_ad`."""

from af_jax.data_builders.mvtec_ad.builder import MvtecAd

"""MVTec AD builder, registered with TFDS as `mvtec_ad`."""

from data_builders.mvtec_ad.builder import MvtecAd

"""MVTec LOCO AD builder, registered with TFDS as `mvtec_loco`."""

from data_builders.mvtec_loco.builder import MvtecLoco

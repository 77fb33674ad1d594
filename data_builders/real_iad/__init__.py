"""Real-IAD builder, registered with TFDS as `real_iad`."""

from data_builders.real_iad.builder import RealIad

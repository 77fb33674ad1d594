"""VisA builder, registered with TFDS as `visa`."""

from data_builders.visa.builder import Visa

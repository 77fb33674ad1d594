"""MADSim builder, registered with TFDS as `madsim`."""

from data_builders.madsim.builder import Madsim

"""ANN -> SNN conversion of trained ReLU networks."""

from ganglion.converters.spiking.ann_to_snn import SpikingOptions
from ganglion.converters.spiking.convert import convert_spiking, spiking_manifest

__all__ = ["SpikingOptions", "convert_spiking", "spiking_manifest"]

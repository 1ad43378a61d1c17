"""Spiking programs: a graph of synaptic layers and spiking neurons, run in discrete time."""

from ganglion.models.spiking.graph import SpikingGraph
from ganglion.models.spiking.layers import (
    Affine,
    AvgPool2d,
    Conv2d,
    Flatten,
    Neuron,
    Scale,
    SumPool2d,
)
from ganglion.models.spiking.network import SpikingNetwork

__all__ = [
    "Affine",
    "AvgPool2d",
    "Conv2d",
    "Flatten",
    "Neuron",
    "Scale",
    "SpikingGraph",
    "SpikingNetwork",
    "SumPool2d",
]

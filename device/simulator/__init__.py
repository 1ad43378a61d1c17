"""Simulators: a roofline latency/energy model over operation counts, and its CPU calibration."""

from ganglion.device.simulator.calibration import (
    Calibration,
    Sample,
    calibrate_cpu,
    measure_latency,
)
from ganglion.device.simulator.opcounts import LayerOpCounts, OpCounts
from ganglion.device.simulator.roofline import (
    LayerPrediction,
    Prediction,
    dense_ops,
    dense_terms,
    predict,
)

__all__ = [
    "Calibration",
    "LayerOpCounts",
    "LayerPrediction",
    "OpCounts",
    "Prediction",
    "Sample",
    "calibrate_cpu",
    "dense_ops",
    "dense_terms",
    "measure_latency",
    "predict",
]

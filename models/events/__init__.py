"""Event-camera input: event streams (tonic's structured arrays), their readers, binning into
time-major frames, and a simulated sensor that makes event versions of still images."""

from ganglion.models.events.binning import bin_batch, bin_events
from ganglion.models.events.readers import read_events
from ganglion.models.events.sensor import SaccadeSensor, simulate_saccades
from ganglion.models.events.stream import EVENT_DTYPE, check_events, make_events

__all__ = [
    "EVENT_DTYPE",
    "SaccadeSensor",
    "bin_batch",
    "bin_events",
    "check_events",
    "make_events",
    "read_events",
    "simulate_saccades",
]

"""The one naming convention of Ganglion's ONNX graphs (step and sequence).

Step graph (``model.onnx``), one timestep or token, batch axis ``batch`` dynamic:
  inputs  ``input`` [batch, ...] · ``state_in.<state>`` for every manifest state tensor
  outputs ``output`` [batch, ...] · ``state_out.<state>`` (same shape and dtype as its input)
where ``<state>`` is the manifest's state name (spiking: ``t``, ``v.<neuron>``, ``decode``).

Sequence graph (``model.sequence.onnx``), the whole input at once, from the initial state:
  inputs  ``input`` [time, batch, ...]   outputs ``output`` (shaped like ``Session.run``'s)

``input`` is always the program's *encoded* input: the host applies the manifest's input
encoding first (see ``ganglion.runtime.onnx_export.spiking``), so both graphs are deterministic.
"""

from __future__ import annotations

INPUT = "input"
OUTPUT = "output"
STATE_IN_PREFIX = "state_in."
STATE_OUT_PREFIX = "state_out."
BATCH_DIM = "batch"
TIME_DIM = "time"

STEP_FILE = "model.onnx"
SEQUENCE_FILE = "model.sequence.onnx"
GRAPH_FILES = {"step": STEP_FILE, "sequence": SEQUENCE_FILE}
PRECISIONS = ("fp32", "int8")  # int8: ONNX Runtime's static QDQ quantization of the step graph


def precision_file(precision: str) -> str:
    """The bundle file of the step graph at ``precision`` (``model.int8.onnx``)."""
    return STEP_FILE if precision == "fp32" else f"model.{precision}.onnx"


DEFAULT_OPSET = 17  # run by ONNX Runtime >= 1.13 and TensorRT >= 8.6
MIN_OPSET = 15  # Shape(start, end) needs 15


def state_input(name: str) -> str:
    """Graph input name of state tensor ``name``."""
    return STATE_IN_PREFIX + name


def state_output(name: str) -> str:
    """Graph output name of state tensor ``name``."""
    return STATE_OUT_PREFIX + name

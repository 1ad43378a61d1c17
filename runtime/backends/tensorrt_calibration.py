"""INT8 calibration data for a step engine: real (input, state) pairs of the step graph.

The step graph's inputs include the state, so calibration feeds are taken along real
trajectories: the torch reference steps through the calibration samples and every step's
encoded input and incoming state become one calibration batch.
"""

from __future__ import annotations

import numpy as np

from ganglion.models.deployable import Deployable
from ganglion.models.errors import BackendUnavailable
from ganglion.runtime.backends.torch_backend import TorchSession
from ganglion.runtime.onnx_export import naming
from ganglion.runtime.onnx_export.export import OnnxProgram

Feed = dict[str, np.ndarray]


def calibration_feeds(
    deployable: Deployable, program: OnnxProgram, x: np.ndarray, batch: int, max_feeds: int = 64
) -> list[Feed]:
    """Up to ``max_feeds`` step-graph feeds (input and ``state_in.*``) of ``batch`` samples.

    x: calibration inputs shaped like ``Session.run``'s input (whole batches are used).
    """
    axis = program.batch_axis
    if x.shape[axis] < batch:
        raise BackendUnavailable(
            f"tensorrt backend: calibration data has {x.shape[axis]} "
            f"samples, fewer than the batch of {batch}"
        )
    reference = TorchSession(deployable, "cpu")
    feeds: list[Feed] = []
    for start in range(0, x.shape[axis] - batch + 1, batch):
        chunk = np.ascontiguousarray(
            np.take(x, range(start, start + batch), axis=axis), dtype=np.float32
        )
        state = reference.init_state(batch)
        for x_t in program.step_inputs(chunk):
            feed = {naming.INPUT: np.ascontiguousarray(program.step_input(x_t, state))}
            feed.update({naming.state_input(k): np.ascontiguousarray(v) for k, v in state.items()})
            feeds.append(feed)
            if len(feeds) == max_feeds:
                return feeds
            _, state = reference.step(x_t, state)
    return feeds

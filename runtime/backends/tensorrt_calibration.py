"""INT8 calibration data for a step engine: real (input, state) pairs of the step graph.

The step graph's inputs include the state, so calibration feeds are taken along real
trajectories: the torch reference steps through the calibration samples and every step's
host-side feeds and incoming state become one calibration batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ganglion.models.errors import BackendUnavailable
from ganglion.runtime.backends.torch_backend import TorchSession
from ganglion.runtime.onnx_export import naming
from ganglion.runtime.program import Program

Feed = dict[str, np.ndarray]


def calibration_feeds(
    program: Program, calibration: Any, batch: int, max_feeds: int = 64
) -> list[Feed]:
    """Up to ``max_feeds`` step-graph feeds (inputs and ``state_in.*``) of ``batch`` samples.

    calibration: ``run``'s inputs by name (or one array for a single-input program); whole
    batches are used.
    """
    manifest, kind = program.manifest, program.kind
    named = calibration if isinstance(calibration, dict) else {manifest.inputs[0].name: calibration}
    axis = kind.batch_axis(manifest)
    samples = min(np.shape(a)[axis] for a in named.values())
    if samples < batch:
        raise BackendUnavailable(
            f"tensorrt backend: calibration data has {samples} samples, fewer than the batch "
            f"of {batch}"
        )
    reference = TorchSession(program, "cpu")
    feeds: list[Feed] = []
    for start in range(0, samples - batch + 1, batch):
        chunk = {
            n: np.take(np.asarray(a), range(start, start + batch), axis=axis)
            for n, a in named.items()
        }
        chunk = {s.name: chunk[s.name].astype(s.dtype) for s in manifest.inputs}
        state = reference.init_state(batch)
        for inputs in kind.split_steps(manifest, chunk):
            feed = {
                n: np.ascontiguousarray(a)
                for n, a in kind.onnx_feeds(manifest, inputs, state).items()
            }
            feed.update({naming.state_input(k): np.ascontiguousarray(v) for k, v in state.items()})
            feeds.append(feed)
            if len(feeds) == max_feeds:
                return feeds
            _, state = reference.step(inputs, state)
    return feeds

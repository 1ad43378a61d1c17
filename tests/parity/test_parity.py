"""Every program kind on every available backend agrees with the torch reference, and each
backend's ``run`` equals its own repeated ``step`` (cases and tolerances: see conftest)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest

from ganglion.runtime.onnx_export.export import onnx_program
from ganglion.runtime.session import Session, load

if TYPE_CHECKING:
    from conftest import BackendCase, ProgramCase


def _open(program: ProgramCase, backend: BackendCase) -> Session:
    reason = backend.unavailable()
    if reason is not None:
        pytest.skip(f"{backend.name}: {reason}")
    return load(program.build(), backend=backend.name, device=backend.device, **backend.options)


def _stepped(
    session: Session, program: ProgramCase, x: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """run's output computed by repeated step, and the final state (copied)."""
    face = onnx_program(program.build())
    inputs = face.step_inputs(x)
    state = session.init_state(inputs[0].shape[0])
    outputs = []
    for x_t in inputs:
        out, state = session.step(x_t, state)
        outputs.append(out.copy())
    return face.collect(outputs), {k: v.copy() for k, v in state.items()}


def test_run_matches_torch(program: ProgramCase, backend: BackendCase) -> None:
    x = program.sample(program.build())
    with load(program.build()) as reference, _open(program, backend) as session:
        program.compare(reference.run(x), session.run(x), program.build())


def test_run_equals_repeated_step(program: ProgramCase, backend: BackendCase) -> None:
    x = program.sample(program.build())
    with _open(program, backend) as session:
        stepped, _ = _stepped(session, program, x)
        program.compare(session.run(x), stepped, program.build())


def test_step_state_matches_torch(program: ProgramCase, backend: BackendCase) -> None:
    x = program.sample(program.build())
    with load(program.build()) as reference, _open(program, backend) as session:
        ref_out, ref_state = _stepped(reference, program, x)
        out, state = _stepped(session, program, x)
    program.compare(ref_out, out, program.build())
    assert state.keys() == ref_state.keys()
    for name in state:
        np.testing.assert_allclose(
            state[name], ref_state[name], atol=program.state_atol, rtol=0, err_msg=name
        )


def test_every_program_fires(program: ProgramCase) -> None:
    """A parity case whose network never spikes would prove nothing."""
    deployable = program.build()
    with load(deployable) as session:
        session.run(program.sample(deployable), record=True)
        activity = session.activity()
    assert sum(float(a.sum()) for a in activity.values()) > 0

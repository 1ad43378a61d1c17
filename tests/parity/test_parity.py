"""Every registered program on every backend of ``session.BACKENDS``: a fresh load of its bundle
agrees with the in-memory program on torch (the reference; ONNX Runtime on the CPU for a
program with no torch face), and each backend's ``run`` equals its own repeated ``step`` (split
and collected by the program's kind). Every registered kind and architecture has a case. Cases
and tolerances: see conftest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from ganglion.models.errors import BackendUnavailable
from ganglion.runtime.bundle import load_bundle
from ganglion.runtime.kinds import KIND_CLASSES, kind_of
from ganglion.runtime.session import Session, load

if TYPE_CHECKING:
    from conftest import BackendCase, ProgramCase

STATE_ATOL = 1e-5


def _sample(program: ProgramCase) -> dict[str, np.ndarray]:
    deployable = program.build()
    if program.sample is not None:
        return program.sample(deployable)
    return kind_of(deployable.manifest).example_inputs(deployable.manifest, batch=4, seed=3)


def _open(folder: Path, backend: BackendCase) -> Session:
    if backend.name == "lava" and load_bundle(folder).manifest.numerics != "loihi2-fixed":
        pytest.skip(
            "lava floating_pt integrates layer biases during Lava's synaptic delay, so it is "
            "exact only for loihi2-fixed programs (README, Backends)"
        )
    try:
        return load(folder, backend=backend.name, device=backend.device)
    except BackendUnavailable as exc:
        pytest.skip(str(exc))


def _reference(program: ProgramCase) -> Session:
    """The in-memory program on torch, or on ONNX Runtime when it has no torch face."""
    deployable = program.build()
    missing = kind_of(deployable.manifest).torch_face_missing(deployable.manifest)
    return load(deployable, backend="torch" if missing is None else "onnxruntime")


def _compare(program: ProgramCase, reference: dict, got: dict) -> None:
    manifest = program.build().manifest
    assert reference.keys() == got.keys()
    for name in reference:
        assert reference[name].shape == got[name].shape, name
        atol = kind_of(manifest).parity_atol(manifest, name)
        if atol is None:
            np.testing.assert_array_equal(got[name], reference[name], err_msg=name)
        else:
            np.testing.assert_allclose(got[name], reference[name], atol=atol, rtol=0, err_msg=name)


def _stepped(session: Session, x: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """``run``'s outputs computed by repeated ``step``, and the final state (copied)."""
    kind, manifest = session.kind, session.manifest
    batch = next(iter(x.values())).shape[kind.batch_axis(manifest)]
    state = session.init_state(batch)
    outputs = []
    for inputs in kind.split_steps(manifest, x):
        try:
            out, state = session.step(inputs, state)
        except BackendUnavailable as exc:
            pytest.skip(str(exc))
        outputs.append({k: np.array(v) for k, v in out.items()})
    return kind.collect(manifest, outputs), {k: np.array(v) for k, v in state.items()}


def test_run_matches_in_memory_reference(
    program: ProgramCase, backend: BackendCase, bundles: Callable[[ProgramCase], Path]
) -> None:
    x = _sample(program)
    with _reference(program) as reference, _open(bundles(program), backend) as session:
        _compare(program, reference.run(x), session.run(x))


def test_run_equals_repeated_step(
    program: ProgramCase, backend: BackendCase, bundles: Callable[[ProgramCase], Path]
) -> None:
    x = _sample(program)
    with _open(bundles(program), backend) as session:
        stepped, _ = _stepped(session, x)
        _compare(program, session.run(x), stepped)


def test_step_state_matches_in_memory_reference(
    program: ProgramCase, backend: BackendCase, bundles: Callable[[ProgramCase], Path]
) -> None:
    x = _sample(program)
    with _reference(program) as reference, _open(bundles(program), backend) as session:
        ref_out, ref_state = _stepped(reference, x)
        out, state = _stepped(session, x)
    _compare(program, ref_out, out)
    assert state.keys() == ref_state.keys()
    for name in state:
        np.testing.assert_allclose(
            state[name], ref_state[name], atol=STATE_ATOL, rtol=0, err_msg=name
        )


def test_bundle_round_trip_keeps_manifest_and_weights(
    program: ProgramCase, bundles: Callable[[ProgramCase], Path]
) -> None:
    original = program.build()
    loaded = load_bundle(bundles(program))
    saved = json.loads((bundles(program) / "manifest.json").read_text())
    assert loaded.manifest.to_dict() == saved
    kind = kind_of(original.manifest)
    before, after = kind.module_tensors(original), kind.module_tensors(loaded)
    assert before.keys() == after.keys()
    for name in before:
        assert before[name].equal(after[name]), name


def test_every_kind_has_a_parity_case(all_programs: list[ProgramCase]) -> None:
    covered = {case.build().manifest.kind for case in all_programs}
    assert covered == set(KIND_CLASSES)


def _registered_architectures() -> set[tuple[str, str]]:
    """(kind, architecture) of every architecture a bundle may declare: each kind's registry
    (``runtime/kinds``, ``models/sequence``, ``models/vision``) and its converters' names."""
    from ganglion.models.sequence import SEQUENCE_ARCHITECTURES
    from ganglion.models.spiking.fixed_point import ARCHITECTURE as FIXED_POINT
    from ganglion.models.vision import VISION_ARCHITECTURES
    from ganglion.runtime.kinds.dense import EXPORTED, ONNX_ONLY

    dense = {EXPORTED, ONNX_ONLY, *VISION_ARCHITECTURES}
    return {
        ("spiking", "spiking_graph"),
        ("spiking", FIXED_POINT),
        *(("sequence", a) for a in SEQUENCE_ARCHITECTURES),
        *(("dense", a) for a in dense),
        ("ensemble", "moe2_gate"),
    }


def test_every_registered_architecture_has_a_parity_case(
    all_programs: list[ProgramCase],
) -> None:
    covered = {(m.kind, m.architecture) for m in (c.build().manifest for c in all_programs)}
    missing = _registered_architectures() - covered
    assert not missing, f"architectures without a parity case: {sorted(missing)}"
    assert {kind for kind, _ in _registered_architectures()} == set(KIND_CLASSES)


def test_every_spiking_program_fires(all_programs: list[ProgramCase]) -> None:
    """A spiking parity case whose network never spikes would prove nothing."""
    for case in all_programs:
        deployable = case.build()
        if deployable.manifest.kind != "spiking":
            continue
        with load(deployable) as session:
            session.run(_sample(case), record=True)
            activity = session.activity()
        assert sum(float(a.sum()) for a in activity.values()) > 0, case.name

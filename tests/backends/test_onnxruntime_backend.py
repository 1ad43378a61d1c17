"""The onnxruntime backend: providers, threads, IO-bound step buffers, bundles, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ganglion.models.deployable import Deployable
from ganglion.models.errors import BackendUnavailable, OptionError, ShapeError
from ganglion.runtime.backends.onnxruntime_backend import resolve_providers
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.cli import main
from ganglion.runtime.session import load

CPU_ONLY = ["CPUExecutionProvider"]
STEPS = 300  # per thread in the shared-session test


def test_providers_default_to_cpu_and_accept_aliases() -> None:
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(None, "cpu", available) == CPU_ONLY
    assert resolve_providers(None, "cuda", available) == available[1:]
    assert resolve_providers("tensorrt,cuda,cpu", "cuda", available) == available


@pytest.mark.parametrize("providers", ["banana", "", []])
def test_an_unknown_provider_is_an_option_error(program: Deployable, providers: object) -> None:
    """A name no ONNX Runtime build has, or none at all, is the caller's mistake; a real
    provider this build lacks (below) means the backend cannot run here."""
    with pytest.raises(OptionError, match="unknown provider"):
        load(program, backend="onnxruntime", providers=providers)


def test_missing_provider_is_named() -> None:
    with pytest.raises(BackendUnavailable, match="CUDAExecutionProvider.*not available"):
        resolve_providers("cuda", "cpu", CPU_ONLY)


def test_unknown_option_is_refused(program: Deployable) -> None:
    with pytest.raises(OptionError, match="unknown options \\['fast'\\]"):
        load(program, backend="onnxruntime", fast=True)


@pytest.mark.parametrize("threads", [0, -2, 1_000_000])
def test_threads_must_be_positive_and_bounded(program: Deployable, threads: int) -> None:
    with pytest.raises(OptionError, match=r"threads must be a whole number in \[1, 256\]"):
        load(program, backend="onnxruntime", threads=threads)


def test_threads_reach_the_session(program: Deployable, x: np.ndarray) -> None:
    with load(program, backend="onnxruntime", threads=1) as session:
        assert session._step_graph.get_session_options().intra_op_num_threads == 1
        assert session.run(x).shape == (3, 4)


def test_step_loop_reuses_three_buffer_sets(program: Deployable, x: np.ndarray) -> None:
    """Steps rotate through three preallocated sets: nothing is allocated per step."""
    with load(program, backend="onnxruntime") as session:
        state = session.init_state(3)
        seen = []
        for _ in range(6):
            out, state = session.step(x, state)
            seen.append((out.ctypes.data, state["v.relu_1"].ctypes.data))
        assert len(set(seen)) == 3
        assert seen[:3] == seen[3:]


def test_returned_arrays_survive_a_retry_a_run_and_a_prefill(
    program: Deployable, x: np.ndarray
) -> None:
    """What a step returned holds while a caller retries from an older state, runs the whole
    input or prefills: only two more steps may write over it."""
    with load(program, backend="onnxruntime") as session:
        s1 = session.step(x, session.init_state(3))[1]
        out2, s2 = session.step(x, s1)
        kept = (out2.copy(), {k: v.copy() for k, v in s2.items()})
        retry = session.step(x, s1)  # a second branch from s1
        session.run(x)
        session.prefill(x, s1)
        np.testing.assert_array_equal(out2, kept[0])
        for name, value in kept[1].items():
            np.testing.assert_array_equal(s2[name], value)
        np.testing.assert_array_equal(retry[0], kept[0])  # the same step, the same answer


def test_caller_state_is_copied_not_aliased(program: Deployable, x: np.ndarray) -> None:
    with load(program, backend="onnxruntime") as session:
        start = session.init_state(3)
        before = {k: v.copy() for k, v in start.items()}
        first, _ = session.step(x, start)
        first = first.copy()
        again, _ = session.step(x, start)  # the same start state gives the same step
        np.testing.assert_array_equal(first, again)
        for name, value in before.items():
            np.testing.assert_array_equal(start[name], value)


def test_wrong_state_is_one_line(program: Deployable, x: np.ndarray) -> None:
    with load(program, backend="onnxruntime") as session:
        state = session.init_state(3)
        state["v.relu_1"] = state["v.relu_1"][:1]
        with pytest.raises(ShapeError, match="state 'v.relu_1' must be \\[3, 16\\]"):
            session.step(x, state)
        with pytest.raises(ShapeError, match="must be \\[batch, 12\\], got \\[3, 5\\]"):
            session.run(x[:, :5])


def test_bundle_graphs_are_used_from_disk(
    program: Deployable, x: np.ndarray, tmp_path: Path
) -> None:
    folder = save_bundle(program, tmp_path / "b")
    with load(folder, backend="onnxruntime") as session, load(folder) as reference:
        np.testing.assert_allclose(session.run(x), reference.run(x), atol=1e-5, rtol=0)


def test_run_command_takes_backend_flags(
    program: Deployable, x: np.ndarray, tmp_path: Path
) -> None:
    folder = save_bundle(program, tmp_path / "b")
    np.save(tmp_path / "x.npy", x)
    args = [
        "run",
        str(folder),
        "--input",
        str(tmp_path / "x.npy"),
        "--output",
        str(tmp_path / "y.npy"),
        "--backend",
        "onnxruntime",
        "--providers",
        "cpu",
        "--threads",
        "1",
    ]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 0
    with load(folder) as reference:
        np.testing.assert_allclose(np.load(tmp_path / "y.npy"), reference.run(x), atol=1e-5)


def test_threads_sharing_a_session_step_as_if_alone(program: Deployable, x: np.ndarray) -> None:
    """Two threads stepping one session (each its own sequence) get what each would alone: a
    call runs under the session's lock and each thread steps on buffer sets of its own."""
    import sys
    import threading

    inputs = [x, x[::-1].copy() * 2]
    with load(program, backend="onnxruntime") as session:
        alone = []
        for feed in inputs:
            state, outs = session.init_state(3), []
            for _ in range(STEPS):
                out, state = session.step(feed, state)
                outs.append(out.copy())
            alone.append(outs)
        shared: list[list[np.ndarray]] = [[], []]
        start = threading.Barrier(2)

        def steps(k: int) -> None:
            state = session.init_state(3)
            start.wait()
            for _ in range(STEPS):
                out, state = session.step(inputs[k], state)
                shared[k].append(out.copy())

        workers = [threading.Thread(target=steps, args=(k,)) for k in range(2)]
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # the threads take turns every few steps
        try:
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        finally:
            sys.setswitchinterval(interval)
    for k in range(2):
        for got, want in zip(shared[k], alone[k], strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda m: m["outputs"][0].__setitem__("shape", [-1, 11]), "output 'output' is"),
        (lambda m: m["outputs"][0].__setitem__("dtype", "int64"), "int64 in the manifest"),
        (lambda m: m.__setitem__("state", []), "takes input 'state_in."),
    ],
    ids=["shape", "dtype", "no-state"],
)
def test_a_manifest_edited_apart_from_its_step_graph_is_refused_at_load(
    program: Deployable, tmp_path: Path, tampered, edit, words
) -> None:
    """Checksums redone, the manifest declaring what the graph does not give: refused in one
    line naming the tensor (ONNX Runtime failed at ``step`` with its own message before)."""
    from ganglion.models.errors import BundleError

    bundle = tampered(save_bundle(program, tmp_path / "b"), tmp_path, manifest=edit)
    with pytest.raises(BundleError, match=words) as refused:
        load(bundle, backend="onnxruntime")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda m: m["outputs"][0].__setitem__("shape", [-1, 11]), "declares [3, 11] float32"),
        (lambda m: m["outputs"][0].__setitem__("dtype", "int64"), "declares [3, 4] int64"),
    ],
    ids=["shape", "dtype"],
)
def test_a_manifest_edited_apart_from_its_program_fails_the_first_run_on_torch(
    program: Deployable, x: np.ndarray, tmp_path: Path, tampered, edit, words
) -> None:
    """torch builds the program from config.json and weights, not from the manifest's
    outputs: the first run's outputs are held to them, so nobody is served a tensor the
    manifest misdescribes."""
    from ganglion.models.errors import BundleError

    bundle = tampered(save_bundle(program, tmp_path / "b"), tmp_path, manifest=edit)
    with load(bundle, backend="torch") as session, pytest.raises(BundleError) as refused:
        session.run(x)
    assert "output 'output' is [3, 4] float32" in str(refused.value)
    assert words in str(refused.value)

"""``isolated=True``: a Lava session in a worker process of its own (``lava_worker``).

The worker answers what the in-process session answers, across sequence lengths that build new
networks; a worker that dies is reported, not waited on; the pipe protocol refuses what it
cannot read without pickle.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time

import numpy as np
import pytest

from ganglion.models.errors import BackendUnavailable, ShapeError
from ganglion.runtime.backends.lava_worker import (
    HEADER,
    MAX_HEADER_BYTES,
    WorkerError,
    WorkerSession,
    read_message,
    write_message,
)
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.session import load


def _spikes(steps: int, batch: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((steps, batch, 6)) > 0.5).astype(np.float32)


def test_messages_round_trip_and_refuse_what_they_cannot_read_safely() -> None:
    pipe = io.BytesIO()
    arrays = {"input": np.arange(6, dtype=np.float32).reshape(2, 3), "t": np.array(4)}
    write_message(pipe, {"op": "run"}, arrays)
    write_message(pipe, {"ok": True}, {})
    pipe.seek(0)
    header, got = read_message(pipe)
    assert header == {"op": "run"} and set(got) == {"input", "t"}
    np.testing.assert_array_equal(got["input"], arrays["input"])
    assert read_message(pipe) == ({"ok": True}, {})
    assert read_message(pipe) is None  # a clean end

    cut = io.BytesIO(HEADER.pack(10, 0) + b'{"op"')
    with pytest.raises(WorkerError, match="closed in the middle"):
        read_message(cut)
    with pytest.raises(WorkerError, match="too large"):
        read_message(io.BytesIO(HEADER.pack(MAX_HEADER_BYTES + 1, 0)))
    pickled = io.BytesIO()
    np.savez(pickled, x=np.array([{"a": 1}], dtype=object))
    data = pickled.getvalue()
    with pytest.raises(WorkerError, match="not a plain NPZ"):
        read_message(io.BytesIO(HEADER.pack(2, len(data)) + b"{}" + data))
    with pytest.raises(WorkerError, match="not a JSON object"):
        read_message(io.BytesIO(HEADER.pack(2, 0) + b"[]"))


def test_an_in_memory_program_cannot_be_isolated(leaky) -> None:
    with pytest.raises(BackendUnavailable, match="needs a bundle folder"):
        load(leaky(12), backend="lava", isolated=True)


@pytest.mark.lava
def test_the_worker_answers_as_the_in_process_session_across_sequence_lengths(
    leaky, tmp_path
) -> None:
    folder = save_bundle(leaky(12), tmp_path / "leaky")
    inline = load(folder, backend="lava")
    with load(folder, backend="lava", isolated=True) as isolated:
        assert isinstance(isolated, WorkerSession)
        for steps, seed in ((12, 0), (5, 1), (9, 2), (9, 3)):  # 5 and 9 build new networks
            x = _spikes(steps, 2, seed)
            np.testing.assert_array_equal(isolated.run(x), inline.run(x))
        with pytest.raises(ShapeError):  # checked in this process, before the worker
            isolated.run(np.zeros((4, 2, 7), np.float32))
        with pytest.raises(BackendUnavailable, match="whole sequences only"):
            isolated.step(_spikes(1, 2, 0)[0], isolated.init_state(2))
    inline.close()


@pytest.mark.lava
def test_a_dead_worker_is_reported_and_the_session_still_closes(leaky, tmp_path) -> None:
    folder = save_bundle(leaky(12), tmp_path / "leaky")
    session = load(folder, backend="lava", isolated=True)
    session.run(_spikes(12, 1, 0))
    os.kill(session._process.pid, signal.SIGKILL)
    session._process.wait(timeout=30)
    with pytest.raises(WorkerError, match="exited with code -9"):
        session.run(_spikes(12, 1, 1))
    group = session._process.pid
    session.close()
    assert session._process is None
    assert _group_gone(group, timeout_s=10.0)  # Lava's processes it left went with its group


@pytest.mark.lava
def test_a_worker_that_dies_mid_request_fails_the_request_instead_of_hanging(
    leaky, tmp_path
) -> None:
    # Lava's processes, forked by the worker, hold the answer pipe open after it dies: the
    # request must notice the worker is gone rather than wait for the pipe to close
    folder = save_bundle(leaky(12), tmp_path / "leaky")
    session = load(folder, backend="lava", isolated=True)
    worker = session._process.pid
    killer = threading.Timer(1.0, os.kill, (worker, signal.SIGKILL))
    started = time.monotonic()
    killer.start()
    try:
        # on a loaded machine the kill may land before the request is written: any of the
        # worker-gone errors will do, as long as the request fails rather than hangs
        with pytest.raises(WorkerError, match="exited with code -9"):
            session.run(_spikes(20_000, 1, 0))  # tens of seconds in Lava
    finally:
        killer.cancel()
        session.close()
    assert time.monotonic() - started < 15.0
    assert _group_gone(worker, timeout_s=10.0)


def _group_gone(group: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False

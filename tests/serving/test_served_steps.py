"""A sequence step the client no longer waits for keeps no state: its deadline passed while the
step ran, or the client left (the handler was cancelled) — a client that sends it again must
not advance the sequence twice."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from ganglion.runtime import load
from ganglion.runtime.serving.sequences import SequenceControl
from ganglion.runtime.serving.served_model import ServedModel
from ganglion.runtime.serving.settings import NodeSettings
from ganglion.runtime.serving.status import NodeError

STEP_DELAY_S = 0.3  # each step is made this much slower, so a deadline can fall inside it


@pytest.fixture
def slow_model(bundles: dict[str, Path], monkeypatch) -> ServedModel:
    session = load(bundles["snn"], backend="onnxruntime")
    real = session.step

    def slow_step(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        time.sleep(STEP_DELAY_S)
        return real(*args, **kwargs)

    monkeypatch.setattr(session, "step", slow_step)
    model = ServedModel("snn", session, "onnxruntime", NodeSettings())
    yield model
    model.close()


def _inputs(seed: int) -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(seed).random((2, 8), dtype=np.float32)}


async def _step(model: ServedModel, key: int, seed: int, start: bool = False, **kw) -> np.ndarray:
    response = pb.ModelInferResponse()
    await model.infer(_inputs(seed), SequenceControl(key, start=start), [], response, **kw)
    raw = response.raw_output_contents[0]
    return np.frombuffer(raw, "<f4").copy()


def test_a_step_past_its_deadline_or_abandoned_keeps_no_state(slow_model: ServedModel) -> None:
    async def scenario() -> tuple[np.ndarray, np.ndarray]:
        await _step(slow_model, 1, seed=0, start=True)
        with pytest.raises(NodeError) as late:  # the deadline passes while the step runs
            await _step(slow_model, 1, seed=1, remaining_s=STEP_DELAY_S / 3)
        assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "its state was not kept" in str(late.value)
        left = asyncio.create_task(_step(slow_model, 1, seed=2))  # the client leaves
        await asyncio.sleep(STEP_DELAY_S / 3)
        left.cancel()
        with pytest.raises(asyncio.CancelledError):
            await left
        await asyncio.sleep(STEP_DELAY_S)  # the abandoned step finishes on the worker
        after = await _step(slow_model, 1, seed=3)
        await _step(slow_model, 2, seed=0, start=True)  # the same sequence, never interrupted
        return after, await _step(slow_model, 2, seed=3)

    after, expected = asyncio.run(scenario())
    np.testing.assert_array_equal(after, expected)

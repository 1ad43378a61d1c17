"""The tensorrt backend on a GPU: engines cached and reused, fp16 and CUDA graphs run.
Skipped with the reason where TensorRT, cuda-python or a GPU is missing (parity: tests/parity)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ganglion.models.deployable import Deployable
from ganglion.runtime.backends.tensorrt_backend import unavailable_reason
from ganglion.runtime.session import load


def _reason() -> str | None:
    return unavailable_reason("cuda")


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_reason() is not None, reason=str(_reason()))]


def test_engine_is_built_once_then_loaded(
    program: Deployable, x: np.ndarray, tmp_path: Path
) -> None:
    with load(
        program, backend="tensorrt", device="cuda", engine_cache=tmp_path, max_batch=4
    ) as first:
        out = first.run(x)
    engines = sorted(tmp_path.glob("*.engine"))
    assert len(engines) == 1
    stamp = engines[0].stat().st_mtime_ns
    with load(
        program, backend="tensorrt", device="cuda", engine_cache=tmp_path, max_batch=4
    ) as second:
        np.testing.assert_array_equal(second.run(x), out)
    assert engines[0].stat().st_mtime_ns == stamp


def test_fp16_engine_runs_close_to_fp32(program: Deployable, x: np.ndarray, tmp_path: Path) -> None:
    with (
        load(program) as reference,
        load(
            program,
            backend="tensorrt",
            device="cuda",
            engine_cache=tmp_path,
            max_batch=4,
            precision="fp16",
        ) as session,
    ):
        np.testing.assert_allclose(session.run(x), reference.run(x), atol=0.2)


def test_batch_beyond_profile_is_refused(program: Deployable, tmp_path: Path) -> None:
    with load(program, backend="tensorrt", device="cuda", engine_cache=tmp_path) as session:
        with pytest.raises(Exception, match="outside the engine's profile"):
            session.step(np.zeros((2, 12), np.float32), session.init_state(2))

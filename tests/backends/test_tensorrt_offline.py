"""The tensorrt backend's parts that need no GPU: engine cache keys, stale and foreign
engines, optimization profile shapes, precision selection, calibration feeds, and the
one-line refusal where TensorRT or a GPU is missing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from ganglion.models.deployable import Deployable
from ganglion.models.errors import BackendUnavailable, OptionError
from ganglion.runtime.backends.tensorrt_backend import unavailable_reason
from ganglion.runtime.backends.tensorrt_cache import EngineCache, EngineKey
from ganglion.runtime.backends.tensorrt_calibration import calibration_feeds
from ganglion.runtime.backends.tensorrt_plan import (
    batch_profile,
    build_plan,
    builder_flags,
    engine_options,
    profile_shapes,
    select_precision,
)
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.cli import main
from ganglion.runtime.onnx_export.export import export_graph
from ganglion.runtime.program import Program
from ganglion.runtime.session import load

KEY = EngineKey("ab" * 32, "10.13.0", "NVIDIA Jetson AGX Orin", "fp16", (1, 1, 8))


class Builds:
    """A fake engine builder that counts its calls."""

    def __init__(self, engine: bytes = b"engine-v1") -> None:
        self.engine, self.calls = engine, 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.engine


@pytest.mark.parametrize("field", ["onnx_sha256", "tensorrt_version", "gpu_name", "precision"])
def test_every_key_field_changes_the_engine_file(field: str) -> None:
    other = dataclasses.replace(KEY, **{field: "other"})
    assert other.digest() != KEY.digest()


def test_profile_dla_core_and_calibration_change_the_engine_file() -> None:
    assert dataclasses.replace(KEY, batch_profile=(1, 4, 8)).digest() != KEY.digest()
    assert dataclasses.replace(KEY, dla_core=0).digest() != KEY.digest()
    assert dataclasses.replace(KEY, calibration_sha256="cd" * 32).digest() != KEY.digest()


def test_cached_engine_is_reused(tmp_path: Path) -> None:
    cache, build = EngineCache(tmp_path), Builds()
    assert cache.get_or_build(KEY, build) == (b"engine-v1", True)
    assert cache.get_or_build(KEY, build) == (b"engine-v1", False)
    assert build.calls == 1


def test_foreign_engine_under_our_name_is_rebuilt(tmp_path: Path) -> None:
    """An engine whose sidecar names another GPU (copied from elsewhere) is never loaded."""
    cache = EngineCache(tmp_path)
    foreign = dataclasses.replace(KEY, gpu_name="NVIDIA GeForce RTX 4090")
    cache.store(foreign, b"engine-for-4090")
    engine_path, meta_path = cache.paths(KEY)
    engine_path.write_bytes(cache.paths(foreign)[0].read_bytes())
    meta_path.write_text(cache.paths(foreign)[1].read_text())
    build = Builds()
    assert cache.get_or_build(KEY, build) == (b"engine-v1", True)
    assert json.loads(meta_path.read_text())["key"]["gpu_name"] == KEY.gpu_name


def test_stale_or_corrupt_engine_is_rebuilt(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"engine-v0")
    cache.paths(KEY)[0].write_bytes(b"engine-v0-truncated")
    build = Builds()
    assert cache.get_or_build(KEY, build) == (b"engine-v1", True)
    cache.paths(KEY)[1].write_text("not json")
    assert cache.get_or_build(KEY, build) == (b"engine-v1", True)
    assert build.calls == 2


def test_missing_sidecar_means_rebuild(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    cache.store(KEY, b"engine-v0")
    cache.paths(KEY)[1].unlink()
    assert cache.load(KEY) is None


def test_profile_spans_the_batch_range_on_every_step_input(program: Deployable) -> None:
    shapes = profile_shapes(program.manifest, batch_profile(16, 4))
    assert shapes["input"] == ((1, 12), (4, 12), (16, 12))
    assert shapes["state_in.t"] == ((1,), (1,), (1,))
    assert shapes["state_in.v.relu_1"] == ((1, 16), (4, 16), (16, 16))
    assert shapes["state_in.decode"] == ((1, 4), (4, 4), (16, 4))
    step = export_graph(program, "step")
    assert set(shapes) == {i.name for i in step.graph.input}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch": 0}, "max_batch must be in [1, 65536], got 0"),
        ({"max_batch": 4, "opt_batch": 5}, "opt_batch must be in [1, 4], got 5"),
        ({"max_batch": 4, "opt_batch": 0}, "opt_batch must be in [1, 4], got 0"),
        ({"max_batch": "8"}, "max_batch must be a whole number, got '8'"),
        ({"max_batch": True}, "max_batch must be a whole number, got True"),
        ({"workspace_mb": 0}, "workspace_mb must be in [1, 1048576], got 0"),
        ({"workspace_mb": 2.5}, "workspace_mb must be a whole number, got 2.5"),
        ({"dla_core": -1}, "dla_core must be in [0, 63], got -1"),
        ({"precision": "bf17"}, "precision must be one of"),
        ({"precision": ["fp16"]}, "precision must be one of"),
        ({"engine_cache": 3}, "engine_cache must be a folder, got 3"),
        ({"cuda_graphs": "no"}, "cuda_graphs must be True or False, got 'no'"),
        ({"turbo": True}, "unknown options ['turbo']"),
    ],
)
def test_bad_options_are_refused_before_the_package_or_gpu_is_looked_for(
    program: Deployable, options: dict, message: str
) -> None:
    """The same OptionError on every machine (here: no TensorRT, no GPU), naming the option."""
    with pytest.raises(OptionError) as refused:
        engine_options(options)
    assert message in str(refused.value)
    with pytest.raises(OptionError) as refused:
        load(program, backend="tensorrt", device="cuda", **options)
    assert message in str(refused.value)


def test_checked_options_keep_their_values() -> None:
    opts = engine_options({"max_batch": np.int64(8), "opt_batch": 2, "dla_core": 1})
    assert (opts.max_batch, opts.opt_batch, opts.dla_core) == (8, 2, 1)
    assert type(opts.max_batch) is int and opts.precision == "fp32" and opts.cuda_graphs
    assert batch_profile(opts.max_batch, opts.opt_batch) == (1, 2, 8)


@pytest.mark.parametrize(
    "requested,fp16,int8,dla,calib,expected",
    [
        ("fp32", True, True, False, True, "fp32"),
        ("fp16", True, False, False, False, "fp16"),
        ("int8", True, True, False, True, "int8"),
        ("auto", True, True, False, True, "int8"),
        ("auto", True, True, False, False, "fp16"),
        ("auto", False, False, False, False, "fp32"),
        ("auto", False, False, True, False, "fp16"),
    ],
)
def test_precision_selection(
    requested: str, fp16: bool, int8: bool, dla: bool, calib: bool, expected: str
) -> None:
    assert select_precision(requested, fp16, int8, dla, calib) == expected


@pytest.mark.parametrize(
    "requested,fp16,int8,dla,calib,reason",
    [
        ("fp16", False, False, False, False, "no fast fp16"),
        ("int8", True, False, False, True, "no fast int8"),
        ("int8", True, True, False, False, "int8 needs calibration data"),
        ("fp32", True, True, True, False, "DLA core runs fp16 or int8"),
    ],
)
def test_impossible_precision_is_one_line(
    requested: str, fp16: bool, int8: bool, dla: bool, calib: bool, reason: str
) -> None:
    with pytest.raises(BackendUnavailable, match=reason):
        select_precision(requested, fp16, int8, dla, calib)


def test_builder_flags_follow_precision_and_dla() -> None:
    assert builder_flags("fp32", False) == ()
    assert builder_flags("fp16", False) == ("FP16",)
    assert builder_flags("int8", True) == ("INT8", "FP16", "GPU_FALLBACK")


def test_plan_carries_workspace_and_profile(program: Deployable) -> None:
    plan = build_plan(program.manifest, "fp16", 8, None, 256, 1)
    assert plan.workspace_bytes == 256 << 20
    assert plan.batch_profile == (1, 1, 8) and plan.dla_core == 1
    assert plan.flags == ("FP16", "GPU_FALLBACK")


def test_calibration_feeds_follow_real_trajectories(program: Deployable) -> None:
    """Feeds hold every step-graph input; states are the torch reference's along the samples
    (the feeds come from the step graph on ONNX Runtime, so up to float rounding)."""
    x = np.random.default_rng(4).uniform(0, 1, (10, 12)).astype(np.float32)
    feeds = calibration_feeds(Program.in_memory(program), x, batch=4, max_feeds=12)
    assert len(feeds) == 12  # 2 whole batches of 4 samples x 8 timesteps, cut at 12
    names = {i.name for i in export_graph(program, "step").graph.input}
    assert all(set(f) == names and f["input"].shape == (4, 12) for f in feeds)
    assert [int(f["state_in.t"][0]) for f in feeds[:9]] == [0, 1, 2, 3, 4, 5, 6, 7, 0]
    with load(program) as reference:
        state = reference.init_state(4)
        for _ in range(3):
            _, state = reference.step(x[:4], state)
    np.testing.assert_allclose(feeds[3]["state_in.v.relu_1"], state["v.relu_1"], atol=1e-6)


def test_too_little_calibration_data_is_named(program: Deployable) -> None:
    with pytest.raises(BackendUnavailable, match="2 samples, fewer than the batch of 4"):
        calibration_feeds(Program.in_memory(program), np.zeros((2, 12), np.float32), 4)


def _tensorrt_runs_here() -> bool:
    return unavailable_reason("cuda") is None


@pytest.mark.skipif(_tensorrt_runs_here(), reason="TensorRT and a GPU are present")
def test_backend_refuses_in_one_line_without_tensorrt_or_gpu(program: Deployable) -> None:
    with pytest.raises(BackendUnavailable) as err:
        load(program, backend="tensorrt", device="cuda")
    message = str(err.value)
    assert message.startswith("tensorrt backend: ") and "\n" not in message
    assert any(
        reason in message
        for reason in ("'tensorrt' package is not installed", "'cuda-python'", "no CUDA GPU")
    )


def test_backend_refuses_cpu_device(program: Deployable) -> None:
    with pytest.raises(BackendUnavailable, match="tensorrt backend"):
        load(program, backend="tensorrt", device="cpu")


@pytest.mark.skipif(_tensorrt_runs_here(), reason="TensorRT and a GPU are present")
def test_run_command_with_tensorrt_fails_in_one_line(
    program: Deployable, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = save_bundle(program, tmp_path / "b")
    np.save(tmp_path / "x.npy", np.zeros((2, 12), np.float32))
    with pytest.raises(SystemExit) as done:
        main(
            [
                "run",
                str(folder),
                "--input",
                str(tmp_path / "x.npy"),
                "--output",
                str(tmp_path / "y.npy"),
                "--backend",
                "tensorrt",
                "--device",
                "cuda",
            ]
        )
    assert done.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: tensorrt backend: ") and "\n" not in err

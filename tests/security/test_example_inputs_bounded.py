"""A bundle whose ONNX graph and manifest agree on an input too large to draw an example of
(one sample of [batch, 2**24, 256] float32 is 16 GiB, 32 GiB drawn in float64): ``profile``
and ``serve``'s warm-up refuse it in one line naming the bundle and the input, reckoned from
the manifest's shapes before anything of that size is allocated. Where a test would allocate
before the fix, the draw (or the run) is replaced by a failing stub, so that a regression fails
the test at once instead of eating the machine's memory."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ganglion.models.errors import ShapeError
from ganglion.models.sequence import sequence_model_class
from ganglion.models.sequence.program import sequence_deployable
from ganglion.runtime import load
from ganglion.runtime.bundle import load_bundle
from ganglion.runtime.bundle_archive import write_bundle_tar
from ganglion.runtime.cli import invoke
from ganglion.runtime.kinds import base, get_kind
from ganglion.runtime.opcount import example_inputs
from ganglion.runtime.serving.served_model import ServedModel
from ganglion.runtime.serving.settings import NodeSettings

BIG = [2**24, 256]  # one sample: 2**32 values, 32 GiB drawn in float64
START_TIMEOUT_S = 120


def onnx_bundle(folder: Path, dims: list[int | str]) -> Path:
    """An ONNX-only dense bundle taking ``input`` [batch, *dims] float32 (a str: an axis of
    any length) and giving its mean, ``output`` [batch, 1]; graph and manifest agree."""
    folder.mkdir(parents=True)
    axes = list(range(1, len(dims) + 1))
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input", "axes"], ["mean"], keepdims=1),
            helper.make_node("Flatten", ["mean"], ["output"], axis=1),
        ],
        "mean",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *dims])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor("axes", TensorProto.INT64, [len(axes)], axes)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, folder / "model.onnx")
    config = {"input_names": ["input"], "output_names": ["output"]}
    (folder / "config.json").write_text(json.dumps(config))
    shape = [-1, *(d if isinstance(d, int) else -1 for d in dims)]
    manifest = {
        "kind": "dense",
        "architecture": "onnx",
        "inputs": [{"name": "input", "shape": shape, "dtype": "float32"}],
        "outputs": [{"name": "output", "shape": [-1, 1], "dtype": "float32"}],
        "time": None,
        "state": [],
        "numerics": "float32",
        "provenance": {},
        "report": {},
        "members": [],
        "artifacts": {
            name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in ("config.json", "model.onnx")
        },
        "format_version": 2,
        "max_batch": 65536,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def no_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    """The base kind's draw fails: an example refused before it is drawn never reaches it."""

    def drawn(*args: object) -> None:
        raise AssertionError("an example was drawn before its size was checked")

    monkeypatch.setattr(base, "_random", drawn)


def test_profile_refuses_the_example_in_one_line_naming_the_bundle_and_the_input(
    tmp_path: Path, no_draw: None, one_line_error
) -> None:
    bundle = onnx_bundle(tmp_path / "big", BIG)
    args = ("--backend", "onnxruntime", "--runs", "1", "--warmup", "0", "--device", "cpu")
    code, _, err = invoke("profile", str(bundle), *args)
    one_line_error(code, err, f"{bundle}: ", "'input'", "[1, 16777216, 256]", "32.0 GiB")
    tar = write_bundle_tar(bundle, tmp_path / "big.tar")  # the tar, not where it was unpacked
    code, _, err = invoke("profile", str(tar), *args)
    one_line_error(code, err, f"{tar}: ", "'input'")


def test_every_kind_reckons_its_example_from_the_manifest_before_drawing(
    tmp_path: Path, no_draw: None, leaky
) -> None:
    dense = load_bundle(onnx_bundle(tmp_path / "big", BIG)).manifest
    with pytest.raises(ShapeError, match=r"^where: example inputs of batch 1 .*'input'"):
        example_inputs(dense, bundle="where")
    spiking = leaky().manifest
    spiking.inputs[0].shape = [-1, 2**24, 2**24]  # float32 drawn directly: 4 PiB
    with pytest.raises(ShapeError, match=r"\[12, 1, 16777216, 16777216\]"):
        get_kind("spiking").example_inputs(spiking)
    rwkv = sequence_model_class("rwkv").from_config({"vocab_size": 32, "d_model": 8, "n_layers": 1})
    sequence = sequence_deployable(rwkv).manifest
    with pytest.raises(ShapeError, match=r"batch 1099511627776 .*\[1099511627776, 16\]"):
        get_kind("sequence").example_inputs(sequence, batch=2**40)
    assert example_inputs(sequence, batch=2)["ids"].shape == (2, 16)  # within the bound: drawn


def test_serve_refuses_it_at_start_in_one_line_naming_the_bundle(
    tmp_path: Path, one_line_error
) -> None:
    bundle = onnx_bundle(tmp_path / "big", [2**24, 2**24])  # zeros of it fail at once, unfixed
    command = [sys.executable, "-m", "ganglion.runtime.cli", "serve", str(bundle)]
    command += ["--port", "0", "--backend", "onnxruntime", "--simulate-energy"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT_S)
    one_line_error(done.returncode, done.stderr, f"{bundle}: ", "'input'", "batch 1")


def test_warm_up_bounds_the_zeros_it_probes_the_outputs_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # batch 1 and one step: 8 MiB of example; the probe of batch 2, three steps: 11.4 GiB
    bundle = onnx_bundle(tmp_path / "wide", ["a", "b", "c", "d", "e", "f", 2**20])
    session = load(bundle, backend="onnxruntime")
    model = ServedModel("wide", session, "onnxruntime", NodeSettings())

    def ran(inputs: dict[str, np.ndarray]) -> None:
        raise AssertionError(f"ran on {[a.shape for a in inputs.values()]} unchecked")

    monkeypatch.setattr(session, "run", ran)
    try:
        with pytest.raises(ShapeError) as refused:
            model.warm_up(None, bundle)  # type: ignore[arg-type] - refused before any reading
    finally:
        model.close()
    message = str(refused.value)
    assert message.startswith(f"{bundle}: example inputs of batch 2 ")
    assert "'input' [2, 3, 3, 3, 3, 3, 3, 1048576]" in message and "\n" not in message

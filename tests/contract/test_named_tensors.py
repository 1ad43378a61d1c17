"""The Session contract with named, typed tensors: what a program accepts and refuses, the
one-array convenience, prefill, and ONNX bundles running where torch is absent."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ganglion.converters.dense import convert_dense
from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.errors import ShapeError
from ganglion.runtime import load
from ganglion.runtime.bundle import save_bundle


class TwoInOut(nn.Module):
    """Float features and int64 ids in; two named outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.emb(ids).mean(1) + x
        return {"scores": self.fc(h), "pooled": h}


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=64)
    args = (torch.zeros(2, 4), torch.zeros(2, 5, dtype=torch.int64))
    program = torch.export.export(TwoInOut().eval(), args, dynamic_shapes=({0: batch}, {0: batch}))
    return save_bundle(convert_dense(program), tmp_path_factory.mktemp("dense") / "two")


@pytest.fixture(scope="module")
def spiking(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    calib = np.random.default_rng(0).uniform(0, 1, (32, 6)).astype(np.float32)
    options = SpikingOptions(timesteps=6, encoding="rate", decoding="count")
    program = convert_spiking(model, calib, None, options)
    return save_bundle(program, tmp_path_factory.mktemp("spiking") / "rate")


def _inputs(batch: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"x": rng.random((batch, 4), dtype=np.float32), "ids": rng.integers(0, 10, (batch, 5))}


def test_manifest_names_typed_inputs_and_outputs(dense: Path) -> None:
    manifest = json.loads((dense / "manifest.json").read_text())
    assert [(t["name"], t["dtype"], t["shape"]) for t in manifest["inputs"]] == [
        ("x", "float32", [-1, 4]),
        ("ids", "int64", [-1, 5]),
    ]
    assert [t["name"] for t in manifest["outputs"]] == ["scores", "pooled"]


def test_named_run_returns_named_outputs(dense: Path) -> None:
    out = load(dense).run(_inputs())
    assert set(out) == {"scores", "pooled"} and out["scores"].shape == (3, 3)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("ids"), "missing input 'ids'"),
        (lambda d: d.update(extra=np.zeros(3)), "unknown input 'extra'"),
        (lambda d: d.update(ids=d["ids"].astype(np.float32)), "'ids' must be int64, got float32"),
        (lambda d: d.update(x=d["x"][:, :3]), "'x' must be \\[batch, 4\\], got \\[3, 3\\]"),
        (lambda d: d.update(ids=d["ids"][:2]), "disagree on the batch size \\(3 vs 2\\)"),
        (lambda d: d.update(x=np.array([["a"] * 4] * 3)), "'x' must be a numeric float32 array"),
    ],
    ids=["missing", "unknown", "dtype", "shape", "batch", "strings"],
)
def test_wrong_name_dtype_or_shape_names_the_tensor(dense: Path, change, message: str) -> None:
    inputs = _inputs()
    change(inputs)
    with pytest.raises(ShapeError, match=message):
        load(dense).run(inputs)


def test_non_finite_input_is_refused_with_its_index_unless_allowed(dense: Path) -> None:
    inputs = _inputs()
    inputs["x"][1, 2] = np.nan
    with pytest.raises(ShapeError, match=r"'x' holds nan at index \(1, 2\)"):
        load(dense).run(inputs)
    out = load(dense, allow_nonfinite=True).run(inputs)
    assert np.isnan(out["scores"][1]).all() and np.isfinite(out["scores"][0]).all()


def test_safe_casts_are_accepted(dense: Path) -> None:
    inputs = _inputs()
    cast = {"x": inputs["x"].astype(np.float64), "ids": inputs["ids"].astype(np.int32)}
    np.testing.assert_array_equal(
        load(dense).run(cast)["scores"], load(dense).run(inputs)["scores"]
    )


def test_bare_array_needs_a_single_input(dense: Path, spiking: Path) -> None:
    with pytest.raises(ShapeError, match="several named inputs \\(x, ids\\): pass a dict"):
        load(dense).run(np.zeros((2, 4), np.float32))
    x = np.random.default_rng(2).random((2, 6), dtype=np.float32)
    bare, named = load(spiking).run(x), load(spiking).run({"input": x})
    assert isinstance(bare, np.ndarray)
    np.testing.assert_array_equal(bare, named["output"])


def test_a_bare_array_of_a_shape_seen_before_still_has_its_values_checked(spiking: Path) -> None:
    """A session remembers the shapes and dtypes of bare arrays it accepted (they then skip the
    shape checks): the values of each call are still checked, and another shape, dtype or
    layout goes through every check again."""
    session = load(spiking)
    x = np.random.default_rng(3).random((2, 6), dtype=np.float32)
    first = session.run(x)
    bad = x.copy()
    bad[1, 4] = np.inf
    with pytest.raises(ShapeError, match=r"'input' holds inf at index \(1, 4\)"):
        session.run(bad)
    np.testing.assert_array_equal(session.run(x.astype(np.float64)), first)  # cast as before
    with pytest.raises(ShapeError, match=r"must be \[batch, 6\], got \[2, 5\]"):
        session.run(x[:, :5].copy())
    wide = np.zeros((2, 12), np.float32)
    wide[:, ::2] = x
    np.testing.assert_array_equal(session.run(wide[:, ::2]), first)  # not contiguous: copied
    with pytest.raises(ShapeError, match="several named inputs|must be"):
        session.run(x[:, :, None])


def test_state_with_the_wrong_batch_is_refused(spiking: Path) -> None:
    session = load(spiking)
    state = session.init_state(2)
    with pytest.raises(ShapeError, match="must be \\[3, 8\\], got \\[2, 8\\]"):
        session.step(np.zeros((3, 6), np.float32), state)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_state_is_refused_unless_allowed(spiking: Path, backend: str, value) -> None:
    """A state the caller made or edited is checked like an input, in step and prefill; the
    state a step returned goes back unchecked and still runs."""
    session = load(spiking, backend)
    x = np.random.default_rng(5).random((2, 6), dtype=np.float32)
    _, state = session.step(x, session.init_state(2))
    name = next(k for k, v in state.items() if v.dtype.kind == "f")
    bad = {k: np.array(v) for k, v in state.items()}
    bad[name][1, 4] = value
    for call in (session.step, session.prefill):
        with pytest.raises(ShapeError, match=rf"state '{name}' holds {value} at index \(1, 4\)"):
            call(x, bad)
    _, state = session.step(x, state)  # its own state: accepted
    out, _ = load(spiking, backend, allow_nonfinite=True).step(x, bad)
    assert out.shape == (2, 3)


def test_prefill_continues_from_a_state(spiking: Path) -> None:
    """Prefill from the fresh state equals run; its final state continues like step's."""
    session = load(spiking)
    x = np.random.default_rng(3).random((2, 6), dtype=np.float32)
    out, state = session.prefill(x, session.init_state(2))
    np.testing.assert_array_equal(out, session.run(x))
    assert int(state["t"][0]) == 6


def test_initial_state_comes_from_the_bundle_without_torch(spiking: Path) -> None:
    from ganglion.runtime.bundle import open_bundle

    with open_bundle(spiking) as program:
        per_sample = program.initial_state()
    with load(spiking) as reference:
        batched = reference.init_state(2)
    assert set(per_sample) == set(batched)
    for name, value in per_sample.items():
        np.testing.assert_array_equal(
            batched[name][0] if value.shape != batched[name].shape else batched[name], value
        )


BLOCK_TORCH = "raise ImportError('torch is not installed on this device')\n"


@pytest.mark.parametrize("which", ["dense", "spiking"])
def test_onnx_bundle_runs_where_torch_cannot_be_imported(
    which: str, dense: Path, spiking: Path, tmp_path: Path
) -> None:
    """A subprocess whose ``import torch`` fails loads the bundle on onnxruntime and gets the
    torch backend's answer (computed here, in this process)."""
    bundle = {"dense": dense, "spiking": spiking}[which]
    inputs = (
        _inputs()
        if which == "dense"
        else {"input": np.random.default_rng(4).random((2, 6), dtype=np.float32)}
    )
    np.savez(tmp_path / "in.npz", **inputs)
    (tmp_path / "blocker" / "torch").mkdir(parents=True)
    (tmp_path / "blocker" / "torch" / "__init__.py").write_text(BLOCK_TORCH)
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from ganglion.runtime import load
        inputs = dict(np.load({str(tmp_path / "in.npz")!r}))
        session = load({str(bundle)!r}, backend="onnxruntime")
        out = session.run(inputs)
        state = session.init_state(2)
        np.savez({str(tmp_path / "out.npz")!r}, **out)
        assert "torch" not in sys.modules or sys.modules["torch"] is None
        print("ok", sorted(state))
    """)
    env = {"PYTHONPATH": str(tmp_path / "blocker"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = dict(np.load(tmp_path / "out.npz"))
    expected = load(bundle).run(inputs)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_hostile_api_arguments_get_typed_one_line_errors(spiking: Path, backend: str) -> None:
    """What a Python user may pass by mistake: each refused with a Ganglion error."""
    from ganglion.models.errors import BackendUnavailable, BundleError, OptionError

    session = load(spiking, backend)
    x = np.random.default_rng(6).random((2, 6), dtype=np.float32)
    state = session.init_state(2)
    cases = [
        (lambda: session.run([[0.1] * 6, [0.2] * 5]), ShapeError, "not an array of numbers"),
        (lambda: session.step(x, None), ShapeError, "state must be a dict"),
        (lambda: session.step(x, {**state, "t": np.array([1.5])}), ShapeError, "must be int64"),
        (lambda: session.step(x, {**state, "t": np.array([-2])}), ShapeError, "must be >= 0"),
        (lambda: session.init_state(True), ShapeError, "positive integer"),
        (lambda: session.init_state(10**12), ShapeError, "at most"),
        (lambda: load(spiking, backend, allow_nonfinite="no"), OptionError, "True or"),
        (lambda: load(None, backend), BundleError, "got NoneType"),
        (lambda: load(spiking, backend, device=0), OptionError, "must be a string"),
        (lambda: load(spiking, backend, devic="cpu"), OptionError, "devic"),
        (lambda: load(spiking, "onnx"), OptionError, "unknown backend 'onnx'"),
    ]
    for call, error, words in cases:
        with pytest.raises(error, match=words):
            call()
    assert session.init_state(np.int64(2))["t"].shape == (1,)
    session.close()
    session.close()  # twice: harmless
    with pytest.raises(BackendUnavailable, match="session is closed"):
        session.run(x)


def test_an_output_never_aliases_the_callers_input(tmp_path: Path) -> None:
    """A program returning a view of its input hands back a copy on every backend."""

    class Flat(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(x.shape[0], -1)

    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(Flat(), (torch.zeros(2, 2, 2),), dynamic_shapes=({0: batch},))
    bundle = save_bundle(convert_dense(program), tmp_path / "flat")
    for backend in ("torch", "onnxruntime"):
        x = np.ones((3, 2, 2), np.float32)
        out = load(bundle, backend).run(x)
        x[:] = 7.0
        assert (out == 1.0).all(), backend


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_a_state_entry_replaced_or_of_another_width_is_used(spiking: Path, backend: str) -> None:
    """A caller who resets one entry of the state a step returned, or passes float64 where
    float32 is declared, gets the step of that state on every backend, as torch gives it."""
    x = np.random.default_rng(7).random((2, 6), dtype=np.float32)
    reference = load(spiking)
    session = load(spiking, backend)
    state = session.init_state(2)
    for _ in range(3):
        _, state = session.step(x, state)
    name = next(k for k, v in state.items() if v.dtype == np.float32)
    state[name] = session.init_state(2)[name]  # reset one membrane
    expected = reference.step(x, {k: np.array(v) for k, v in state.items()})
    widened = {k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in state.items()}
    for given in (state, widened):
        out, new = session.step(x, given)
        np.testing.assert_allclose(out, expected[0], atol=1e-6)
        np.testing.assert_allclose(new[name], expected[1][name], atol=1e-6)

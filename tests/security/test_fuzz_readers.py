"""Fuzzing every file reader the way the most trusted parsers are tested: mutated and truncated
manifests, tar bundles, npy/npz inputs, safetensors, ONNX and NIR files.

The property for every one: the reader succeeds or raises one ``GanglionError`` whose message
is a single line naming the file — never another exception, a hang or a write outside the
target. A bounded number of examples runs in CI; ``-m slow`` runs many more.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from ganglion.converters.nir_graph import read_nir
from ganglion.converters.onnx_file import load_onnx
from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.errors import GanglionError
from ganglion.runtime.bundle import load_bundle, save_bundle
from ganglion.runtime.cli.arrays import read_npy, read_npz
from ganglion.runtime.program import read_numpy_tensors

CI = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
MANY = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One valid file of each format, as bytes."""
    folder = tmp_path_factory.mktemp("seeds")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    calib = np.random.default_rng(0).random((8, 4), dtype=np.float32)
    program = convert_spiking(model, calib, None, SpikingOptions(timesteps=3))
    bundle = save_bundle(program, folder / "b")
    tar = save_bundle(program, folder / "b.tar")
    np.save(folder / "x.npy", calib)
    np.savez_compressed(folder / "x.npz", x=calib, y=np.arange(8))
    return {
        "manifest": (bundle / "manifest.json").read_bytes(),
        "tar": tar.read_bytes(),
        "npy": (folder / "x.npy").read_bytes(),
        "npz": (folder / "x.npz").read_bytes(),
        "safetensors": (bundle / "weights.safetensors").read_bytes(),
        "onnx": (bundle / "model.onnx").read_bytes(),
        "nir": (bundle / "graph.nir").read_bytes(),
        "bundle": str(bundle).encode(),
    }


def mutated(data: bytes, draw: st.DrawFn) -> bytes:
    """``data`` with random bytes overwritten, a random cut, or random bytes inserted."""
    how = draw(st.sampled_from(["flip", "truncate", "insert", "mix"]))
    out = bytearray(data)
    if how in ("flip", "mix"):
        for _ in range(draw(st.integers(1, 16))):
            i = draw(st.integers(0, len(out) - 1))
            out[i] = draw(st.integers(0, 255))
    if how in ("truncate", "mix"):
        out = out[: draw(st.integers(0, len(out)))]
    if how == "insert":
        i = draw(st.integers(0, len(out)))
        out[i:i] = draw(st.binary(min_size=1, max_size=64))
    return bytes(out)


def assert_one_line_or_success(read: Callable[[], object], path: Path) -> None:
    """The property every reader holds."""
    try:
        read()
    except GanglionError as exc:
        message = str(exc)
        assert "\n" not in message, message
        assert path.name in message or str(path.parent.name) in message, message


def _manifest_reader(seeds: dict, tmp_path: Path) -> Callable[[Path], object]:
    import shutil

    def read(path: Path) -> object:
        folder = tmp_path / "bundle"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(seeds["bundle"].decode(), folder)
        (folder / "manifest.json").write_bytes(path.read_bytes())
        try:
            return load_bundle(folder)
        except GanglionError as exc:
            raise GanglionError(str(exc).replace(str(folder), str(path))) from exc

    return read


READERS: dict[str, tuple[str, Callable[[Path], object]]] = {
    "tar": (".tar", load_bundle),
    "npy": (".npy", read_npy),
    "npz": (".npz", read_npz),
    "safetensors": (".safetensors", lambda p: read_numpy_tensors(p.read_bytes(), str(p))),
    "onnx": (".onnx", load_onnx),
    "nir": (".nir", lambda p: read_nir(p, 1e-4)),
}


@pytest.mark.parametrize("kind", sorted(READERS))
@CI
@given(data=st.data())
def test_mutated_files_give_one_line_or_succeed(kind: str, seeds, tmp_path_factory, data) -> None:
    suffix, reader = READERS[kind]
    path = tmp_path_factory.mktemp(kind) / f"fuzzed{suffix}"
    path.write_bytes(mutated(seeds[kind], data.draw))
    assert_one_line_or_success(lambda: reader(path), path)


@CI
@given(data=st.data())
def test_mutated_manifests_give_one_line_or_succeed(seeds, tmp_path_factory, data) -> None:
    folder = tmp_path_factory.mktemp("manifest")
    path = folder / "manifest.json"
    path.write_bytes(mutated(seeds["manifest"], data.draw))
    assert_one_line_or_success(lambda: _manifest_reader(seeds, folder)(path), path)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@CI
@given(
    field=st.sampled_from(
        [
            "kind",
            "inputs",
            "outputs",
            "time",
            "state",
            "members",
            "artifacts",
            "format_version",
            "numerics",
            "architecture",
        ]
    ),
    value=json_values,
)
def test_manifest_fields_of_any_json_type_give_one_line(
    seeds, tmp_path_factory, field, value
) -> None:
    folder = tmp_path_factory.mktemp("field")
    manifest = json.loads(seeds["manifest"])
    manifest[field] = value
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest))
    assert_one_line_or_success(lambda: _manifest_reader(seeds, folder)(path), path)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(READERS))
@MANY
@given(data=st.data())
def test_many_mutated_files(kind: str, seeds, tmp_path_factory, data) -> None:
    suffix, reader = READERS[kind]
    path = tmp_path_factory.mktemp(kind) / f"fuzzed{suffix}"
    path.write_bytes(mutated(seeds[kind], data.draw))
    assert_one_line_or_success(lambda: reader(path), path)


def test_valid_seeds_read_back(seeds, tmp_path: Path) -> None:
    """The fuzzers start from files the readers accept (else they would prove little)."""
    for kind, (suffix, reader) in READERS.items():
        path = tmp_path / f"seed{suffix}"
        path.write_bytes(seeds[kind])
        reader(path)
    assert isinstance(nir.read(str(tmp_path / "seed.nir")), nir.NIRGraph)

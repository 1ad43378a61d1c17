"""Bundles: save/load round trip, .tar form, and a clear error for every kind of damage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.errors import BundleError, ShapeError
from ganglion.runtime.bundle import load_bundle, save_bundle
from ganglion.runtime.session import load


@pytest.fixture
def bundle(digits_cnn, tmp_path: Path) -> Path:
    model, data = digits_cnn
    deployable = convert_spiking(
        model, data.x_train[:128], data.y_train[:128], SpikingOptions(timesteps=8)
    )
    return save_bundle(deployable, tmp_path / "cnn")


def test_bundle_holds_the_documented_files(bundle: Path) -> None:
    names = {p.name for p in bundle.iterdir()}
    assert {"manifest.json", "config.json", "weights.safetensors", "graph.nir"} <= names
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert set(manifest["artifacts"]) == names - {"manifest.json"}
    assert manifest["kind"] == "spiking" and manifest["time"]["timesteps"] == 8


def test_round_trip_gives_identical_outputs(bundle: Path, digits_cnn) -> None:
    _, data = digits_cnn
    x = data.x_test[:20]
    original = load(bundle).run(x)
    again = save_bundle(load_bundle(bundle), bundle.parent / "again")
    np.testing.assert_array_equal(load(again).run(x), original)


def test_tar_bundle_loads_like_the_folder(bundle: Path, digits_cnn) -> None:
    _, data = digits_cnn
    tar = save_bundle(load_bundle(bundle), bundle.parent / "cnn.tar")
    assert tar.is_file()
    np.testing.assert_array_equal(load(tar).run(data.x_test[:5]), load(bundle).run(data.x_test[:5]))


def test_tampered_weights_fail_the_checksum(bundle: Path) -> None:
    weights = bundle / "weights.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="weights.safetensors does not match its SHA-256"):
        load(bundle)


def test_missing_artifact_is_named(bundle: Path) -> None:
    (bundle / "graph.nir").unlink()
    with pytest.raises(BundleError, match="graph.nir is missing"):
        load_bundle(bundle)


@pytest.mark.parametrize(
    "text,match",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"kind": "spiking"}', "malformed"),
    ],
)
def test_malformed_manifest_is_refused(bundle: Path, text: str, match: str) -> None:
    (bundle / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match=match):
        load_bundle(bundle)


def test_newer_format_and_unknown_architecture_are_refused(bundle: Path) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(BundleError, match="newer than this Ganglion"):
        load_bundle(bundle)
    (bundle / "manifest.json").write_text(json.dumps({**manifest, "architecture": "transformer"}))
    with pytest.raises(BundleError, match="unknown architecture 'transformer'"):
        load_bundle(bundle)


def test_not_a_bundle_and_not_an_archive(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such bundle"):
        load_bundle(tmp_path / "absent")
    with pytest.raises(BundleError, match="not a bundle"):
        load_bundle(tmp_path)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(BundleError, match="not a readable bundle archive"):
        load_bundle(junk)


def test_session_refuses_non_numeric_input_and_loses_nothing(bundle: Path, digits_cnn) -> None:
    _, data = digits_cnn
    session = load(bundle)
    with pytest.raises(ShapeError, match="numeric"):
        session.run(np.array([["a"]]))
    copy = shutil.copytree(bundle, bundle.parent / "copy")
    assert load(copy).run(data.x_test[:3]).shape == (3, 10)

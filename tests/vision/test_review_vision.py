"""ViG and ViT bundles from a new and a hostile user's side: any batch on ONNX Runtime whatever
the token count, configs and manifests that lie (checksums redone) refused in one line naming
the file, ``export --opset`` honoured or refused, ``inspect`` on a malformed report, and
``train vision`` flags checked before any training."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ganglion.models.vision import vision_model_class
from ganglion.models.vision.program import vision_deployable
from ganglion.runtime import load
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.cli import invoke

TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2}


def _bundle(folder: Path, architecture: str, **overrides: Any) -> Path:
    torch.manual_seed(0)
    cls = vision_model_class(architecture)
    model = cls(cls.config_class(**{**TINY, **overrides}))
    report = {"training": {"epochs": 2, "test_accuracy": 0.875}}
    return save_bundle(vision_deployable(model, report), folder / architecture)


def _images(batch: int) -> np.ndarray:
    return np.random.default_rng(batch).uniform(0, 1, (batch, 1, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny ViG and ViT bundle (8x8 digits, 16 tokens), and the inputs file x.npy."""
    folder = tmp_path_factory.mktemp("vision")
    np.save(folder / "x.npy", _images(7))
    return {"vig": _bundle(folder, "vig"), "vit": _bundle(folder, "vit"), "folder": folder}


def _run(bundle: Path, images: Path, out: Path, *more: str) -> tuple[int, str, str]:
    return invoke("run", str(bundle), "--input", str(images), "--output", str(out), *more)


# ---- ViG with more tokens than a GLA chunk ------------------------------------------------------


def test_vig_longer_than_a_chunk_runs_any_batch_on_onnxruntime(tmp_path: Path) -> None:
    """24x24 images in 2x2 patches: 144 tokens, over two chunks of 64 with padding. Its ONNX
    graph (in the bundle and from ``export``) takes any batch, as the manifest says."""
    bundle = _bundle(tmp_path, "vig", upsample=3)
    graph = onnx.load(str(bundle / "model.onnx"))
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    x = _images(7)
    with load(bundle) as reference, load(bundle, backend="onnxruntime") as session:
        for batch in (1, 7):
            np.testing.assert_allclose(session.run(x[:batch]), reference.run(x[:batch]), atol=1e-4)
    code, _, err = invoke("export", str(bundle), "--onnx", str(tmp_path / "vig.onnx"))
    assert code == 0, err
    exported = ort.InferenceSession(str(tmp_path / "vig.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        (y,) = exported.run(None, {"image": x[:batch]})
        assert y.shape == (batch, 10)


# ---- configs that lie ---------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("architecture", ["vig", "vit"])
@pytest.mark.parametrize(
    "field, value",
    [
        ("n_layers", 10**6),
        ("image_size", 10**6),
        ("d_model", 10**6),
        ("num_classes", 10**9),
        ("upsample", 10**4),
        ("channels", 0),
        ("patch_size", 0),
        ("n_heads", -2),
        ("n_layers", True),
        ("d_model", 16.0),
        ("d_model", "16"),
        ("image_size", math.nan),
    ],
)
def test_vision_config_refuses_absurd_sizes_and_types(architecture, field, value) -> None:
    cls = vision_model_class(architecture)
    config = {**cls(cls.config_class(**TINY)).to_config(), field: value}
    with pytest.raises(ValueError, match=field):
        cls.from_config(config)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "field, value", [("expand_k", 1e9), ("gate_rank", 10**9), ("gate_normalizer", math.inf)]
)
def test_vig_config_refuses_absurd_mixer_sizes(field, value) -> None:
    cls = vision_model_class("vig")
    with pytest.raises(ValueError, match=field):
        cls.from_config({**cls(cls.config_class(**TINY)).to_config(), field: value})


@pytest.mark.timeout(60)
def test_run_refuses_a_bundle_a_million_blocks_deep(
    bundles, tmp_path: Path, tampered, one_line_error
) -> None:
    bundle = tampered(bundles["vig"], tmp_path, config={"n_layers": 10**6})
    out = tmp_path / "y.npy"
    code, _, err = _run(bundle, bundles["folder"] / "x.npy", out)
    one_line_error(code, err, "config.json", "n_layers")
    assert not out.exists()


# ---- manifests that disagree with the program ---------------------------------------------------


def _three_logits(manifest: dict[str, Any]) -> None:
    manifest["outputs"][0]["shape"] = [-1, 3]


def _half_images(manifest: dict[str, Any]) -> None:
    manifest["inputs"][0]["dtype"] = "float16"


@pytest.mark.parametrize("architecture", ["vig", "vit"])
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_run_refuses_a_manifest_whose_outputs_the_program_does_not_give(
    bundles, tmp_path: Path, architecture: str, backend: str, tampered, one_line_error
) -> None:
    bundle = tampered(bundles[architecture], tmp_path, manifest=_three_logits)
    out = tmp_path / "y.npy"
    code, _, err = _run(bundle, bundles["folder"] / "x.npy", out, "--backend", backend)
    one_line_error(code, err, str(bundle), "logits")
    assert not out.exists()


def test_onnxruntime_refuses_a_graph_whose_inputs_the_manifest_misstates(
    bundles, tmp_path: Path, tampered, one_line_error
) -> None:
    bundle = tampered(bundles["vit"], tmp_path, manifest=_half_images)
    out = tmp_path / "y.npy"
    code, _, err = _run(bundle, bundles["folder"] / "x.npy", out, "--backend", "onnxruntime")
    one_line_error(code, err, "model.onnx", "image", "float16")


# ---- export --opset -----------------------------------------------------------------------------


def test_export_writes_the_opset_asked_for(bundles, tmp_path: Path) -> None:
    path = tmp_path / "vit21.onnx"
    code, out, err = invoke("export", str(bundles["vit"]), "--onnx", str(path), "--opset", "21")
    assert code == 0, err
    model = onnx.load(str(path))
    assert [o.version for o in model.opset_import if o.domain == ""] == [21]
    assert "opset 21" in out
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with load(bundles["vit"]) as reference:
        (y,) = session.run(None, {"image": _images(7)})
        np.testing.assert_allclose(y, reference.run(_images(7)), atol=1e-4)


def test_export_without_opset_says_the_opset_it_writes(bundles, tmp_path: Path) -> None:
    path = tmp_path / "vig.onnx"
    code, out, err = invoke("export", str(bundles["vig"]), "--onnx", str(path))
    assert code == 0, err
    (version,) = [o.version for o in onnx.load(str(path)).opset_import if o.domain == ""]
    assert f"(opset {version})" in out


def test_the_manifest_records_the_opset_of_the_bundles_graph(bundles) -> None:
    manifest = json.loads((bundles["vig"] / "manifest.json").read_text())
    model = onnx.load(str(bundles["vig"] / "model.onnx"))
    (version,) = [o.version for o in model.opset_import if o.domain == ""]
    assert manifest["provenance"]["onnx"]["opset"] == version


def test_export_refuses_an_opset_the_graph_cannot_be_written_at(
    bundles, tmp_path: Path, one_line_error
) -> None:
    path = tmp_path / "vit15.onnx"
    code, _, err = invoke("export", str(bundles["vit"]), "--onnx", str(path), "--opset", "15")
    one_line_error(code, err, "--opset 15")
    assert not path.exists()


# ---- inspect ------------------------------------------------------------------------------------


def test_inspect_shows_the_training_accuracy(bundles) -> None:
    code, out, err = invoke("inspect", str(bundles["vig"]))
    assert code == 0, err
    assert "test accuracy 0.8750" in out


@pytest.mark.parametrize(
    "report",
    [
        {"ann_accuracy": "high", "snn_accuracy": 1},
        {"ann_accuracy": 0.5},
        {"layers": {"a": {"firing_rate": 0.1}}},
        {"accuracy_check": 5, "quality": [1, 2]},
        {"monotonicity": {"x": 1}},
        {"training": {"test_accuracy": "all of them"}},
        {"conversion": 5},
        {"linearization": {"source": "x"}},
    ],
)
def test_inspect_survives_a_malformed_report(bundles, tmp_path: Path, report, tampered) -> None:
    bundle = tampered(bundles["vit"], tmp_path, manifest=lambda m: m.__setitem__("report", report))
    code, out, err = invoke("inspect", str(bundle))
    assert code == 0, err
    assert "sha256" in out and "malformed" in out


# ---- train vision flags -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", ["-1", str(2**32), str(10**20)])
def test_train_vision_refuses_a_seed_out_of_range(
    tmp_path: Path, seed: str, one_line_error
) -> None:
    out = tmp_path / "b"
    code, _, err = invoke("train", "vision", "--arch", "vit", "-o", str(out), "--seed", seed)
    one_line_error(code, err, "--seed")
    assert not out.exists()


@pytest.mark.parametrize(
    "flags, named",
    [
        (("--steps", str(10**12)), "--steps"),
        (("--lr", "inf"), "--lr"),
        (("--lr", "nan"), "--lr"),
        (("--lr", "0"), "--lr"),
        (("--seed", "-1"), "--seed"),
        (("--batch", "4096", "--length", "65536"), "--batch x --length"),
    ],
)
def test_train_lm_refuses_flags_out_of_range_before_training(
    tmp_path: Path, flags: tuple[str, ...], named: str, one_line_error
) -> None:
    out = tmp_path / "lm"
    code, _, err = invoke("train", "lm", "--arch", "gam", "-o", str(out), *flags)
    one_line_error(code, err, named)
    assert not out.exists()


def test_train_vision_refuses_runaway_epochs(tmp_path: Path, one_line_error) -> None:
    out = tmp_path / "b"
    code, _, err = invoke(
        "train", "vision", "--arch", "vit", "-o", str(out), "--epochs", str(10**9)
    )
    one_line_error(code, err, "--epochs")
    assert not out.exists()

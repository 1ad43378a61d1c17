"""The linear-time language models as a hostile user drives them: tampered bundles (NaN weights,
absurd or mistyped config values), prompts that are not UTF-8, and out-of-range options of
``convert linear`` and ``train lm``. Each is refused with one line on stderr, a non-zero exit
and no traceback, before anything large is allocated; nothing is written."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from ganglion.models.recipes.text import decode_ids
from ganglion.models.sequence import sequence_model_class
from ganglion.models.sequence.program import sequence_deployable
from ganglion.runtime import load
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.cli import invoke
from ganglion.runtime.generation import GenerationError, Sampling, generate


def _model(architecture: str, perturb: Callable) -> torch.nn.Module:
    """A tiny model (d_model 16, one layer), every weight perturbed."""
    torch.manual_seed(0)
    cls = sequence_model_class(architecture)
    return perturb(cls.from_config({**cls().to_config(), "d_model": 16, "n_layers": 1}))


@pytest.fixture(scope="module")
def gla_bundle(tmp_path_factory: pytest.TempPathFactory, perturb: Callable) -> Path:
    model = _model("gla", perturb)
    return save_bundle(sequence_deployable(model), tmp_path_factory.mktemp("gla") / "b")


@pytest.fixture(scope="module")
def gpt_bundle(tmp_path_factory: pytest.TempPathFactory, perturb: Callable) -> Path:
    model = _model("gpt", perturb)
    return save_bundle(sequence_deployable(model), tmp_path_factory.mktemp("gpt") / "b")


# ---- generation on non-finite weights ------------------------------------------------------


@pytest.fixture(scope="module")
def nan_model(perturb: Callable) -> torch.nn.Module:
    """A GLA model whose embedding (also its tied head) holds a NaN in the row of 'h'."""
    model = _model("gla", perturb)
    with torch.no_grad():
        model.embed.weight[ord("h"), 0] = math.nan
    return model


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_generation_refuses_non_finite_logits(nan_model, backend: str) -> None:
    with load(sequence_deployable(nan_model), backend=backend) as session:
        with pytest.raises(GenerationError, match="not finite"):
            list(generate(session, list(b"hi"), Sampling(max_tokens=3)))


@pytest.mark.parametrize(
    ("backend", "words"),
    [  # torch rebuilds the model from weights.safetensors, onnxruntime runs model.onnx:
        # each refuses the file holding the NaN when it loads
        ("torch", ("weights.safetensors", "'embed.weight' holds NaN at index (104, 0)")),
        ("onnxruntime", ("model.onnx", "holds NaN at index")),
    ],
)
@pytest.mark.parametrize("sampling", [(), ("--temperature", "1")])
def test_generate_command_names_the_bundle_of_nan_weights(
    nan_model, tmp_path: Path, backend: str, words: tuple[str, ...], sampling, one_line_error
) -> None:
    bundle = save_bundle(sequence_deployable(nan_model), tmp_path / "b")
    code, out, err = invoke(
        "generate", str(bundle), "--prompt", "hi", "--max-tokens", "3", "--backend", backend,
        *sampling,
    )  # fmt: skip
    one_line_error(code, err, str(bundle), *words)
    assert "\x00" not in out  # no token was printed from NaN logits


# ---- prompts that are not UTF-8 ------------------------------------------------------------


def test_prompt_bytes_outside_utf8_are_their_own_tokens(gla_bundle: Path) -> None:
    """A shell passes argv bytes that are not UTF-8 as surrogate escapes (PEP 383); they are
    byte tokens like any other, as the help's 'UTF-8 bytes are tokens' promises."""
    raw = b"\xff\xfe ab"
    prompt = raw.decode("utf-8", errors="surrogateescape")
    code, out, err = invoke("generate", str(gla_bundle), "--prompt", prompt, "--max-tokens", "8")
    assert code == 0, err
    with load(gla_bundle) as session:
        want = decode_ids(list(generate(session, list(raw), Sampling(max_tokens=8))))
    assert out == want + "\n"


def test_prompt_with_a_lone_surrogate_is_refused_in_one_line(
    gla_bundle: Path, one_line_error
) -> None:
    code, _, err = invoke("generate", str(gla_bundle), "--prompt", "a\ud800b", "--max-tokens", "2")
    one_line_error(code, err, "--prompt")


# ---- tampered config.json ------------------------------------------------------------------

CONFIG_TAMPERING = {
    "vocab 10^12": ("vocab_size", 10**12),
    "layers 10^6": ("n_layers", 10**6),
    "width 10^9": ("d_model", 10**9),
    "width as text": ("d_model", "16"),
    "layers as a bool": ("n_layers", True),
    "infinite gate normalizer": ("gate_normalizer", math.inf),
    "NaN key expansion": ("expand_k", math.nan),
    "zero gate normalizer": ("gate_normalizer", 0.0),
    "no heads": ("n_heads", 0),
    "negative rank": ("gate_rank", -4),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", CONFIG_TAMPERING)
def test_tampered_config_is_refused_before_building(
    gla_bundle, tmp_path, case, tampered, one_line_error
) -> None:
    key, value = CONFIG_TAMPERING[case]
    bundle = tampered(gla_bundle, tmp_path, config={key: value})
    code, out, err = invoke("generate", str(bundle), "--prompt", "hi", "--max-tokens", "2")
    one_line_error(code, err, str(bundle), key)
    assert "allocate" not in err and out == ""


@pytest.mark.parametrize("architecture", ["gla", "gam", "gpt", "rwkv"])
def test_configs_too_large_to_build_are_refused_from_the_config_alone(architecture) -> None:
    cls = sequence_model_class(architecture)
    huge = {**cls().to_config(), "vocab_size": 1 << 24, "d_model": 1 << 12}  # 2^36 parameters
    with pytest.raises(ValueError, match="parameters"):
        cls.from_config(huge)


# ---- out-of-range options ------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "option",
    [("--batch", "100000000"), ("--eval-chars", "-3"), ("--eval-chars", "0")],
)
def test_convert_linear_refuses_out_of_range_options(
    gpt_bundle, tmp_path, option, one_line_error
) -> None:
    out = tmp_path / "out"
    code, _, err = invoke(
        "convert", "linear", str(gpt_bundle), "-o", str(out), "--to", "gla", *option
    )
    one_line_error(code, err, option[0])
    assert not out.exists()


def test_train_lm_refuses_negative_eval_chars(tmp_path: Path, one_line_error) -> None:
    out = tmp_path / "out"
    sizes = ("--steps", "1", "--d-model", "8", "--layers", "1", "--batch", "1", "--length", "8")
    args = ("train", "lm", "--arch", "gla", *sizes, "--eval-chars", "-3", "-o", str(out))
    code, _, err = invoke(*args)
    one_line_error(code, err, "--eval-chars")
    assert not out.exists()


def test_gpt_export_at_a_newer_opset_prints_one_line(
    gpt_bundle: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """torch's TorchScript exporter prints its IR from C++ straight to file descriptor 1 when
    it fails at opset 24 and later; the command's own output is one line."""
    path = tmp_path / "g.onnx"
    code, out, err = invoke("export", str(gpt_bundle), "--onnx", str(path), "--opset", "24")
    assert code == 0, err
    assert out == f"ONNX step graph (opset 24) written to {path}\n"
    assert "Torch IR" not in capfd.readouterr().out

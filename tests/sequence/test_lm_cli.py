"""The language-model path through the command line, as a user runs it: ``train lm`` writes
held-out BPC into the manifest, ``convert spikegpt`` records the BPC of every stage and the
tokens it spent, ``generate`` gives the same greedy text on torch and ONNX Runtime and reports
tokens/s, ``inspect --ops`` counts MACs and spikes per token.

One tiny RWKV (d_model 16, one layer, 8 steps) is trained and converted once for the module;
held-out figures are scored on the first EVAL_CHARS characters.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path

import pytest
import torch

from ganglion.runtime.bundle import load_bundle
from ganglion.runtime.cli import main

EVAL_CHARS = 300
CALIB_WINDOWS, CALIB_WINDOW = 1, 256  # convert spikegpt's calibration windows are 256 tokens
FINETUNE_STEPS, FINETUNE_BATCH, FINETUNE_LENGTH = 2, 16, 128  # the converter's fine-tune shape
STAGES = ("rwkv_bpc", "uncalibrated_bpc", "calibrated_bpc", "finetuned_bpc")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: one intra-op thread is faster than two on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cli(*args: object) -> tuple[str, str]:
    """``ganglion ARGS`` in this process: (stdout, stderr) of a run that must succeed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        with pytest.raises(SystemExit) as done:
            main([str(a) for a in args])
    assert int(done.value.code or 0) == 0, err.getvalue()
    return out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(bundle, stdout) of ``train lm`` of a tiny RWKV on prose."""
    bundle = tmp_path_factory.mktemp("lm_cli") / "rwkv"
    sizes = ("--steps", 8, "--d-model", 16, "--layers", 1, "--batch", 4, "--length", 32)
    out, err = _cli(
        "train", "lm", "--arch", "rwkv", *sizes, "--eval-chars", EVAL_CHARS, "-o", bundle
    )
    assert err == ""  # no progress bar, nor the blank line it leaves, where stderr is a log
    return bundle, out


@pytest.fixture(scope="module")
def converted(trained: tuple[Path, str]) -> tuple[Path, str]:
    """(bundle, stdout) of ``convert spikegpt`` of the trained RWKV with a 2-step fine-tune."""
    source, _ = trained
    bundle = source.parent / "spikegpt"
    out, err = _cli(
        "convert",
        "spikegpt",
        source,
        "-o",
        bundle,
        "--finetune-steps",
        FINETUNE_STEPS,
        "--calib-windows",
        CALIB_WINDOWS,
        "--eval-chars",
        EVAL_CHARS,
    )
    assert err == ""
    return bundle, out


def test_train_lm_writes_heldout_bpc_into_the_manifest(trained):
    bundle, out = trained
    training = load_bundle(bundle).manifest.report["training"]
    assert 0 < training["heldout_bpc"] < 8  # 8 steps already beat uniform bytes (8 bits)
    assert training["tokens_seen"] == 8 * 4 * 32
    assert f"held-out bits per character (prose): {training['heldout_bpc']:.3f}" in out


def test_convert_spikegpt_reports_every_stage_and_the_tokens_spent(trained, converted):
    bundle, out = converted
    manifest = load_bundle(bundle).manifest
    assert manifest.architecture == "spikegpt"
    report = manifest.report["conversion"]
    assert all(math.isfinite(report[stage]) and report[stage] > 0 for stage in STAGES)
    # the source is scored on the same held-out characters as at the end of its training
    source_bpc = load_bundle(trained[0]).manifest.report["training"]["heldout_bpc"]
    assert report["rwkv_bpc"] == pytest.approx(source_bpc, rel=1e-5)
    assert report["calibration_tokens"] == CALIB_WINDOWS * CALIB_WINDOW
    assert report["finetune_tokens"] == FINETUNE_STEPS * FINETUNE_BATCH * FINETUNE_LENGTH
    for stage in ("rwkv", "uncalibrated", "calibrated", "finetuned"):
        assert f"{stage}: {report[f'{stage}_bpc']:.3f} bits/char" in out
    assert f"tokens spent: {CALIB_WINDOWS * CALIB_WINDOW:,} calibration" in out


def test_generate_gives_the_same_text_on_torch_and_onnxruntime(converted):
    """Greedy, and seeded sampling (varied text: equal only if the distributions agree)."""
    bundle, _ = converted
    texts = {}
    for mode in (("--temperature", 0), ("--temperature", 1, "--seed", 3)):
        for backend in ("torch", "onnxruntime"):
            args = ("--prompt", "def main(", "--max-tokens", 24, *mode, "--backend", backend)
            out, err = _cli("generate", bundle, *args)
            rate = re.search(r"\[24 tokens in [\d.]+ s: ([\d.]+) tokens/s, (\w+)\]", err)
            assert rate is not None, err
            assert float(rate.group(1)) > 0 and rate.group(2) == backend
            texts[mode, backend] = out
        assert texts[mode, "torch"] == texts[mode, "onnxruntime"], mode
    assert len(set(texts[("--temperature", 1, "--seed", 3), "torch"])) > 5


def test_inspect_ops_prints_macs_and_spikes_per_token(converted):
    bundle, _ = converted
    out, _ = _cli("inspect", bundle, "--ops")
    macs = re.search(r"MACs ([\d,]+); spike-driven accumulates ([\d,.]+)", out)
    assert macs is not None, out
    assert int(macs.group(1).replace(",", "")) > 16 * 16  # at least one d x d projection
    assert "l0.att_lif" in out and "l0.ffn_lif" in out  # the firing rate of each LIF layer
    assert "45 nm, simulated" in out
    out, _ = _cli("inspect", bundle, "--ops", "--text", "\udcff\udcfe")  # argv bytes, not UTF-8
    assert "counted on 2 tokens" in out
    out, _ = _cli("inspect", bundle)  # the conversion's stages, without --json
    assert "ids int64: [batch, T]" in out and "logits float32: [batch, T, " in out  # as run
    stages = re.search(r"conversion: bits per character rwkv ([\d.]+), uncalibrated ([\d.]+)", out)
    assert stages is not None, out


def test_a_prompt_too_long_or_a_chip_fit_of_a_language_model_names_what_was_given(
    trained, one_line_error
):
    from ganglion.runtime.cli import invoke

    bundle, _ = trained
    code, _, err = invoke("generate", str(bundle), "--prompt", "a" * 70_000)
    one_line_error(code, err, f"--prompt (70000 bytes) for {bundle}: ", "70000 tokens")
    code, _, err = invoke("inspect", str(bundle), "--target", "loihi2")
    one_line_error(code, err, f"{bundle}: a chip-fit report needs a spiking program")


def test_a_width_the_heads_do_not_divide_names_the_flag(tmp_path, one_line_error):
    from ganglion.runtime.cli import invoke

    sizes = ["--steps", "1", "--d-model", "15", "--layers", "1", "--batch", "2", "--length", "16"]
    code, _, err = invoke("train", "lm", "--arch", "gla", *sizes, "-o", str(tmp_path / "m"))
    one_line_error(code, err, "--d-model 15 for --arch gla: ")
    assert not (tmp_path / "m").exists()

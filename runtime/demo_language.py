"""The demo's language models: two small byte-level LMs trained here on text that ships with
Python (English prose from ``pydoc_data``, code from the standard library), generation on
torch and ONNX Runtime, and an MoE² ensemble of the two whose gate follows the prompt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganglion.converters.ensemble import convert_lm_ensemble
from ganglion.models.recipes.lm_training import train_lm
from ganglion.models.recipes.text import decode_ids, encode_text, load_corpus, random_windows
from ganglion.models.sequence import sequence_model_class
from ganglion.models.sequence.program import sequence_deployable
from ganglion.runtime.bundle import load_bundle, save_bundle
from ganglion.runtime.ensemble_calibration import token_expert_probabilities
from ganglion.runtime.generation import Sampling, generate
from ganglion.runtime.session import load

PROMPTS = {"prose": "The meaning of ", "code": "def __init__(self"}


@dataclass
class LMRow:
    """One trained model, or the ensemble, generating from one prompt."""

    model: str
    heldout_bpc: float | None
    prompt: str
    text: str
    tokens_per_s: dict[str, float]  # backend -> tokens/s, measured here, batch 1
    same_tokens: bool
    gate: str  # the ensemble's gate weights at the end of the prompt


def train_experts(out: Path, steps: int, d_model: int, arch: str = "gam") -> dict[str, Path]:
    """One LM per corpus, saved as bundles."""
    bundles = {}
    for corpus in PROMPTS:
        torch.manual_seed(0)
        cls = sequence_model_class(arch)
        model = cls.from_config({**cls().to_config(), "d_model": d_model, "n_layers": 2})
        report = train_lm(model, load_corpus(corpus), steps, batch=16, length=128, lr=3e-3,
                          eval_chars=20_000)  # fmt: skip
        provenance = {"corpus": corpus, "recipe": "ganglion.models.recipes.lm_training"}
        program = sequence_deployable(model, {"training": report.to_dict()}, provenance)
        bundles[corpus] = save_bundle(program, out / f"lm-{corpus}", force=True)
    return bundles


def _generate(bundle: Path, prompt: str, tokens: int) -> tuple[str, dict[str, float], bool]:
    outputs, rates = {}, {}
    for backend in ("torch", "onnxruntime"):
        with load(bundle, backend=backend) as session:
            start = time.perf_counter()
            outputs[backend] = list(generate(session, encode_text(prompt), Sampling(tokens)))
            rates[backend] = tokens / (time.perf_counter() - start)
    return decode_ids(outputs["torch"]), rates, outputs["torch"] == outputs["onnxruntime"]


def language_tour(out: Path, steps: int, d_model: int, tokens: int) -> list[LMRow]:
    """Train the experts, build their ensemble, generate from each prompt."""
    experts = train_experts(out, steps, d_model)
    members = {corpus: load_bundle(path) for corpus, path in experts.items()}
    rng = np.random.default_rng(0)
    windows = np.concatenate([random_windows(load_corpus(c).train, 16, 128, rng) for c in PROMPTS])
    probs = token_expert_probabilities(members, windows)
    ensemble = save_bundle(convert_lm_ensemble(members, windows, probs, epochs=200),
                           out / "lm-moe", force=True)  # fmt: skip
    rows = []
    for name, bundle in [*experts.items(), ("ensemble", ensemble)]:
        bpc = (
            None if name == "ensemble" else members[name].manifest.report["training"]["heldout_bpc"]
        )
        for prompt in PROMPTS.values():
            text, rates, same = _generate(bundle, prompt, tokens)
            gate = ""
            if name == "ensemble":
                with load(bundle) as session:
                    weights = session.run({"ids": encode_text(prompt)[None]})["gate"][0, -1]
                gate = ", ".join(f"{c} {w:.2f}" for c, w in zip(PROMPTS, weights, strict=True))
            rows.append(LMRow(name, bpc, prompt, text, rates, same, gate))
    return rows

"""Generation over the Session contract: identical greedy tokens on torch and ONNX Runtime for
every token architecture (SpikeGPT with firing LIFs), seeded sampling, stop rules, and constant
memory per token for the recurrent models."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from ganglion.models.errors import ShapeError
from ganglion.models.sequence import sequence_model_class
from ganglion.models.sequence.program import sequence_deployable
from ganglion.runtime import load
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.generation import GenerationError, Sampling, generate, next_token

RECURRENT = ("rwkv", "spikegpt", "gla", "gam")
ARCHITECTURES = (*RECURRENT, "gpt")
PROMPT = list(b"def main(")


def _model(architecture: str, **overrides: object):
    torch.manual_seed(0)
    cls = sequence_model_class(architecture)
    config = {**cls().to_config(), "d_model": 16, "n_layers": 1, **overrides}
    return cls.from_config(config)


def _firing_spikegpt():
    """``_model("spikegpt")`` with its output projections drawn large: the initialization
    zeroes them, so its TimeMix/ChannelMix LIFs would never reach their threshold."""
    model = _model("spikegpt")
    with torch.no_grad():
        for block in model.blocks:
            block.att.output.weight.normal_(0, 1.0)
            block.ffn.value.weight.normal_(0, 1.0)
    return model


def _varied_model(architecture: str, perturb: Callable) -> torch.nn.Module:
    """Every weight perturbed and, for SpikeGPT, firing LIFs (``_firing_spikegpt``)."""
    return perturb(_firing_spikegpt() if architecture == "spikegpt" else _model(architecture))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory, perturb: Callable) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lm")
    models = {a: _varied_model(a, perturb) for a in ARCHITECTURES}
    return {a: save_bundle(sequence_deployable(m), root / a) for a, m in models.items()}


def _lif_rates(ids: list[int], perturb: Callable) -> dict[str, float]:
    """Firing rate of each TimeMix/ChannelMix LIF of the perturbed SpikeGPT on ``ids``."""
    model = _varied_model("spikegpt", perturb)
    model.record_spikes = True
    with torch.no_grad():
        model(torch.tensor([ids]))
    return {n: s["firing_rate"] for n, s in model.spike_stats().items() if n != "emb"}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_greedy_tokens_are_identical_on_torch_and_onnxruntime(
    bundles, perturb: Callable, architecture: str
) -> None:
    sampling = Sampling(max_tokens=40)
    with load(bundles[architecture]) as a, load(bundles[architecture], backend="onnxruntime") as b:
        tokens = list(generate(a, PROMPT, sampling)), list(generate(b, PROMPT, sampling))
        text = np.array([PROMPT + tokens[0]])
        logits = [s.run({"ids": text})["logits"] for s in (a, b)]
    assert tokens[0] == tokens[1] and len(tokens[0]) == 40
    assert len(set(tokens[0])) > 1  # not one token repeated: the context steers the choice
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-4)
    if architecture == "spikegpt":  # its LIFs fired on that text, neither silent nor saturated
        rates = _lif_rates(PROMPT + tokens[0], perturb)
        assert set(rates) == {"l0.att_lif", "l0.ffn_lif"}
        assert all(0 < r < 1 for r in rates.values()), rates


def test_seeded_sampling_repeats_and_differs_by_seed(bundles) -> None:
    with load(bundles["rwkv"]) as session:
        runs = [
            list(generate(session, [65], Sampling(30, temperature=1.0, top_p=0.95, seed=s)))
            for s in (1, 1, 2)
        ]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_top_k_and_top_p_keep_only_the_likeliest() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = np.random.default_rng(0)
    top1 = {next_token(logits, Sampling(1, 1.0, top_k=1), rng) for _ in range(50)}
    nucleus = {next_token(logits, Sampling(1, 1.0, top_p=0.7), rng) for _ in range(300)}
    assert top1 == {0} and nucleus == {0, 1}


@pytest.mark.parametrize("temperature", [1e-320, 1e-300, 1e-30])
def test_a_vanishing_temperature_samples_the_best_token_without_warnings(temperature) -> None:
    """logits / T overflowed to inf (inf - inf: NaN probabilities, numpy warnings)."""
    logits = np.array([2.0, 5.0, -1.0, 4.999], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        picks = {
            next_token(logits, Sampling(1, temperature), np.random.default_rng(s))
            for s in range(20)
        }
    assert picks == {1}


def test_stop_token_ends_generation(bundles) -> None:
    with load(bundles["rwkv"]) as session:
        first = next(iter(generate(session, [66], Sampling(5))))
        tokens = list(generate(session, [66], Sampling(50, stop_tokens=(first,))))
    assert tokens == [first]


def test_bad_requests_are_one_line(bundles) -> None:
    with load(bundles["rwkv"]) as session:
        with pytest.raises(GenerationError, match="at least one token"):
            list(generate(session, [], Sampling(3)))
    with pytest.raises(GenerationError, match="top_p must be in"):
        Sampling(3, 1.0, top_p=1.5)


@pytest.mark.parametrize(
    "flags", [["--temperature", "-1"], ["--temperature", "nan"], ["--top-p", "1.5"]]
)
def test_sampling_flags_out_of_range_exit_2_like_every_flag(bundles, flags) -> None:
    from ganglion.runtime.cli import invoke

    code, _, err = invoke("generate", str(bundles["rwkv"]), "--prompt", "hi", *flags)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


def _state_bytes(state: dict[str, np.ndarray]) -> int:
    return sum(v.nbytes for v in state.values())


@pytest.mark.parametrize("architecture", [*RECURRENT, "gpt"])
def test_memory_per_token_is_constant_for_recurrent_models(architecture: str) -> None:
    """State size and process RSS at token 10 and at token 2000 (the GPT's KV cache grows)."""
    overrides = {"context": 4096} if architecture in ("gpt", "gam") else {}
    with load(sequence_deployable(_model(architecture, **overrides))) as session:
        state = session.init_state(1)
        sizes, rss = {}, {}
        for t in range(2000):
            _, state = session.step({"ids": np.array([t % 256])}, state)
            if t + 1 in (10, 2000):
                sizes[t + 1], rss[t + 1] = _state_bytes(state), _rss_bytes()
    if architecture == "gpt":
        assert sizes[2000] > 100 * sizes[10]
    else:
        assert sizes[2000] == sizes[10]
        assert rss[2000] - rss[10] < 8 << 20  # no cache growing with the context


def test_ops_per_token_count_spikes_and_compare_with_the_ann() -> None:
    from ganglion.runtime.token_ops import token_ops

    model = _firing_spikegpt()
    report = token_ops(sequence_deployable(model), np.arange(64) % 256)
    assert report["macs_per_token"] > 1000
    rates = [layer["firing_rate"] for layer in report["layers"].values()]
    assert all(0 <= r <= 1 for r in rates) and max(rates) > 0
    assert report["spike_driven_accumulates_per_token"] > 0
    assert report["ann_over_snn_energy"] >= 1.0  # a spike add never costs more than a float add
    assert report["devices"]["loihi2"]["kind"].endswith("the spiking parts only")
    dense = token_ops(sequence_deployable(_model("rwkv")), np.arange(16))
    assert dense["layers"] == {} and "loihi2" not in dense["devices"]


def test_a_run_or_prompt_past_the_token_cap_is_refused_before_it_allocates(bundles) -> None:
    """batch x T token ids per call are bounded: a 512 kB ids file used to ask for gigabytes of
    logits and activations."""
    from ganglion.runtime.kinds.sequence import MAX_RUN_TOKENS

    too_many = np.zeros((2, MAX_RUN_TOKENS // 2 + 1), np.int64)
    with load(bundles["rwkv"]) as session:
        with pytest.raises(ShapeError, match=f"at most {MAX_RUN_TOKENS}"):
            session.run({"ids": too_many})
        with pytest.raises(ShapeError, match=f"at most {MAX_RUN_TOKENS}"):
            list(generate(session, [1] * (MAX_RUN_TOKENS + 1), Sampling(1)))
        assert session.run({"ids": too_many[:1, :8]})["logits"].shape[:2] == (1, 8)


@pytest.mark.parametrize(
    ("architecture", "change"),
    [("rwkv", ("l0.att_shift", 0.5)), ("gpt", ("t", 7)), ("gla", ("l0.S", 1.0))],
)
def test_a_stored_fresh_state_that_is_not_fresh_is_refused(
    bundles, tmp_path, tampered, architecture, change
) -> None:
    """ONNX Runtime starts from initial_state.safetensors and torch from the module: a
    re-hashed bundle whose stored state differs used to answer differently on the two."""
    from safetensors.numpy import load_file, save_file

    from ganglion.models.errors import BundleError

    name, value = change

    def edit(copy: Path) -> None:
        state = load_file(copy / "initial_state.safetensors")
        state[name] = np.full_like(state[name], value)
        save_file(state, copy / "initial_state.safetensors")

    bad = tampered(bundles[architecture], tmp_path, edit=edit)
    with pytest.raises(BundleError, match=f"initial_state.safetensors: state '{name}' is not 0"):
        load(bad, backend="onnxruntime").init_state(1)
    load(bundles[architecture], backend="onnxruntime").init_state(1)  # the real one passes


def test_eval_refuses_a_language_model_in_one_line(bundles, tmp_path, one_line_error) -> None:
    """It used to flatten [B, T, V] logits and fail on an index, or score a T = 1 run as a
    256-class classifier."""
    from ganglion.runtime.cli import invoke

    data = tmp_path / "ev.npz"
    np.savez(data, x=np.zeros((4, 1), np.int64), y=np.zeros(4, np.int64))
    code, _, err = invoke("eval", str(bundles["rwkv"]), "--data", str(data))
    one_line_error(code, err, str(bundles["rwkv"]), "a language model", "eval scores classifiers")


def test_generated_control_bytes_are_printed_as_escapes() -> None:
    """A model's bytes never reach the terminal as ESC sequences, bells or carriage returns."""
    from ganglion.runtime.cli.generate import VISIBLE_CONTROLS

    shown = "a\x1b[2Jb\rc\n\td\x07\x7f\x9b".translate(VISIBLE_CONTROLS)
    assert shown == "a\\x1b[2Jb\\x0dc\n\td\\x07\\x7f\\x9b"


def test_a_manifest_that_misdeclares_ids_or_state_is_refused_naming_it(
    bundles, tmp_path, tampered
) -> None:
    """Such a manifest used to fail at the first call, differently per backend and without the
    bundle's name."""
    from ganglion.models.errors import BundleError
    from ganglion.runtime.bundle import load_bundle

    def float_ids(data: dict) -> None:
        data["inputs"][0]["dtype"] = "float32"

    def wide_state(data: dict) -> None:
        data["state"][0]["shape"] = [-1, 17]

    for edit, words in ((float_ids, "declares inputs"), (wide_state, "declares state")):
        bad = tampered(bundles["rwkv"], tmp_path, manifest=edit)
        with pytest.raises(BundleError, match=f"{bad.name}: manifest.json {words}"):
            load_bundle(bad).deployable()


def test_infinite_weights_of_our_own_architectures_are_refused(bundles, tmp_path, tampered):
    """They made every logit NaN (run answered exit 0); a user's dense network keeps its -inf
    masks."""
    from safetensors.numpy import load_file, save_file

    from ganglion.models.errors import BundleError
    from ganglion.runtime.bundle import load_bundle

    def edit(copy: Path) -> None:
        weights = load_file(copy / "weights.safetensors")
        name = sorted(weights)[0]
        weights[name].reshape(-1)[3] = -np.inf
        save_file(weights, copy / "weights.safetensors")

    bad = tampered(bundles["rwkv"], tmp_path, edit=edit)
    with pytest.raises(BundleError, match=r"weights\.safetensors: tensor .* holds infinity at"):
        load_bundle(bad).deployable()

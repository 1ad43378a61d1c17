"""SpikeGPT: the LIF equation, parallel face equals recurrent face (LIF membranes included),
training path equals inference path, binary spikes and firing rates on real text, surrogate
gradient, spike accounting; the RWKV → SpikeGPT converter (weights copied, calibration helps).

fp32 tolerance: logits and states agree within atol = rtol = 1e-5 (observed a few 1e-6). A
spike that flips between the faces (a membrane within rounding of its threshold) would break
this; with these fixed seeds none does. The WKV state ``(a, b, p)`` stands for ``a e^p`` and
``b e^p``, which other pairs represent as well, so it is compared as those (both scaled by
``e^-max(p, p')`` against overflow) within atol 1e-4, rtol 1e-5: ``a`` is a signed sum over the
whole sequence that the chunked form (T >= REFERENCE_CHUNKED_FROM_T) adds in another order
(observed up to 1.9e-5 at T = 97).
"""

import math

import numpy as np
import pytest
import torch

from ganglion.converters.spikegpt import convert_spikegpt
from ganglion.kernels import wkv
from ganglion.kernels.wkv.reference import CHUNK_SIZE
from ganglion.models.errors import ConversionError
from ganglion.models.recipes.lm_training import train_lm
from ganglion.models.recipes.text import load_corpus, random_windows
from ganglion.models.sequence import sequence_model_class
from ganglion.models.sequence.rwkv import RWKV, RWKVConfig
from ganglion.models.sequence.spikegpt import LIF, ATanSpike, SpikeGPT, SpikeGPTConfig

ATOL = RTOL = 1e-5
VOCAB = 64
CHUNKED = wkv.REFERENCE_CHUNKED_FROM_T  # 64: wkv_scan's CPU path is chunked from here on
LENGTHS = [1, 7, 16, 33, CHUNKED, CHUNKED + CHUNK_SIZE + 1]  # 97: not a multiple of a chunk


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: these tiny per-token ops run several times slower on two threads
    when the other core is busy (OpenMP workers spin), so the module runs on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(binary_embedding: bool = True) -> SpikeGPT:
    """A tiny SpikeGPT with perturbed weights, so its LIFs fire (fresh branches output 0)."""
    torch.manual_seed(0)
    config = SpikeGPTConfig(
        vocab_size=VOCAB, d_model=32, n_layers=2, binary_embedding=binary_embedding
    )
    model = SpikeGPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn_like(p))
    return model


def _ids(batch: int, length: int, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(1))


def _close(ref: torch.Tensor, got: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(got, ref, atol=ATOL, rtol=RTOL, msg=lambda m: f"{what}: {m}")


def _repeated_steps(model: SpikeGPT, ids: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
    logits = []
    for t in range(ids.shape[1]):
        out, state = model.step(ids[:, t], state)
        logits.append(out)
    return torch.stack(logits, 1), state


def test_lif_follows_spikegpt_equation():
    # V ← V + (X − V)/2, spike when V > 1, reset to 0. X = 1.5: V = 0.75, 1.125 (spike), 0.75 ...
    # X = 3: V = 1.5 every token (spike, reset). X = 0.9: V → 0.9, never spikes.
    lif = LIF(3, tau=2.0)
    x = torch.tensor([1.5, 3.0, 0.9]).expand(1, 6, 3)
    out, v = lif(x, torch.zeros(1, 3))
    assert out[0, :, 0].tolist() == [0, 1, 0, 1, 0, 1]
    assert out[0, :, 1].tolist() == [1] * 6
    assert out[0, :, 2].tolist() == [0] * 6
    assert v[0].tolist() == pytest.approx([0.0, 0.0, 0.9 * (1 - 2**-6)])


def test_lif_threshold_and_amplitude_are_per_channel():
    lif = LIF(2, tau=2.0)
    with torch.no_grad():
        lif.threshold.copy_(torch.tensor([1.0, 0.5]))
        lif.amplitude.copy_(torch.tensor([2.0, -3.0]))
    out, _ = lif(torch.full((1, 1, 2), 1.5), torch.zeros(1, 2))  # V = 0.75: only channel 1 fires
    assert out[0, 0].tolist() == [0.0, -3.0]


def test_atan_surrogate_gradient_has_the_spikegpt_shape():
    z = torch.tensor([0.0, 1.0, -1.0], requires_grad=True)
    spikes = ATanSpike.apply(z)
    spikes.sum().backward()
    assert spikes.tolist() == [0.0, 1.0, 0.0]  # Heaviside, strict
    # α / (2 (1 + (π/2·α·z)²)) with α = 2: 1 at z = 0, 1 / (1 + π²) at |z| = 1.
    assert z.grad.tolist() == pytest.approx([1.0, 1 / (1 + math.pi**2), 1 / (1 + math.pi**2)])


def test_surrogate_gradient_reaches_the_embedding_through_every_spike():
    model = _model(binary_embedding=True).train()
    logits, _ = model(_ids(2, 8))
    logits.square().mean().backward()
    # The binary embedding's true gradient is zero almost everywhere; the surrogate's is not.
    assert model.emb.weight.grad.abs().sum() > 0
    assert model.blocks[0].att.key.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("binary", [True, False], ids=["binary-emb", "float-emb"])
@pytest.mark.parametrize("length", LENGTHS, ids=lambda t: f"T{t}")
@torch.no_grad()
def test_forward_equals_repeated_step(length, binary, monkeypatch, same_states):
    model = _model(binary)
    ids = _ids(2, length)
    chunked, chunk_form = [], wkv.wkv_chunk_reference

    def counted_chunk_form(*args):
        chunked.append(args[2].shape[1])
        return chunk_form(*args)

    monkeypatch.setattr(wkv, "wkv_chunk_reference", counted_chunk_form)
    logits, state = model(ids)
    assert bool(chunked) == (length >= CHUNKED)  # the lengths cover both WKV paths
    step_logits, step_state = _repeated_steps(model, ids, model.init_state(2))
    _close(logits, step_logits, "logits")
    same_states(state, step_state)


@torch.no_grad()
def test_prefill_in_two_parts_equals_one_part(same_states):
    model = _model()
    ids = _ids(2, 33)
    logits, state = model(ids)
    first, mid = model(ids[:, :12])
    assert mid["l0.att_lif_v"].abs().sum() > 0  # the second part starts from live membranes
    second, split_state = model(ids[:, 12:], mid)
    _close(logits, torch.cat([first, second], 1), "logits")
    same_states(state, split_state)


def test_training_path_equals_inference_path():
    model = _model()
    ids = _ids(2, 16)
    trained_logits, trained_state = model(ids)  # grad enabled: the surrogate loop
    with torch.no_grad():
        logits, state = model(ids)  # kernels/lif scan
    assert torch.equal(trained_logits.detach(), logits)
    for name in state:
        assert torch.equal(trained_state[name].detach(), state[name]), name


@torch.no_grad()
def test_step_does_not_modify_its_input_state():
    model = _model()
    _, state = model(_ids(2, 5))
    kept = {k: v.clone() for k, v in state.items()}
    model.step(_ids(2, 1)[:, 0], state)
    model(_ids(2, 4), state)
    for name in kept:
        assert torch.equal(kept[name], state[name]), name


@torch.no_grad()
def test_from_config_and_state_dict_reproduce_outputs_and_neurons(same_states):
    model = _model()
    with torch.no_grad():
        model.blocks[1].ffn_lif.threshold.fill_(0.7)
        model.blocks[0].att_lif.amplitude.fill_(1.3)
    config = model.to_config()
    rebuilt = sequence_model_class(config["architecture"]).from_config(config)
    assert isinstance(rebuilt, SpikeGPT) and rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict())
    ids = _ids(2, 9)
    a, state_a = model(ids)
    b, state_b = rebuilt.eval()(ids)
    assert torch.equal(a, b)
    same_states(state_a, state_b)


def test_state_specs_add_the_membranes():
    model = _model()
    names = [s.name for s in model.state_specs()]
    assert names == list(model.init_state(1))
    assert {"l0.att_lif_v", "l0.ffn_lif_v", "l1.att_lif_v", "l1.ffn_lif_v"} <= set(names)
    assert len(names) == 2 * 7


def test_spike_counts_cover_every_neuron_and_token():
    model = _model()
    ids = _ids(3, 10)
    with torch.no_grad():
        model(ids)
    assert all(s["neuron_steps"] == 0 for s in model.spike_stats().values())  # not recording
    model.record_spikes = True
    with torch.no_grad():
        model(ids)
        model.step(ids[:, 0], model.init_state(3))
    stats = model.spike_stats()
    assert set(stats) == {"emb", "l0.att_lif", "l0.ffn_lif", "l1.att_lif", "l1.ffn_lif"}
    for name, s in stats.items():
        assert s["neuron_steps"] == 3 * 11 * 32, name
        assert 0 <= s["spikes"] <= s["neuron_steps"]
        assert s["drives"] and s["fan_out"] == 1
    model.reset_spike_stats()
    assert all(s["spikes"] == s["neuron_steps"] == 0 for s in model.spike_stats().values())


@pytest.mark.parametrize(
    "ids", [torch.tensor([[1, VOCAB]]), torch.tensor([[0.0]]), torch.tensor([1])], ids=str
)
def test_bad_ids_raise_value_error(ids):
    with pytest.raises(ValueError, match="token ids"):
        _model()(ids)


@pytest.fixture(scope="module")
def prose():
    return load_corpus("prose")


@pytest.fixture(scope="module")
def trained_rwkv(prose) -> RWKV:
    """A tiny byte-level RWKV trained briefly on prose (a few CPU seconds)."""
    torch.manual_seed(0)
    model = RWKV(RWKVConfig(d_model=32, n_layers=2))
    train_lm(model, prose, steps=25, batch=8, length=64, lr=1e-2, eval_chars=0)
    return model


def test_spikes_are_binary_and_rates_in_between_on_real_text(prose):
    torch.manual_seed(0)
    model = SpikeGPT(SpikeGPTConfig(d_model=32, n_layers=2))
    train_lm(model, prose, steps=16, batch=4, length=32, lr=1e-2, eval_chars=0)
    outputs = {}

    def keep(name: str):
        def hook(module, args, out) -> None:
            outputs[name] = out[0]

        return hook

    lifs = {n: m for n, m in model.spiking_modules().items() if isinstance(m, LIF)}
    hooks = [lif.register_forward_hook(keep(n)) for n, lif in lifs.items()]
    model.record_spikes = True
    text = torch.from_numpy(prose.heldout[:257].astype(np.int64))[None]
    with torch.no_grad():
        model(text)
    for hook in hooks:
        hook.remove()
    assert outputs.keys() == lifs.keys()
    for name, out in outputs.items():
        assert set(out.unique().tolist()) <= {0.0, 1.0}, name  # amplitude 1: spikes are 0/1
    for name, s in model.spike_stats().items():
        assert 0 < s["firing_rate"] < 1, name


def test_converted_model_carries_the_source_weights(trained_rwkv, prose):
    calib = torch.from_numpy(random_windows(prose.train, 2, 32, np.random.default_rng(0)))
    snn, report = convert_spikegpt(trained_rwkv, calib)
    assert not snn.config.binary_embedding and report.rwkv_bpc is None
    source = trained_rwkv.state_dict()
    converted = snn.state_dict()
    for name, weight in source.items():
        assert torch.equal(converted[name], weight), name
    lif_params = set(converted) - set(source)
    assert lif_params == {
        f"blocks.{i}.{lif}.{p}"
        for i in range(2)
        for lif in ("att_lif", "ffn_lif")
        for p in ("threshold", "amplitude")
    }
    assert report.calibration_tokens == calib.numel() and report.finetune_tokens == 0


def test_calibration_lowers_heldout_bpc(trained_rwkv, prose):
    calib = torch.from_numpy(random_windows(prose.train, 4, 64, np.random.default_rng(0)))
    snn, report = convert_spikegpt(trained_rwkv, calib, corpus=prose, eval_chars=1500)
    assert report.calibrated_bpc < report.uncalibrated_bpc
    assert report.rwkv_bpc < report.uncalibrated_bpc
    assert all(0 < layer.firing_rate < 1 for layer in report.layers.values())
    assert torch.all(snn.blocks[0].att_lif.threshold > 0)


def test_finetune_trains_weights_not_neurons_and_reports_its_tokens(trained_rwkv, prose):
    calib = torch.from_numpy(random_windows(prose.train, 2, 32, np.random.default_rng(0)))
    snn, report = convert_spikegpt(
        trained_rwkv, calib, 3, prose, eval_chars=300, finetune_batch=2, finetune_length=16
    )
    assert report.finetune_tokens == 3 * 2 * 16 and report.finetuned_bpc is not None
    calibrated, _ = convert_spikegpt(trained_rwkv, calib)
    tuned, fixed = snn.state_dict(), calibrated.state_dict()
    assert not torch.equal(tuned["blocks.0.att.key.weight"], fixed["blocks.0.att.key.weight"])
    assert torch.equal(tuned["blocks.1.ffn_lif.threshold"], fixed["blocks.1.ffn_lif.threshold"])


def test_conversion_rejects_bad_inputs(trained_rwkv):
    with pytest.raises(ConversionError, match="calibration ids"):
        convert_spikegpt(trained_rwkv, torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ConversionError, match="needs a corpus"):
        convert_spikegpt(trained_rwkv, torch.zeros(1, 4, dtype=torch.int64), finetune_steps=2)
    with pytest.raises(ConversionError, match="expected an RWKV"):
        convert_spikegpt(_model(), torch.zeros(1, 4, dtype=torch.int64))

"""NIR's non-spiking read-outs (LI, CubaLI, I) and recurrent Dense connections on Loihi 2:
Lava fixed_pt equals the torch fixed-point program bit for bit, the fixed-point program tracks
the float one, and the chip-fit report counts them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ganglion.converters.loihi_quantize import LoihiOptions, quantize_loihi2
from ganglion.converters.nir_program import import_nir_program
from ganglion.converters.spiking import spiking_manifest
from ganglion.models.deployable import Deployable
from ganglion.models.manifest import SpikingTime
from ganglion.models.spiking import Affine, Neuron, SpikingGraph, SpikingNetwork
from ganglion.models.spiking.graph import INPUT, OUTPUT
from ganglion.models.spiking.loihi_layout import NONSPIKING_VTH
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.loihi_fit import chip_fit
from ganglion.runtime.session import load

BRAILLE = Path(__file__).parents[1] / "spiking" / "fixtures" / "nir" / "nir_paper_braille"
READOUTS = {  # model -> the read-out's numbers: LI leaks, CubaLI adds a current, I integrates
    "li": {"decay": 0.8},
    "cubali": {"decay": 0.8, "syn_decay": 0.6},
    "i": {"decay": 1.0},
}
ONLY_ALPHA_ONE = LoihiOptions(threshold_scales=(1.0,))  # zero reset: no threshold scale to pick


def _neuron(shape: tuple[int, ...], model: str, decay: float, bias: float = 0.0,
            threshold: float = 1.0, syn_decay: float | None = None) -> Neuron:  # fmt: skip
    full = lambda value: torch.full(shape, value)  # noqa: E731
    current = {} if syn_decay is None else {"syn_decay": full(syn_decay), "syn_gain": full(0.5)}
    return Neuron(
        decay=full(decay), gain=full(1.0), bias=full(bias), threshold=full(threshold),
        v_reset=full(0.0), v_init=full(0.0), reset="zero", model=model,
        fire="none" if model in READOUTS else "gt", **current,
    )  # fmt: skip


def _program(nodes: dict, edges: list, timesteps: int) -> Deployable:
    graph = SpikingGraph(nodes, edges, (6,))
    time = SpikingTime(timesteps=timesteps)  # time-major spikes in, every step out
    return Deployable(SpikingNetwork(graph, time), spiking_manifest(graph, time), graph.to_config())


def _readout_program(model: str, biased: bool = True) -> Deployable:
    """6 -> 5 LIF -> 4 non-spiking read-out of ``model``; biases on every layer when ``biased``."""
    gen = torch.Generator().manual_seed(3)
    scale = 0.1 if biased else 0.0
    nodes = {
        "fc1": Affine(torch.randn(5, 6, generator=gen), scale * torch.randn(5, generator=gen)),
        "lif1": _neuron((5,), "lif", decay=0.9, bias=scale / 2),
        "fc2": Affine(torch.randn(4, 5, generator=gen), scale * torch.randn(4, generator=gen)),
        "readout": _neuron(
            (4,), model, bias=scale / 2 if model == "li" else 0.0, **READOUTS[model]
        ),
    }
    edges = [(INPUT, "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "readout"),
             ("readout", OUTPUT)]  # fmt: skip
    return _program(nodes, edges, timesteps=10)


def _recurrent_program() -> Deployable:
    """The Braille RNN's shape, tiny: 6 -> 5 CubaLIF with a recurrent Affine -> 3 CubaLIF (no
    biases: Lava carries a CubaLIF's synaptic bias at its steady state from the first step)."""
    gen = torch.Generator().manual_seed(15)
    nodes = {
        "fc_in": Affine(torch.randn(5, 6, generator=gen) + 0.5, torch.zeros(5)),
        "lif1": _neuron((5,), "cubalif", decay=0.9, syn_decay=0.7),
        "w_rec": Affine(torch.randn(5, 5, generator=gen), torch.zeros(5)),
        "fc_out": Affine(0.5 * torch.randn(3, 5, generator=gen) + 0.3, torch.zeros(3)),
        "lif2": _neuron((3,), "cubalif", decay=0.8, syn_decay=0.5),
    }
    edges = [(INPUT, "fc_in"), ("fc_in", "lif1"), ("lif1", "w_rec"), ("w_rec", "lif1"),
             ("lif1", "fc_out"), ("fc_out", "lif2"), ("lif2", OUTPUT)]  # fmt: skip
    return _program(nodes, edges, timesteps=16)


def _spikes(steps: int, batch: int = 3) -> torch.Tensor:
    return (torch.rand(steps, batch, 6, generator=torch.Generator().manual_seed(2)) < 0.5).float()


def _torch_and_lava(program: Deployable, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with load(program) as torch_session:
        expected = torch_session.run(x.numpy())
    with load(program, backend="lava") as lava_session:
        got = lava_session.run(x.numpy())
    return expected, got


def _stepped(program: Deployable, x: torch.Tensor) -> torch.Tensor:
    """The fixed-point program's outputs by T + D calls of ``step`` (zero input after T)."""
    module = program.module
    state, outs = module.init_state(x.shape[1]), []
    for t in range(x.shape[0] + module.depth):
        out, state = module.step(x[t] if t < x.shape[0] else torch.zeros_like(x[0]), state)
        outs.append(out)
    return torch.stack(outs[module.depth :])


@pytest.mark.lava
@pytest.mark.parametrize("model", list(READOUTS))
def test_readout_membrane_on_lava_fixed_pt_equals_the_fixed_point_program(model):
    """Lava's LIF with vth = 2^17 − 1 never fires; ``io.sink.Read`` records its v every step."""
    fixed = quantize_loihi2(_readout_program(model), _spikes(10), options=ONLY_ALPHA_ONE)
    layer = fixed.manifest.report["loihi2"]["layers"]["readout"]
    assert layer["vth"] == NONSPIKING_VTH and 0 < layer["membrane_bound"] <= 1
    x = _spikes(10)
    fixed.module.run(x, record=True)
    assert fixed.module.activity["lif1"].sum() > 0  # the membrane carries hidden spikes
    expected, got = _torch_and_lava(fixed, x)
    assert expected.shape == (10, 3, 4) and len(np.unique(expected)) > 10
    assert np.array_equal(expected, got)


@pytest.mark.parametrize("model", list(READOUTS))
def test_fixed_point_readout_tracks_the_float_membrane_and_run_equals_step(model):
    """Without biases (which Lava integrates during its synaptic delay) the fixed-point
    membrane differs from the float one only by the 8-bit weight rounding: measured ≤ 1.1 % of
    the largest |v| here, asserted ≤ 2 %."""
    program = _readout_program(model, biased=False)
    x = _spikes(10)
    fixed = quantize_loihi2(program, x, options=ONLY_ALPHA_ONE)
    reference, got = program.module.run(x), fixed.module.run(x)
    assert (got - reference).abs().max() <= 0.02 * reference.abs().max()
    assert torch.equal(_stepped(fixed, x), got)


@pytest.mark.lava
def test_recurrent_cubalif_on_lava_fixed_pt_equals_the_fixed_point_program():
    """The recurrent Affine is a Lava Dense from the LIF back into itself; its one-step
    delivery is the recurrent edge's previous step."""
    fixed = quantize_loihi2(_recurrent_program(), _spikes(16), options=ONLY_ALPHA_ONE)
    expected, got = _torch_and_lava(fixed, _spikes(16))
    assert expected.sum() > 0 and np.array_equal(expected, got)


def test_recurrent_fixed_point_program_keeps_the_float_loop_timing_and_run_equals_step():
    """Zeroing the recurrent weights changes over a tenth of the output spikes, and the
    fixed-point program agrees with the float one on ≥ 95 % of them (measured 100 %; the same
    float program with its loop one step longer agrees on 83 %): the loop runs at the float
    program's timing. ``run`` equals T + D calls of ``step``."""
    program = _recurrent_program()
    x = _spikes(16)
    fixed = quantize_loihi2(program, x, options=ONLY_ALPHA_ONE)
    out = fixed.module.run(x)
    assert (out == program.module.run(x)).float().mean() >= 0.95
    assert fixed.module.depth == 2 and torch.equal(_stepped(fixed, x), out)
    fixed.module.graph.nodes["w_rec"].weight.zero_()
    assert (fixed.module.run(x) != out).float().mean() > 0.1


@pytest.mark.lava
def test_nir_paper_braille_rnn_runs_on_lava_fixed_pt_bit_exact():
    """The NIR paper's Braille RNN file (12 -> 38 CubaLIF with a recurrent Affine -> 7 CubaLIF),
    imported, quantized on its fixture's 6 samples of 40 steps, run on Lava for two of them."""
    x = torch.from_numpy(np.load(f"{BRAILLE}.npz", allow_pickle=False)["x"]).float()
    program = import_nir_program(Path(f"{BRAILLE}.nir"))
    assert program.module.graph.recurrent
    fixed = quantize_loihi2(program, x, options=ONLY_ALPHA_ONE)
    expected, got = _torch_and_lava(fixed, x[:, :2])
    assert expected.shape == (40, 2, 7) and expected.sum() > 0
    assert np.array_equal(expected, got)


@pytest.mark.parametrize("build", [lambda: _readout_program("cubali"), _recurrent_program],
                         ids=["cubali-readout", "recurrent"])  # fmt: skip
def test_quantized_readout_and_recurrent_programs_round_trip_as_bundles(build, tmp_path):
    """The bundle (config, tensors and graph.nir of the fixed graph) rebuilds the same program."""
    x = _spikes(10)
    fixed = quantize_loihi2(build(), x, options=ONLY_ALPHA_ONE)
    with load(save_bundle(fixed, tmp_path / "q")) as session:
        assert np.array_equal(session.run(x.numpy()), fixed.module.run(x).numpy())


def test_chip_fit_counts_the_readout_and_the_recurrent_synapses():
    readout = {r["layer"]: r for r in chip_fit(_readout_program("li").module.graph)["layers"]}
    assert readout["readout"]["neurons"] == 4 and readout["readout"]["synapses"] == 5 * 4
    report = chip_fit(_recurrent_program().module.graph)
    rows = {r["layer"]: r for r in report["layers"]}
    assert report["mappable"] and report["fits"]
    assert rows["lif1"]["synapses"] == 6 * 5 + 5 * 5  # input and recurrent Dense
    assert report["neurons"] == 5 + 3


def test_time_major_calibration_is_cut_along_the_batch_not_the_time_axis(monkeypatch):
    from ganglion.converters import loihi_quantize

    monkeypatch.setattr(loihi_quantize, "_CALIB_SAMPLES", 4)
    program = _readout_program("li")
    fixed = quantize_loihi2(program, _spikes(steps=16, batch=7))  # [T, batch, 6]
    assert fixed.manifest.provenance["calibration_samples"] == 4
    report = json.dumps(fixed.manifest.report["loihi2"])
    depth = fixed.module.depth
    assert f'"worst_case_steps": {16 + depth}' in report  # all 16 steps kept, not 4

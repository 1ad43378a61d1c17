"""SpikeGPT to NIR: every projection and LIF layer exported once with the bundle's exact tensors,
the parts NIR cannot hold (WKV, LayerNorm, token shift, ...) named as the graph's boundary, the
LIF nodes stepping like SpikeGPT's LIF under NIR's rules, and one-line refusals for token models
without neurons."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from torch import nn

from ganglion.converters.nir_nodes import neuron_from_nir
from ganglion.converters.nir_semantics import semantics_for
from ganglion.converters.spikegpt_nir import TENSOR_KEY, outside_parts, spikegpt_to_nir
from ganglion.models.errors import BundleError
from ganglion.models.sequence import sequence_model_class
from ganglion.models.sequence.program import sequence_deployable
from ganglion.models.sequence.spikegpt import LIF, SpikeGPT, SpikeGPTConfig
from ganglion.models.spiking.neuron import neuron_step
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.cli import invoke as _cli

LAYERS, WIDTH = 2, 8


def _spikegpt(tie_head: bool = False) -> SpikeGPT:
    """A tiny SpikeGPT whose every tensor is distinct: random weights, and thresholds and
    amplitudes away from 1 (as the converter calibrates them), so a swapped tensor shows."""
    torch.manual_seed(0)
    config = SpikeGPTConfig(vocab_size=32, d_model=WIDTH, n_layers=LAYERS, tie_head=tie_head)
    model = SpikeGPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
        for lif in (m for m in model.modules() if isinstance(m, LIF)):
            lif.threshold.uniform_(0.5, 1.5)
            lif.amplitude.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nir.NIRGraph]:
    """A SpikeGPT bundle and its NIR export, written by ``ganglion export --nir``, read back
    with nir's own reader (type check on)."""
    root = tmp_path_factory.mktemp("spikegpt_nir")
    bundle = save_bundle(sequence_deployable(_spikegpt()), root / "spikegpt")
    code, out, err = _cli("export", str(bundle), "--nir", str(root / "lm.nir"))
    assert code == 0, err
    assert "outside NIR" in out
    return bundle, nir.read(str(root / "lm.nir"))


def _tensor_names(graph: nir.NIRGraph) -> dict[str, str]:
    return {
        name: node.metadata[TENSOR_KEY]
        for name, node in graph.nodes.items()
        if TENSOR_KEY in (node.metadata or {})
    }


def test_every_projection_and_lif_is_exported_once_with_the_bundles_exact_tensors(exported):
    bundle, graph = exported
    tensors = load_file(str(bundle / "weights.safetensors"))
    model = _spikegpt()
    projections = Counter(
        f"blocks.{i}.{name}.weight"
        for i, block in enumerate(model.blocks)
        for name, m in block.named_modules()
        if isinstance(m, nn.Linear)
    )
    lifs = Counter(
        f"blocks.{i}.{name}"
        for i, block in enumerate(model.blocks)
        for name, m in block.named_modules()
        if isinstance(m, LIF)
    )
    held = _tensor_names(graph)
    by_type = {
        kind: Counter(held[n] for n in held if type(graph.nodes[n]) is kind)
        for kind in (nir.Linear, nir.LIF, nir.Scale)
    }
    assert sum(projections.values()) == 7 * LAYERS and sum(lifs.values()) == 2 * LAYERS
    assert by_type[nir.Linear] == projections
    assert by_type[nir.LIF] == Counter(f"{n}.threshold" for n in lifs)
    assert by_type[nir.Scale] == Counter(f"{n}.amplitude" for n in lifs)
    assert not any(isinstance(n, nir.Affine) for n in graph.nodes.values())  # all bias-free
    for name, tensor_name in held.items():
        node, want = graph.nodes[name], tensors[tensor_name]
        got = {nir.Linear: "weight", nir.LIF: "v_threshold", nir.Scale: "scale"}[type(node)]
        value = np.asarray(getattr(node, got))
        assert value.shape == want.shape, name
        assert np.array_equal(value, want.astype(np.float64)), name  # bit-equal, no rounding
        assert np.array_equal(value.astype(np.float32).view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("tie_head", [False, True], ids=["untied", "tied"])
def test_every_model_tensor_is_in_one_nir_node_or_one_outside_part(tie_head: bool) -> None:
    model = _spikegpt(tie_head)
    graph = spikegpt_to_nir(model)
    placed = Counter(_tensor_names(graph).values())
    placed.update(t for part in outside_parts(graph) for t in part["tensors"])
    assert placed == Counter(list(model.state_dict()))


def test_metadata_names_wkv_and_the_other_unexpressible_parts_as_the_boundary(exported):
    _, graph = exported
    parts = {p["name"]: p for p in outside_parts(graph)}
    for i in range(LAYERS):
        wkv = parts[f"block{i}.att.wkv"]
        assert any("WKV recurrence" in op for op in wkv["ops"]) and wkv["reason"]
        assert set(wkv["inputs"]) == {"k", "v", "r"} and set(wkv["outputs"]) == {"y"}
        for port, projection in (("k", "key"), ("v", "value"), ("r", "receptance")):
            into = wkv["inputs"][port]
            assert isinstance(graph.nodes[into], nir.Output)
            assert (f"block{i}.att.{projection}", into) in graph.edges
        out_of = wkv["outputs"]["y"]
        assert isinstance(graph.nodes[out_of], nir.Input)
        assert (out_of, f"block{i}.att.output") in graph.edges
    ops = " | ".join(op for p in parts.values() for op in p["ops"])
    for expected in (
        "LayerNorm",
        "token shift",
        "embedding lookup",
        "head projection",
        "sigmoid(r) * wkv",
        "sigmoid(r) * v",
        "relu(k)**2",
    ):
        assert expected in ops
    ports = []
    for name, part in parts.items():
        own = [*part["inputs"].values(), *part["outputs"].values()]
        assert all(n.startswith(f"{name}.") for n in own), name  # named after the part
        ports += own
    boundary = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input | nir.Output)]
    assert sorted(ports) == sorted(boundary)  # each boundary node is one part's port


@pytest.mark.parametrize("with_metadata", [True, False], ids=["metadata", "plain-nir"])
def test_exported_lif_steps_like_spikegpt_lif(exported, with_metadata: bool) -> None:
    _, graph = exported
    lif = _spikegpt().blocks[1].ffn_lif
    node = graph.nodes["block1.ffn.lif"]
    if not with_metadata:  # a consumer that ignores our metadata: NIR's rules at dt = 1e-4
        node = nir.LIF(
            tau=node.tau,
            r=node.r,
            v_leak=node.v_leak,
            v_threshold=node.v_threshold,
            v_reset=node.v_reset,
        )
    neuron = neuron_from_nir("block1.ffn.lif", node, (WIDTH,), semantics_for("nir"))
    scale = torch.from_numpy(np.asarray(graph.nodes["block1.ffn.amplitude"].scale)).float()
    x = 3 * torch.randn(4, 40, WIDTH, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, want_v = lif(x, torch.zeros(4, WIDTH))
    v, steps = torch.zeros(4, WIDTH), []
    for t in range(x.shape[1]):
        s, v, _ = neuron_step(neuron, x[:, t], v, None)
        steps.append(s * scale)
    got = torch.stack(steps, dim=1)
    assert 0.1 < float((want != 0).float().mean()) < 0.9  # the neurons fire, not always
    assert torch.equal(got, want) and torch.equal(v, want_v)


@pytest.mark.parametrize(
    ("architecture", "says"),
    [("rwkv", "has no LIF neurons"), ("gam", "'gam' sequence bundle has none")],
)
def test_token_models_without_neurons_are_refused_in_one_line(tmp_path, architecture, says):
    cls = sequence_model_class(architecture)
    model = cls.from_config({**cls().to_config(), "d_model": WIDTH, "n_layers": 1})
    with pytest.raises(BundleError) as refused:
        spikegpt_to_nir(model)
    assert "\n" not in str(refused.value)
    bundle = save_bundle(sequence_deployable(model), tmp_path / architecture)
    code, _, err = _cli("export", str(bundle), "--nir", str(tmp_path / "out.nir"))
    assert code == 1 and err.count("\n") == 1 and says in err
    assert not (tmp_path / "out.nir").exists()

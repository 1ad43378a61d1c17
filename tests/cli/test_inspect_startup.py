"""``ganglion inspect`` answers from a bundle's files without torch, and says what the rebuilt
module says: the same JSON, row for row, for spiking, dense (.pt2), sequence and ensemble
programs; an exported graph's operators under ``--operators``; checksums still refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from ganglion.converters.dense import convert_dense
from ganglion.converters.ensemble import convert_ensemble
from ganglion.converters.spiking import SpikingOptions, convert_spiking, spiking_manifest
from ganglion.models.deployable import Deployable
from ganglion.models.manifest import SpikingTime
from ganglion.models.sequence import SEQUENCE_ARCHITECTURES, sequence_model_class
from ganglion.models.sequence.program import sequence_deployable
from ganglion.models.spiking import Neuron, SpikingGraph, SpikingNetwork
from ganglion.models.spiking.layers import (
    Affine,
    Conv1d,
    Conv2d,
    Delay,
    Flatten,
    Scale,
    SumPool2d,
    Threshold,
)
from ganglion.models.vision import VISION_ARCHITECTURES, vision_model_class
from ganglion.runtime.bundle import load_bundle, save_bundle
from ganglion.runtime.cli import main
from ganglion.runtime.describe import describe, describe_program
from ganglion.runtime.ensemble_calibration import all_expert_probabilities
from ganglion.runtime.kinds.spiking_rows import spiking_rows
from ganglion.runtime.program import Program
from ganglion.runtime.serving.signing import describe_signature

HEAVY = ("torch", "triton", "lava", "onnxruntime", "onnx", "numba")


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),
    ).eval()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``moe``: an ensemble of an exported dense CNN (model.pt2) and a spiking CNN, so one
    bundle holds three kinds; ``gla``: a tiny token model."""
    root = tmp_path_factory.mktemp("inspect")
    torch.manual_seed(0)
    calib = np.random.default_rng(0).uniform(0, 1, (64, 1, 8, 8)).astype(np.float32)
    batch = torch.export.Dim("batch", min=1, max=1024)
    exported = torch.export.export(_cnn(), (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: batch},))
    members = {
        "dense": convert_dense(exported),
        "spiking": convert_spiking(_cnn(), calib, None, SpikingOptions(timesteps=4)),
    }
    probs = all_expert_probabilities(members, {"x": calib})
    labels = np.random.default_rng(1).integers(0, 5, len(calib))
    moe = convert_ensemble(
        members, {"x": calib}, labels, probs, top_k=1, placement={"spiking": "loihi2"}, epochs=5
    )
    gla = sequence_model_class("gla")
    tokens = sequence_deployable(
        gla.from_config({**gla().to_config(), "d_model": 32, "n_layers": 1})
    )
    return {"moe": save_bundle(moe, root / "moe"), "gla": save_bundle(tokens, root / "gla")}


def _inspect(args: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(["inspect", *(str(a) for a in args)])
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


def _module_description(bundle: Path) -> dict[str, Any]:
    """What inspect printed before it read files: the rebuilt module's description."""
    info = describe(load_bundle(bundle))
    info["signature"] = describe_signature(bundle)
    return json.loads(json.dumps(info))


def _drop_operators(info: dict[str, Any], where: str = "top") -> list[str]:
    """Remove ``operators`` from ``info`` and its members; the programs that had them."""
    had = [where] if info.pop("operators", None) else []
    for name, member in info["members"].items():
        had += _drop_operators(member, name)
    return had


@pytest.mark.parametrize("name", ["moe", "gla"])
def test_inspect_json_from_the_files_equals_the_rebuilt_modules_description(
    bundles: dict[str, Path], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _inspect([bundles[name], "--json"], capsys)
    assert code == 0, err
    expected = _module_description(bundles[name])
    assert _drop_operators(expected) == (["dense"] if name == "moe" else [])  # the field left out
    assert out == json.dumps(expected, indent=1) + "\n"  # same keys, values and order
    if name == "moe":
        spiking = expected["members"]["spiking"]
        assert [row["type"] for row in spiking["layers"]][:3] == ["Conv2d", "Neuron", "AvgPool2d"]
        assert expected["members"]["dense"]["parameters"] == sum(
            p.numel() for p in _cnn().parameters()
        )
        assert expected["experts"] == {"dense": "-", "spiking": "loihi2"}


def test_operators_flag_gives_the_exported_graphs_operators(
    bundles: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _inspect([bundles["moe"], "--json", "--operators"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info == _module_description(bundles["moe"])
    assert info["members"]["dense"]["operators"]["conv2d"] == 1
    code, rebuilt, _ = _inspect([bundles["moe"], "--operators"], capsys)
    assert code == 0 and "  operators conv2d 1, relu 1" in rebuilt
    code, from_files, _ = _inspect([bundles["moe"]], capsys)
    assert code == 0
    assert from_files.splitlines() == [s for s in rebuilt.splitlines() if "operators" not in s]


def test_inspect_in_a_fresh_process_imports_no_heavy_module(bundles: dict[str, Path]) -> None:
    """Text and JSON, every kind; heavy modules checked after the command ran."""
    probe = (
        "import sys\n"
        "from ganglion.runtime.cli import main\n"
        "try:\n    main(sys.argv[1:])\n"
        "except SystemExit as done:\n    code = done.code\n"
        f"print('loaded:', sorted(m for m in {HEAVY!r} if m in sys.modules), 'exit:', code)\n"
    )
    runs = {
        "signed: no (no moe.sig beside it)": ["inspect", bundles["moe"]],
        '"signed": false': ["inspect", bundles["gla"], "--json"],
    }
    for signature, args in runs.items():
        done = subprocess.run(
            [sys.executable, "-c", probe, *map(str, args)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == "loaded: [] exit: 0", args
        assert signature in done.stdout


def test_tampered_member_file_is_refused_without_rebuilding(
    bundles: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = shutil.copytree(bundles["moe"], tmp_path / "moe")
    weights = bundle / "members" / "spiking" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    code, _, err = _inspect([bundle, "--json"], capsys)
    assert code == 1
    assert "weights.safetensors does not match its SHA-256" in err and len(err.splitlines()) == 1


# ---- spiking rows from config.json and the weights' shapes --------------------------------


def _graph_program() -> Deployable:
    """Conv2d, SumPool2d, Scale, a partial Flatten, Conv1d, a synaptic Neuron, Delay, Affine,
    Threshold and a recurrent loop (lif -> rec -> lif) that construction closes with a delay."""
    g = torch.Generator().manual_seed(3)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    def neuron(*shape: int, synaptic: bool = False) -> Neuron:
        syn = {"syn_decay": rand(*shape), "syn_gain": rand(*shape)} if synaptic else {}
        return Neuron(
            rand(*shape), rand(*shape), rand(*shape), rand(*shape) + 0.5,
            torch.zeros(*shape), torch.zeros(*shape), **syn, model="cubalif" if synaptic else "lif",
        )  # fmt: skip

    nodes = {
        "conv": Conv2d(rand(2, 1, 3, 3), rand(2), padding=(1, 1)),
        "pool": SumPool2d((2, 2), (2, 2)),
        "scale": Scale(rand(2, 3, 3)),
        "rows": Flatten(start_dim=1, end_dim=2),
        "conv1": Conv1d(rand(3, 2, 3), rand(3), padding=1),
        "cuba": neuron(3, 9, synaptic=True),
        "delay": Delay(torch.randint(0, 3, (3, 9), generator=g).float()),
        "flat": Flatten(),
        "fc": Affine(rand(10, 27), rand(10)),
        "lif": neuron(10),
        "rec": Affine(rand(10, 10), rand(10)),
        "spike": Threshold(rand(10)),
    }
    chain = ["input", "conv", "pool", "scale", "rows", "conv1", "cuba", "delay", "flat", "fc"]
    edges = [*zip(chain, chain[1:], strict=False)]
    edges += [("fc", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "spike"), ("spike", "output")]
    graph = SpikingGraph(nodes, edges, (1, 6, 6))
    time = SpikingTime(timesteps=4, encoding="direct", decoding="count")
    return Deployable(SpikingNetwork(graph, time), spiking_manifest(graph, time), graph.to_config())


def _shapes(deployable: Deployable) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in deployable.module.graph.state_tensors().items()}


def test_spiking_rows_from_the_config_equal_the_rebuilt_graphs() -> None:
    program = _graph_program()
    assert ["lif", "rec", 1] in program.config["edges"]  # construction closed the loop
    expected = describe(program)
    rows = spiking_rows("spiking_graph", program.config, _shapes(program))
    assert rows is not None and len(rows["layers"]) == 12
    assert {k: expected[k] for k in rows} == rows
    fixed = spiking_rows("loihi2_fixed_graph", {"graph": program.config}, _shapes(program))
    assert fixed == rows


def test_a_cycle_without_its_delay_is_described_from_the_rebuilt_module(tmp_path: Path) -> None:
    """A hand-written config whose loop has no delay-1 edge: the rows need the graph's own rule
    for closing it, so ``describe_program`` rebuilds the module and says what it says."""
    program = _graph_program()
    config = {**program.config, "edges": [e[:2] for e in program.config["edges"]]}
    assert spiking_rows("spiking_graph", config, _shapes(program)) is None
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file(program.module.graph.state_tensors(), str(tmp_path / "weights.safetensors"))
    manifest = program.manifest
    manifest.artifacts = {"config.json": "-", "weights.safetensors": "-"}
    rebuilt = Program(manifest, tmp_path).deployable()
    assert describe_program(Program(manifest, tmp_path)) == describe(rebuilt)
    assert describe(rebuilt)["layers"] == describe(program)["layers"]


@pytest.mark.parametrize(
    "kind, architecture",
    [("sequence", a) for a in SEQUENCE_ARCHITECTURES]
    + [("dense", a) for a in VISION_ARCHITECTURES],
)
def test_registered_architectures_store_only_parameters_in_their_weights(
    kind: str, architecture: str
) -> None:
    """What counting the tensors of weights.safetensors as parameters relies on."""
    if kind == "sequence":
        cls, width = sequence_model_class(architecture), 32
    else:
        cls, width = vision_model_class(architecture), 16
    model = cls.from_config({**cls().to_config(), "d_model": width, "n_layers": 1})
    stored = sum(v.numel() for v in model.state_dict().values())
    assert stored == sum(p.numel() for p in model.parameters()) > 0

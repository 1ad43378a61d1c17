"""Throughput of converted spiking networks on the CPU: Ganglion vs SpikingJelly and snnTorch.

The digits MLP and CNN are converted (IF neurons, subtract reset, v_init = θ/2, direct
encoding, membrane decoding) and the same network is rebuilt in each peer:
- **SpikingJelly 2.0**: ``IFNode(v_reset=None)`` (subtract reset) in ``step_mode='m'`` with
  its multi-step ``layer`` wrappers: its CPU path, every layer over all T at once.
- **snnTorch 1.0**: ``Leaky(β=1, reset_mechanism="subtract", reset_delay=False,
  surrogate_disable=True)`` (scalar β and θ), run in ``torch.inference_mode`` layer by layer
  (a synaptic layer over all T at once, a neuron one step at a time): its fastest schedule.
Both peers compute the first synaptic layer once and hand it to the next layer as a view
repeated over T (the input is the same at every step; SpikingJelly's examples do this with
their "static" layer); Ganglion does the same by itself. With ``--compile-peers`` (the
default) each peer is also timed under ``torch.compile`` (static shapes, compiled in the row's
first call, whose seconds the JSON line reports as ``<peer>+compile_first_call_s``): the
fastest a user of either can make it on a CPU. Ganglion is timed through ``load(...).run`` on
numpy input, session checks included, on the torch backend or (``--backend onnxruntime``, one
intra-op thread per ``--threads``) on ONNX Runtime; the peers on torch tensors.

Each (network, T, batch) row first compares the outputs (prediction agreement and the largest
difference: SpikingJelly fires on v ≥ θ and ours on v > θ, snnTorch subtracts the threshold
again on the step after a spike that leaves v above it), then times them all interleaved:
``--repeats`` rounds, each round timing every implementation once over enough calls to last
about 20 ms. It reports each one's median time per call with its spread (min–max over rounds)
and the speed-up, the median of the per-round ratios with their range. Goals: Ganglion ≥ 5×
SpikingJelly and ≥ 10× snnTorch at batch 1 and 16, ≥ 2× both at batch 256.

SpikingJelly pulls a CUDA torch when installed normally; install it without its dependencies,
beside the project (torch stays the CPU build) or in a folder given with ``--peer-path``
(absent: a JSON line and its columns say why)::

    .venv/bin/pip install --no-deps spikingjelly==2.0.0 loguru

Usage: ``python benchmarks/spiking_throughput.py [--timesteps 8,32,128] [--batches 1,16,256]
[--networks mlp,cnn] [--threads 1] [--repeats 7] [--peer-path DIR] [--no-compile-peers]
[--backend torch|onnxruntime]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable

import numpy as np
import snntorch as snn
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.spiking import Affine, AvgPool2d, Conv2d, Flatten, Neuron, SpikingNetwork
from ganglion.runtime.demo import NETWORKS, train_network
from ganglion.runtime.session import load

SAMPLE_SECONDS = 0.02  # each timed sample lasts about this long


def torch_layer(layer: object) -> nn.Module:
    """The torch module computing a stateless node of the converted graph."""
    if isinstance(layer, Affine):
        lin = nn.Linear(layer.weight.shape[1], layer.weight.shape[0])
        lin.weight.data, lin.bias.data = layer.weight.clone(), layer.bias.clone()
        return lin
    if isinstance(layer, Conv2d):
        conv = nn.Conv2d(
            layer.weight.shape[1] * layer.groups,
            layer.weight.shape[0],
            tuple(layer.weight.shape[2:]),
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
        )
        conv.weight.data, conv.bias.data = layer.weight.clone(), layer.bias.clone()
        return conv
    if isinstance(layer, AvgPool2d):
        return nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding)
    if isinstance(layer, Flatten):
        return nn.Flatten()
    raise TypeError(f"no torch twin for {type(layer).__name__}")


def _scalar(t: torch.Tensor) -> float:
    """A per-layer parameter stored per neuron (the converter writes one value per layer)."""
    values = t.unique()
    if values.numel() != 1:
        raise ValueError("the peers take one threshold per layer; convert without --per-channel")
    return float(values[0])


class SnnTorchTwin:
    """The converted chain in snnTorch, run layer by layer in ``torch.inference_mode``: its
    fastest neuron set-up, ``surrogate_disable=True`` (a plain Heaviside instead of the
    surrogate's autograd function) with scalar β and θ. ``compiled``: ``run`` under
    ``torch.compile`` (static shapes; one compile per input shape)."""

    def __init__(self, program: SpikingNetwork, compiled: bool = False) -> None:
        self.layers: list[tuple[nn.Module, torch.Tensor | None]] = []
        for layer in program.graph.nodes.values():
            if isinstance(layer, Neuron):
                leaky = snn.Leaky(
                    beta=_scalar(layer.decay),
                    threshold=_scalar(layer.threshold),
                    reset_mechanism="subtract",
                    reset_delay=False,
                    surrogate_disable=True,
                )
                self.layers.append((leaky, layer.v_init))
            else:
                self.layers.append((torch_layer(layer), None))
        self._forward = torch.compile(self._layers, dynamic=False) if compiled else self._layers

    def run(self, x: torch.Tensor, timesteps: int) -> torch.Tensor:
        """x [B, ...] -> the mean output current over T [B, out]."""
        with torch.inference_mode():
            return self._forward(x, timesteps)

    def _layers(self, x: torch.Tensor, timesteps: int) -> torch.Tensor:
        first = self.layers[0][0](x)
        seq = first.unsqueeze(0).expand(timesteps, *first.shape)
        for module, v_init in self.layers[1:]:
            if v_init is None:
                flat = module(seq.reshape(-1, *seq.shape[2:]))
                seq = flat.reshape(timesteps, -1, *flat.shape[1:])
                continue
            mem = v_init.expand(seq.shape[1:]).clone()
            spikes = []
            for x_t in seq:
                spk, mem = module(x_t, mem)
                spikes.append(spk)
            seq = torch.stack(spikes)
        return seq.sum(0) / timesteps


class SpikingJellyTwin:
    """The converted chain in SpikingJelly's multi-step mode (``step_mode='m'``).
    ``compiled``: its layers under ``torch.compile`` (static shapes; SpikingJelly 2.0 registers
    its IF neuron's multi-step op so that the compiler sees through it), the membranes set
    outside the compiled call."""

    def __init__(self, program: SpikingNetwork, compiled: bool = False) -> None:
        from spikingjelly.activation_based import layer, neuron

        wrap = {
            nn.Linear: layer.Linear,
            nn.Conv2d: layer.Conv2d,
            nn.AvgPool2d: layer.AvgPool2d,
            nn.Flatten: layer.Flatten,
        }
        modules: list[nn.Module] = []
        self.v_init: dict[int, torch.Tensor] = {}
        for node in program.graph.nodes.values():
            if isinstance(node, Neuron):
                self.v_init[len(modules)] = node.v_init
                modules.append(
                    neuron.IFNode(v_threshold=_scalar(node.threshold), v_reset=None, step_mode="m")
                )
                continue
            plain = torch_layer(node)
            twin = self._twin(wrap[type(plain)], plain)
            modules.append(twin)
        self.first = torch_layer(next(iter(program.graph.nodes.values())))
        self.rest = nn.Sequential(*modules[1:]).eval()
        self.v_init = {i - 1: v for i, v in self.v_init.items()}
        self._forward = torch.compile(self._layers, dynamic=False) if compiled else self._layers

    @staticmethod
    def _twin(cls: type, plain: nn.Module) -> nn.Module:
        """The multi-step SpikingJelly layer with ``plain``'s hyper-parameters and weights."""
        if isinstance(plain, nn.Linear):
            twin = cls(plain.in_features, plain.out_features, step_mode="m")
        elif isinstance(plain, nn.Conv2d):
            twin = cls(plain.in_channels, plain.out_channels, plain.kernel_size, plain.stride,
                       plain.padding, plain.dilation, plain.groups, step_mode="m")  # fmt: skip
        elif isinstance(plain, nn.AvgPool2d):
            twin = cls(plain.kernel_size, plain.stride, plain.padding, step_mode="m")
        else:
            twin = cls(step_mode="m")
        twin.load_state_dict(plain.state_dict())
        return twin

    def run(self, x: torch.Tensor, timesteps: int) -> torch.Tensor:
        """x [B, ...] -> the mean output current over T [B, out]. Each membrane is set to its
        v_init first (no ``reset_net`` needed: it would only be overwritten)."""
        with torch.inference_mode():
            for i, v_init in self.v_init.items():
                shape = (x.shape[0], *v_init.shape)
                self.rest[i].v = v_init.expand(shape).clone()
            return self._forward(x, timesteps)

    def _layers(self, x: torch.Tensor, timesteps: int) -> torch.Tensor:
        first = self.first(x)
        return self.rest(first.unsqueeze(0).expand(timesteps, *first.shape)).mean(0)


def spikingjelly_missing(peer_path: str | None) -> str | None:
    """None when SpikingJelly imports (from ``peer_path`` if given), else the reason."""
    if peer_path:
        sys.path.append(peer_path)
    try:
        import spikingjelly.activation_based.neuron  # noqa: F401
    except ImportError as exc:
        return (
            f"SpikingJelly not importable ({exc}); install it with "
            "`pip install --no-deps spikingjelly==2.0.0 loguru` (keeps the CPU torch)"
        )
    return None


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each function: ``repeats`` rounds, each timing every function once
    over a loop of calls lasting about SAMPLE_SECONDS (loop lengths set after a warm-up)."""
    loops = {}
    for name, fn in fns.items():
        fn()
        start = time.perf_counter()
        fn()
        loops[name] = max(1, math.ceil(SAMPLE_SECONDS / (time.perf_counter() - start)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(loops[name]):
                fn()
            times[name].append((time.perf_counter() - start) / loops[name])
    return times


def compare(
    name: str,
    timesteps: int,
    x: np.ndarray,
    impls: dict[str, Callable[[np.ndarray], np.ndarray]],
    repeats: int,
) -> dict[str, object]:
    """Compare outputs with Ganglion's, then time all of them; one JSON-able row."""
    ours = impls["ganglion"](x)
    row: dict[str, object] = {
        "benchmark": "spiking_throughput",
        "network": name,
        "timesteps": timesteps,
        "batch": int(x.shape[0]),
        "threads": torch.get_num_threads(),
    }
    for peer, fn in impls.items():
        if peer != "ganglion":
            start = time.perf_counter()
            theirs = fn(x)  # a compiled peer compiles for this shape here
            row[f"{peer}_first_call_s"] = time.perf_counter() - start
            row[f"{peer}_argmax_agreement"] = float((ours.argmax(-1) == theirs.argmax(-1)).mean())
            row[f"{peer}_max_abs_diff"] = float(np.abs(ours - theirs).max())
    times = interleaved({k: (lambda f=f: f(x)) for k, f in impls.items()}, repeats)
    for impl, secs in times.items():
        row[f"{impl}_ms"] = float(np.median(secs) * 1e3)
        row[f"{impl}_ms_range"] = [float(min(secs) * 1e3), float(max(secs) * 1e3)]
    for peer in impls:
        if peer != "ganglion":
            ratios = np.array(times[peer]) / np.array(times["ganglion"])
            row[f"speedup_vs_{peer}"] = float(np.median(ratios))
            row[f"speedup_vs_{peer}_range"] = [float(ratios.min()), float(ratios.max())]
    return row


def main() -> None:
    """Time every (network, T, batch) and print JSON lines and a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", default="8,32,128")
    parser.add_argument("--batches", default="1,16,256", help="batch sizes, comma separated")
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (all three)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--peer-path", default=os.environ.get("GANGLION_PEER_PATH"),
                        help="folder holding SpikingJelly (pip --target)")  # fmt: skip
    parser.add_argument("--compile-peers", action=argparse.BooleanOptionalAction, default=True,
                        help="also time each peer under torch.compile (compiles per shape: "
                        "tens of seconds to minutes each, once)")  # fmt: skip
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                        help="Ganglion's backend")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = {"threads": args.threads} if args.backend == "onnxruntime" else {}
    torch._dynamo.config.cache_size_limit = 64  # snnTorch compiles a graph per Leaky call site
    sj_missing = spikingjelly_missing(args.peer_path)
    if sj_missing:
        print(json.dumps({"benchmark": "spiking_throughput", "skipped": "spikingjelly",
                          "reason": sj_missing}))  # fmt: skip
    load_avg = os.getloadavg()
    peers = ["spikingjelly", "snntorch"]
    if args.compile_peers:
        peers += [f"{peer}+compile" for peer in peers]
    table = Table(
        "network", "T", "batch", "ganglion ms", *(f"vs {peer}" for peer in peers),
        "agree (all peers)",
        title=f"CPU, {args.threads} thread(s), Ganglion on {args.backend}, load average "
        f"{load_avg[0]:.2f} at start; "
        "Ganglion's median time (min–max) and its speed-up over each peer (median of per-round "
        "ratios, min–max) over interleaved rounds",
    )  # fmt: skip
    for name in args.networks.split(","):
        model, data = train_network(name)
        for steps in (int(s) for s in args.timesteps.split(",")):
            program = convert_spiking(model, data.x_train, None, SpikingOptions(timesteps=steps))
            session = load(program, backend=args.backend, **options)
            twins: dict[str, type] = {"snntorch": SnnTorchTwin}
            if not sj_missing:
                twins["spikingjelly"] = SpikingJellyTwin
            impls: dict[str, Callable[[np.ndarray], np.ndarray]] = {"ganglion": session.run}
            for peer, twin in twins.items():
                impls[peer] = _numpy(twin(program.module), steps)
                if args.compile_peers:
                    impls[f"{peer}+compile"] = _numpy(twin(program.module, True), steps)
            for batch in (int(b) for b in args.batches.split(",")):
                x = np.ascontiguousarray(np.resize(data.x_test, (batch, *data.x_test.shape[1:])))
                row = compare(name, steps, x.astype(np.float32), impls, args.repeats)
                row["load_average"] = load_avg[0]
                row["backend"] = args.backend
                print(json.dumps(row), flush=True)
                table.add_row(
                    name, str(steps), str(batch), _cell(row, "ganglion"),
                    *(_speedup(row, peer) for peer in peers),
                    " / ".join(_agreement(row, peer) for peer in peers),
                )  # fmt: skip
            session.close()
    Console(width=160).print(table)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


def _numpy(twin: SnnTorchTwin | SpikingJellyTwin, steps: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: twin.run(torch.from_numpy(x), steps).numpy()


def _cell(row: dict[str, object], impl: str) -> str:
    if f"{impl}_ms" not in row:
        return "skipped"
    low, high = row[f"{impl}_ms_range"]  # type: ignore[misc]
    return f"{row[f'{impl}_ms']:.3f} ({low:.3f}–{high:.3f})"


def _speedup(row: dict[str, object], peer: str) -> str:
    if f"speedup_vs_{peer}" not in row:
        return "-"
    low, high = row[f"speedup_vs_{peer}_range"]  # type: ignore[misc]
    return f"{row[f'speedup_vs_{peer}']:.1f}× ({low:.1f}–{high:.1f})"


def _agreement(row: dict[str, object], peer: str) -> str:
    if f"{peer}_argmax_agreement" not in row:
        return "-"
    return f"{row[f'{peer}_argmax_agreement']:.3f}"


if __name__ == "__main__":
    main()

"""Throughput of a converted spiking network: Ganglion's torch backend vs snnTorch, same run.

The digits MLP and CNN are converted (IF neurons, subtract reset, v_init = θ/2) and the same
network is rebuilt from snnTorch ``Leaky`` layers (β = 1, the same thresholds, subtract reset
without delay, the same initial membrane). Both run the same input at the same T and batch;
their predictions are compared first, then both are timed. Prints samples/s of each and
the ratio (goal: Ganglion >= 5x snnTorch on CPU), one JSON line per row plus a table.

The outputs agree on every prediction but not to the last digit: where a membrane is still
above threshold after its spike, snnTorch's subtract reset (``reset_delay=False``) subtracts
the threshold once more on the next step, and ours does not.

Usage: ``python benchmarks/spiking_throughput.py [--timesteps 32] [--batches 1,16,256]``
"""

from __future__ import annotations

import argparse
import json
import time

import snntorch as snn
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.spiking import Affine, AvgPool2d, Conv2d, Flatten, Neuron, SpikingNetwork
from ganglion.runtime.demo import NETWORKS, train_network
from ganglion.runtime.session import load


class SnnTorchTwin(nn.Module):
    """The converted graph (a chain) rebuilt from torch layers and snnTorch Leaky neurons."""

    def __init__(self, program: SpikingNetwork) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        self.v_init: dict[int, torch.Tensor] = {}
        for layer in program.graph.nodes.values():
            self.layers.append(self._twin(layer, len(self.layers)))

    def _twin(self, layer: object, index: int) -> nn.Module:
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
        if isinstance(layer, Neuron):
            self.v_init[index] = layer.v_init
            return snn.Leaky(
                beta=layer.decay.clone(),
                threshold=layer.threshold.clone(),
                init_hidden=True,
                reset_mechanism="subtract",
                reset_delay=False,
            )
        raise TypeError(f"no snnTorch twin for {type(layer).__name__}")

    def run(self, x: torch.Tensor, timesteps: int) -> torch.Tensor:
        """Direct encoding, membrane decoding (mean output current), one timestep at a time."""
        for i, layer in enumerate(self.layers):
            if i in self.v_init:
                layer.mem = self.v_init[i].expand(x.shape[0], *self.v_init[i].shape).clone()
        total = None
        for _ in range(timesteps):
            h = x
            for layer in self.layers:
                h = layer(h)
            total = h if total is None else total + h
        return total / timesteps


def best_seconds(fn, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    """Time both implementations and print JSON lines and a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=32)
    parser.add_argument("--batches", default="1,16,256", help="batch sizes, comma separated")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    table = Table(
        "network",
        "T",
        "batch",
        "ganglion samples/s",
        "snntorch samples/s",
        "ratio",
        "outputs agree",
        title=f"CPU ({torch.get_num_threads()} threads), measured",
    )
    for name in NETWORKS:
        model, data = train_network(name)
        deployable = convert_spiking(
            model, data.x_train, None, SpikingOptions(timesteps=args.timesteps)
        )
        session = load(deployable)
        twin = SnnTorchTwin(deployable.module)
        for batch in (int(b) for b in args.batches.split(",")):
            x = torch.from_numpy(data.x_test).repeat(
                batch // len(data.x_test) + 1, *[1] * (data.x_test.ndim - 1)
            )[:batch]
            row = compare(name, session, twin, x, args.timesteps, args.repeats)
            print(json.dumps(row))
            table.add_row(
                name,
                str(args.timesteps),
                str(batch),
                f"{row['ganglion_samples_per_s']:,.0f}",
                f"{row['snntorch_samples_per_s']:,.0f}",
                f"{row['ratio']:.2f}x",
                f"{row['argmax_agreement']:.3f}",
            )
    Console().print(table)


def compare(
    name: str, session, twin: SnnTorchTwin, x: torch.Tensor, timesteps: int, repeats: int
) -> dict:
    """Check both agree on ``x``, then time both; returns one JSON-able row."""
    with torch.no_grad():
        ours = torch.from_numpy(session.run(x.numpy()))
        theirs = twin.run(x, timesteps)
        agree = float((ours.argmax(-1) == theirs.argmax(-1)).float().mean())
        t_ours = best_seconds(lambda: session.run(x.numpy()), repeats)
        t_theirs = best_seconds(lambda: twin.run(x, timesteps), repeats)
    batch = x.shape[0]
    return {
        "benchmark": "spiking_throughput",
        "network": name,
        "timesteps": timesteps,
        "batch": batch,
        "ganglion_samples_per_s": batch / t_ours,
        "snntorch_samples_per_s": batch / t_theirs,
        "ratio": t_theirs / t_ours,
        "max_abs_output_diff": float((ours - theirs).abs().max()),
        "argmax_agreement": agree,
        "threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    main()

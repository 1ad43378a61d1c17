"""A bundle summarized for people and tools: kind, I/O shape conventions, layers, checksums."""

from __future__ import annotations

from typing import Any

from ganglion.models.deployable import Deployable
from ganglion.models.spiking.layers import Neuron, tensor_fields


def _shape(spec_shape: list[int]) -> str:
    return "[" + ", ".join("batch" if d == -1 else str(d) for d in spec_shape) + "]"


def io_convention(deployable: Deployable) -> dict[str, str]:
    """How inputs and outputs are shaped, in words (see README, Shapes)."""
    m = deployable.manifest
    t = m.time
    inp, out = _shape(m.inputs[0].shape), _shape(m.outputs[0].shape)
    if m.kind != "spiking":
        return {"input": inp, "output": out}
    if t.encoding == "none":
        input_text = f"[T, {inp[1:]} time-major; T is the input's first axis"
    else:
        input_text = f"{inp} raw features, encoded '{t.encoding}' over T={t.timesteps} timesteps"
    if t.decoding == "none":
        output_text = f"[T, {out[1:]} time-major spikes/currents of the output node"
    else:
        output_text = f"{out} decoded by '{t.decoding}' over the timesteps"
    return {"input": input_text, "output": output_text}


def describe(deployable: Deployable) -> dict[str, Any]:
    """JSON-able summary of a bundle."""
    m = deployable.manifest
    layers = []
    total = 0
    graph = getattr(deployable.module, "graph", None)
    if graph is not None:
        for name, layer in graph.nodes.items():
            params = sum(int(v.numel()) for v in tensor_fields(layer).values())
            if not isinstance(layer, Neuron):
                total += params
            layers.append(
                {
                    "name": name,
                    "type": type(layer).__name__,
                    "shape": list(graph.shapes[name]),
                    "parameters": params,
                    "inputs": graph.predecessors(name),
                }
            )
    else:
        total = sum(int(p.numel()) for p in deployable.module.parameters())
    return {
        "kind": m.kind,
        "architecture": m.architecture,
        "numerics": m.numerics,
        "inputs": [vars(s) for s in m.inputs],
        "outputs": [vars(s) for s in m.outputs],
        "shapes": io_convention(deployable),
        "time": vars(m.time),
        "layers": layers,
        "parameters": total,
        "state": [vars(s) for s in m.state],
        "checksums": m.artifacts,
        "report": m.report,
        "provenance": m.provenance,
    }

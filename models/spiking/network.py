"""SpikingNetwork: runs a SpikingGraph over time, as a whole sequence or one step at a time.

``run`` batches the timesteps of a synaptic layer into one tensor op (in chunks of about
CHUNK_ROWS rows, so large batches stay in cache) and scans only the neurons over time;
``step`` advances one timestep with explicit state. Both give identical results (tests
prove it).

State names (shared by every backend and the ONNX step graph):
  ``v.<neuron node>`` membrane [B, *shape] · ``t`` timestep counter [1] (int64) ·
  ``decode`` running decoded output [B, *out] (only when the program declares a decoding).
"""

from __future__ import annotations

import torch

from ganglion.kernels.lif import lif_scan
from ganglion.models.errors import ShapeError
from ganglion.models.manifest import SpikingTime
from ganglion.models.spiking.decoding import scale_decoded
from ganglion.models.spiking.encoding import encode, encode_step
from ganglion.models.spiking.graph import INPUT, OUTPUT, SpikingGraph
from ganglion.models.spiking.layers import Neuron

State = dict[str, torch.Tensor]
CHUNK_ROWS = 1024  # ``run`` batches up to this many (timestep, sample) rows per layer call


class SpikingNetwork(torch.nn.Module):
    """A spiking program: a graph plus its time semantics (timesteps, encoding, decoding)."""

    def __init__(self, graph: SpikingGraph, time: SpikingTime) -> None:
        super().__init__()
        self.graph = graph
        self.time = time
        self.activity: dict[str, torch.Tensor] = {}  # node -> spikes per neuron, last run

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - torch.nn.Module's signature
        """``to``/``cuda``/``double`` also move the graph's node tensors (plain dataclasses)."""
        self.graph.apply_to_tensors(fn)
        return super()._apply(fn, recurse)

    @property
    def takes_time_major_input(self) -> bool:
        """True when inputs are [T, B, ...] (no encoding declared)."""
        return self.time.encoding == "none"

    def _check_input(self, x: torch.Tensor, time_major: bool) -> None:
        expected = self.graph.input_shape
        got = tuple(x.shape[2:] if time_major else x.shape[1:])
        lead = "[T, batch, ...]" if time_major else "[batch, ...]"
        if got != expected or x.ndim != len(expected) + (2 if time_major else 1):
            raise ShapeError(
                f"input must be {lead} with features {expected}, got shape {tuple(x.shape)}"
            )
        if not torch.is_floating_point(x):
            raise ShapeError(f"input must be floating point, got {x.dtype}")

    def init_state(self, batch: int) -> State:
        """Fresh state for ``batch`` samples."""
        state: State = {"t": torch.zeros(1, dtype=torch.int64)}
        for name, neuron in self.graph.neurons().items():
            state[f"v.{name}"] = neuron.v_init.expand(batch, *neuron.shape).clone()
        if self.time.decoding != "none":
            state["decode"] = torch.zeros(batch, *self.graph.output_shape)
        return state

    def run(self, x: torch.Tensor, record: bool = False) -> torch.Tensor:
        """Whole input -> output (see module docstring for shapes).

        x: [B, ...] when the program declares an input encoding, else [T, B, ...].
        Returns [B, ...out] when it declares a decoding, else [T, B, ...out].
        With ``record`` the spike count of every neuron is kept in ``self.activity``.
        """
        if self.takes_time_major_input:
            self._check_input(x, time_major=True)
            seq = x
        else:
            self._check_input(x, time_major=False)
            seq = encode(x, self.time.timesteps, self.time.encoding, self.time.seed)
        steps, batch = seq.shape[:2]
        self.activity = {}
        membranes = {n: layer.v_init.expand(batch, *layer.shape) for n, layer in
                     self.graph.neurons().items()}  # fmt: skip
        chunk = max(1, CHUNK_ROWS // batch)
        out = torch.cat([self._run_chunk(seq[t : t + chunk], membranes, record)
                         for t in range(0, steps, chunk)])  # fmt: skip
        return self._decode(out)

    def _run_chunk(
        self, seq: torch.Tensor, membranes: dict[str, torch.Tensor], record: bool
    ) -> torch.Tensor:
        """Timesteps [t0, t1) of ``run``: synaptic layers batched over them, neurons scanned;
        ``membranes`` carries each neuron layer's potential to the next chunk."""
        steps, batch = seq.shape[:2]
        values: dict[str, torch.Tensor] = {INPUT: seq.reshape(steps * batch, *seq.shape[2:])}
        for name, layer in self.graph.nodes.items():
            inp = self.graph.input_of(name, values)
            if not isinstance(layer, Neuron):
                values[name] = layer.forward(inp)
                continue
            spikes, membranes[name] = _neuron_scan(
                layer, inp.reshape(steps, batch, *layer.shape), membranes[name]
            )
            if record:
                counted = spikes.sum(dim=(0, 1))
                self.activity[name] = self.activity.get(name, 0) + counted
            values[name] = spikes.reshape(steps * batch, *layer.shape)
        return self.graph.input_of(OUTPUT, values).reshape(steps, batch, *self.graph.output_shape)

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One timestep: x_t [B, ...] (raw features when an encoding is declared).

        Returns (output, new state): the output of this timestep, or the running decoded
        output (spike count so far, or output current summed so far / T) when a decoding is
        declared; state ``decode`` holds the running sum.
        """
        self._check_input(x_t, time_major=False)
        t = int(state["t"].item())
        if not self.takes_time_major_input:
            x_t = encode_step(x_t, t, self.time.encoding, self.time.seed)
        values: dict[str, torch.Tensor] = {INPUT: x_t}
        new_state: State = {"t": state["t"] + 1}
        for name, layer in self.graph.nodes.items():
            inp = self.graph.input_of(name, values)
            if isinstance(layer, Neuron):
                spikes, v = _neuron_scan(layer, inp.unsqueeze(0), state[f"v.{name}"])
                values[name], new_state[f"v.{name}"] = spikes[0], v
            else:
                values[name] = layer.forward(inp)
        out = self.graph.input_of(OUTPUT, values)
        if self.time.decoding == "none":
            return out, new_state
        new_state["decode"] = state["decode"] + out
        return scale_decoded(new_state["decode"], self.time), new_state

    def _decode(self, out: torch.Tensor) -> torch.Tensor:
        if self.time.decoding == "none":
            return out
        total = torch.zeros_like(out[0])
        for t in range(out.shape[0]):  # the same summation order as repeated ``step``
            total = total + out[t]
        return scale_decoded(total, self.time)



def _neuron_scan(
    layer: Neuron, current: torch.Tensor, v0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """current [T, B, *shape], v0 [B, *shape] -> spikes [T, B, *shape], v [B, *shape]."""
    steps, batch = current.shape[:2]
    flat = (current * layer.gain).reshape(steps, batch, -1)
    spikes, v = lif_scan(
        flat,
        v0.reshape(batch, -1).float(),
        layer.decay.reshape(-1),
        layer.threshold.reshape(-1),
        layer.bias.reshape(-1),
        layer.v_reset.reshape(-1),
        reset=layer.reset,
    )
    return spikes.reshape(current.shape), v.reshape(v0.shape)

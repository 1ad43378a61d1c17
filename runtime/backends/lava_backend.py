"""Backend ``lava``: spiking programs as Lava processes, on the Loihi 2 simulator or the chip.

Precision (``precision`` option, ``--lava-precision``): ``fixed_pt`` runs a ``loihi2-fixed``
bundle bit-accurately (Lava's ``PyLifModelBitAcc``/``PyDenseModelBitAcc``) and is the default
for one; ``floating_pt`` (the default otherwise) runs float programs, or a quantized program's
integers in float arithmetic. A float program must reset to zero with one threshold and one
decay per layer (what ``ganglion quantize`` produces); otherwise load names the node.
Device ``cpu`` uses ``Loihi2SimCfg``; device ``loihi2`` uses ``Loihi2HwCfg`` and needs Intel's
lava-loihi extension.

Timestep alignment: Lava's Dense and Conv deliver a spike's input one timestep late, so with D
synaptic layers on the longest input -> output path, output step t answers input step t − D.
``run`` executes T + D Lava steps (the encoded input continues for the extra D steps; time-major
input is padded with zeros) and keeps the last T output steps. The torch backend's fixed-point
program (``ganglion.models.spiking.fixed_point``) models the same delay, so for a quantized
bundle both backends return identical spikes.

Recurrent Dense connections are Lava Dense processes from a LIF back into its own (or an
earlier) LIF; their one-step delivery is the recurrent edge's previous step, so both backends
agree on recurrent programs too. A non-spiking read-out (LI, CubaLI, I) is a LIF that never
fires, its v recorded every step by Lava's ``io.sink.Read`` (a RefPort read after each step,
inside the same ``run`` call: no stepping from Python).

Samples run one after another on one set of processes: between samples the neurons' u, v and
the synapses' buffered input are reset and the source's data replaced (no recompilation).
A new sequence length builds a new network. Lava forks its processes then, so a caller with
other threads (a server) loads with ``isolated=True``: ``lava_worker`` runs the session in a
process of its own.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import torch

from ganglion.models.errors import BackendUnavailable, OptionError
from ganglion.models.spiking.decoding import scale_decoded
from ganglion.models.spiking.fixed_point import FixedPointNetwork, encoded_sequence, quantize_input
from ganglion.models.spiking.graph import OUTPUT
from ganglion.models.spiking.loihi_layout import SYNAPTIC, fold_pooling, synaptic_depth
from ganglion.runtime.backends.lava_network import (
    build_network,
    check_mappable,
    from_lava_layout,
    to_lava_layout,
)
from ganglion.runtime.program import Program
from ganglion.runtime.session import Backend, Session, State

INSTALL_HINT = (
    "bash scripts/setup.sh, or pip install -e '.[lava]' then "
    "pip install --no-deps --ignore-requires-python lava-nc==0.10.0"
)
PRECISIONS = ("fixed_pt", "floating_pt")
STEP_UNAVAILABLE = (
    "lava backend runs whole sequences only; for step-by-step use "
    "--backend torch on the quantized bundle (identical spikes)"
)
DEVICES = ("cpu", "loihi2")


def import_lava() -> None:
    """Import Lava (patched for Python 3.11), or BackendUnavailable with the install hint."""
    from ganglion.runtime.backends import lava_compat

    lava_compat.install()
    try:
        import lava.magma.core.run_configs  # noqa: F401
        import lava.proc.lif.process  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(
            f"lava backend: lava-nc is not installed ({exc.name} missing); {INSTALL_HINT}"
        ) from exc


class LavaSession(Session):
    """One program on one set of Lava processes; ``close`` stops them."""

    backend = "lava"

    def __init__(self, program: Program, precision: str, device: str) -> None:
        super().__init__(program, device)
        self.precision = precision
        self.module = program.deployable().module
        self.graph, self.time = fold_pooling(self.module.graph), self.module.time
        self.program = self.module if isinstance(self.module, FixedPointNetwork) else None
        self.depth = synaptic_depth(self.graph)
        self._net: Any = None
        self._net_steps = 0

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Whole input -> output (shapes as on the torch backend); one sample at a time."""
        return {"output": self._run_samples(inputs["input"])}

    def _run_samples(self, x: np.ndarray) -> np.ndarray:
        seq = self._input_sequence(x)  # [S, B, ...]
        out = np.stack(
            [self._run_sample(np.moveaxis(seq[:, b], 0, -1)) for b in range(seq.shape[1])], axis=1
        )
        out = torch.from_numpy(out[self.depth :])
        if self.program is not None:
            return self.program.decode(out.round().long()).numpy()
        out = self._readout(out)
        if self.time.decoding == "none":
            return out.numpy()
        return scale_decoded(out.sum(dim=0), self.time).numpy()

    def _step(self, inputs: dict[str, np.ndarray], state: State) -> tuple[dict, State]:
        """Not offered: Lava runs whole sequences here (the torch fixed-point program steps)."""
        raise BackendUnavailable(STEP_UNAVAILABLE)

    def _release(self) -> None:
        """Stop the Lava runtime and its processes."""
        if self._net is not None:
            net, self._net = self._net, None
            net.source.stop()

    def _input_sequence(self, x: np.ndarray) -> np.ndarray:
        """Encoded input of T + D Lava steps, T being the input's first axis when time-major."""
        steps = (x.shape[0] if self.time.time_major else self.time.timesteps) + self.depth
        seq = encoded_sequence(torch.from_numpy(x), self.time, steps)
        if self.program is not None:
            seq = quantize_input(seq, self.program.config)
        dtype = np.int32 if self.precision == "fixed_pt" else np.float64
        return seq.numpy().astype(dtype)

    def _run_sample(self, data: np.ndarray) -> np.ndarray:
        """data [*input_shape, S] -> output [S, *output_shape] of one sample."""
        from lava.magma.core.run_conditions import RunSteps

        steps = data.shape[-1]
        if self._net is not None and self._net_steps != steps:
            self._release()  # the source buffer holds one sequence length: rebuild for another
        if self._net is None:
            self._net_steps = steps
            config = self.program.config if self.precision == "fixed_pt" else None
            self._net = build_network(self.graph, config, data)
        else:
            self._reset(to_lava_layout(data))
        self._net.source.run(condition=RunSteps(num_steps=steps), run_cfg=self._run_cfg())
        raw = np.asarray(self._net.sink.data.get())
        return np.moveaxis(from_lava_layout(raw, self.graph.output_shape), -1, 0)

    def _reset(self, data: np.ndarray) -> None:
        net = self._net
        net.source.data.set(data)
        for name, lif in net.neurons.items():
            lif.u.set(np.zeros_like(net.v_init[name]))
            lif.v.set(net.v_init[name])
        for proc in net.synapses.values():
            buffer = proc.a_buff if hasattr(proc, "a_buff") else proc.a_buf
            buffer.set(np.zeros(buffer.shape))

    def _run_cfg(self) -> Any:
        from lava.magma.core.run_configs import Loihi2HwCfg, Loihi2SimCfg

        cfg = Loihi2HwCfg if self.device == "loihi2" else Loihi2SimCfg
        return cfg(select_tag=self.precision)

    def _readout(self, out: torch.Tensor) -> torch.Tensor:
        """[T, B, ...] raw output of a float program -> spikes, or currents plus their bias."""
        preds = [
            p
            for p in self.graph.predecessors(OUTPUT)
            if isinstance(self.graph.nodes.get(p), SYNAPTIC)
        ]
        bias = sum(
            (_output_bias(self.graph.nodes[p], self.graph.output_shape) for p in preds),
            torch.zeros(self.graph.output_shape),
        )
        return (out.double() + bias.double()).float()


def _output_bias(layer: Any, shape: tuple[int, ...]) -> torch.Tensor:
    return layer.bias if len(shape) == 1 else layer.bias.reshape(-1, 1, 1).expand(shape)


class LavaBackend(Backend):
    """Lava: Loihi 2 simulator (``cpu``) or chip (``loihi2``, needs lava-loihi)."""

    name = "lava"

    def load(
        self,
        program: Program,
        device: str,
        precision: str | None = None,
        isolated: bool = False,
        **options: Any,
    ) -> Session:
        """A LavaSession; BackendUnavailable (one line) when the program or host cannot run it.
        ``isolated``: run Lava in a worker process of its own (``lava_worker``), for a caller
        whose other threads must not see Lava fork (a server)."""
        if options:
            raise OptionError(f"lava backend: unknown options {sorted(options)}")
        m = program.manifest
        if m.kind != "spiking":
            raise BackendUnavailable(f"lava backend runs spiking programs only, got {m.kind!r}")
        fixed = m.numerics == "loihi2-fixed"
        precision = precision or ("fixed_pt" if fixed else "floating_pt")
        if precision not in PRECISIONS:
            raise OptionError(f"lava precision must be one of {PRECISIONS}, got {precision!r}")
        if precision == "fixed_pt" and not fixed:
            raise BackendUnavailable(
                "lava fixed_pt runs loihi2-fixed bundles: quantize first "
                "(ganglion quantize BUNDLE --target loihi2 -o QBUNDLE)"
            )
        if device not in DEVICES:
            raise BackendUnavailable(  # a real device, not one Lava runs on
                f"lava backend: device must be one of {DEVICES}, got {device!r}"
            )
        check_mappable(program.deployable().module.graph, fixed)
        import_lava()
        if device == "loihi2" and importlib.util.find_spec("lava.magma.core.model.nc") is None:
            raise BackendUnavailable(
                "lava backend: device 'loihi2' needs Intel's lava-loihi "
                "extension (Loihi2HwCfg), which is not installed"
            )
        if isolated:
            from ganglion.runtime.backends.lava_worker import WorkerSession

            return WorkerSession(program, precision, device)
        return LavaSession(program, precision, device)

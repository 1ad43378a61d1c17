"""The ``spiking`` kind: spiking graphs (``SpikingNetwork``) and their Loihi 2 fixed-point form.

Tensors: one input ``input`` and one output ``output``. With an input encoding, ``run`` and
``step`` both take raw features [batch, ...] (``run`` encodes them over T timesteps); without
one, ``run`` takes time-major [T, batch, ...]. With an output decoding, outputs are [batch, ...]
(a step returns the running decoded output); without one, ``run``'s output is time-major.
``run`` is T + delay steps (``SpikingTime``).

Architectures: ``spiking_graph`` (float) and ``loihi2_fixed_graph`` (Lava's integer
arithmetic). Artifacts, for float programs: ``graph.nir`` (the graph in NIR), the ONNX step graph
``model.onnx`` and sequence graph ``model.sequence.onnx``; fixed-point programs have none (NIR
and ONNX hold no fixed-point arithmetic: ``export`` refuses them).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ganglion.models.errors import BundleError
from ganglion.models.manifest import NIR_TIME_FIELDS, Manifest, SpikingTime, TensorSpec
from ganglion.runtime.kinds.base import (
    TIME,
    Arrays,
    ArtifactWriter,
    CpuRunFn,
    CpuStepFn,
    ProgramKind,
    Tensors,
)

if TYPE_CHECKING:
    import torch

    from ganglion.device import OpCounts
    from ganglion.models.deployable import Deployable
    from ganglion.runtime.program import Program

GRAPH_NIR = "graph.nir"


def _time(manifest: Manifest) -> SpikingTime:
    assert isinstance(manifest.time, SpikingTime)
    return manifest.time


class SpikingKind(ProgramKind):
    """Spiking graphs: timesteps, dt, input encoding and output decoding."""

    name = "spiking"

    # ---- host side -----------------------------------------------------------------------------

    def run_shape(self, manifest: Manifest, spec: TensorSpec) -> list[int]:
        """[T, batch, ...] without an encoding, else [batch, ...]."""
        shape = self.step_shape(manifest, spec)
        return [TIME, *shape] if _time(manifest).time_major else shape

    def batch_axis(self, manifest: Manifest) -> int:
        """1 for time-major input, else 0."""
        return 1 if _time(manifest).time_major else 0

    def run_output_shape(
        self, manifest: Manifest, spec: TensorSpec, batch: int, steps: int | None
    ) -> list[int]:
        """[batch, ...] with a decoding, else time-major [T, batch, ...]."""
        shape = self.step_output_shape(manifest, spec, batch)
        time = _time(manifest)
        if time.decoding != "none":
            return shape
        return [steps if time.time_major and steps is not None else time.timesteps, *shape]

    def split_steps(self, manifest: Manifest, inputs: Arrays) -> list[Arrays]:
        """T + delay steps: time-major input sliced (then zeros), raw features repeated."""
        time = _time(manifest)
        ((name, x),) = inputs.items()
        if not time.time_major:
            return [{name: x}] * (time.timesteps + time.delay)
        steps = [{name: x_t} for x_t in x]
        return steps + [{name: np.zeros_like(x[0])}] * time.delay

    def collect(self, manifest: Manifest, outputs: list[Arrays]) -> Arrays:
        """The last step's running decoded output, or the last T step outputs stacked."""
        time = _time(manifest)
        if time.decoding != "none":
            return outputs[-1]
        kept = outputs[time.delay :]
        return {name: np.stack([o[name] for o in kept]) for name in kept[0]}

    def example_shapes(self, manifest: Manifest, batch: int) -> dict[str, list[int]]:
        """[batch, ...], or time-major [T, batch, ...] with T = timesteps."""
        time, spec = _time(manifest), manifest.inputs[0]
        shape = [batch, *spec.shape[1:]]
        return {spec.name: [time.timesteps, *shape] if time.time_major else shape}

    def draw_examples(
        self, manifest: Manifest, shapes: dict[str, list[int]], rng: np.random.Generator
    ) -> Arrays:
        """Features in [0, 1)."""
        ((name, shape),) = shapes.items()
        return {name: rng.random(shape, dtype=np.float32)}

    def onnx_feeds(self, manifest: Manifest, inputs: Arrays, state: Arrays | None) -> Arrays:
        """The graphs take the encoded input: the step graph this step's input, the sequence
        graph [T, batch, ...]. Rate encoding happens here, on the host (ONNX cannot reproduce
        the seeded draws), with the same numpy encoder as the torch reference."""
        time = _time(manifest)
        ((name, x),) = inputs.items()
        if time.time_major or (time.encoding == "direct" and state is not None):
            return inputs
        if time.encoding == "direct":
            return {name: np.ascontiguousarray(np.broadcast_to(x, (time.timesteps, *x.shape)))}
        from ganglion.models.spiking.rate_code import rate_sequence, rate_spikes

        if state is None:
            return {name: rate_sequence(x, time.timesteps, time.seed)}
        t = int(np.asarray(state["t"]).reshape(-1)[0])
        return {name: rate_spikes(x, t, time.seed)}

    # ---- torch face ----------------------------------------------------------------------------

    def build_module(
        self, manifest: Manifest, config: dict[str, Any], tensors: Tensors, folder: Path
    ) -> torch.nn.Module:
        """A SpikingNetwork, or a FixedPointNetwork for ``loihi2_fixed_graph``."""
        from ganglion.models.spiking.fixed_point import ARCHITECTURE as FIXED
        from ganglion.models.spiking.fixed_point import build_fixed_point
        from ganglion.models.spiking.graph import SpikingGraph
        from ganglion.models.spiking.network import SpikingNetwork

        if manifest.architecture == FIXED:
            return build_fixed_point(config, tensors, manifest)
        if manifest.architecture != "spiking_graph":
            raise BundleError(
                f"unknown architecture {manifest.architecture!r} for spiking programs; "
                f"known: spiking_graph, {FIXED}"
            )
        return SpikingNetwork(SpikingGraph.from_config(config, tensors), _time(manifest))

    def module_tensors(self, deployable: Deployable) -> Tensors:
        """Every node's tensors, keyed ``<node>.<field>``."""
        return deployable.module.graph.state_tensors()

    def torch_run(self, module: torch.nn.Module, inputs: Tensors, record: bool = False) -> Tensors:
        """``module.run`` on ``input``; ``record`` keeps spike counts in ``module.activity``."""
        return {"output": module.run(inputs["input"], record=record)}

    def torch_step(
        self, module: torch.nn.Module, inputs: Tensors, state: Tensors
    ) -> tuple[Tensors, Tensors]:
        """``module.step`` on ``input``."""
        out, new_state = module.step(inputs["input"], state)
        return {"output": out}, new_state

    def cpu_step(self, module: torch.nn.Module) -> CpuStepFn | None:
        """``models.spiking.cpu_fast_path.CpuStep`` for a float network it suits."""
        from ganglion.models.spiking.cpu_fast_path import CpuStep
        from ganglion.models.spiking.network import SpikingNetwork

        fast = CpuStep.build(module) if isinstance(module, SpikingNetwork) else None
        if fast is None:
            return None

        def step(inputs: Arrays, state: Arrays) -> tuple[Arrays, Arrays] | None:
            result = fast(inputs["input"], state)
            return None if result is None else ({"output": result[0]}, result[1])

        return step

    def cpu_run(self, module: torch.nn.Module) -> CpuRunFn | None:
        """``models.spiking.cpu_fast_path.CpuRun`` for a float network it suits."""
        from ganglion.models.spiking.cpu_fast_path import CpuRun
        from ganglion.models.spiking.network import CHUNK_ROWS, SpikingNetwork

        fast = CpuRun.build(module) if isinstance(module, SpikingNetwork) else None
        if fast is None:
            return None

        def run(inputs: Arrays) -> Arrays | None:
            out = fast(inputs["input"], CHUNK_ROWS)
            return None if out is None else {"output": out}

        return run

    def torch_init_state(self, module: torch.nn.Module, batch: int) -> Tensors:
        """``module.init_state``."""
        return module.init_state(batch)

    def activity(self, module: torch.nn.Module) -> dict[str, np.ndarray]:
        """Spikes per neuron of each layer in the last ``run(record=True)``."""
        return {k: v.detach().cpu().numpy() for k, v in module.activity.items()}

    # ---- bundle, ONNX, describe, operation counts, parity --------------------------------------

    def artifact_writers(self, deployable: Deployable) -> dict[str, ArtifactWriter]:
        """For float programs, ``graph.nir`` and the ONNX graphs; none for fixed-point ones
        (``nir_face``: NIR holds no fixed-point arithmetic)."""
        from ganglion.converters.nir_graph import write_nir
        from ganglion.runtime.onnx_export import onnx_artifact_writers

        if deployable.manifest.numerics != "float32":
            return {}
        writers: dict[str, ArtifactWriter] = {
            GRAPH_NIR: lambda d, p: write_nir(
                d.module.graph,
                p,
                _time(d.manifest).dt,
                _time(d.manifest).semantics.get("dt_leaky"),
                nir_time(d.manifest),
            )
        }
        writers.update(onnx_artifact_writers())
        return writers

    @staticmethod
    def check_nir_export(deployable: Deployable) -> None:
        """``BundleError`` unless the program is float: a fixed-point program's integer weights
        and thresholds written as NIR would read back as another network (NIR's neurons are
        real-valued; Loihi's current and voltage decays, rounding and delays have no place in
        it). Export the float program it was quantized from instead."""
        numerics = deployable.manifest.numerics
        if numerics != "float32":
            raise BundleError(
                f"no NIR export for {numerics!r} numerics (float32 programs only: NIR has no "
                "fixed-point arithmetic; export the float program it was quantized from)"
            )

    def onnx_face(self, deployable: Deployable) -> Any:
        """The step and sequence graphs of a float spiking program."""
        if deployable.manifest.numerics != "float32":
            raise BundleError(
                f"no ONNX export for {deployable.manifest.numerics!r} numerics "
                "(float32 programs only)"
            )
        from ganglion.runtime.onnx_export.spiking import SpikingOnnx

        return SpikingOnnx(deployable)

    def describe(self, deployable: Deployable) -> dict[str, Any]:
        """Nodes with their shapes, inputs and tensors; the I/O convention in words."""
        from ganglion.models.spiking.layers import Neuron, tensor_fields

        graph = deployable.module.graph
        layers, weights, constants = [], 0, 0
        for name, layer in graph.nodes.items():
            count = sum(int(v.numel()) for v in tensor_fields(layer).values())
            if isinstance(layer, Neuron):
                constants += count
            else:
                weights += count
            layers.append(
                {
                    "name": name,
                    "type": type(layer).__name__,
                    "shape": list(graph.shapes[name]),
                    "parameters": count,
                    "inputs": graph.predecessors(name),
                }
            )
        return {
            "layers": layers,
            "parameters": weights + constants,
            "parameter_split": {"synaptic": weights, "neuron": constants},
        }

    def fresh_state_problem(self, program: Program, state: Arrays) -> str | None:
        """A spiking program starts with each membrane ``v.<neuron>`` at that neuron's
        ``v_init`` (weights.safetensors) and every other state at zero, as the torch module and
        the ONNX sequence graph do; the stored state must say the same, or ``step`` would
        start elsewhere than ``run``."""
        from ganglion.runtime.artifact_shapes import safetensors_arrays
        from ganglion.runtime.program import WEIGHTS

        wanted = (f"{name[2:]}.v_init" for name in state if name.startswith("v."))
        weights = safetensors_arrays(program, WEIGHTS, wanted)  # those only, not every weight
        for name, value in state.items():
            v_init = weights.get(f"{name[2:]}.v_init") if name.startswith("v.") else None
            if v_init is not None:
                try:
                    want = np.broadcast_to(v_init.astype(value.dtype), value.shape)
                except ValueError:
                    return f"state {name!r} {list(value.shape)} does not take {WEIGHTS}' v_init"
                if not np.array_equal(value, want):
                    return f"state {name!r} is not its neuron's v_init in {WEIGHTS}"
            elif np.any(value):
                return f"state {name!r} is not zero, as a fresh state is"
        return None

    def describe_files(self, program: Program) -> dict[str, Any] | None:
        """The same rows from config.json's graph and the weights' shapes (``spiking_rows``)."""
        from ganglion.runtime.artifact_shapes import safetensors_shapes
        from ganglion.runtime.kinds.spiking_rows import spiking_rows
        from ganglion.runtime.program import WEIGHTS

        shapes = safetensors_shapes(program, WEIGHTS)
        return spiking_rows(program.manifest.architecture, program.config(), shapes)

    def io_text(self, manifest: Manifest) -> dict[str, str]:
        """How ``run``'s input and output are shaped, in words."""
        time = _time(manifest)
        features = ", ".join(str(d) for d in manifest.inputs[0].shape[1:])
        out = ", ".join(str(d) for d in manifest.outputs[0].shape[1:])
        if time.time_major:
            inp = f"[T, batch, {features}] time-major; T is the input's first axis"
        else:
            inp = (
                f"[batch, {features}] raw features, encoded '{time.encoding}' "
                f"over T={time.timesteps}"
            )
        if time.decoding == "none":
            output = f"[T, batch, {out}] time-major spikes/currents of the output node"
        else:
            output = f"[batch, {out}] decoded by '{time.decoding}' over the timesteps"
        return {"input": inp, "output": output}

    def count_ops(self, deployable: Deployable, inputs: Arrays) -> OpCounts:
        """Synaptic ops from one recorded run, neuron updates, dispatched ops."""
        from ganglion.runtime.opcount import spiking_counts

        return spiking_counts(deployable, inputs["input"])

    def parity_atol(self, manifest: Manifest, output: str) -> float | None:
        """Spikes and spike counts exactly; membrane (float) outputs within 1e-5."""
        return 1e-5 if _time(manifest).decoding == "membrane" else None


def nir_time(manifest: Manifest) -> dict[str, Any]:
    """How the program runs over time, for graph.nir's ``ganglion_time`` metadata: NIR itself
    says nothing of T, the input encoding or the output decoding."""
    time = _time(manifest)
    return {key: getattr(time, key) for key in NIR_TIME_FIELDS}

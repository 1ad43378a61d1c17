"""The ``onnxruntime`` backend: the program's ONNX step and sequence graphs on ONNX Runtime.

``run`` executes the sequence graph (all timesteps at once); ``step`` executes the step
graph through IO bindings onto buffers the session allocates once per batch size. Two
buffer sets alternate ("ping-pong"): a step reads its state from one set and writes output
and new state into the other, so a step loop allocates nothing per step.

Ownership: the arrays ``step`` returns belong to the session and are overwritten two
steps later; copy them to keep them. Passing back the state ``step`` returned costs no copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ganglion.models.deployable import Deployable
from ganglion.models.errors import BackendUnavailable, BundleError, ShapeError
from ganglion.models.manifest import TensorSpec
from ganglion.runtime.onnx_export import naming
from ganglion.runtime.onnx_export.export import OnnxProgram, onnx_program, read_bundle_graph
from ganglion.runtime.session import Backend, Session, State, check_float_input

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def resolve_providers(
    requested: str | list[str] | None, device: str, available: list[str]
) -> list[str]:
    """Execution providers in priority order for ``device``.

    requested: names or aliases (cpu, cuda, tensorrt), a list or a comma-separated string;
    None picks CUDA then CPU for a cuda device, CPU otherwise. Raises BackendUnavailable
    for a provider this onnxruntime build lacks.
    """
    if requested is None:
        names = ["cuda", "cpu"] if device.startswith("cuda") else ["cpu"]
    elif isinstance(requested, str):
        names = [n.strip() for n in requested.split(",") if n.strip()]
    else:
        names = list(requested)
    providers = [PROVIDER_ALIASES.get(n.lower(), n) for n in names]
    missing = [p for p in providers if p not in available]
    if missing or not providers:
        raise BackendUnavailable(
            f"onnxruntime backend: provider(s) {missing or names} not available; "
            f"this build has {', '.join(available)}"
        )
    return providers


def _shape(spec: TensorSpec, batch: int) -> tuple[int, ...]:
    return tuple(batch if d == -1 else d for d in spec.shape)


class StepBuffers:
    """Input, output and state buffers of one batch size, twice, each with its IO binding.

    ``bindings[k]`` reads state set ``k`` and writes output and state set ``1 - k``.
    """

    def __init__(
        self,
        session: Any,
        input_spec: TensorSpec,
        output_spec: TensorSpec,
        state_specs: list[TensorSpec],
        batch: int,
    ) -> None:
        self.input = np.zeros(_shape(input_spec, batch), dtype=input_spec.dtype)
        self.outputs = [
            np.zeros(_shape(output_spec, batch), dtype=output_spec.dtype) for _ in range(2)
        ]
        self.states: list[State] = [
            {s.name: np.zeros(_shape(s, batch), dtype=s.dtype) for s in state_specs}
            for _ in range(2)
        ]
        self.bindings = [self._bind(session, k) for k in range(2)]

    def _bind(self, session: Any, k: int) -> Any:
        binding = session.io_binding()
        _bind_input(binding, naming.INPUT, self.input)
        for name, array in self.states[k].items():
            _bind_input(binding, naming.state_input(name), array)
        _bind_output(binding, naming.OUTPUT, self.outputs[1 - k])
        for name, array in self.states[1 - k].items():
            _bind_output(binding, naming.state_output(name), array)
        return binding

    def owner(self, state: State) -> int | None:
        """Which buffer set ``state`` is (same arrays), or None for a caller's own arrays."""
        for k, own in enumerate(self.states):
            if state.keys() == own.keys() and all(state[n] is a for n, a in own.items()):
                return k
        return None

    def load(self, state: State) -> None:
        """Copy a caller's state into buffer set 0."""
        for name, array in self.states[0].items():
            if name not in state:
                raise ShapeError(f"state has no {name!r}; expected {sorted(self.states[0])}")
            value = np.asarray(state[name])
            if value.shape != array.shape:
                raise ShapeError(
                    f"state {name!r} must be {list(array.shape)}, got {list(value.shape)}"
                )
            np.copyto(array, value, casting="same_kind")


def _bind_input(binding: Any, name: str, array: np.ndarray) -> None:
    binding.bind_input(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)


def _bind_output(binding: Any, name: str, array: np.ndarray) -> None:
    binding.bind_output(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)


class OnnxRuntimeSession(Session):
    """A program's step and sequence graphs as two ONNX Runtime inference sessions."""

    backend = "onnxruntime"

    def __init__(
        self,
        deployable: Deployable,
        program: OnnxProgram,
        bundle_dir: Path | None,
        device: str,
        providers: list[str],
        threads: int | None,
    ) -> None:
        import onnxruntime as ort

        self.manifest = deployable.manifest
        self.device = device
        self.providers = providers
        self._module = deployable.module
        self._program = program
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads
        graphs = {g: read_bundle_graph(deployable, bundle_dir, g) for g in ("step", "sequence")}
        self._step = ort.InferenceSession(graphs["step"], options, providers=providers)
        self._sequence = ort.InferenceSession(graphs["sequence"], options, providers=providers)
        self._buffers: dict[int, StepBuffers] = {}

    def run(self, x: np.ndarray) -> np.ndarray:
        """Whole input -> output through the sequence graph."""
        seq = self._program.sequence_input(check_float_input(x))
        return self._sequence.run([naming.OUTPUT], {naming.INPUT: seq})[0]

    def _buffers_for(self, batch: int) -> StepBuffers:
        if batch not in self._buffers:
            m = self.manifest
            self._buffers[batch] = StepBuffers(
                self._step, m.inputs[0], m.outputs[0], m.state, batch
            )
        return self._buffers[batch]

    def step(self, x_t: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """One timestep through the step graph (see the module docstring on buffer ownership)."""
        encoded = self._program.step_input(check_float_input(x_t), state)
        buffers = self._buffers_for(encoded.shape[0])
        k = buffers.owner(state)
        if k is None:
            buffers.load(state)
            k = 0
        np.copyto(buffers.input, encoded)
        self._step.run_with_iobinding(buffers.bindings[k])
        return buffers.outputs[1 - k], buffers.states[1 - k]

    def init_state(self, batch: int) -> State:
        """Fresh state for ``batch`` samples."""
        return {k: v.cpu().numpy() for k, v in self._module.init_state(batch).items()}

    def close(self) -> None:
        """Drop the inference sessions and buffers."""
        self._buffers.clear()


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime: CPU here; CUDA and TensorRT execution providers where installed."""

    name = "onnxruntime"

    def load(
        self, deployable: Deployable, bundle_dir: Path | None, device: str, **options: Any
    ) -> Session:
        """A session; options: ``providers`` (names or aliases), ``threads`` (intra-op)."""
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(
                "onnxruntime backend: the 'onnxruntime' package is not "
                "installed (pip install onnxruntime)"
            ) from exc
        providers = resolve_providers(
            options.pop("providers", None), device, ort.get_available_providers()
        )
        threads = options.pop("threads", None)
        if options:
            raise BackendUnavailable(
                f"onnxruntime backend: unknown options {sorted(options)} "
                "(known: providers, threads)"
            )
        if threads is not None and int(threads) < 1:
            raise BackendUnavailable(f"onnxruntime backend: threads must be >= 1, got {threads}")
        if not (device == "cpu" or device.startswith("cuda")):
            raise BackendUnavailable(
                f"onnxruntime backend: unknown device {device!r} (use cpu or cuda)"
            )
        try:
            program = onnx_program(deployable)
        except BundleError as exc:
            raise BackendUnavailable(f"onnxruntime backend: {exc}") from exc
        return OnnxRuntimeSession(
            deployable,
            program,
            bundle_dir,
            device,
            providers,
            None if threads is None else int(threads),
        )

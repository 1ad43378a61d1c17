"""The ``onnxruntime`` backend: a program's ONNX graphs on ONNX Runtime, with no torch needed.

Graphs (naming: ``runtime.onnx_export.naming``): ``model.onnx`` is the step graph (one timestep
or token, state as ``state_in.<name>`` inputs and ``state_out.<name>`` outputs; for a program
without steps, the whole program); ``model.sequence.onnx``, where the kind has one, runs the
whole input at once (``run``), and when it also takes state it serves ``prefill``; a spiking
chain (MLPs and CNNs as converted) runs it cut at its neurons instead (``onnx_layerwise``:
its stateless segments on ONNX Runtime, the neurons through the compiled CPU scan; the same
bits, several times faster). Without a sequence graph ``run`` is repeated ``step``. The kind
prepares host-side feeds (e.g. a spiking program's rate encoding) and the fresh state comes
from the bundle.

``step`` runs through IO bindings onto buffers the session allocates once per batch size: three
sets of outputs and state, a step reading its state from one and writing into another
(``StepBuffers``), so a step loop allocates nothing. Programs whose state grows (a KV cache) run
without bindings. Ownership: the arrays ``step`` returns belong to the session; a step never
writes over the state it reads or what the step before it returned, so they hold until two
more steps have returned (a retry from an older state included); copy them to keep them
longer. ``run`` and ``prefill`` never touch them. Passing back the state ``step`` returned
costs no copy.
"""

from __future__ import annotations

import numbers
import re
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ganglion.converters.onnx_file import ort_message
from ganglion.models.errors import (
    BackendFailure,
    BackendUnavailable,
    BundleError,
    OptionError,
    first_line,
)
from ganglion.models.manifest import Manifest, TensorSpec
from ganglion.runtime.onnx_export import naming
from ganglion.runtime.onnx_export.export import bundle_graph, checked_graph_file
from ganglion.runtime.program import Program
from ganglion.runtime.session import Backend, Session, State

Arrays = dict[str, np.ndarray]
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}

MAX_THREADS = 256  # intra-op threads; ORT starts them all at once (a million crashed it)


def resolve_providers(
    requested: str | list[str] | None,
    device: str,
    available: list[str],
    known: list[str] | None = None,
) -> list[str]:
    """Execution providers in priority order for ``device``.

    requested: names or aliases (cpu, cuda, tensorrt), a list or a comma-separated string;
    None picks CUDA then CPU for a cuda device, CPU otherwise. Raises OptionError for no
    names or a name no ONNX Runtime build has (``known``, where given), BackendUnavailable
    for a provider this build lacks.
    """
    if requested is None:
        names = ["cuda", "cpu"] if device.startswith("cuda") else ["cpu"]
    elif isinstance(requested, str):
        names = [n.strip() for n in requested.split(",") if n.strip()]
    elif isinstance(requested, list | tuple) and all(isinstance(n, str) for n in requested):
        names = list(requested)
    else:
        raise OptionError(
            "onnxruntime backend: providers must be names (a list, or a comma-separated "
            f"string), got {requested!r}"
        )
    providers = [PROVIDER_ALIASES.get(n.lower(), n) for n in names]
    unknown = [p for p in providers if known is not None and p not in known]
    if unknown or not providers:
        raise OptionError(
            f"onnxruntime backend: unknown provider(s) {unknown or requested!r}; use names such "
            f"as cpu, cuda, tensorrt or {', '.join(available)}"
        )
    missing = [p for p in providers if p not in available]
    if missing:
        raise BackendUnavailable(
            f"onnxruntime backend: provider(s) {missing or names} not available; "
            f"this build has {', '.join(available)}"
        )
    return providers


ONNX_DTYPES = {  # ONNX Runtime's type names -> the manifest's
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def graph_problem(graph: Any, manifest: Manifest) -> str | None:
    """Why a whole-program or step graph cannot serve ``manifest`` (a tensor missing, another
    dtype or rank, a size fixed where the manifest lets it vary or fixed to another value; a
    step graph's state as ``state_in.<name>`` and ``state_out.<name>``), or None."""
    state_in = [TensorSpec(naming.state_input(s.name), s.shape, s.dtype) for s in manifest.state]
    state_out = [TensorSpec(naming.state_output(s.name), s.shape, s.dtype) for s in manifest.state]
    for role, specs, args in (
        ("input", [*manifest.inputs, *state_in], graph.get_inputs()),
        ("output", [*manifest.outputs, *state_out], graph.get_outputs()),
    ):
        found = {arg.name: arg for arg in args}
        for spec in specs:
            arg = found.get(spec.name)
            if arg is None:
                return f"the graph has no {role} {spec.name!r} (it has {', '.join(found)})"
            dtype = ONNX_DTYPES.get(arg.type, arg.type)
            shape = [d if isinstance(d, int | str) else "?" for d in arg.shape]
            declared = ["batch" if d == -1 and i == 0 else d for i, d in enumerate(spec.shape)]
            differ = len(shape) != len(spec.shape) or any(
                isinstance(g, int) and g != d for g, d in zip(shape, spec.shape, strict=False)
            )
            if dtype != spec.dtype or differ:
                return (
                    f"{role} {spec.name!r} is {shape} {dtype} in the graph, {declared} "
                    f"{spec.dtype} in the manifest"
                )
    declared_inputs = {s.name for s in (*manifest.inputs, *state_in)}
    extra = [arg.name for arg in graph.get_inputs() if arg.name not in declared_inputs]
    if extra:
        return f"the graph takes input {extra[0]!r}, which the manifest does not declare"
    return None


def _shape(spec: TensorSpec, batch: int) -> tuple[int, ...]:
    return tuple(batch if d == -1 else d for d in spec.shape)


def _fixed(spec: TensorSpec) -> bool:
    return -1 not in spec.shape[1:]


class StepBuffers:
    """Inputs, and three sets of outputs and state, of one batch size, with an IO binding per
    (state read, set written) pair, made on first use.

    A step reads the state set its input state is (or loads a caller's own arrays into one) and
    writes the least recently written set that is neither that one nor the set the last step
    returned: a step never overwrites the state it reads or what the step before it returned,
    so returned arrays hold until two more steps have returned, a retry from an older state
    included. Each thread steps on sets of its own, so another thread's steps never write over
    what a thread was handed.
    """

    SETS = 3

    def __init__(self, session: Any, program: Program, feeds: Arrays, batch: int) -> None:
        m = program.manifest
        self._session = session
        self.inputs = {name: np.zeros_like(a) for name, a in feeds.items()}
        self.outputs = [
            {s.name: np.zeros(_shape(s, batch), s.dtype) for s in m.outputs}
            for _ in range(self.SETS)
        ]
        self.states: list[State] = [
            {s.name: np.zeros(_shape(s, batch), s.dtype) for s in m.state} for _ in range(self.SETS)
        ]
        self._bindings: dict[tuple[int, int], Any] = {}
        self._written = list(range(self.SETS))  # least recently written first
        self.last: int | None = None  # the set the last step returned

    def binding(self, read: int, write: int) -> Any:
        """The IO binding reading state set ``read`` and writing outputs and state ``write``."""
        if (read, write) not in self._bindings:
            binding = self._session.io_binding()
            for name, array in self.inputs.items():
                _bind(binding.bind_input, name, array)
            for name, array in self.states[read].items():
                _bind(binding.bind_input, naming.state_input(name), array)
            for name, array in self.outputs[write].items():
                _bind(binding.bind_output, name, array)
            for name, array in self.states[write].items():
                _bind(binding.bind_output, naming.state_output(name), array)
            self._bindings[(read, write)] = binding
        return self._bindings[(read, write)]

    def owner(self, state: State) -> int | None:
        """Which buffer set ``state`` is (same arrays), or None for a caller's own arrays."""
        for k, own in enumerate(self.states):
            if state.keys() == own.keys() and all(state[n] is a for n, a in own.items()):
                return k
        return None

    def free(self, *keep: int | None) -> int:
        """The least recently written set other than ``keep``, now the most recent."""
        k = next(k for k in self._written if k not in keep)
        self._written.remove(k)
        self._written.append(k)
        return k

    def load(self, state: State) -> int:
        """Copy a caller's state into a free set (not the last one returned); returns it."""
        k = self.free(self.last)
        for name, array in self.states[k].items():
            np.copyto(array, np.asarray(state[name]), casting="same_kind")
        return k


def _bind(method: Any, name: str, array: np.ndarray) -> None:
    method(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)


class OnnxRuntimeSession(Session):
    """A program's ONNX graphs as ONNX Runtime inference sessions."""

    backend = "onnxruntime"

    def __init__(
        self,
        program: Program,
        device: str,
        providers: list[str],
        threads: int | None,
        precision: str = "fp32",
    ) -> None:
        import onnxruntime as ort

        super().__init__(program, device)
        self.providers = providers
        self._program = program
        options = ort.SessionOptions()
        options.log_severity_level = 4  # failures are raised (one line), not also logged
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads

        def open_graph(data: bytes) -> Any:
            try:
                return ort.InferenceSession(data, options, providers=providers)
            except Exception as exc:  # ORT raises its own types with multi-line messages
                first = first_line(exc)
                raise BundleError(
                    f"{program.name}: ONNX Runtime cannot load a graph: {first}"
                ) from exc

        variant = naming.precision_file(precision)
        if precision == "fp32":
            self._step_graph = open_graph(bundle_graph(program, "step"))
        else:
            if not program.has_artifact(variant):
                raise BackendUnavailable(
                    f"onnxruntime backend: {program.name} has no {precision} graph ({variant}); "
                    "convert with --precision int8 --calib CALIB.npz"
                )
            self._step_graph = open_graph(checked_graph_file(program, variant))
        problem = graph_problem(self._step_graph, self.manifest)  # a manifest edited apart
        if problem is not None:
            raise BundleError(f"{program.name}/{variant}: {problem}")
        sequence = (
            bundle_graph(program, "sequence", required=False) if precision == "fp32" else None
        )
        self._sequence = None if sequence is None else open_graph(sequence)
        self._layerwise = None  # a spiking chain's run, layer by layer (``onnx_layerwise``)
        if sequence is not None and self.kind.name == "spiking":
            from ganglion.runtime.backends.onnx_layerwise import LayerwiseRun

            self._layerwise = LayerwiseRun.build(program, options, providers, sequence)
        names = set() if self._sequence is None else {i.name for i in self._sequence.get_inputs()}
        self._sequence_takes_state = any(n.startswith(naming.STATE_IN_PREFIX) for n in names)
        self._bindable = all(_fixed(s) for s in (*self.manifest.outputs, *self.manifest.state))
        self._per_thread = threading.local()  # ``buffers``: this thread's StepBuffers by key
        self._stepping_privately = False  # ``_prefill``'s steps use buffers of their own
        self._output_names = [s.name for s in self.manifest.outputs]
        self._state_names = [s.name for s in self.manifest.state]
        if self._layerwise is not None and not self._layerwise_agrees():
            self._layerwise = None

    def _layerwise_agrees(self) -> bool:
        """Whether the layer-wise run gives the sequence graph's bits on a random input (two
        samples, the program's T): where a bundle's graph, config and manifest disagree, or this
        machine's ONNX Runtime rounds a row differently with the rows per call, the sequence
        graph keeps every call. Kernels off at load: not checked, so not used."""
        probe = self.kind.example_inputs(self.manifest, batch=2)
        try:
            got = self._layerwise.run(probe)
            want = self._sequence_run(probe)
        except Exception:  # noqa: BLE001 - a graph that fails here fails in ``run`` as before
            return False
        return got is not None and all(np.array_equal(got[k], v) for k, v in want.items())

    def _run(self, inputs: Arrays) -> Arrays:
        if self._layerwise is not None:
            outputs = self._graph_call(self._layerwise.run, inputs)
            if outputs is not None:
                return outputs
        return self._sequence_run(inputs)

    def _sequence_run(self, inputs: Arrays) -> Arrays:
        """``run`` on the sequence graph, or as repeated steps where there is none."""
        if self._sequence is None:
            batch = next(iter(inputs.values())).shape[self.kind.batch_axis(self.manifest)]
            return self._prefill(inputs, self._fresh_state(self._checked_batch(batch)))[0]
        feeds = dict(self.kind.onnx_feeds(self.manifest, inputs, None))
        if self._sequence_takes_state:
            batch = next(iter(inputs.values())).shape[self.kind.batch_axis(self.manifest)]
            state = self._fresh_state(self._checked_batch(batch))
            feeds.update({naming.state_input(k): v for k, v in state.items()})
        values = self._graph_call(self._sequence.run, self._output_names, feeds)
        return dict(zip(self._output_names, values, strict=True))

    def _prefill(self, inputs: Arrays, state: State) -> tuple[Arrays, State]:
        if self._sequence is None or not self._sequence_takes_state:
            # repeated steps on buffers of their own: the arrays ``step`` returned stay intact
            self._stepping_privately = True
            try:
                outputs, state = super()._prefill(inputs, state)
            finally:
                self._stepping_privately = False
            return outputs, {k: np.array(v) for k, v in state.items()}
        feeds = dict(self.kind.onnx_feeds(self.manifest, inputs, None))
        feeds.update({naming.state_input(k): np.asarray(v) for k, v in state.items()})
        names = self._output_names + [naming.state_output(n) for n in self._state_names]
        values = self._graph_call(self._sequence.run, names, feeds)
        n = len(self._output_names)
        outputs = dict(zip(self._output_names, values[:n], strict=True))
        return outputs, dict(zip(self._state_names, values[n:], strict=True))

    def _step(self, inputs: Arrays, state: State) -> tuple[Arrays, State]:
        feeds = self.kind.onnx_feeds(self.manifest, inputs, state)
        if not self._bindable:
            all_feeds = dict(feeds)
            all_feeds.update({naming.state_input(k): np.asarray(v) for k, v in state.items()})
            names = self._output_names + [naming.state_output(n) for n in self._state_names]
            values = self._graph_call(self._step_graph.run, names, all_feeds)
            n = len(self._output_names)
            outputs = dict(zip(self._output_names, values[:n], strict=True))
            return outputs, dict(zip(self._state_names, values[n:], strict=True))
        key = (self._stepping_privately, *((k, v.shape, v.dtype.str) for k, v in feeds.items()))
        own = self._per_thread.__dict__.setdefault("buffers", {})
        buffers = own.get(key)
        if buffers is None:
            batch = next(iter(feeds.values())).shape[0]
            buffers = own[key] = StepBuffers(self._step_graph, self._program, feeds, batch)
        read = buffers.owner(state)
        if read is None:
            read = buffers.load(state)
        write = buffers.free(read, buffers.last)
        for name, array in feeds.items():
            np.copyto(buffers.inputs[name], array)
        self._graph_call(self._step_graph.run_with_iobinding, buffers.binding(read, write))
        buffers.last = write
        # new dicts of the same arrays: a caller who replaces an entry replaces it in theirs
        # (the next step then loads it), never in the set the bindings point at
        return dict(buffers.outputs[write]), dict(buffers.states[write])

    def _graph_call(self, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)`` on an ONNX Runtime session; its failure (ORT's own exception types,
        several lines) as one BackendFailure naming the bundle."""
        try:
            return call(*args)
        except Exception as exc:
            raise BackendFailure(
                f"{self._program.name}: ONNX Runtime failed: {ort_message(exc)}"
            ) from exc

    def _release(self) -> None:
        """Drop the step buffers (every thread's) and the ONNX Runtime sessions."""
        self._per_thread = threading.local()
        self._step_graph = self._sequence = self._layerwise = None


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime: CPU here; CUDA and TensorRT execution providers where installed."""

    name = "onnxruntime"

    def load(self, program: Program, device: str, **options: Any) -> Session:
        """A session; options: ``providers`` (names or aliases), ``threads`` (intra-op)."""
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(
                "onnxruntime backend: the 'onnxruntime' package is not "
                "installed (pip install onnxruntime)"
            ) from exc
        providers = resolve_providers(
            options.pop("providers", None),
            device,
            ort.get_available_providers(),
            ort.get_all_providers(),
        )
        threads = options.pop("threads", None)
        precision = str(options.pop("precision", "fp32"))
        if options:
            raise OptionError(
                f"onnxruntime backend: unknown options {sorted(options)} "
                "(known: providers, threads, precision)"
            )
        if precision not in naming.PRECISIONS:
            raise OptionError(
                f"onnxruntime backend: precision must be one of {naming.PRECISIONS}, "
                f"got {precision!r}"
            )
        whole = isinstance(threads, numbers.Integral) and not isinstance(threads, bool)
        if threads is not None and not (whole and 1 <= threads <= MAX_THREADS):
            raise OptionError(
                f"onnxruntime backend: threads must be a whole number in [1, {MAX_THREADS}], "
                f"got {threads!r}"
            )
        if not re.fullmatch(r"cpu|cuda(:[0-9]{1,4})?", device):
            raise OptionError(f"onnxruntime backend: unknown device {device!r} (use cpu or cuda)")
        return OnnxRuntimeSession(
            program, device, providers, None if threads is None else int(threads), precision
        )

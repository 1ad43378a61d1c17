"""What every program kind provides: one class per kind, found through ``manifest.kind``.

A kind holds everything kind-specific, so that the session, the bundle, the backends, the
parity suite, ``inspect`` and ``profile`` never probe a module for what it is:
- the host side of the Session contract (numpy, no torch): the shape ``run`` expects of each
  input, how ``run``'s inputs split into ``step`` inputs and how step outputs collect back,
  example inputs, and the host-side feeds of the ONNX graphs;
- the torch face (torch imported inside): rebuilding the module from a bundle, the tensors a
  bundle stores, and calling the module's ``run``/``step``/``init_state`` with named tensors;
- the bundle's artifacts (writers and the files a bundle must hold), the ONNX faces, describe,
  operation counts, and the parity tolerance of each output.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ganglion.models.errors import BackendUnavailable, ShapeError
from ganglion.models.manifest import Manifest, TensorSpec

if TYPE_CHECKING:
    import torch

    from ganglion.device import OpCounts
    from ganglion.models.deployable import Deployable
    from ganglion.runtime.program import Program

Arrays = dict[str, np.ndarray]
Tensors = dict[str, "torch.Tensor"]
# (inputs, state) -> (outputs, new state), or None where the torch path must take this step
CpuStepFn = Callable[[Arrays, Arrays], "tuple[Arrays, Arrays] | None"]
CpuRunFn = Callable[[Arrays], "Arrays | None"]  # inputs -> outputs, or None: the torch path
ArtifactWriter = Callable[["Deployable", Path], None]
BATCH, TIME = -1, -2  # markers in an expected shape: the batch axis, a time axis of any length
MAX_EXAMPLE_BYTES = 1 << 30  # larger example inputs (serve's warm-up, profile) are refused
EXAMPLE_DTYPE = "float64"  # examples count 8 bytes a value: drawn in float64 or int64, then cast


class ProgramKind(ABC):
    """Base class of the kinds in ``runtime/kinds``; each subclass overrides what differs."""

    name: str = ""
    has_steps: bool = True  # False: ``step`` is ``run`` and there is no state
    infinite_weights: bool = False  # True: weights may hold infinity (a user's -inf masks)

    # ---- the Session contract's host side ----------------------------------------------------

    def run_shape(self, manifest: Manifest, spec: TensorSpec) -> list[int]:
        """The shape ``run`` expects of input ``spec`` (BATCH and TIME mark variable axes)."""
        return [BATCH if i == 0 and d == -1 else d for i, d in enumerate(spec.shape)]

    def step_shape(self, manifest: Manifest, spec: TensorSpec) -> list[int]:
        """The shape ``step`` expects of input ``spec``."""
        return [BATCH if i == 0 and d == -1 else d for i, d in enumerate(spec.shape)]

    def step_output_shape(self, manifest: Manifest, spec: TensorSpec, batch: int) -> list[int]:
        """The shape of ``step``'s output ``spec`` for ``batch`` samples (-1: a dimension not
        known before the call)."""
        return [batch if i == 0 and d == -1 else d for i, d in enumerate(spec.shape)]

    def run_output_shape(
        self, manifest: Manifest, spec: TensorSpec, batch: int, steps: int | None
    ) -> list[int]:
        """The shape of ``run``'s output ``spec`` for ``batch`` samples whose time axis holds
        ``steps`` (None: ``run``'s inputs have none); -1: a dimension not known before the call.
        Default: as ``step``'s."""
        return self.step_output_shape(manifest, spec, batch)

    def check_values(self, manifest: Manifest, inputs: Arrays) -> None:  # noqa: B027
        """ShapeError for input values the program cannot take (default: any value)."""

    def check_continuation(  # noqa: B027
        self, manifest: Manifest, inputs: Arrays, state: Mapping[str, object]
    ) -> None:
        """ShapeError when ``inputs`` cannot continue from ``state`` (``step`` and ``prefill``;
        checked before any backend, so every backend answers alike; default: any may)."""

    def batch_axis(self, manifest: Manifest) -> int:
        """The batch axis of ``run``'s inputs."""
        return 0

    def split_steps(self, manifest: Manifest, inputs: Arrays) -> list[Arrays]:
        """``run``'s inputs as the inputs of successive ``step`` calls."""
        return [inputs]

    def collect(self, manifest: Manifest, outputs: list[Arrays]) -> Arrays:
        """``run``'s outputs from the outputs of successive ``step`` calls."""
        return outputs[-1]

    def example_shapes(self, manifest: Manifest, batch: int) -> dict[str, list[int]]:
        """The shape of each array ``example_inputs`` draws for ``batch`` samples (computed
        from the manifest: nothing is allocated): ``run``'s, one step on a time axis."""
        return {
            spec.name: [
                batch if d == BATCH else 1 if d in (TIME, -1) else d
                for d in self.run_shape(manifest, spec)
            ]
            for spec in manifest.inputs
        }

    def example_inputs(
        self, manifest: Manifest, batch: int = 1, seed: int = 0, bundle: str = ""
    ) -> Arrays:
        """Random inputs of ``example_shapes``, drawn by ``draw_examples``; the ShapeError of
        ``check_example_bytes``, naming ``bundle`` (its path, where there is one), before any
        is drawn."""
        shapes = self.example_shapes(manifest, batch)
        check_example_bytes(shapes, batch, bundle)
        return self.draw_examples(manifest, shapes, np.random.default_rng(seed))

    def draw_examples(
        self, manifest: Manifest, shapes: dict[str, list[int]], rng: np.random.Generator
    ) -> Arrays:
        """Arrays of ``shapes`` (floats in [0, 1), integers 0 or 1, or the two lowest of the
        manifest's ``value_ranges`` for the input)."""
        out: Arrays = {}
        for spec in manifest.inputs:
            low, high = manifest.value_ranges.get(spec.name, (0, 1))
            out[spec.name] = _random(rng, shapes[spec.name], spec.dtype, low, min(high, low + 1))
        return out

    def open_session(self, program: Any, backend: str, device: str, options: dict[str, Any]) -> Any:
        """A session this kind assembles itself (a composite's), or None: the backend loads it."""
        return None

    def onnx_feeds(self, manifest: Manifest, inputs: Arrays, state: Arrays | None) -> Arrays:
        """The ONNX graphs' data inputs for the session's inputs (default: the same arrays)."""
        return inputs

    # ---- the torch face ------------------------------------------------------------------------

    def build_module(
        self, manifest: Manifest, config: dict[str, Any], tensors: Tensors, folder: Path
    ) -> torch.nn.Module:
        """The program's module rebuilt from its bundle (config, weights, other artifacts)."""
        raise BackendUnavailable(f"{self.name} programs have no torch form")

    def torch_face_missing(self, manifest: Manifest) -> str | None:
        """Why this program cannot run on the torch backend, or None when it can."""
        return None

    def module_tensors(self, deployable: Deployable) -> Tensors:
        """The tensors ``weights.safetensors`` stores."""
        return {k: v.detach().contiguous() for k, v in deployable.module.state_dict().items()}

    @abstractmethod
    def torch_run(self, module: torch.nn.Module, inputs: Tensors, record: bool = False) -> Tensors:
        """Whole input -> outputs, by name; ``record`` keeps activity where the kind has it."""

    def torch_step(
        self, module: torch.nn.Module, inputs: Tensors, state: Tensors
    ) -> tuple[Tensors, Tensors]:
        """One step -> (outputs, new state); stateless kinds run the whole input."""
        return self.torch_run(module, inputs), {}

    def cpu_run(self, module: torch.nn.Module) -> CpuRunFn | None:
        """A leaner ``torch_run`` (without ``record``) for ``module`` on the CPU on arrays, equal
        bit for bit to it, where the kind has one (it gives None for a call it cannot take)."""
        return None

    def cpu_step(self, module: torch.nn.Module) -> CpuStepFn | None:
        """A leaner ``torch_step`` for ``module`` on the CPU on arrays, equal bit for bit to
        it, where the kind has one (it gives None for a step it cannot take); else None."""
        return None

    def torch_prefill(
        self, module: torch.nn.Module, inputs: Tensors, state: Tensors
    ) -> tuple[Tensors, Tensors] | None:
        """The parallel form continuing from ``state``, where the kind has one; else None."""
        return None

    def torch_init_state(self, module: torch.nn.Module, batch: int) -> Tensors:
        """A fresh state for ``batch`` samples."""
        return {}

    def initial_state(self, deployable: Deployable) -> Arrays:
        """The fresh state of one sample as numpy (batched tensors without their batch axis)."""
        state = self.torch_init_state(deployable.module, 1)
        specs = {s.name: s for s in deployable.manifest.state}
        return {
            name: (value[0] if specs[name].batched else value).detach().cpu().contiguous().numpy()
            for name, value in state.items()
        }

    def activity(self, module: torch.nn.Module) -> dict[str, np.ndarray]:
        """Spike counts per neuron of each layer in the last recorded run (spiking kinds)."""
        return {}

    # ---- bundle, ONNX, describe, operation counts, parity --------------------------------------

    def artifact_writers(self, deployable: Deployable) -> dict[str, ArtifactWriter]:
        """Extra files of this kind's bundles: name -> writer(deployable, path)."""
        return {}

    def required_artifacts(self, manifest: Manifest) -> tuple[str, ...]:
        """Files a bundle of this program must list in its manifest."""
        return ("config.json", "weights.safetensors")

    def onnx_face(self, deployable: Deployable) -> Any:
        """The program's ONNX graphs (``runtime.onnx_export``), or BundleError saying why not."""
        from ganglion.models.errors import BundleError

        raise BundleError(f"no ONNX export for {self.name!r} programs")

    def io_text(self, manifest: Manifest) -> dict[str, str]:
        """How each of ``run``'s inputs and outputs is shaped, in words."""
        from ganglion.runtime.tensors import shape_text

        shapes = [self.run_shape(manifest, s) for s in manifest.inputs]
        text = {s.name: shape_text(shape) for s, shape in zip(manifest.inputs, shapes, strict=True)}
        steps = TIME if any(TIME in shape for shape in shapes) else None
        for s in manifest.outputs:
            text[s.name] = shape_text(self.run_output_shape(manifest, s, BATCH, steps))
        return text

    def describe(self, deployable: Deployable) -> dict[str, Any]:
        """Kind-specific summary: ``layers`` (list of rows), ``parameters`` and ``shapes`` text."""
        params = sum(int(p.numel()) for p in deployable.module.parameters())
        return {"layers": [], "parameters": params}

    def fresh_state_problem(self, program: Program, state: Arrays) -> str | None:
        """Why a bundle's stored fresh ``state`` (initial_state.safetensors, per sample) is
        not the one its other files start the program from, or None. Default: nothing to
        compare it with."""
        return None

    def describe_files(self, program: Program) -> dict[str, Any] | None:
        """``describe``'s summary read from a verified bundle's files without torch, or None
        when the files alone do not settle it (the caller describes the rebuilt module).
        Default: every tensor of ``weights.safetensors`` is a parameter (the architectures
        keep no buffers in their state dict; none when the bundle has no weights)."""
        from ganglion.runtime.artifact_shapes import element_count, safetensors_shapes
        from ganglion.runtime.program import WEIGHTS

        shapes = safetensors_shapes(program, WEIGHTS)
        return {"layers": [], "parameters": element_count(shapes.values())}

    def count_ops(self, deployable: Deployable, inputs: Arrays) -> OpCounts:
        """Operation counts per inference on ``inputs`` (runs the program once on CPU)."""
        from ganglion.runtime.opcount import dense_counts

        return dense_counts(deployable, self, inputs)

    def parity_atol(self, manifest: Manifest, output: str) -> float | None:
        """Absolute tolerance between backends for ``output`` (None: must be equal)."""
        return 1e-5


def check_example_bytes(shapes: Mapping[str, Sequence[int]], batch: int, bundle: str = "") -> None:
    """ShapeError, in one line naming ``bundle`` (where given) and the largest input, when
    example arrays of ``shapes`` (``batch`` samples) would take more than ``MAX_EXAMPLE_BYTES``
    at 8 bytes a value; reckoned from the shapes alone, before anything is allocated."""
    from ganglion.runtime.tensors import tensor_bytes

    sizes = {name: tensor_bytes(shape, EXAMPLE_DTYPE) for name, shape in shapes.items()}
    total = sum(sizes.values())
    if total <= MAX_EXAMPLE_BYTES:
        return
    name = max(sizes, key=sizes.__getitem__)
    where = f"{bundle}: " if bundle else ""
    raise ShapeError(
        f"{where}example inputs of batch {batch} would take {total / 2**30:.1f} GiB (input "
        f"{name!r} {list(shapes[name])} the largest), more than the "
        f"{MAX_EXAMPLE_BYTES / 2**30:g} GiB allowed"
    )


def _random(
    rng: np.random.Generator, shape: list[int], dtype: str, low: int = 0, high: int = 1
) -> np.ndarray:
    if dtype.startswith("float"):
        return rng.random(shape).astype(dtype)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    return rng.integers(low, high + 1, shape).astype(dtype)

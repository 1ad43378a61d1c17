"""The ``sequence`` kind: token models (RWKV, SpikeGPT, GLA, GAM, GPT) — one token per step.

Tensors: ``ids`` int64 (``run``: [batch, T]; ``step``: [batch]) and ``logits`` float32
(``run``: [batch, T, vocab]; ``step``: [batch, vocab]); the state is the model's own
(``SequenceModel.state_specs``: token shifts, WKV/GLA states, LIF membranes, KV caches).
``prefill`` is the model's parallel form continuing from a state.

Bundle: ``config.json`` + ``weights.safetensors`` rebuild the model by architecture name,
``initial_state.safetensors`` holds the fresh state, ``model.onnx`` the step graph (token and
state in, logits and state out) exported with torch's ONNX exporter.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ganglion.kernels.empty_states import EMPTY_WKV_P
from ganglion.models.errors import BundleError, ShapeError
from ganglion.models.manifest import Manifest, SequenceTime, TensorSpec
from ganglion.runtime.kinds.base import BATCH, TIME, Arrays, ArtifactWriter, ProgramKind, Tensors
from ganglion.runtime.tensors import STEP_COUNTER

if TYPE_CHECKING:
    import onnx
    import torch

    from ganglion.models.deployable import Deployable
    from ganglion.runtime.program import Program

EXAMPLE_TOKENS = 16
MAX_RUN_TOKENS = 1 << 16  # token ids one run or prefill call takes (batch x T)


def _time(manifest: Manifest) -> SequenceTime:
    assert isinstance(manifest.time, SequenceTime)
    return manifest.time


class SequenceKind(ProgramKind):
    """Autoregressive token programs."""

    name = "sequence"

    # ---- host side -----------------------------------------------------------------------------

    def run_shape(self, manifest: Manifest, spec: TensorSpec) -> list[int]:
        """[batch, T] ids."""
        return [BATCH, TIME, *spec.shape[1:]]

    def run_output_shape(
        self, manifest: Manifest, spec: TensorSpec, batch: int, steps: int | None
    ) -> list[int]:
        """[batch, T, ...]: one step's output per token."""
        return [batch, -1 if steps is None else steps, *spec.shape[1:]]

    def check_continuation(
        self, manifest: Manifest, inputs: Arrays, state: Mapping[str, object]
    ) -> None:
        """A model with a context (GPT's position table) takes no token past it: the step
        counter ``t`` plus the tokens given must fit."""
        context = _time(manifest).context
        if not context or STEP_COUNTER not in state:
            return
        counter = np.asarray(state[STEP_COUNTER])
        # prefill's ids are [batch, T], a step's [batch] (one token each)
        tokens = max((ids.shape[1] if ids.ndim == 2 else 1 for ids in inputs.values()), default=0)
        if counter.size and int(counter.max()) + tokens > context:
            raise ShapeError(
                f"{int(counter.max()) + tokens} tokens exceed the model's context of {context}"
            )

    def check_values(self, manifest: Manifest, inputs: Arrays) -> None:
        """Token ids must lie in [0, vocab_size); ``run``'s ids [batch, T] hold at most
        ``context`` tokens per sequence (where the model has one) and ``MAX_RUN_TOKENS`` in all
        (a call's logits and activations grow with batch × T: longer inputs go in pieces)."""
        vocab, context = _time(manifest).vocab_size, _time(manifest).context
        for name, ids in inputs.items():
            if ids.ndim == 2 and ids.size > MAX_RUN_TOKENS:
                raise ShapeError(
                    f"input {name!r} holds {ids.shape[0]} x {ids.shape[1]} = {ids.size} tokens; "
                    f"one call takes at most {MAX_RUN_TOKENS} (split the sequence, or step it)"
                )
            if context and ids.ndim == 2 and ids.shape[1] > context:
                raise ShapeError(
                    f"input {name!r} holds {ids.shape[1]} tokens per sequence; the model's "
                    f"context is {context}"
                )
            if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
                raise ShapeError(
                    f"input {name!r}: token ids must be in [0, {vocab}), "
                    f"got {int(ids.min())}..{int(ids.max())}"
                )

    def fresh_state_problem(self, program: Program, state: Arrays) -> str | None:
        """Every architecture starts a sequence from an empty state: growing axes (a KV
        cache) hold nothing, an empty WKV's running maximum ``wkv_p`` is ``EMPTY_WKV_P`` and
        everything else (token shifts, WKV and GLA sums, membranes, the position) is zero. The
        stored state must be that, or the backends reading it (ONNX Runtime) would start
        elsewhere than the torch module."""
        specs = {spec.name: spec for spec in program.manifest.state}
        for name, value in state.items():
            spec = specs.get(name)
            for axis, size in enumerate(spec.shape[1:] if spec is not None else ()):
                if size == -1 and axis < value.ndim and value.shape[axis]:
                    grown = value.shape[axis]
                    return f"state {name!r} holds {grown} entries where a fresh one holds none"
            fresh = EMPTY_WKV_P if name.endswith("wkv_p") else 0
            if value.size and not np.all(value == np.asarray(fresh, value.dtype)):
                return f"state {name!r} is not {fresh:g} throughout, as a fresh state is"
        return None

    def split_steps(self, manifest: Manifest, inputs: Arrays) -> list[Arrays]:
        """One step per token position."""
        steps = next(iter(inputs.values())).shape[1]
        return [{k: np.ascontiguousarray(v[:, t]) for k, v in inputs.items()} for t in range(steps)]

    def collect(self, manifest: Manifest, outputs: list[Arrays]) -> Arrays:
        """Step outputs stacked on the token axis: [batch, T, ...]."""
        return {name: np.stack([o[name] for o in outputs], axis=1) for name in outputs[0]}

    def example_shapes(self, manifest: Manifest, batch: int) -> dict[str, list[int]]:
        """[batch, 16] token ids (fewer for a shorter context)."""
        context = _time(manifest).context
        tokens = min(EXAMPLE_TOKENS, context or EXAMPLE_TOKENS)
        return {s.name: [batch, tokens] for s in manifest.inputs}

    def draw_examples(
        self, manifest: Manifest, shapes: dict[str, list[int]], rng: np.random.Generator
    ) -> Arrays:
        """Random token ids within the vocabulary."""
        vocab = _time(manifest).vocab_size
        return {name: rng.integers(0, vocab, shape) for name, shape in shapes.items()}

    # ---- torch face ----------------------------------------------------------------------------

    def build_module(
        self, manifest: Manifest, config: dict[str, Any], tensors: Tensors, folder: Path
    ) -> torch.nn.Module:
        """The registered architecture, rebuilt from config.json with its weights."""
        from ganglion.models.sequence import SEQUENCE_ARCHITECTURES, sequence_model_class

        if manifest.architecture not in SEQUENCE_ARCHITECTURES:
            raise BundleError(
                f"unknown architecture {manifest.architecture!r} for sequence programs; "
                f"known: {', '.join(sorted(SEQUENCE_ARCHITECTURES))}"
            )
        model = sequence_model_class(manifest.architecture).from_config(config)
        model.load_state_dict(tensors)
        ids = [(s.name, s.dtype, s.shape) for s in manifest.inputs]
        if ids != [("ids", "int64", [-1])]:
            raise BundleError(f"manifest.json declares inputs {ids}; a {manifest.architecture} "
                              "takes ids int64 [-1] (one token a step)")  # fmt: skip
        declared = [(s.name, s.dtype, s.shape) for s in manifest.state]
        built = [(s.name, s.dtype, s.shape) for s in model.state_specs()]
        if declared != built:
            first = next(
                (d, b) for d, b in zip([*declared, None], [*built, None], strict=False) if d != b
            )
            raise BundleError(
                f"manifest.json declares state {first[0]}; config.json builds {first[1]}"
            )
        return model.eval()

    def torch_run(self, module: torch.nn.Module, inputs: Tensors, record: bool = False) -> Tensors:
        """The parallel form from a fresh state."""
        logits, _ = module(inputs["ids"])
        return {"logits": logits}

    def torch_step(
        self, module: torch.nn.Module, inputs: Tensors, state: Tensors
    ) -> tuple[Tensors, Tensors]:
        """The recurrent form: one token."""
        logits, new_state = module.step(inputs["ids"], state)
        return {"logits": logits}, new_state

    def torch_prefill(
        self, module: torch.nn.Module, inputs: Tensors, state: Tensors
    ) -> tuple[Tensors, Tensors]:
        """The parallel form continuing from ``state``."""
        logits, new_state = module(inputs["ids"], state)
        return {"logits": logits}, new_state

    def torch_init_state(self, module: torch.nn.Module, batch: int) -> Tensors:
        """``module.init_state``."""
        return module.init_state(batch)

    # ---- bundle, ONNX, parity ------------------------------------------------------------------

    def artifact_writers(self, deployable: Deployable) -> dict[str, ArtifactWriter]:
        """The ONNX step graph."""
        from ganglion.runtime.onnx_export import onnx_artifact_writers

        return onnx_artifact_writers(("step",))

    def onnx_face(self, deployable: Deployable) -> SequenceOnnx:
        """The step graph (token and state in, logits and state out)."""
        return SequenceOnnx(deployable)

    def parity_atol(self, manifest: Manifest, output: str) -> float | None:
        """Logits within 1e-4 (ONNX Runtime sums in another order; tokens agree)."""
        return 1e-4


class SequenceOnnx:
    """The ONNX face of a token model."""

    def __init__(self, deployable: Deployable) -> None:
        self.deployable = deployable

    def step_graph(self, opset: int) -> onnx.ModelProto:
        """``ids`` [batch] and ``state_in.*`` -> ``logits`` [batch, V] and ``state_out.*``:
        torch's export of ``step``, or at opset >= 27 for GLA one standard ``LinearAttention``
        per layer (``onnx_export.gla_linear_attention``; slower on ONNX Runtime 1.32 at batch
        1, so not the bundle's default opset) and for GAM one ``CausalConvWithState`` per
        layer (``onnx_export.gam_causal_conv``; slower too, at batch 1 and more so at 16)."""
        import torch

        from ganglion.converters.torch_onnx import torch_to_onnx
        from ganglion.runtime.onnx_export import gam_causal_conv, gla_linear_attention, naming

        module, manifest = self.deployable.module.eval(), self.deployable.manifest
        if manifest.architecture == "gla" and opset >= gla_linear_attention.LINEAR_ATTENTION_OPSET:
            return gla_linear_attention.gla_step_graph(module, opset)
        if manifest.architecture == "gam" and opset >= gam_causal_conv.CAUSAL_CONV_OPSET:
            return gam_causal_conv.gam_step_graph(module, opset)
        specs = manifest.state
        wrapper = _step_graph_module(module, [s.name for s in specs])
        state = module.init_state(2)
        ids = torch.zeros(2, dtype=torch.int64)
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        growing = torch.export.Dim("context", min=0, max=1 << 20)
        dynamic = [{0: batch}] + [
            {i: (batch if i == 0 else growing) for i, d in enumerate(s.shape) if d == -1}
            for s in specs
        ]
        return torch_to_onnx(
            wrapper,
            (ids, *(state[s.name] for s in specs)),
            ["ids", *(naming.state_input(s.name) for s in specs)],
            ["logits", *(naming.state_output(s.name) for s in specs)],
            (dynamic[0], tuple(dynamic[1:])),
            opset,
        )

    def sequence_graph(self, opset: int) -> None:
        """No sequence graph yet: ``run`` on ONNX Runtime is repeated steps."""
        return None


def _step_graph_module(module: Any, names: list[str]) -> Any:
    import torch

    class StepGraph(torch.nn.Module):
        """(ids, *state) -> (logits, *new state), the state in manifest order."""

        def __init__(self) -> None:
            super().__init__()
            self.model = module

        def forward(self, ids: torch.Tensor, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
            logits, new = self.model.step(ids, dict(zip(names, values, strict=True)))
            return (logits, *(new[n] for n in names))

    return StepGraph()

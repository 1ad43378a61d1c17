"""The ``ensemble`` kind: expert member programs plus the ensemble's own gate (MoE² style).

A composite bundle: members under ``members/<name>/`` pinned by their manifest's SHA-256, the
gate in ``config.json`` + ``weights.safetensors`` (with the calibration cache) and as an ONNX
graph (``model.onnx``: gate features -> gate weights) so that it runs without torch. The gate's
features are computed on the host (``models.mixture``).

Two shapes of ensemble:
- classifiers (no time semantics): the experts' inputs -> ``probs`` [batch, classes], the
  gate-weighted mixture of the experts' class probabilities, and ``gate`` [batch, experts];
- token models (``SequenceTime``): ``ids`` -> ``logits`` (the log of the mixture of the
  experts' next-token distributions) and ``gate``; the gate reads the frequencies of the tokens
  seen so far, so it follows the prompt causally and ``run`` equals repeated ``step``. The
  state is the running token counts plus every member's state (``<member>:<name>``).

``EnsembleSession`` opens every member on the requested backend and device; the gate runs on
torch for the torch backend and on ONNX Runtime otherwise. ``select(names)`` restricts the
experts run (the coarse level of selection); the fine level is the gate inside that subset,
optionally its top k per input (``config.json``'s ``top_k``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ganglion.models.errors import ShapeError
from ganglion.models.manifest import Manifest, SequenceTime, TensorSpec
from ganglion.models.mixture import (
    COUNTS,
    flat_features,
    member_state_name,
    mix,
    prefix_histograms,
    renormalized,
    softmax,
)
from ganglion.runtime.kinds.base import Arrays, ArtifactWriter, ProgramKind, Tensors
from ganglion.runtime.tensors import check_bounds

if TYPE_CHECKING:
    import onnx
    import torch

    from ganglion.device import OpCounts
    from ganglion.models.deployable import Deployable
    from ganglion.runtime.program import Program
    from ganglion.runtime.session import Session


def is_sequence(manifest: Manifest) -> bool:
    """True for an ensemble of token models."""
    return isinstance(manifest.time, SequenceTime)


class EnsembleKind(ProgramKind):
    """Ensembles of classifiers or of token models."""

    name = "ensemble"

    def _tokens(self) -> ProgramKind:
        from ganglion.runtime.kinds import get_kind

        return get_kind("sequence")

    # ---- host side: token ensembles follow the sequence kind's shapes ----------------------

    def run_shape(self, manifest: Manifest, spec: TensorSpec) -> list[int]:
        """As the members' kind."""
        if is_sequence(manifest):
            return self._tokens().run_shape(manifest, spec)
        return super().run_shape(manifest, spec)

    def run_output_shape(
        self, manifest: Manifest, spec: TensorSpec, batch: int, steps: int | None
    ) -> list[int]:
        """As the members' kind."""
        if is_sequence(manifest):
            return self._tokens().run_output_shape(manifest, spec, batch, steps)
        return super().run_output_shape(manifest, spec, batch, steps)

    def split_steps(self, manifest: Manifest, inputs: Arrays) -> list[Arrays]:
        """One step per token for token ensembles; one call for classifiers."""
        if is_sequence(manifest):
            return self._tokens().split_steps(manifest, inputs)
        return super().split_steps(manifest, inputs)

    def collect(self, manifest: Manifest, outputs: list[Arrays]) -> Arrays:
        """Stacked on the token axis for token ensembles."""
        if is_sequence(manifest):
            return self._tokens().collect(manifest, outputs)
        return super().collect(manifest, outputs)

    def check_values(self, manifest: Manifest, inputs: Arrays) -> None:
        """Token ids within the vocabulary (token ensembles)."""
        if is_sequence(manifest):
            self._tokens().check_values(manifest, inputs)

    def example_shapes(self, manifest: Manifest, batch: int) -> dict[str, list[int]]:
        """As the members' kind."""
        if is_sequence(manifest):
            return self._tokens().example_shapes(manifest, batch)
        return super().example_shapes(manifest, batch)

    def draw_examples(
        self, manifest: Manifest, shapes: dict[str, list[int]], rng: np.random.Generator
    ) -> Arrays:
        """As the members' kind."""
        if is_sequence(manifest):
            return self._tokens().draw_examples(manifest, shapes, rng)
        return super().draw_examples(manifest, shapes, rng)

    def open_session(
        self, program: Program, backend: str, device: str, options: dict[str, Any]
    ) -> Session:
        """The composite session: members on ``backend``, the gate beside them."""
        from ganglion.runtime.ensemble_session import EnsembleSession

        return EnsembleSession(program, backend, device, options)

    # ---- torch face: the gate -----------------------------------------------------------------

    def build_module(
        self, manifest: Manifest, config: dict[str, Any], tensors: Tensors, folder: Path
    ) -> torch.nn.Module:
        """The EnsembleProgram (gate and calibration cache)."""
        from ganglion.models.ensemble import EnsembleProgram

        return EnsembleProgram.from_config(config, tensors)

    def torch_run(self, module: torch.nn.Module, inputs: Tensors, record: bool = False) -> Tensors:
        """The gate's face: weights [B, experts] on the first input (flattened, or for token
        ensembles the token frequencies of the whole sequence)."""
        import torch

        x = next(iter(inputs.values())).detach().cpu().numpy()
        config = module.gate.config
        if config.features == "histogram":
            counts = np.zeros((x.shape[0], config.in_features + 1), dtype=np.float32)
            features = prefix_histograms(x.reshape(x.shape[0], -1), counts, config.in_features)
            x_features = features[0][:, -1]
        else:
            x_features = flat_features(x)
        return {"gate": module(torch.from_numpy(np.ascontiguousarray(x_features)))}

    def initial_state(self, deployable: Deployable) -> Arrays:
        """Zero token counts plus every member's fresh state (token ensembles)."""
        if not is_sequence(deployable.manifest):
            return {}
        from ganglion.runtime.kinds import kind_of

        vocab = deployable.manifest.time.vocab_size  # type: ignore[union-attr]
        state: Arrays = {COUNTS: np.zeros(vocab + 1, dtype=np.float32)}
        for name, member in deployable.members.items():
            for key, value in kind_of(member.manifest).initial_state(member).items():
                state[member_state_name(name, key)] = value
        return state

    # ---- bundle, ONNX, describe, operation counts -----------------------------------------------

    def artifact_writers(self, deployable: Deployable) -> dict[str, ArtifactWriter]:
        """The gate's ONNX graph."""
        from ganglion.runtime.onnx_export import onnx_artifact_writers

        return onnx_artifact_writers(("step",))

    def onnx_face(self, deployable: Deployable) -> GateOnnx:
        """The gate as an ONNX graph: features -> gate weights."""
        return GateOnnx(deployable)

    def required_artifacts(self, manifest: Manifest) -> tuple[str, ...]:
        """config.json, weights.safetensors and the gate graph."""
        return ("config.json", "weights.safetensors", "model.onnx")

    def describe(self, deployable: Deployable) -> dict[str, Any]:
        """Gate size, experts with the device each is meant for."""
        module = deployable.module
        return {
            "layers": [],
            "parameters": sum(int(p.numel()) for p in module.gate.parameters()),
            "experts": {e: module.placement.get(e, "-") for e in module.experts},
            "top_k": module.top_k,
        }

    def describe_files(self, program: Program) -> dict[str, Any] | None:
        """The same from config.json (experts, placement, top k) and the shapes of the gate's
        tensors (``gate.*`` in weights.safetensors; the calibration cache is not counted)."""
        from ganglion.runtime.artifact_shapes import element_count, safetensors_shapes
        from ganglion.runtime.program import WEIGHTS

        config = program.config()
        try:
            placement = dict(config.get("placement") or {})
            experts = {e: placement.get(e, "-") for e in config["gate"]["experts"]}
        except (KeyError, TypeError, ValueError):
            return None
        shapes = safetensors_shapes(program, WEIGHTS)
        gate = [shape for name, shape in shapes.items() if name.startswith("gate.")]
        return {
            "layers": [],
            "parameters": element_count(gate),
            "experts": experts,
            "top_k": config.get("top_k"),
        }

    def count_ops(self, deployable: Deployable, inputs: Arrays) -> OpCounts:
        """The members' counts summed (every expert run), plus the gate's."""
        from ganglion.device import OpCounts
        from ganglion.runtime.kinds import kind_of
        from ganglion.runtime.opcount import dense_counts

        parts = [] if is_sequence(deployable.manifest) else [dense_counts(deployable, self, inputs)]
        for name in deployable.module.experts:
            member = deployable.members[name]
            renamed = member_inputs(deployable.config, name, member.manifest, inputs)
            parts.append(kind_of(member.manifest).count_ops(member, renamed))
        return OpCounts.combined(parts)


def member_inputs(
    config: dict[str, Any], member: str, manifest: Manifest, inputs: Arrays
) -> Arrays:
    """The ensemble's inputs under member ``member``'s input names (matched by position)."""
    names = config.get("input_names", list(inputs))
    return {spec.name: inputs[names[i]] for i, spec in enumerate(manifest.inputs)}


def check_member_bounds(
    config: dict[str, Any], member: str, manifest: Manifest, inputs: Arrays
) -> None:
    """ShapeError naming expert ``member`` where the ensemble's checked ``inputs`` exceed what
    it takes (its manifest's ``max_batch`` and ``value_ranges``, which its own session
    refuses), so an ensemble refuses such a request before any member runs."""
    named = member_inputs(config, member, manifest, inputs)
    batch = int(next(iter(inputs.values())).shape[0]) if inputs else None
    try:
        check_bounds(named, batch, manifest.max_batch, manifest.value_ranges)
    except ShapeError as exc:
        raise ShapeError(f"expert {member!r}: {exc}") from None


def finite_gate(weights: np.ndarray) -> np.ndarray:
    """The gate's ``weights`` [B, N]; ShapeError naming the first sample whose weights are not
    finite (an input beyond the range the gate works in, such as 3e38)."""
    bad = ~np.isfinite(weights).all(axis=tuple(range(1, weights.ndim)))
    if bad.any():
        raise ShapeError(
            f"the gate's weights for sample {int(np.argmax(bad))} are not finite: its input is "
            "beyond the range the gate works in"
        )
    return weights


def expert_probs(scores: Arrays, member: str) -> np.ndarray:
    """Class probabilities [B, C] of a member's single output."""
    if len(scores) != 1:
        raise ShapeError(f"expert {member!r} returned {len(scores)} outputs; experts return one")
    value = next(iter(scores.values()))
    rows = value.reshape(value.shape[0], -1)
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        raise ShapeError(
            f"expert {member!r} gives non-finite scores for sample {int(np.argmax(bad))}: its "
            "input is beyond the range the expert works in"
        )
    return softmax(rows)


def mixture_outputs(
    gate: np.ndarray, chosen: list[int], top_k: int | None, run: Any, skip_idle: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(mixed probabilities, weights) for gate weights [B, N]: ``run(e)`` gives expert e's
    probabilities [B, ...]; with ``skip_idle`` it is called only for experts with weight on
    some input (a token ensemble runs every chosen expert, to keep its state current)."""
    weights = renormalized(gate, chosen, top_k)
    active = [e for e in chosen if weights[:, e].any() or not skip_idle]
    probs = {e: run(e) for e in active}
    return mix({e: p for e, p in probs.items() if weights[:, e].any()}, weights), weights


class GateOnnx:
    """The ONNX face of an ensemble: its gate (the members have their own graphs)."""

    def __init__(self, deployable: Deployable) -> None:
        self.deployable = deployable

    def step_graph(self, opset: int) -> onnx.ModelProto:
        """``features`` [batch, in_features] -> ``gate`` [batch, experts]."""
        import torch

        from ganglion.converters.torch_onnx import torch_to_onnx

        module = self.deployable.module.eval()
        example = torch.zeros(2, module.gate.config.in_features)
        batch = torch.export.Dim("batch", min=1, max=1 << 20)
        return torch_to_onnx(module, (example,), ["features"], ["gate"], ({0: batch},), opset)

    def sequence_graph(self, opset: int) -> None:
        """The gate has no sequence form."""
        return None

"""The ``ensemble`` kind: expert member programs plus the ensemble's own gate (MoE² style).

A composite bundle: members under ``members/<name>/`` pinned by their manifest's SHA-256, the
gate in ``config.json`` + ``weights.safetensors`` (with the calibration cache) and as an ONNX
graph (``model.onnx``: input -> gate weights) so that it runs without torch.

Outputs: ``probs`` [batch, classes], the gate-weighted mixture of the experts' class
probabilities (``models.mixture``), and ``gate`` [batch, experts], the weights used.

``EnsembleSession`` opens every member on the requested backend and device; the gate runs on
torch for the torch backend and on ONNX Runtime otherwise. ``select(names)`` restricts the
experts run (the coarse level of selection); the fine level is the gate inside that subset,
optionally its top k per input (``config.json``'s ``top_k``). Experts with no weight for any
input of a call are not run at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ganglion.models.errors import ShapeError
from ganglion.models.manifest import Manifest
from ganglion.models.mixture import mix, renormalized, softmax
from ganglion.runtime.kinds.base import Arrays, ArtifactWriter, ProgramKind, Tensors

if TYPE_CHECKING:
    import onnx
    import torch

    from ganglion.device import OpCounts
    from ganglion.models.deployable import Deployable
    from ganglion.runtime.program import Program
    from ganglion.runtime.session import Session

GATE_ONNX = "model.onnx"  # the gate graph


class EnsembleKind(ProgramKind):
    """Stateless ensembles of classifiers."""

    name = "ensemble"
    has_steps = False

    def open_session(
        self, program: Program, backend: str, device: str, options: dict[str, Any]
    ) -> Session:
        """The composite session: members on ``backend``, the gate beside them."""
        from ganglion.runtime.ensemble_session import EnsembleSession

        return EnsembleSession(program, backend, device, options)

    def build_module(
        self, manifest: Manifest, config: dict[str, Any], tensors: Tensors, folder: Path
    ) -> torch.nn.Module:
        """The EnsembleProgram (gate and calibration cache)."""
        from ganglion.models.ensemble import EnsembleProgram

        return EnsembleProgram.from_config(config, tensors)

    def torch_run(self, module: torch.nn.Module, inputs: Tensors, record: bool = False) -> Tensors:
        """The gate's face: weights [B, experts] for the ensemble's input."""
        return {"gate": module(next(iter(inputs.values())))}

    def artifact_writers(self, deployable: Deployable) -> dict[str, ArtifactWriter]:
        """The gate's ONNX graph."""
        from ganglion.runtime.onnx_export import onnx_artifact_writers

        return onnx_artifact_writers(("step",))

    def onnx_face(self, deployable: Deployable) -> GateOnnx:
        """The gate as an ONNX graph: the ensemble's input -> gate weights."""
        return GateOnnx(deployable)

    def required_artifacts(self, manifest: Manifest) -> tuple[str, ...]:
        """config.json, weights.safetensors and the gate graph."""
        return ("config.json", "weights.safetensors", GATE_ONNX)

    def describe(self, deployable: Deployable) -> dict[str, Any]:
        """Gate size, experts with the device each is meant for."""
        module = deployable.module
        return {
            "layers": [],
            "parameters": sum(int(p.numel()) for p in module.gate.parameters()),
            "experts": {e: module.placement.get(e, "-") for e in module.experts},
            "top_k": module.top_k,
        }

    def count_ops(self, deployable: Deployable, inputs: Arrays) -> OpCounts:
        """The members' counts summed (every expert run), plus the gate's."""
        from ganglion.device import OpCounts
        from ganglion.runtime.kinds import kind_of
        from ganglion.runtime.opcount import dense_counts

        total = dense_counts(deployable, self, inputs)
        module = deployable.module
        for name in module.experts:
            member = deployable.members[name]
            renamed = member_inputs(deployable.config, name, member.manifest, inputs)
            total = OpCounts.combined([total, kind_of(member.manifest).count_ops(member, renamed)])
        return total


def member_inputs(
    config: dict[str, Any], member: str, manifest: Manifest, inputs: Arrays
) -> Arrays:
    """The ensemble's inputs under member ``member``'s input names (matched by position)."""
    names = config.get("input_names", list(inputs))
    return {spec.name: inputs[names[i]] for i, spec in enumerate(manifest.inputs)}


def expert_probs(scores: Arrays, member: str) -> np.ndarray:
    """Class probabilities [B, C] of a member's single output."""
    if len(scores) != 1:
        raise ShapeError(f"expert {member!r} returned {len(scores)} outputs; experts return one")
    value = next(iter(scores.values()))
    return softmax(value.reshape(value.shape[0], -1))


def mixture_outputs(
    gate: np.ndarray, chosen: list[int], top_k: int | None, run: Any
) -> dict[str, np.ndarray]:
    """``probs`` and ``gate`` for gate weights [B, N]: ``run(e)`` gives expert e's [B, C]
    probabilities and is called only for experts with weight on some input."""
    weights = renormalized(gate, chosen, top_k)
    active = [e for e in chosen if weights[:, e].any()]
    probs = mix({e: run(e) for e in active}, weights)
    return {"probs": probs.astype(np.float32), "gate": weights.astype(np.float32)}


class GateOnnx:
    """The ONNX face of an ensemble: its gate (the members have their own graphs)."""

    def __init__(self, deployable: Deployable) -> None:
        self.deployable = deployable

    def step_graph(self, opset: int) -> onnx.ModelProto:
        """The ensemble's first input -> ``gate`` [batch, experts]."""
        import torch

        from ganglion.converters.torch_onnx import torch_to_onnx

        module = self.deployable.module.eval()
        spec = self.deployable.manifest.inputs[0]
        example = torch.zeros([2, *spec.shape[1:]], dtype=getattr(torch, spec.dtype))
        batch = torch.export.Dim("batch", min=1, max=1 << 20)
        return torch_to_onnx(module, (example,), [spec.name], ["gate"], ({0: batch},), opset)

    def sequence_graph(self, opset: int) -> None:
        """The gate has no sequence form."""
        return None

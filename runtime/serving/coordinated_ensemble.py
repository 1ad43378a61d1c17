"""An ensemble as the coordinator holds it: the bundle's own part (the gate, its calibration
cache, ``top_k``, the input names), what each member takes and returns (its manifest: the
nodes serve the members under their member names), and the simulated cost of every expert on
every device profile that hosts it.

The coordinator serves classifier ensembles (inputs -> ``probs`` and ``gate``): each expert's
call is stateless, so it can be retried on another node. Token ensembles are refused at
start: their members keep per-sequence state on the node that served the sequence.

Simulated costs come from ``problem_from_ensemble`` (the roofline of each device over the
expert's operation counts, plus the link), called once per replica position at start; the
selection problem's gate, correctness and aggregation come from the same call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from ganglion.device import detect
from ganglion.models.manifest import Manifest
from ganglion.models.mixture import flat_features
from ganglion.runtime.bundle import open_bundle
from ganglion.runtime.ensemble_session import _open_gate
from ganglion.runtime.kinds import get_kind
from ganglion.runtime.kinds.ensemble import (
    check_member_bounds,
    expert_probs,
    finite_gate,
    member_inputs,
)
from ganglion.runtime.selection import Expert, SelectionProblem
from ganglion.runtime.serving.client import infer_request
from ganglion.runtime.serving.cluster_config import (
    ClusterConfigError,
    EnsembleConfig,
    Link,
    coordinator_problem,
)
from ganglion.runtime.serving.kserve_tensors import (
    DATATYPE_OF,
    WireError,
    array_from_contents,
    response_arrays,
)
from ganglion.runtime.tensors import check_inputs


class NonFiniteScores(WireError):
    """A node's scores hold NaN or infinity: a lie, or an input the expert overflows on (the
    request tells which: another replica's finite answer, or every replica's the same)."""


@dataclass(frozen=True)
class EnsembleOrigin:
    """Where the coordinator's figures for an ensemble came from (printed at start)."""

    requester: str  # the device profile the gate runs on
    devices: dict[str, list[str]]  # expert -> device profiles of the nodes hosting it


class CoordinatedEnsemble:
    """One served ensemble: gate, member calls, mixing inputs and simulated costs."""

    def __init__(
        self,
        config: EnsembleConfig,
        manifest: Manifest,
        bundle_config: dict[str, Any],
        members: dict[str, Manifest],
        gate: Callable[[np.ndarray], np.ndarray],
        problem: SelectionProblem,
        simulated: dict[tuple[str, str], Expert],
    ) -> None:
        self.config = config
        self.name = config.name
        self.manifest = manifest
        self.bundle_config = bundle_config
        self.members = members
        self.experts: list[str] = list(bundle_config["gate"]["experts"])
        self.top_k: int | None = bundle_config.get("top_k")
        self.problem = problem  # experts' costs here are the first host's (see ``simulated``)
        self.simulated = simulated  # (expert, device profile) -> simulated costs
        self._gate = gate
        kind = get_kind("ensemble")
        self._shapes = {s.name: kind.run_shape(manifest, s) for s in manifest.inputs}

    @classmethod
    def load(
        cls, config: EnsembleConfig, devices: dict[str, list[str]], requester: str, link: Link
    ) -> tuple[CoordinatedEnsemble, EnsembleOrigin]:
        """Open the bundle: the gate on ONNX Runtime, the members' manifests, and the selection
        problem with the simulated cost of each expert on each device in ``devices``
        (model -> profiles of its hosts, models that are not its experts ignored; the gate runs on
        ``requester``, "auto": this host)."""
        from ganglion.runtime.selection.from_ensemble import Link as SelectionLink
        from ganglion.runtime.selection.from_ensemble import problem_from_ensemble

        host = detect().profile_name if requester == "auto" else requester
        with open_bundle(config.bundle) as program:
            manifest = program.manifest
            problem = coordinator_problem(config.bundle, manifest)
            if problem is not None:
                raise ClusterConfigError(problem)
            bundle_config = program.config()
            gate = _open_gate(program, "onnxruntime")
            members = {name: member.manifest for name, member in program.members.items()}
            deployable = program.deployable()
        experts = list(bundle_config["gate"]["experts"])
        devices = {e: d for e, d in devices.items() if e in experts and d}
        selection_link = SelectionLink(link.mbps, link.latency_ms, link.nj_per_bit)
        rounds = max([len(d) for d in devices.values()] + [1])
        simulated: dict[tuple[str, str], Expert] = {}
        problem: SelectionProblem | None = None
        for r in range(rounds):
            placement = {e: d[min(r, len(d) - 1)] for e, d in devices.items()}
            found, _ = problem_from_ensemble(deployable, placement, host, selection_link)
            problem = problem or found
            for expert in found.experts:
                simulated.setdefault((expert.name, placement.get(expert.name, host)), expert)
        assert problem is not None
        ensemble = cls(config, manifest, bundle_config, members, gate, problem, simulated)
        return ensemble, EnsembleOrigin(host, devices)

    # ---- one request ------------------------------------------------------------------------

    def check(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The request's inputs checked as the ensemble's Session would (ShapeError)."""
        checked = check_inputs(self.manifest.inputs, self._shapes, arrays)
        get_kind("ensemble").check_values(self.manifest, checked)
        return checked

    def check_experts(self, experts: list[str], inputs: dict[str, np.ndarray]) -> None:
        """ShapeError naming the first of ``experts`` that cannot take the checked ``inputs``
        (its ``max_batch`` or ``value_ranges``): the request's fault, not a node's, so it is
        refused before any node is called."""
        for expert in experts:
            check_member_bounds(self.bundle_config, expert, self.members[expert], inputs)

    def gate(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The gate's weights [B, experts] on the first input (as ``EnsembleSession``);
        ShapeError where they are not finite (an input beyond the range the gate works in,
        such as 3e38: no node is asked for what could not be mixed)."""
        return finite_gate(self._gate(flat_features(next(iter(inputs.values())))))

    def member_request(self, expert: str, inputs: dict[str, np.ndarray]) -> Any:
        """The ``ModelInferRequest`` that asks expert ``expert``'s node for its scores."""
        manifest = self.members[expert]
        return infer_request(expert, member_inputs(self.bundle_config, expert, manifest, inputs))

    def expert_probs(self, expert: str, response: Any, batch: int) -> np.ndarray:
        """Class probabilities [batch, C] from a node's answer (raw or typed contents). WireError
        for an answer that is not the member's declared output (name, datatype, shape: the
        batch asked for and the ensemble's classes) or holds a non-finite score: a node's word
        is checked, never trusted."""
        declared = self.members[expert].outputs
        want = {s.name: (DATATYPE_OF[s.dtype], s.shape) for s in declared}
        got = {t.name: (t.datatype, list(t.shape)) for t in response.outputs}
        if set(got) != set(want):
            raise WireError(f"outputs {sorted(got)}, where the member declares {sorted(want)}")
        classes = self.manifest.outputs[0].shape[-1]
        for name, (datatype, shape) in got.items():
            kind, declared_shape = want[name]
            if datatype != kind:
                raise WireError(f"output {name!r} is {datatype}, where the member declares {kind}")
            if not shape or shape[0] != batch or math.prod(shape[1:]) != classes:
                raise WireError(
                    f"output {name!r} has shape {shape}, for a batch of {batch} and "
                    f"{classes} classes (declared {declared_shape})"
                )
        if len(response.raw_output_contents) or not len(response.outputs):
            scores = response_arrays(response)
        else:
            scores = {
                t.name: array_from_contents(t.name, t.datatype, list(t.shape), t.contents)
                for t in response.outputs
            }
        if not all(np.isfinite(value).all() for value in scores.values()):
            raise NonFiniteScores("its scores hold NaN or infinity")
        return expert_probs(scores, expert)

    def metadata(self) -> Any:
        """ModelMetadata of the ensemble: its inputs as ``run`` takes them, probs and gate."""
        tensor = pb.ModelMetadataResponse.TensorMetadata
        inputs = [
            tensor(
                name=s.name,
                datatype=DATATYPE_OF[s.dtype],
                shape=[d if d >= 0 else -1 for d in s.shape],
            )
            for s in self.manifest.inputs
        ]
        outputs = [
            tensor(name=s.name, datatype=DATATYPE_OF[s.dtype], shape=list(s.shape))
            for s in self.manifest.outputs
        ]
        return pb.ModelMetadataResponse(
            name=self.name,
            versions=["1"],
            platform="ganglion_ensemble",
            inputs=inputs,
            outputs=outputs,
        )

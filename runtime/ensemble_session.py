"""``EnsembleSession``: an ensemble's experts each in its own session, mixed by the gate.

Backend-agnostic: the members open on whatever backend the caller names (each member a
complete program of any kind); the gate runs on torch for the torch backend and on ONNX
Runtime otherwise, so an ensemble of ONNX members needs no torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ganglion.models.errors import BackendUnavailable, ShapeError
from ganglion.runtime.kinds.ensemble import expert_probs, member_inputs, mixture_outputs
from ganglion.runtime.program import Program
from ganglion.runtime.session import Session, State, open_session


class EnsembleSession(Session):
    """Members on one backend, the gate beside them (see ``runtime.kinds.ensemble``)."""

    def __init__(
        self, program: Program, backend: str, device: str, options: dict[str, Any]
    ) -> None:
        super().__init__(program, device)
        self.backend = backend
        config = program.config()
        self._config = config
        self.experts: list[str] = list(config["gate"]["experts"])
        self.top_k: int | None = config.get("top_k")
        missing = [e for e in self.experts if e not in program.members]
        if missing:
            raise ShapeError(f"{program.name}: the gate names expert {missing[0]!r}, no member")
        self._gate = _open_gate(program, backend)
        self.members: dict[str, Session] = {}
        try:
            for name in self.experts:
                self.members[name] = open_session(program.members[name], backend, device, **options)
        except Exception:
            self.close()
            raise
        self.selected = list(self.experts)

    def select(self, experts: list[str] | None) -> None:
        """Run only ``experts`` (a chosen subset; None: all); the gate is renormalized over them."""
        chosen = list(self.experts) if experts is None else list(experts)
        unknown = [e for e in chosen if e not in self.experts]
        if unknown or not chosen:
            raise ShapeError(
                f"select experts among {', '.join(self.experts)}; got {unknown or 'none'}"
            )
        self.selected = chosen

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        gate = self._gate(inputs)

        def run(e: int) -> np.ndarray:
            name = self.experts[e]
            member = self.members[name]
            scores = member.run(member_inputs(self._config, name, member.manifest, inputs))
            return expert_probs(scores if isinstance(scores, dict) else {"": scores}, name)

        chosen = [self.experts.index(e) for e in self.selected]
        return mixture_outputs(gate, chosen, self.top_k, run)

    def _step(self, inputs: dict[str, np.ndarray], state: State) -> tuple[dict, State]:
        return self._run(inputs), {}

    def close(self) -> None:
        """Close every member's session."""
        for member in self.members.values():
            member.close()


def _open_gate(program: Program, backend: str) -> Any:
    """A function: the ensemble's inputs -> gate weights [B, experts] (numpy float64)."""
    first = program.manifest.inputs[0].name
    if backend == "torch":
        import torch

        module = program.deployable().module.eval()

        def torch_gate(inputs: dict[str, np.ndarray]) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(inputs[first])).double().numpy()

        return torch_gate
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(
            "ensemble gate: onnxruntime is needed to run the gate without torch"
        ) from exc
    from ganglion.runtime.onnx_export.export import bundle_graph

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        bundle_graph(program, "step"), options, providers=["CPUExecutionProvider"]
    )

    def onnx_gate(inputs: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(["gate"], {first: inputs[first]})[0].astype(np.float64)

    return onnx_gate

"""``EnsembleSession``: an ensemble's experts each in its own session, mixed by the gate.

Backend-agnostic: the members open on whatever backend the caller names (each member a
complete program of any kind); the gate runs on torch for the torch backend and on ONNX
Runtime otherwise, so an ensemble of ONNX members needs no torch. Classifier ensembles are one
call; token ensembles step token by token (``runtime.kinds.ensemble``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ganglion.models.errors import BackendUnavailable, ShapeError
from ganglion.models.mixture import (
    COUNTS,
    flat_features,
    member_state_name,
    prefix_histograms,
    softmax,
)
from ganglion.runtime.kinds.ensemble import (
    check_member_bounds,
    expert_probs,
    finite_gate,
    is_sequence,
    member_inputs,
    mixture_outputs,
)
from ganglion.runtime.program import Program
from ganglion.runtime.session import Session, State, open_session

Arrays = dict[str, np.ndarray]


class EnsembleSession(Session):
    """Members on one backend, the gate beside them (see ``runtime.kinds.ensemble``)."""

    def __init__(
        self, program: Program, backend: str, device: str, options: dict[str, Any]
    ) -> None:
        super().__init__(program, device)
        self.backend = backend
        self._config = program.config()
        self.experts: list[str] = list(self._config["gate"]["experts"])
        self.top_k: int | None = self._config.get("top_k")
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
        self._tokens = is_sequence(self.manifest)

    def select(self, experts: list[str] | None) -> None:
        """Run only ``experts`` (a chosen subset; None: all); the gate is renormalized over them.
        For a token ensemble, choose before a sequence starts."""
        chosen = list(self.experts) if experts is None else list(experts)
        unknown = [e for e in chosen if e not in self.experts]
        if unknown or not chosen:
            raise ShapeError(
                f"select experts among {', '.join(self.experts)}; got {unknown or 'none'}"
            )
        self.selected = chosen

    @property
    def _chosen(self) -> list[int]:
        return [self.experts.index(e) for e in self.selected]

    # ---- classifiers --------------------------------------------------------------------------

    def _classify(self, inputs: Arrays) -> Arrays:
        for name in self.selected:  # refused before any member runs, naming the expert
            check_member_bounds(self._config, name, self.members[name].manifest, inputs)
        gate = finite_gate(self._gate(flat_features(next(iter(inputs.values())))))

        def run(e: int) -> np.ndarray:
            name = self.experts[e]
            member = self.members[name]
            scores = member.run(member_inputs(self._config, name, member.manifest, inputs))
            return expert_probs(scores if isinstance(scores, dict) else {"": scores}, name)

        probs, weights = mixture_outputs(gate, self._chosen, self.top_k, run)
        return {"probs": probs.astype(np.float32), "gate": weights.astype(np.float32)}

    # ---- token models ---------------------------------------------------------------------------

    def _tokens_forward(self, ids: np.ndarray, state: State, one: bool) -> tuple[Arrays, State]:
        """ids [B, T] (or [B] with ``one``): every chosen member advanced, gate per position."""
        seq = ids[:, None] if one else ids
        batch, steps = seq.shape
        vocab = self.manifest.time.vocab_size  # type: ignore[union-attr]
        features, counts = prefix_histograms(seq, np.asarray(state[COUNTS]), vocab)
        gate = self._gate(features.reshape(batch * steps, vocab))
        new_state: State = {COUNTS: counts.astype(np.float32)}

        def run(e: int) -> np.ndarray:
            name = self.experts[e]
            member = self.members[name]
            own = {s.name: state[member_state_name(name, s.name)] for s in member.manifest.state}
            if one:
                out, own = member.step({"ids": ids}, own)
            else:
                out, own = member.prefill({"ids": ids}, own)
            new_state.update({member_state_name(name, k): np.array(v) for k, v in own.items()})
            logits = next(iter(out.values()))
            return softmax(logits.reshape(batch * steps, -1))

        probs, weights = mixture_outputs(gate, self._chosen, self.top_k, run, skip_idle=False)
        for name in self.experts:  # members not chosen keep their state
            for spec in self.members[name].manifest.state:
                key = member_state_name(name, spec.name)
                new_state.setdefault(key, np.array(state[key]))
        shape = (batch,) if one else (batch, steps)
        logits = np.log(np.maximum(probs, 1e-30)).astype(np.float32).reshape(*shape, -1)
        return {"logits": logits, "gate": weights.astype(np.float32).reshape(*shape, -1)}, new_state

    # ---- the Session contract -----------------------------------------------------------------

    def _run(self, inputs: Arrays) -> Arrays:
        if not self._tokens:
            return self._classify(inputs)
        ids = inputs["ids"]
        fresh = self._fresh_state(self._checked_batch(ids.shape[0]))
        return self._tokens_forward(ids, fresh, one=False)[0]

    def _prefill(self, inputs: Arrays, state: State) -> tuple[Arrays, State]:
        if not self._tokens:
            return self._classify(inputs), state
        return self._tokens_forward(inputs["ids"], state, one=False)

    def _step(self, inputs: Arrays, state: State) -> tuple[Arrays, State]:
        if not self._tokens:
            return self._classify(inputs), {}
        return self._tokens_forward(inputs["ids"], state, one=True)

    def _release(self) -> None:
        """Close every member's session."""
        for member in self.members.values():
            member.close()


def _open_gate(program: Program, backend: str) -> Callable[[np.ndarray], np.ndarray]:
    """A function: gate features [B, F] -> gate weights [B, experts] (numpy float64)."""
    if backend == "torch":
        import torch

        module = program.deployable().module.eval()

        def torch_gate(features: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(features)).double().numpy()

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
    graph = bundle_graph(program, "step")
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def onnx_gate(features: np.ndarray) -> np.ndarray:
        return session.run(["gate"], {"features": features})[0].astype(np.float64)

    return onnx_gate

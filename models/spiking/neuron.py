"""The neuron node of a spiking graph and its discrete-time update (the spec every backend follows).

One ``Neuron`` covers NIR's IF, LIF, LI, I, CubaLIF and CubaLI, and the simulation conventions
the exporting frameworks fill in differently (README, "Discrete time and NIR"). Per element, one
timestep with input x:

    synaptic current (CubaLIF, CubaLI):  i ← syn_decay ⊙ i + syn_gain ⊙ x;  x ← i
    delayed reset (reset_delay = 1):     r = fired(v)  (v as stored: before last step's reset)
                                         "zero": v ← v_reset where r
    membrane:                            v ← decay ⊙ v + bias + gain ⊙ x
                                         "subtract", delayed: v ← v − r ⊙ threshold
    fire "gt": s = v > threshold · "ge": s = v ≥ threshold · "none": output v, no spike/reset
    spikes "many": s = trunc(v / threshold) where fired (several spikes in one step)
    immediate reset (reset_delay = 0):   "subtract": v ← v − s ⊙ threshold;  "zero": v_reset where s
    lower bound (v_min given):           v ← relu(v − v_min) + v_min   (Sinabs' form)

The state is ``v`` (and ``i`` with a synaptic current); it starts at ``v_init`` (and 0).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ganglion.kernels.lif import cpu_scan_available, lif_scan
from ganglion.models.errors import ShapeError

if TYPE_CHECKING:
    from types import ModuleType

    import numpy as np

RESETS = ("subtract", "zero")
FIRE_RULES = ("gt", "ge", "none")
SPIKE_COUNTS = ("one", "many")
MODELS = ("if", "lif", "li", "i", "cubalif", "cubali")
DECAY_MODES = ("euler", "exact")
SYNAPTIC_INPUTS = ("euler", "jump")


def _choice(value: object, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ShapeError(f"Neuron {name} must be one of {', '.join(choices)}, got {value!r}")


@dataclass(eq=False)
class Neuron:
    """Discrete-time neuron, per element (equations in the module docstring).

    IF is decay = 1, bias = 0. Tensor parameters have the per-sample feature shape;
    ``syn_decay``/``syn_gain`` exist only for a synaptic current, ``v_min`` only with a lower
    bound. ``model``, ``decay_mode`` and ``synaptic_input`` say how the numbers were derived from
    NIR's continuous-time parameters, so export can invert them.
    """

    decay: torch.Tensor
    gain: torch.Tensor
    bias: torch.Tensor
    threshold: torch.Tensor
    v_reset: torch.Tensor
    v_init: torch.Tensor
    syn_decay: torch.Tensor | None = None
    syn_gain: torch.Tensor | None = None
    v_min: torch.Tensor | None = None
    reset: str = "subtract"
    reset_delay: int = 0
    fire: str = "gt"
    spikes: str = "one"
    model: str = "if"  # how it was declared: if, lif, li, i, cubalif, cubali
    decay_mode: str = "euler"  # euler: decay = 1 − dt/τ; exact: exp(−dt/τ)
    synaptic_input: str = "euler"  # euler: syn_gain = dt·w_in/τ_syn; jump: syn_gain = w_in
    shape: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        _choice(self.reset, "reset", RESETS)
        _choice(self.fire, "fire", FIRE_RULES)
        _choice(self.spikes, "spikes", SPIKE_COUNTS)
        _choice(self.model, "model", MODELS)
        _choice(self.decay_mode, "decay_mode", DECAY_MODES)
        _choice(self.synaptic_input, "synaptic_input", SYNAPTIC_INPUTS)
        if self.reset_delay not in (0, 1):
            raise ShapeError(f"Neuron reset_delay must be 0 or 1, got {self.reset_delay!r}")
        if (self.syn_decay is None) != (self.syn_gain is None):
            raise ShapeError("Neuron needs both syn_decay and syn_gain, or neither")
        self.shape = tuple(self.threshold.shape)
        for f in ("decay", "gain", "bias", "v_reset", "v_init", "syn_decay", "syn_gain", "v_min"):
            value = getattr(self, f)
            if value is not None and tuple(value.shape) != self.shape:
                raise ShapeError(
                    f"Neuron.{f} must have shape {self.shape} like threshold, "
                    f"got {tuple(value.shape)}"
                )

    @property
    def spiking(self) -> bool:
        """False for LI, I and CubaLI: the output is the membrane potential."""
        return self.fire != "none"

    @property
    def synaptic(self) -> bool:
        """True when the neuron keeps a synaptic current (CubaLIF, CubaLI)."""
        return self.syn_decay is not None

    @property
    def plain(self) -> bool:
        """True when the fused LIF scan (``kernels/lif``) computes it: one spike on v > θ,
        immediate reset, no synaptic current, no lower bound."""
        return (
            self.fire == "gt"
            and self.spikes == "one"
            and self.reset_delay == 0
            and not self.synaptic
            and self.v_min is None
        )

    def __setattr__(self, name: str, value: object) -> None:
        """Setting any field drops the cached compiled-scan parameters (``cpu_scan_params``)."""
        self.__dict__.pop("_cpu_params", None)
        object.__setattr__(self, name, value)

    def __getstate__(self) -> dict[str, object]:
        """Copies and pickles leave the compiled-scan cache behind (it views these tensors)."""
        return {k: v for k, v in self.__dict__.items() if k != "_cpu_params"}

    def cpu_scan_params(self) -> tuple[np.ndarray, ...] | None:
        """(gain, decay, threshold, bias, v_reset) as flat fp32 numpy views for the compiled CPU
        scan of a ``plain`` neuron, or None when the neuron or its tensors do not suit it
        (not plain, another dtype, a GPU, autograd).

        Made once and kept until a field is set (``__setattr__``); the arrays share the tensors'
        memory, so an in-place edit of a parameter reaches the scan too.
        """
        cached = self.__dict__.get("_cpu_params", self)  # ``self``: not made yet
        if cached is not self:
            return cached
        tensors = (self.gain, self.decay, self.threshold, self.bias, self.v_reset)
        params = None
        if self.plain and all(t.dtype == torch.float32 and t.is_contiguous() for t in tensors):
            cpu = _cpu_kernels()
            params = cpu.float_params(*tensors) if cpu.supports(*tensors) else None
        self.__dict__["_cpu_params"] = params
        return params

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Same as the input; checks it matches the neuron's shape."""
        if tuple(in_shape) != self.shape:
            raise ShapeError(f"Neuron of shape {self.shape} fed {tuple(in_shape)}")
        return in_shape

    @classmethod
    def integrate_and_fire(
        cls, threshold: torch.Tensor, v_init_fraction: float = 0.5, reset: str = "subtract"
    ) -> Neuron:
        """IF neuron with per-neuron thresholds, starting at v_init_fraction · threshold."""
        t = threshold.float()
        return cls(
            decay=torch.ones_like(t),
            gain=torch.ones_like(t),
            bias=torch.zeros_like(t),
            threshold=t,
            v_reset=torch.zeros_like(t),
            v_init=t * v_init_fraction,
            reset=reset,
            model="if",
        )


def _fired(n: Neuron, v: torch.Tensor) -> torch.Tensor:
    return v > n.threshold if n.fire == "gt" else v >= n.threshold


def _spike_count(n: Neuron, v: torch.Tensor) -> torch.Tensor:
    fired = _fired(n, v)
    if n.spikes == "one":
        return fired.to(v.dtype)
    return torch.where(fired, torch.div(v, n.threshold, rounding_mode="trunc"), 0.0)


def neuron_step(
    n: Neuron, x: torch.Tensor, v: torch.Tensor, i: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One timestep: x, v (and i) [B, *shape] -> (output, v, i); the module docstring's order."""
    if n.synaptic:
        i = n.syn_decay * i + n.syn_gain * x
        x = i
    delayed = _spike_count(n, v) if n.reset_delay and n.spiking else None
    if delayed is not None and n.reset == "zero":
        v = torch.where(delayed > 0, n.v_reset, v)
    v = n.decay * v + n.bias + n.gain * x
    if not n.spiking:
        v = _bounded(n, v)
        return v, v, i
    if delayed is not None and n.reset == "subtract":
        v = v - delayed * n.threshold
    s = _spike_count(n, v)
    if not n.reset_delay:
        v = v - s * n.threshold if n.reset == "subtract" else torch.where(s > 0, n.v_reset, v)
    return s, _bounded(n, v), i


def _bounded(n: Neuron, v: torch.Tensor) -> torch.Tensor:
    return v if n.v_min is None else torch.relu(v - n.v_min) + n.v_min


def neuron_scan(
    n: Neuron,
    x: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor | None,
    compiled: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """x [T, B, *shape], v (and i) [B, *shape] -> (outputs [T, B, *shape], v, i).

    A ``plain`` neuron goes through the fused LIF scan (compiled on the CPU where numba is
    installed, with no per-call checks: the graph checked the shapes once); any other steps
    ``neuron_step``. ``x`` may be an expanded view (an input constant over time).
    ``compiled`` says whether the compiled scan may be used (None: ask
    ``kernels.lif.cpu_scan_available``, numba installed and kernels on).
    """
    if n.plain:
        compiled = cpu_scan_available() if compiled is None else compiled
        steps, batch = x.shape[:2]
        if compiled and x.dtype == v.dtype == torch.float32 and not x.is_cuda:
            flat = x.ndim == 3
            out = _compiled_scan(
                n, x if flat else x.reshape(steps, batch, -1), v if flat else v.reshape(batch, -1)
            )
            if out is not None:
                return (out if flat else (out[0].reshape(x.shape), out[1].reshape(v.shape))) + (i,)
        spikes, v_new = lif_scan(
            (x * n.gain).reshape(steps, batch, -1),
            v.reshape(batch, -1).float(),
            n.decay.reshape(-1),
            n.threshold.reshape(-1),
            n.bias.reshape(-1),
            n.v_reset.reshape(-1),
            reset=n.reset,
        )
        return spikes.reshape(x.shape), v_new.reshape(v.shape), i
    outs = []
    for x_t in x:
        out, v, i = neuron_step(n, x_t, v, i)
        outs.append(out)
    return torch.stack(outs), v, i


def neuron_update(
    n: Neuron,
    x: torch.Tensor,
    v: torch.Tensor,
    i: torch.Tensor | None,
    compiled: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One timestep without a time axis: x, v (and i) [B, *shape] -> (output, v, i), equal bit
    for bit to ``neuron_scan`` on ``x[None]`` (what ``SpikingNetwork.step`` calls).

    A ``plain`` fp32 CPU neuron takes the compiled single-step update (``cpu.float_step``, the
    scan's arithmetic) with its cached parameters (``cpu_scan_params``); any other neuron
    ``neuron_step``, as the scan would; ``compiled`` as in ``neuron_scan``.
    """
    if compiled is None:
        compiled = cpu_scan_available()
    params = n.cpu_scan_params() if compiled else None
    if (
        params is not None
        and x.dtype == v.dtype == torch.float32
        and not (x.is_cuda or x.requires_grad or v.requires_grad)
    ):
        return (*_cpu_kernels().float_step(x, v, params, n.reset == "zero"), i)
    if not n.plain:
        out, v, i = neuron_step(n, x, v, i)
        return (out.clone() if out is v else out), v, i  # the scan's output is its own tensor
    out, v, i = neuron_scan(n, x.unsqueeze(0), v, i, compiled)
    return out[0], v, i


def _compiled_scan(
    n: Neuron, current: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The compiled CPU scan of a plain neuron: fp32 CPU current [T, B, N], v [B, N] ->
    (spikes, v); None where the parameters or autograd do not suit it."""
    params = n.cpu_scan_params()
    if params is None or current.requires_grad or v.requires_grad:
        return None
    return _cpu_kernels().float_scan(current, v, params, n.reset == "zero")


@functools.cache
def _cpu_kernels() -> ModuleType:
    """``kernels.lif.cpu``, imported on first use (it imports numba)."""
    from ganglion.kernels.lif import cpu

    return cpu

"""One NIR node <-> one node of our spiking graph, under a set of simulation conventions.

Neurons (NIR is continuous-time; ``NirSemantics`` picks the discretization, module
``nir_semantics``). With a = dt/τ (``euler``) or a = 1 − exp(−dt/τ) (``exact``):
  LIF, LI        τ dv/dt = (v_leak − v) + R·I  →  decay = 1 − a, gain = a·R, bias = a·v_leak
  IF, I          dv/dt = R·I                    →  decay = 1, gain = dt·R
  CubaLIF/CubaLI τ_syn dI/dt = −I + w_in·S      →  syn_decay = 1 − a_syn, syn_gain = a_syn·w_in
                 (``jump``: syn_gain = w_in), then the membrane as LIF/LI with input I.
LI, I and CubaLI do not spike: their output is v. Export inverts these formulas and writes
what NIR cannot hold (reset rule and delay, fire rule, spikes per step, v_init, v_min, the dt
and discretization used) in the node's ``metadata``; import reads them back before the
conventions asked for, so our graph -> NIR -> our graph is bit-equal.
"""

from __future__ import annotations

from typing import Any

import nir
import numpy as np
import torch

from ganglion.converters.nir_semantics import NirSemantics
from ganglion.models.errors import NIRError
from ganglion.models.spiking.layers import (
    Affine,
    AvgPool2d,
    Conv1d,
    Conv2d,
    Delay,
    Flatten,
    Scale,
    SumPool2d,
    Threshold,
)
from ganglion.models.spiking.neuron import Neuron

NEURON_TYPES = (nir.IF, nir.LIF, nir.LI, nir.I, nir.CubaLIF, nir.CubaLI)
IMPORTABLE = (
    "Input, Output, Affine, Linear, Conv1d, Conv2d, Flatten, Scale, AvgPool2d, SumPool2d, "
    "Threshold, Delay, IF, LIF, LI, I, CubaLIF, CubaLI, NIRGraph (nested)"
)
_UNIT_GAIN_TOLERANCE = 1e-5  # exporters compute R = τ/dt in float32
_MODEL = {nir.IF: "if", nir.LIF: "lif", nir.LI: "li", nir.I: "i", nir.CubaLIF: "cubalif",
          nir.CubaLI: "cubali"}  # fmt: skip
_META_CHOICES = ("reset", "fire", "spikes", "decay_mode", "synaptic_input")


def f32(a: Any) -> torch.Tensor:
    """Any array-like as a float32 tensor (through float64, so values round once)."""
    return torch.from_numpy(np.asarray(a, dtype=np.float64).astype(np.float32))


def np64(t: torch.Tensor) -> np.ndarray:
    """A tensor as a float64 numpy array."""
    return t.detach().cpu().double().numpy()


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def metadata(node: nir.NIRNode) -> dict[str, Any]:
    """A node's metadata with strings decoded (HDF5 gives bytes or numpy scalars)."""
    meta = getattr(node, "metadata", None) or {}
    out = {}
    for k, v in meta.items():
        v = _text(v)
        out[k] = v.item() if isinstance(v, np.generic) else v
    return out


# ---- neurons: NIR -> ours --------------------------------------------------------------------


def _decay_and_step(tau: np.ndarray, dt: float, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(decay, a) as float32: a = dt/τ (euler) or 1 − exp(−dt/τ), computed in float32 the way
    Sinabs does (``exact``), so its decays are bit-equal."""
    if mode == "exact":
        decay = torch.exp(-(torch.tensor(dt, dtype=torch.float32) / f32(tau)))
        return decay, 1.0 - decay
    a = dt / tau
    return f32(1.0 - a), torch.from_numpy(a)


def _check_decay(decay: torch.Tensor, mode: str, what: str) -> None:
    """Refuse a τ whose float32 decay has no time constant (``_step_of`` could not write it
    back): 1 or more (τ infinite, or so large against dt that the leak rounds away), or 0 or
    less with exact decay (τ so small the state is forgotten at every step)."""
    values = decay.double().numpy()
    bad = (values >= 1.0) | ((values <= 0.0) if mode == "exact" else False) | np.isnan(values)
    if np.any(bad):
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise NIRError(
            f"{what} at index {index} gives decay {values[index]:g} per step, outside (0, 1): "
            "no time constant"
        )


def _unit(gain: torch.Tensor) -> torch.Tensor:
    return torch.where((gain.double() - 1.0).abs() < _UNIT_GAIN_TOLERANCE, 1.0, gain.float())


def neuron_from_nir(
    name: str, node: nir.NIRNode, shape: tuple[int, ...], sem: NirSemantics
) -> Neuron:
    """The Neuron of an NIR neuron node with per-sample ``shape`` (module docstring)."""
    meta = metadata(node)
    model = _MODEL[type(node)]
    leaky = model in ("lif", "li", "cubalif", "cubali")
    dt = float(meta.get("dt", sem.leaky_dt() if leaky else sem.dt))
    mode = str(meta.get("decay_mode", sem.decay))

    def full(value: Any, default: float = 0.0) -> np.ndarray:
        value = default if value is None else value
        return np.array(np.broadcast_to(np.asarray(value, dtype=np.float64), shape))

    r = full(getattr(node, "r", 1.0), 1.0)
    spiking = model in ("if", "lif", "cubalif")
    threshold = full(node.v_threshold) if spiking else np.zeros(shape)
    v_reset = full(node.v_reset) if spiking else np.zeros(shape)
    v_leak = full(getattr(node, "v_leak", 0.0))
    if leaky:
        tau = full(node.tau_mem if model.startswith("cuba") else node.tau)
        if np.any(tau <= 0):
            raise NIRError(f"{type(node).__name__} node {name!r} has a non-positive tau")
        decay, a = _decay_and_step(tau, dt, mode)
        _check_decay(decay, mode, f"{type(node).__name__} node {name!r}: tau")
        gain, bias = a.double() * torch.from_numpy(r), a.double() * torch.from_numpy(v_leak)
    else:
        decay, gain, bias = torch.ones(shape), torch.from_numpy(dt * r), torch.zeros(shape)
    syn_decay = syn_gain = None
    if model.startswith("cuba"):
        syn_decay, syn_gain = _synapse_from_nir(name, node, shape, dt, mode, sem, meta, full)
    init = {"zero": np.zeros(shape), "leak": v_leak, "reset": v_reset}[sem.v_init]
    v_init = full(meta["v_init"]) if "v_init" in meta else init
    v_min = None
    if "v_min" in meta:
        v_min = f32(full(meta["v_min"]))
    elif sem.lower_bound == "threshold" and model == "if":
        v_min = f32(-threshold)
    return Neuron(
        decay=decay.float(),
        gain=_unit(gain),
        bias=f32(bias.numpy()),
        threshold=f32(threshold),
        v_reset=f32(v_reset),
        v_init=f32(v_init),
        syn_decay=syn_decay,
        syn_gain=syn_gain,
        v_min=v_min,
        reset=str(meta.get("reset", sem.reset)),
        reset_delay=int(meta.get("reset_delay", sem.reset_delay)),
        fire=str(meta.get("fire", sem.fire)) if spiking else "none",
        spikes=str(meta.get("spikes", sem.spikes_per_step)),
        model=model,
        decay_mode=mode,
        synaptic_input=str(meta.get("synaptic_input", sem.synaptic_input)),
    )


def _synapse_from_nir(
    name: str,
    node: nir.NIRNode,
    shape: tuple[int, ...],
    dt: float,
    mode: str,
    sem: NirSemantics,
    meta: dict[str, Any],
    full: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    tau_syn = full(node.tau_syn)
    if np.any(tau_syn <= 0):
        raise NIRError(f"{type(node).__name__} node {name!r} has a non-positive tau_syn")
    w_in = torch.from_numpy(full(getattr(node, "w_in", 1.0), 1.0))
    decay, a = _decay_and_step(tau_syn, dt, mode)
    _check_decay(decay, mode, f"{type(node).__name__} node {name!r}: tau_syn")
    jump = str(meta.get("synaptic_input", sem.synaptic_input)) == "jump"
    return decay.float(), _unit(w_in if jump else a.double() * w_in)


# ---- neurons: ours -> NIR --------------------------------------------------------------------


def _step_of(decay: np.ndarray, dt: float, mode: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(τ, a) for decays ``decay``: the inverse of ``_decay_and_step``."""
    if np.any(decay >= 1.0) or (mode == "exact" and np.any(decay <= 0.0)):
        raise NIRError(f"neuron node {name!r}: decay outside (0, 1) has no time constant")
    a = 1.0 - decay
    tau = -dt / np.log(decay) if mode == "exact" else dt / a
    if mode == "exact":
        tau = _tau_for_float32(tau, decay, dt)
    return tau, a


def _tau_for_float32(tau: np.ndarray, decay: np.ndarray, dt: float) -> np.ndarray:
    """τ nudged by float32 ulps until ``exp(−dt/τ)`` in float32 gives ``decay`` back."""
    want = torch.from_numpy(decay.astype(np.float32))
    best = tau.astype(np.float32)
    for _ in range(8):
        got = torch.exp(-(torch.tensor(dt, dtype=torch.float32) / torch.from_numpy(best)))
        wrong = (got != want).numpy()
        if not wrong.any():
            break
        step = np.where(got.numpy() > want.numpy(), -np.inf, np.inf).astype(np.float32)
        best = np.where(wrong, np.nextafter(best, step), best)
    return best.astype(np.float64)


def neuron_to_nir(name: str, n: Neuron, dt: float, dt_leaky: float) -> nir.NIRNode:
    """The NIR node of a neuron (module docstring); metadata carries what NIR cannot."""
    decay, gain, bias = np64(n.decay), np64(n.gain), np64(n.bias)
    leaky = bool(np.any(decay != 1.0))
    step = dt_leaky if leaky else dt
    meta: dict[str, Any] = {
        "reset": n.reset,
        "reset_delay": n.reset_delay,
        "fire": n.fire,
        "spikes": n.spikes,
        "decay_mode": n.decay_mode,
        "synaptic_input": n.synaptic_input,
        "dt": step,
        "v_init": np64(n.v_init),
    }
    if n.v_min is not None:
        meta["v_min"] = np64(n.v_min)
    spike = {"v_threshold": np64(n.threshold), "v_reset": np64(n.v_reset)} if n.spiking else {}
    if not leaky:
        if np.any(bias != 0.0):
            raise NIRError(f"neuron node {name!r}: a non-leaky neuron with a bias has no NIR form")
        if n.synaptic:
            raise NIRError(f"neuron node {name!r}: a synaptic current needs a leaky membrane")
        cls = nir.IF if n.spiking else nir.I
        return cls(r=gain / dt, metadata=meta, **spike)
    tau, a = _step_of(decay, step, n.decay_mode, name)
    membrane = {"r": gain / a, "v_leak": bias / a}
    if not n.synaptic:
        cls = nir.LIF if n.spiking else nir.LI
        return cls(tau=tau, metadata=meta, **membrane, **spike)
    tau_syn, a_syn = _step_of(np64(n.syn_decay), step, n.decay_mode, name)
    syn_gain = np64(n.syn_gain)
    w_in = syn_gain if n.synaptic_input == "jump" else syn_gain / a_syn
    cls = nir.CubaLIF if n.spiking else nir.CubaLI
    return cls(tau_syn=tau_syn, tau_mem=tau, w_in=w_in, metadata=meta, **membrane, **spike)


# ---- other nodes -----------------------------------------------------------------------------


def _pads(name: str, padding: Any, kernel: tuple[int, ...], dilation: tuple[int, ...]) -> tuple:
    if isinstance(padding, bytes | str):
        padding = _text(padding)
        if padding == "valid":
            return tuple(0 for _ in kernel)
        spans = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        if padding == "same" and all(s % 2 == 0 for s in spans):
            return tuple(s // 2 for s in spans)
        raise NIRError(f"node {name!r} uses padding={padding!r}; give explicit padding")
    return tuple(int(p) for p in np.broadcast_to(np.asarray(padding), len(kernel)))


def _ints(value: Any, n: int) -> tuple[int, ...]:
    return tuple(int(x) for x in np.broadcast_to(np.asarray(value), n))


def layer_from_nir(name: str, node: nir.NIRNode, sem: NirSemantics) -> Any:  # noqa: C901
    """A stateless or delay node of ours for NIR node ``node`` (neurons: ``neuron_from_nir``)."""
    if isinstance(node, nir.Affine):
        return Affine(f32(node.weight), f32(node.bias))
    if isinstance(node, nir.Linear):
        return Affine(f32(node.weight), torch.zeros(np.asarray(node.weight).shape[0]))
    if isinstance(node, nir.Conv1d | nir.Conv2d):
        weight = f32(node.weight)
        rank = weight.ndim - 2
        bias = node.bias if np.ndim(node.bias) else np.zeros(weight.shape[0])
        dilation = _ints(node.dilation, rank)
        args = (
            _ints(node.stride, rank),
            _pads(name, node.padding, tuple(weight.shape[2:]), dilation),
            dilation,
        )
        if rank == 1:
            return Conv1d(weight, f32(bias), *(a[0] for a in args), int(node.groups))
        return Conv2d(weight, f32(bias), *args, int(node.groups))
    if isinstance(node, nir.AvgPool2d | nir.SumPool2d):
        cls = SumPool2d if isinstance(node, nir.SumPool2d) else AvgPool2d
        return cls(_ints(node.kernel_size, 2), _ints(node.stride, 2), _ints(node.padding, 2))
    if isinstance(node, nir.Flatten):
        return Flatten(int(node.start_dim), int(node.end_dim))
    if isinstance(node, nir.Scale):
        return Scale(f32(node.scale))
    if isinstance(node, nir.Threshold):
        return Threshold(f32(node.threshold))
    if isinstance(node, nir.Delay):
        dt = float(metadata(node).get("dt", sem.dt))
        steps = np.asarray(node.delay, dtype=np.float64) / dt
        if np.any(np.abs(steps - np.round(steps)) > 1e-6 * np.maximum(1.0, np.abs(steps))):
            raise NIRError(f"Delay node {name!r}: delays are not whole steps of dt = {dt:g} s")
        return Delay(f32(np.round(steps)))
    raise NIRError(
        f"node {name!r} of type {type(node).__name__} is not supported; supported: {IMPORTABLE}"
    )


def layer_to_nir(name: str, layer: Any, in_shape: tuple[int, ...], dt: float) -> nir.NIRNode:
    """The NIR node of a non-neuron node of ours (``in_shape``: its per-sample input)."""
    if isinstance(layer, Affine):
        return nir.Affine(weight=np64(layer.weight), bias=np64(layer.bias))
    if isinstance(layer, Conv1d):
        return nir.Conv1d(
            input_shape=int(in_shape[1]),
            weight=np64(layer.weight),
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
            bias=np64(layer.bias),
        )
    if isinstance(layer, Conv2d):
        return nir.Conv2d(
            input_shape=tuple(in_shape[1:]),
            weight=np64(layer.weight),
            bias=np64(layer.bias),
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=layer.groups,
        )
    if isinstance(layer, SumPool2d | AvgPool2d):
        cls = nir.SumPool2d if isinstance(layer, SumPool2d) else nir.AvgPool2d
        return cls(
            kernel_size=np.array(layer.kernel_size),
            stride=np.array(layer.stride),
            padding=np.array(layer.padding),
        )
    if isinstance(layer, Flatten):
        return nir.Flatten(
            input_type={"input": np.array(in_shape)},
            start_dim=layer.start_dim,
            end_dim=layer.end_dim,
        )
    if isinstance(layer, Scale):
        return nir.Scale(scale=np64(layer.scale.expand(in_shape)))
    if isinstance(layer, Threshold):
        return nir.Threshold(threshold=np64(layer.threshold.expand(in_shape)))
    if isinstance(layer, Delay):
        return nir.Delay(delay=np64(layer.steps) * dt, metadata={"dt": dt})
    raise NIRError(f"node {name!r} of type {type(layer).__name__} has no NIR form")

"""Float spiking program -> Loihi 2 fixed-point program (what Lava ``fixed_pt`` and the chip run).

Per neuron layer, every neuron's threshold θ is folded into its incoming weights and bias, so
the layer shares one integer threshold ``vth`` (Lava's LIF has one per process); thresholds are
then exact and their rounding becomes weight and bias rounding, which is reported.
- weights: ``W_q = m · 2^(e+1)`` (Dense: mixed-sign 8-bit mantissa m, Lava's ×2, shared
  exponent e ≥ −8; for e < 0 the summed input is floored, as Lava's right shift does) or
  ``m · 2^e`` with e ≥ 0 (Conv: Lava's Conv model applies no exponent, so the backend passes
  ``m << e``); e is the smallest exponent that fits the layer's largest weight. A graded input
  layer also folds the input scale (8-bit input spikes).
- vth = 2^14 unless the worst-case input would overflow u (a_in << 6 wraps at 24 bits; a
  synaptic current can build up to 1/(1 − c) steps' worth), then the largest power of two that
  fits; bias mantissa/exponent 13/3 bits, dv 12 bits.
- Synaptic current: Lava's LIF is current-based, so a CubaLIF's current is Lava's u with
  du = 4095 − round(4096 · syn_decay) and its syn_gain folded into the weights; other neurons
  get du = 4095 (u = a_in << 6: no current memory). Lava adds a bias to v, not to u: a synaptic
  bias b, which a CubaLIF integrates into its current, is carried at its steady state
  syn_gain · b / (1 − c) from the first step (the float program reaches it over ~1/(1 − c)
  steps; the report marks those layers).
- Reset: Loihi's LIF resets v to 0. Programs converted with reset by subtraction lose the
  charge above threshold at each spike, so rates drop. We scale every threshold by one factor
  α ≤ 1 chosen on the calibration data (accuracy with labels, else agreement with the float
  program) from ``THRESHOLD_SCALES``; the report states α and the accuracy change.
- The output layer's current is read out as a graded value: y = a / readout_scale + bias.
- Non-spiking read-out (LI, CubaLI, I): a LIF with vth = ``NONSPIKING_VTH`` whose membrane is the
  output, y = v / readout_scale. Its scale (v units per unit of the float membrane) is the
  largest power of two (≤ 64 · options.vth) for which the worst-case |v| over the program's
  T + D steps, v_init plus Σ decay^k · (the largest input and bias of a step), stays at or below
  vth << 6: it never fires and v never clips (an integrator's bound grows with T).
- Recurrent Dense connections quantize like any other: their weights join the layer they feed.
- Pooling (AvgPool2d, SumPool2d) is a fixed-weight convolution folded into the Dense or Conv
  layer it feeds before quantizing (``fold_pooling``); the report lists the folded nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from ganglion.models.deployable import Deployable
from ganglion.models.errors import ConversionError
from ganglion.models.spiking.fixed_point import (
    FixedPointNetwork,
    fixed_point_config,
    fixed_point_manifest,
)
from ganglion.models.spiking.graph import INPUT, OUTPUT, SpikingGraph
from ganglion.models.spiking.layers import Affine, Conv2d, Flatten, Neuron
from ganglion.models.spiking.loihi_layout import (
    ACT_SHIFT,
    DECAY_UNITY,
    NONSPIKING_VTH,
    SYNAPTIC,
    UV_LIMIT,
    VTH_MAX,
    WEIGHT_MANT_MAX,
    LoihiConfig,
    decay_to_dv,
    du_to_syn_decay,
    fold_pooling,
    neuron_du,
    split_bias,
    synaptic_depth,
    unsupported_reason,
)

THRESHOLD_SCALES = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)
_CALIB_SAMPLES = 512
WEIGHT_EXP_MIN = -8  # Dense shifts the summed input right (floor); Lava's Conv has no exponent


@dataclass
class LoihiOptions:
    """Quantization options."""

    vth: int = 2**14  # target threshold mantissa (lowered when a step's input could overflow)
    input_bits: int = 8  # graded input spikes for analog ("direct") inputs
    threshold_scales: tuple[float, ...] = THRESHOLD_SCALES


@dataclass
class _Layer:
    """A neuron layer normalized to threshold 1: its synapses' weights and its bias."""

    weights: dict[str, torch.Tensor]  # synaptic node -> weight scaled per output neuron
    bias: torch.Tensor  # [*shape] constant input per step, threshold units
    v_init: torch.Tensor  # [*shape] threshold units
    build_up: float = 1.0  # how many steps' input a synaptic current can hold: 1 / (1 − c)


def quantize_loihi2(
    deployable: Deployable,
    calib_x: np.ndarray | torch.Tensor | None = None,
    calib_y: np.ndarray | torch.Tensor | None = None,
    options: LoihiOptions | None = None,
) -> Deployable:
    """Quantize a float spiking program for Loihi 2; returns a ``loihi2-fixed`` Deployable.

    calib_x: inputs shaped as the program takes them (sets the input scale, picks the threshold
    scale α, scores the change); calib_y: optional labels for an accuracy report.
    """
    opts = options or LoihiOptions()
    graph, manifest = _float_graph(deployable)
    batch_axis = 1 if manifest.time.time_major else 0  # time-major inputs are [T, batch, ...]
    x = None if calib_x is None else torch.as_tensor(np.asarray(calib_x)).float()
    if x is not None:
        x = x.narrow(batch_axis, 0, min(_CALIB_SAMPLES, x.shape[batch_axis]))
    y = None if calib_y is None else torch.as_tensor(np.asarray(calib_y)).long()[:_CALIB_SAMPLES]
    config = _input_config(manifest.time.encoding, x, opts)
    reference = None if x is None else deployable.module.run(x)
    time = manifest.time
    lead = x.shape[0] if x is not None and time.time_major else time.timesteps
    steps = lead + synaptic_depth(graph)  # the horizon of a non-spiking read-out's worst case
    best: tuple[float, Deployable] | None = None
    for alpha in opts.threshold_scales if x is not None else (1.0,):
        fixed_graph, cfg, report = _quantize_graph(graph, config, opts, alpha, steps)
        program = FixedPointNetwork(fixed_graph, manifest.time, cfg)
        score = 0.0 if x is None else _score(program.run(x), reference, y)
        if best is None or score > best[0]:
            report["folded_pooling"] = sorted(set(deployable.module.graph.nodes) - set(graph.nodes))
            fixed_manifest = fixed_point_manifest(fixed_graph, manifest.time, {"loihi2": report})
            config_json = fixed_point_config(fixed_graph, cfg)
            best = (score, Deployable(program, fixed_manifest, config_json))
    assert best is not None
    result = best[1]
    if x is not None:
        result.manifest.report["loihi2"]["accuracy"] = _accuracy_change(
            reference, result.module.run(x), y
        )
    result.manifest.provenance = {
        "converter": "ganglion.converters.loihi_quantize",
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(opts).items()},
        "source": dict(manifest.provenance),
        "calibration_samples": 0 if x is None else int(x.shape[batch_axis]),
    }
    return result


def _float_graph(deployable: Deployable) -> tuple[SpikingGraph, object]:
    m = deployable.manifest
    if m.kind != "spiking" or m.numerics != "float32":
        raise ConversionError(
            f"Loihi quantization takes a float spiking program, got a {m.kind} "
            f"program with numerics {m.numerics!r}"
        )
    reason = unsupported_reason(deployable.module.graph)
    if reason:
        raise ConversionError(f"cannot quantize for Loihi 2: {reason}")
    return fold_pooling(deployable.module.graph), m


def _input_config(encoding: str, x: torch.Tensor | None, opts: LoihiOptions) -> LoihiConfig:
    binary = encoding == "rate" or (x is not None and bool(((x == 0) | (x == 1)).all()))
    if binary:
        return LoihiConfig(input_scale=1.0, input_bits=0)
    x_max = 1.0 if x is None else max(float(x.abs().max()), 1e-12)
    return LoihiConfig(input_scale=(2**opts.input_bits - 1) / x_max, input_bits=opts.input_bits)


def _quantize_graph(
    graph: SpikingGraph, config: LoihiConfig, opts: LoihiOptions, alpha: float, steps: int
) -> tuple[SpikingGraph, LoihiConfig, dict]:
    """The fixed-point graph for threshold scale ``alpha``, its config and its error report
    (``steps``: the Lava steps of a run, T + D)."""
    nodes: dict[str, object] = {}
    cfg = replace(config, weight_exp={}, readout_bias=[])
    report: dict = {
        "threshold_scale": alpha,
        "reset": "zero (Loihi 2 LIF)",
        "input": {"bits": cfg.input_bits, "scale": cfg.input_scale},
        "layers": {},
    }
    for name, layer in graph.nodes.items():
        if isinstance(layer, Neuron):
            vth, fixed = _quantize_layer(graph, name, alpha, cfg, opts, steps)
            for node, (fixed_node, exp, layer_report) in fixed.items():
                nodes[node], report["layers"][node] = fixed_node, layer_report
                if exp is not None:
                    cfg.weight_exp[node] = exp
            if not layer.spiking:
                cfg.readout_scale = float(vth * 2**ACT_SHIFT)
                cfg.readout_bias = [0.0] * layer.threshold.numel()
                report["readout_scale"] = cfg.readout_scale
        elif isinstance(layer, Flatten):
            nodes[name] = layer
    readout = [p for p in graph.predecessors(OUTPUT) if isinstance(graph.nodes.get(p), SYNAPTIC)]
    if readout:
        biggest = max(float(graph.nodes[p].weight.abs().max()) for p in readout)
        cfg.readout_scale = 2 * WEIGHT_MANT_MAX / max(biggest, 1e-12)
        bias = sum(_spread_bias(graph.nodes[p], graph.shapes[p]) for p in readout)
        cfg.readout_bias = [float(b) for b in bias.reshape(-1)]
        for p in readout:
            w = graph.nodes[p].weight * cfg.readout_scale / _input_scale(graph, p, cfg)
            nodes[p], cfg.weight_exp[p], report["layers"][p] = _fixed_synapse(
                graph.nodes[p], w, cfg.readout_scale
            )
        report["readout_scale"] = cfg.readout_scale
    fixed = SpikingGraph(
        {n: nodes[n] for n in graph.nodes}, list(graph.edges), graph.input_shape, graph.delays
    )
    return fixed, cfg, report


def _growth(decay: torch.Tensor, steps: int) -> float:
    """How many steps' worth of input a state with Loihi's form of ``decay`` can hold after
    ``steps`` steps: Σ_{k<steps} decay^k (``steps`` without a leak)."""
    kept = float((DECAY_UNITY - decay_to_dv(decay.reshape(-1)[:1])) / DECAY_UNITY)
    return float(sum(kept**k for k in range(steps)))


def _quantize_layer(
    graph: SpikingGraph,
    name: str,
    alpha: float,
    cfg: LoihiConfig,
    opts: LoihiOptions,
    steps: int,
) -> tuple[int, dict[str, tuple[object, int | None, dict]]]:
    """Neuron layer ``name`` and its synapses in fixed point, with the vth (a non-spiking
    layer: a-units per membrane unit) chosen; a non-spiking layer's is halved until its
    integers keep |v| ≤ NONSPIKING_VTH << 6 over ``steps`` steps (the report's
    ``membrane_bound``, a fraction of that)."""
    neuron = graph.nodes[name]
    norm = _normalize(graph, name, neuron, alpha)
    growth = 1.0 if neuron.spiking else _growth(neuron.decay, steps)
    vth = _pick_vth(graph, norm, cfg, opts, growth)
    fixed = _fixed_layer(graph, name, norm, vth, alpha, cfg)
    if neuron.spiking:
        return vth, fixed
    limit = NONSPIKING_VTH << ACT_SHIFT
    while (bound := _membrane_bound(graph, name, fixed, cfg, steps)) > limit and vth > 1:
        vth //= 2  # the rounded integers reach further than the float bound
        fixed = _fixed_layer(graph, name, norm, vth, alpha, cfg)
    fixed[name][2].update(
        v_scale=float(vth * 2**ACT_SHIFT), worst_case_steps=steps, membrane_bound=bound / limit
    )
    return vth, fixed


def _fixed_layer(
    graph: SpikingGraph, name: str, norm: _Layer, vth: int, alpha: float, cfg: LoihiConfig
) -> dict[str, tuple[object, int | None, dict]]:
    """Neuron layer ``name`` and its synapses in fixed point: node -> (layer, weight exponent
    (None for the neuron), report)."""
    neuron = graph.nodes[name]
    fixed_neuron, neuron_report = _fixed_neuron(neuron, norm, vth, alpha)
    fixed: dict[str, tuple[object, int | None, dict]] = {name: (fixed_neuron, None, neuron_report)}
    for syn, w in norm.weights.items():
        fixed[syn] = _fixed_synapse(graph.nodes[syn], w * vth / _input_scale(graph, syn, cfg), vth)
    if not neuron.synaptic:
        first = graph.predecessors(name)[0]
        _move_bias_to_synapse(fixed[first][0], fixed_neuron)
    return fixed


def _membrane_bound(
    graph: SpikingGraph, name: str, fixed: dict[str, tuple], cfg: LoihiConfig, steps: int
) -> float:
    """The largest |v| (Loihi v units) the fixed layer ``name`` can reach within ``steps``
    steps from its integers: |v_init| + Σ dv-decay^k · (|bias| + Σ du-decay^k · the largest
    input << 6), one unit per synapse added for Lava's floor of a shifted sum."""
    neuron = fixed[name][0]
    total = neuron.bias.double().reshape(-1)
    reach = torch.zeros_like(total)
    for syn in graph.predecessors(name):
        layer = fixed[syn][0]
        total = total + neuron.gain.double().reshape(-1) * _spread_bias(
            layer, graph.shapes[syn]
        ).double().reshape(-1)
        peak = 2**cfg.input_bits - 1 if _input_scale(graph, syn, cfg) != 1.0 else 1
        w = layer.weight.double().abs()
        per_out = w.reshape(w.shape[0], -1).sum(1) * peak + 1
        reach = reach + per_out.repeat_interleave(reach.numel() // per_out.numel())
    mant, exp = split_bias(total)
    bias = (mant << exp).abs().double()
    current = reach * 2**ACT_SHIFT
    if neuron.synaptic:
        current = current * _growth(neuron.syn_decay, steps)
    growth = _growth(neuron.decay, steps)
    return float((neuron.v_init.double().abs().reshape(-1) + growth * (bias + current)).max())


def _normalize(graph: SpikingGraph, name: str, neuron: Neuron, alpha: float) -> _Layer:
    """Fold gain (and syn_gain) and threshold·alpha into the incoming weights and bias
    (threshold becomes 1; a non-spiking neuron keeps its membrane's units); a CubaLIF's
    synaptic bias enters at its steady state."""
    unit = neuron.threshold * alpha if neuron.spiking else torch.ones_like(neuron.threshold)
    per = neuron.gain / unit  # [*shape]
    per_bias, build_up = per, 1.0
    if neuron.synaptic:
        kept = float(du_to_syn_decay(neuron_du(neuron)[:1]))
        build_up = 1.0 / (1.0 - kept)
        per = per * neuron.syn_gain
        per_bias = per * build_up
    weights, bias = {}, neuron.bias / unit
    for syn in graph.predecessors(name):
        layer = graph.nodes[syn]
        bias = bias + per_bias * _spread_bias(layer, graph.shapes[syn])
        if isinstance(layer, Affine):
            weights[syn] = layer.weight * per.reshape(-1, 1)
        else:
            channel = per.reshape(per.shape[0], -1)  # one value per channel: unsupported_reason
            weights[syn] = layer.weight * channel[:, 0].reshape(-1, 1, 1, 1)
    return _Layer(weights, bias, neuron.v_init / unit, build_up)


def _spread_bias(layer: Affine | Conv2d, shape: tuple[int, ...]) -> torch.Tensor:
    """A synaptic layer's bias broadcast to its output shape."""
    b = layer.bias
    return b if isinstance(layer, Affine) else b.reshape(-1, 1, 1).expand(shape)


def _input_scale(graph: SpikingGraph, syn: str, cfg: LoihiConfig) -> float:
    """The scale of the values a synaptic layer reads: graded input or 1 for spikes."""
    src = graph.predecessors(syn)[0]
    while src != INPUT and isinstance(graph.nodes[src], Flatten):
        src = graph.predecessors(src)[0]
    return cfg.input_scale if src == INPUT else 1.0


def _pick_vth(
    graph: SpikingGraph, norm: _Layer, cfg: LoihiConfig, opts: LoihiOptions, growth: float = 1.0
) -> int:
    """opts.vth, or the largest power of two for which one step's input cannot wrap u; with
    ``growth`` (a non-spiking layer's Σ decay^k) also |v_init| + growth · that input stays at or
    below ``NONSPIKING_VTH`` (in units of the returned number, so v never reaches vth << 6)."""
    worst = norm.bias.abs().reshape(-1)
    for syn, w in norm.weights.items():
        peak = 2**cfg.input_bits - 1 if _input_scale(graph, syn, cfg) != 1.0 else 1
        peak /= _input_scale(graph, syn, cfg)  # the largest input value, float units
        flat = w.reshape(w.shape[0], -1)
        reach = torch.maximum(flat.clamp(min=0).sum(1), (-flat).clamp(min=0).sum(1)) * peak
        reach = reach * norm.build_up
        worst = worst + reach.repeat_interleave(worst.numel() // reach.numel())
    if growth != 1.0:
        worst = norm.v_init.abs().reshape(-1) + growth * worst
    limit = min((UV_LIMIT >> ACT_SHIFT) - 1, NONSPIKING_VTH)
    fits = 2 ** math.floor(math.log2(limit / max(float(worst.max()), 1e-12)))
    return int(min(opts.vth, fits, VTH_MAX) if fits >= 1 else 1)


def _fixed_synapse(
    layer: Affine | Conv2d, w_real: torch.Tensor, scale: float
) -> tuple[Affine | Conv2d, int, dict]:
    """Round ``w_real`` (integer units) to mantissa·2^k; returns the layer, exponent, report."""
    dense = isinstance(layer, Affine)
    step_bits = 1 if dense else 0  # Lava's Dense doubles mixed-sign weights
    peak = max(float(w_real.abs().max()), 1e-12)
    exp = max(
        WEIGHT_EXP_MIN if dense else 0,
        math.ceil(math.log2(peak / (WEIGHT_MANT_MAX * 2**step_bits))),
    )
    quantum = 2 ** (exp + step_bits)
    mant = (w_real / quantum).round().clamp(-WEIGHT_MANT_MAX, WEIGHT_MANT_MAX)
    w_q = (mant * quantum).float()
    err = (w_q - w_real).double().pow(2).mean().sqrt() / w_real.double().pow(2).mean().sqrt()
    zero_bias = torch.zeros_like(layer.bias)
    fixed = Affine(w_q, zero_bias) if dense else replace(layer, weight=w_q, bias=zero_bias)
    return (
        fixed,
        exp,
        {
            "weight_exp": exp,
            "weight_mantissa_max": int(mant.abs().max()),
            "weight_rms_error": float(err),
            "scale": scale,
        },
    )


def _move_bias_to_synapse(layer: Affine | Conv2d, neuron: Neuron) -> None:
    """Carry the neuron's bias on its (first) synapse ``layer``, in a-units (× gain 64 = v units),
    where it has that layout (an IF neuron with a bias has no NIR form); numbers are unchanged."""
    per_a = neuron.bias / neuron.gain
    if isinstance(layer, Conv2d):
        channel = per_a.reshape(per_a.shape[0], -1)
        if not torch.equal(channel, channel[:, :1].expand_as(channel)):
            return
        per_a = channel[:, 0]
    layer.bias = per_a.clone()
    neuron.bias = torch.zeros_like(neuron.bias)


def _fixed_neuron(neuron: Neuron, norm: _Layer, vth: int, alpha: float) -> tuple[Neuron, dict]:
    """Integer LIF parameters of a normalized layer with threshold mantissa ``vth`` (a
    non-spiking layer: ``vth`` a-units per unit of its membrane, Lava's vth ``NONSPIKING_VTH``)."""
    unit = vth * 2**ACT_SHIFT  # v units per threshold (per membrane unit: non-spiking)
    mant, exp = split_bias((norm.bias * unit).reshape(-1))
    bias = (mant << exp).double().reshape(neuron.shape)
    limit = UV_LIMIT - 1
    v_init = (norm.v_init * unit).round().clamp(-limit, limit)
    dv = decay_to_dv(neuron.decay.reshape(-1)[:1])
    decay = (DECAY_UNITY - dv.double()) / DECAY_UNITY
    du = neuron_du(neuron)[:1]
    current = {}
    if neuron.synaptic:  # Lava's u: the current keeps (4095 − du)/4096, its gain is in W_q
        kept = du_to_syn_decay(du).float().expand(neuron.shape).clone()
        current = {"syn_decay": kept, "syn_gain": torch.ones(neuron.shape)}
    lava_vth = vth if neuron.spiking else NONSPIKING_VTH
    fixed = Neuron(
        decay=decay.float().expand(neuron.shape).clone(),
        gain=torch.full(neuron.shape, float(2**ACT_SHIFT)),
        bias=bias.float(),
        threshold=torch.full(neuron.shape, float(lava_vth * 2**ACT_SHIFT)),
        v_reset=torch.zeros(neuron.shape),
        v_init=v_init.float(),
        reset="zero",
        fire=neuron.fire,
        model=neuron.model,
        **current,
    )
    bias_err = (bias / unit - norm.bias.double()).abs().max()
    decay_err = abs(float(decay) - float(neuron.decay.reshape(-1)[0]))
    return fixed, {
        "vth": lava_vth,
        "threshold_rounding": 0.0,
        "threshold_scale": alpha if neuron.spiking else 1.0,
        "dv": int(dv),
        "du": int(du),
        "decay_error": decay_err,
        "bias_max_error": float(bias_err),
        "reset_was": neuron.reset,
        **({"synaptic_bias": "steady state from the first step"} if neuron.synaptic else {}),
    }


def _predictions(out: torch.Tensor) -> torch.Tensor:
    return out.reshape(out.shape[0], -1).argmax(-1)


def _score(out: torch.Tensor, reference: torch.Tensor, y: torch.Tensor | None) -> float:
    """Accuracy (labels) or agreement with the float program; time-major: −mean |change|."""
    if reference.ndim != 2:
        return -float((out - reference).abs().mean())
    target = _predictions(reference) if y is None else y
    return float((_predictions(out) == target).float().mean())


def _accuracy_change(reference: torch.Tensor, fixed: torch.Tensor, y: torch.Tensor | None) -> dict:
    """Float vs fixed-point accuracy (with labels) and their agreement, on the given data."""
    if reference.ndim != 2:  # time-major outputs: compare mean output instead
        return {"mean_abs_output_change": float((fixed - reference).abs().mean())}
    result = {"agreement": float((_predictions(fixed) == _predictions(reference)).float().mean())}
    if y is not None:
        result["float"] = float((_predictions(reference) == y).float().mean())
        result["fixed"] = float((_predictions(fixed) == y).float().mean())
        result["change_points"] = 100.0 * (result["fixed"] - result["float"])
    return result

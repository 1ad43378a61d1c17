"""ANN -> SNN conversion: ReLUs become IF/LIF neurons with balanced thresholds.

Each ReLU's output a ≈ θ · (spike rate), so a layer that reads spikes gets θ folded into its
weights. A value is tracked as a sum of (node, scale) contributions; scales fold into the
next Linear/Conv2d, and a Scale node is inserted only where nothing can absorb them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ganglion.converters.spiking.ann_graph import INPUT, AnnGraph, AnnOp
from ganglion.converters.spiking.thresholds import mse_threshold, percentile_threshold
from ganglion.models.errors import ConversionError
from ganglion.models.spiking.graph import OUTPUT, SpikingGraph
from ganglion.models.spiking.layers import Affine, Conv2d, Flatten, Neuron, Scale

Contribution = tuple[str, torch.Tensor | None]  # (node, scale); None means 1
METHODS = ("percentile", "mse", "calibrated", "burst")  # SpikingOptions.method (its docstring)
BURST = 2  # the burst method's thresholds resolve T·BURST levels: about BURST spikes per step


@dataclass
class SpikingOptions:
    """Conversion options (the command line's flags).

    ``method`` chooses the thresholds, and what follows them, for the timestep budget:

    - ``percentile``: each threshold is the ``percentile`` of its ReLU's activations on the
      calibration data (robust, the fewest spikes; the default).
    - ``mse``: the threshold that minimizes the squared error between the activations and
      what an IF neuron carries in T steps (Li et al. 2021); ``percentile`` is not used.
    - ``calibrated``: ``mse`` thresholds, then layer by layer a bias and an initial-membrane
      correction against the ANN's activations (Li et al. 2021, "A Free Lunch From ANN"):
      removes the mean error a layer passes on (leaky neurons, clipping), not the per-sample
      quantization error.
    - ``burst``: neurons that may fire several spikes in one step (⌊v/θ⌋, Sinabs'
      MultiSpike; burst spikes, Li & Zeng 2022) with thresholds set for T·BURST levels:
      the resolution of T·BURST steps in T steps, for about as many spikes as T·BURST steps
      of ``mse``. The program runs on torch, ONNX and NIR; Loihi 2 (lava) refuses it.
    """

    timesteps: int = 32
    neuron: str = "if"  # "if" or "lif"
    leak: float = 0.99  # decay per step of "lif" neurons
    encoding: str = "direct"  # "direct" or "rate"
    decoding: str = "membrane"  # "membrane" or "count"
    percentile: float = 99.9
    per_channel: bool = False
    reset: str = "subtract"
    v_init: float = 0.5  # initial membrane as a fraction of the threshold
    seed: int = 0
    method: str = "percentile"  # percentile | mse | calibrated | burst (class docstring)

    def __post_init__(self) -> None:
        checks = {
            "neuron": ("if", "lif"),
            "encoding": ("direct", "rate"),
            "decoding": ("membrane", "count"),
            "reset": ("subtract", "zero"),
            "method": METHODS,
        }
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ConversionError(
                    f"--{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        if self.timesteps < 1:
            raise ConversionError(f"--timesteps must be >= 1, got {self.timesteps}")


class _Builder:
    """Builds the SpikingGraph op by op."""

    def __init__(self, ann: AnnGraph, thresholds: dict[str, torch.Tensor], opts: SpikingOptions):
        self.ann, self.thresholds, self.opts = ann, thresholds, opts
        self.nodes: dict[str, object] = {}
        self.edges: list[tuple[str, str]] = []
        self.shapes: dict[str, tuple[int, ...]] = {INPUT: ann.input_shape}
        self.values: dict[str, list[Contribution]] = {INPUT: [(INPUT, None)]}
        self.node_shapes: dict[str, tuple[int, ...]] = {INPUT: ann.input_shape}

    def build(self) -> SpikingGraph:
        _, sample_values = self.ann.run(torch.zeros(1, *self.ann.input_shape))
        for name, op in self.ann.ops.items():
            self.shapes[name] = tuple(sample_values[name].shape[1:])
            self.values[name] = self.visit(op)
        out = self.values[self.ann.output]
        if self.opts.decoding == "count":
            out = [
                (
                    self.neuron(
                        "spike_out", out, self.thresholds["spike_out"], self.shapes[self.ann.output]
                    ),
                    None,
                )
            ]
        for src in self.materialize(out, "output"):
            self.edges.append((src, OUTPUT))
        return SpikingGraph(self.nodes, self.edges, self.ann.input_shape)

    def visit(self, op: AnnOp) -> list[Contribution]:
        inputs = [c for i in op.inputs for c in self.values[i]]
        if op.kind in ("affine", "conv"):
            return self.synapse(op, inputs)
        if op.kind == "relu":
            return [
                (
                    self.neuron(op.name, inputs, self.thresholds[op.name], self.shapes[op.name]),
                    self.thresholds[op.name],
                )
            ]
        if op.kind == "add":
            return inputs
        return self.linear_map(op, inputs)

    def synapse(self, op: AnnOp, inputs: list[Contribution]) -> list[Contribution]:
        out: list[Contribution] = []
        for i, (src, scale) in enumerate(inputs):
            layer = copy.copy(op.layer)
            folded = _fold_input_scale(layer, scale)
            if folded is None:
                src, folded = self.scale_node(f"{op.name}_in{i}", src, scale), layer
            if i > 0:
                folded.bias = torch.zeros_like(folded.bias)
            name = op.name if len(inputs) == 1 else f"{op.name}_{i}"
            self.nodes[name] = folded
            self.node_shapes[name] = self.shapes[op.name]
            self.edges.append((src, name))
            out.append((name, None))
        return out

    def linear_map(self, op: AnnOp, inputs: list[Contribution]) -> list[Contribution]:
        """Pooling and flatten commute with a per-channel scale: carry it through."""
        scales = {id(s) for _, s in inputs}
        if len(scales) > 1:
            inputs = [(s, None) for s in self.materialize(inputs, op.name)]
        scale = inputs[0][1]
        self.nodes[op.name] = copy.copy(op.layer)
        self.node_shapes[op.name] = self.shapes[op.name]
        self.edges += [(src, op.name) for src, _ in inputs]
        if scale is not None and isinstance(op.layer, Flatten):
            in_shape = self.shapes[op.inputs[0]]
            scale = scale.expand(in_shape).reshape(-1) if scale.ndim else scale
        return [(op.name, scale)]

    def neuron(
        self, name: str, inputs: list[Contribution], theta: torch.Tensor, shape: tuple[int, ...]
    ) -> str:
        threshold = theta.expand(shape).clone()
        neuron = Neuron.integrate_and_fire(threshold, self.opts.v_init, self.opts.reset)
        if self.opts.neuron == "lif":
            neuron.decay = torch.full(shape, self.opts.leak)
            neuron.model = "lif"
        if self.opts.method == "burst":
            neuron.spikes = "many"
        self.nodes[name] = neuron
        self.node_shapes[name] = shape
        self.edges += [(src, name) for src in self.materialize(inputs, name)]
        return name

    def materialize(self, inputs: list[Contribution], consumer: str) -> list[str]:
        """Sources whose plain sum is the value: scaled ones go through a Scale node."""
        return [
            src if scale is None else self.scale_node(f"{consumer}_scale{i}", src, scale)
            for i, (src, scale) in enumerate(inputs)
        ]

    def scale_node(self, name: str, src: str, scale: torch.Tensor) -> str:
        self.nodes[name] = Scale(scale.expand(self.node_shapes[src]).clone())
        self.node_shapes[name] = self.node_shapes[src]
        self.edges.append((src, name))
        return name


def _fold_input_scale(layer: Affine | Conv2d, scale: torch.Tensor | None) -> Affine | Conv2d | None:
    """The layer with W·diag(scale) on its input, or None when the scale cannot fold."""
    if scale is None:
        return layer
    if scale.ndim == 0:
        layer.weight = layer.weight * scale
        return layer
    if isinstance(layer, Affine):
        layer.weight = layer.weight * scale.reshape(1, -1)
        return layer
    if scale.shape[1:].numel() != 1:
        return None
    out_ch, in_per_group = layer.weight.shape[:2]
    groups = layer.groups
    channel = (torch.arange(out_ch) // (out_ch // groups)).unsqueeze(1) * in_per_group
    channel = channel + torch.arange(in_per_group).unsqueeze(0)  # [out, in/groups]
    per_weight = scale.reshape(-1)[channel]
    layer.weight = layer.weight * per_weight[:, :, None, None]
    return layer


def calibrate_thresholds(
    ann: AnnGraph, calib_x: torch.Tensor, opts: SpikingOptions
) -> dict[str, torch.Tensor]:
    """Thresholds of every ReLU (and of the output layer for count decoding): percentiles of
    the activations, or the squared-error optimum at T (``mse``, ``calibrated``) or at
    T·BURST levels (``burst``)."""
    out, values = ann.run(calib_x)
    activations = {name: values[name] for name, op in ann.ops.items() if op.kind == "relu"}
    if opts.decoding == "count":
        activations["spike_out"] = torch.relu(out)
    for name, a in activations.items():  # a NaN compares false: it read as a silent layer
        if not torch.isfinite(a).all():
            sample = int((~torch.isfinite(a)).reshape(len(a), -1).any(1).nonzero()[0, 0])
            raise ConversionError(
                f"layer {name!r} is not finite on calibration sample {sample} (NaN or "
                "infinity: a weight or an input beyond float32's range); no threshold fits it"
            )
    return {
        name: _threshold(a, opts, opts.per_channel and name != "spike_out")
        for name, a in activations.items()
    }


def _threshold(activations: torch.Tensor, opts: SpikingOptions, per_channel: bool) -> torch.Tensor:
    if opts.method == "percentile":
        return percentile_threshold(activations, opts.percentile, per_channel, opts.seed)
    if opts.method == "burst":
        levels = opts.timesteps * BURST
        return mse_threshold(activations, levels, opts.v_init, per_channel, opts.seed) / BURST
    return mse_threshold(activations, opts.timesteps, opts.v_init, per_channel, opts.seed)


def ann_to_spiking_graph(
    ann: AnnGraph, calib_x: torch.Tensor, opts: SpikingOptions
) -> tuple[SpikingGraph, dict[str, torch.Tensor]]:
    """Convert a parsed ANN into a SpikingGraph; returns it and the thresholds used."""
    if not any(op.kind == "relu" for op in ann.ops.values()) and opts.decoding != "count":
        raise ConversionError("the model has no ReLU: there is nothing to turn into neurons")
    with torch.no_grad():
        thresholds = calibrate_thresholds(ann, calib_x, opts)
        return _Builder(ann, thresholds, opts).build(), thresholds

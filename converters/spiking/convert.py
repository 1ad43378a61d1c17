"""Entry point: a trained ANN (module or torch.export program) -> a spiking Deployable."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from ganglion.converters.spiking.ann_graph import AnnGraph, export_module, read_ann
from ganglion.converters.spiking.ann_to_snn import SpikingOptions, ann_to_spiking_graph
from ganglion.converters.spiking.calibration import CALIBRATION_SAMPLES, calibrate
from ganglion.models.deployable import Deployable
from ganglion.models.errors import ConversionError
from ganglion.models.manifest import Manifest, SpikingTime, TensorSpec
from ganglion.models.spiking.graph import SpikingGraph
from ganglion.models.spiking.network import SpikingNetwork, state_specs

_REPORT_BATCH = 512
REPORT_SAMPLES = 512  # calibration samples the report's firing rates and accuracies use
CORRECTIONS = ("bias", "potential")  # what the ``calibrated`` method corrects, in this order


def convert_spiking(
    model: torch.nn.Module | torch.export.ExportedProgram | AnnGraph,
    calib_x: np.ndarray | torch.Tensor,
    calib_y: np.ndarray | torch.Tensor | None = None,
    options: SpikingOptions | None = None,
) -> Deployable:
    """Convert a trained ReLU network into a spiking program.

    model: an ``nn.Module``, an ``ExportedProgram`` (from ``torch.export``) or an ``AnnGraph``
        already read (``read_ann_onnx`` for an ONNX model).
    calib_x: calibration inputs [N, ...features]; thresholds come from the ReLU activations
        on them (``options.method``), and the ``calibrated`` method corrects biases and
        initial membranes on their first ``CALIBRATION_SAMPLES``.
    calib_y: optional integer labels [N] for the accuracy report.
    Returns a Deployable whose manifest carries the conversion report (with the method and,
    when calibrated, each layer's RMS and mean error against the ANN before and after).
    """
    opts = options or SpikingOptions()
    x = _as_float_tensor(calib_x, "calibration x")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ConversionError(
            f"calibration x must be [N, ...features] with N > 0, got {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all():
        index = tuple(int(i) for i in (~torch.isfinite(x)).nonzero()[0])
        raise ConversionError(f"calibration x holds NaN or infinity (first at index {index})")
    if isinstance(model, AnnGraph):
        ann = model
    else:
        program = (
            model
            if isinstance(model, torch.export.ExportedProgram)
            else export_module(model, x[:2])
        )
        ann = read_ann(program)
    if tuple(x.shape[1:]) != ann.input_shape:
        raise ConversionError(
            f"calibration x has features {tuple(x.shape[1:])}, the model takes {ann.input_shape}"
        )
    graph, thresholds = ann_to_spiking_graph(ann, x, opts)
    time = SpikingTime(
        opts.timesteps, encoding=opts.encoding, decoding=opts.decoding, seed=opts.seed
    )
    network = SpikingNetwork(graph, time)
    y = None if calib_y is None else _labels(calib_y, x.shape[0])
    calibration = calibrate(network, ann, x, CORRECTIONS) if opts.method == "calibrated" else None
    n = min(REPORT_SAMPLES, x.shape[0])
    report = conversion_report(ann, network, thresholds, x[:n], None if y is None else y[:n])
    report["method"] = opts.method
    if calibration is not None:
        report["calibration"] = calibration
    manifest = spiking_manifest(graph, time, report)
    manifest.provenance = {
        "source_sha256": _ann_hash(ann),
        "converter": "ganglion.converters.spiking",
        "options": {k: v for k, v in vars(opts).items()},
        "calibration": {
            "samples": int(x.shape[0]),
            "report_samples": n,
            "method": opts.method,
            "percentile": opts.percentile if opts.method == "percentile" else None,
            "per_channel": opts.per_channel,
            "corrected_samples": (
                min(CALIBRATION_SAMPLES, int(x.shape[0])) if calibration is not None else 0
            ),
        },
    }
    return Deployable(network, manifest, graph.to_config())


def spiking_manifest(
    graph: SpikingGraph, time: SpikingTime, report: dict | None = None
) -> Manifest:
    """Manifest of a spiking program: I/O shapes follow its encoding and decoding; the state
    is every node's (``state_specs``)."""
    state = state_specs(graph, time)
    return Manifest(
        kind="spiking",
        architecture="spiking_graph",
        inputs=[TensorSpec("input", [-1, *graph.input_shape])],
        outputs=[TensorSpec("output", [-1, *graph.output_shape])],
        time=time,
        state=state,
        report=report or {},
    )


def conversion_report(
    ann: AnnGraph,
    network: SpikingNetwork,
    thresholds: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor | None,
) -> dict:
    """Per-layer thresholds, firing rates and (when labelled) accuracies on ``x``."""
    spikes: dict[str, float] = {}
    ann_pred, snn_pred = [], []
    with torch.no_grad():
        for start in range(0, x.shape[0], _REPORT_BATCH):
            xb = x[start : start + _REPORT_BATCH]
            snn_out = network.run(xb, record=True)
            for name, count in network.activity.items():
                spikes[name] = spikes.get(name, 0.0) + float(count.sum())
            ann_pred.append(ann.run(xb)[0].argmax(-1))
            snn_pred.append(snn_out.reshape(snn_out.shape[0], -1).argmax(-1))
    steps = network.time.timesteps * x.shape[0]
    layers = {}
    for name, neuron in network.graph.neurons().items():
        theta = thresholds.get(name, neuron.threshold)
        layers[name] = {
            "neurons": int(neuron.threshold.numel()),
            "threshold_min": float(theta.min()),
            "threshold_max": float(theta.max()),
            "firing_rate": spikes.get(name, 0.0) / (steps * neuron.threshold.numel()),
        }
    report: dict = {"layers": layers, "timesteps": network.time.timesteps}
    if y is not None:
        a = torch.cat(ann_pred)
        s = torch.cat(snn_pred)
        report["ann_accuracy"] = float((a == y).float().mean())
        report["snn_accuracy"] = float((s == y).float().mean())
        report["agreement"] = float((a == s).float().mean())
    return report


def _labels(labels: np.ndarray | torch.Tensor, count: int) -> torch.Tensor:
    """Integer labels [count] as int64, or ConversionError saying what is wrong."""
    array = np.asarray(labels)
    if array.dtype.kind not in "iu":
        raise ConversionError(f"calibration labels y must be integers, got {array.dtype}")
    if array.shape != (count,):
        raise ConversionError(f"calibration labels y must be [{count}], got {list(array.shape)}")
    if array.size and array.min() < 0:
        raise ConversionError(f"calibration labels y must be >= 0, got {array.min()}")
    return torch.from_numpy(array.astype(np.int64))


def _as_float_tensor(a: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(a, torch.Tensor) and np.asarray(a).dtype.kind not in "biuf":
        raise ConversionError(f"{what} must be numeric, got {np.asarray(a).dtype}")
    t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
    if not (torch.is_floating_point(t) or t.dtype in (torch.uint8, torch.int32, torch.int64)):
        raise ConversionError(f"{what} must be numeric, got {t.dtype}")
    return t.float()


def _ann_hash(ann: AnnGraph) -> str:
    """SHA-256 of the source network's layer tensors, in op order (any source format)."""
    from ganglion.models.spiking.layers import tensor_fields

    digest = hashlib.sha256()
    for name, op in ann.ops.items():
        if op.layer is None:
            continue
        for field, tensor in sorted(tensor_fields(op.layer).items()):
            digest.update(f"{name}.{field}".encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()

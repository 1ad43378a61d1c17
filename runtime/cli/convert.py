"""``ganglion convert``: trained models (torch.export archives, ONNX) -> bundles."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ganglion.runtime.atomic import check_target
from ganglion.runtime.cli.arrays import load_calibration, read_npz

convert_app = typer.Typer(
    help="Convert a trained PyTorch model into a deployable bundle.", no_args_is_help=True
)


@convert_app.command("spiking")
def spiking(
    model: Path = typer.Argument(
        ..., help="Trained ReLU network: torch.export.save archive (.pt2) or ONNX (.onnx)."
    ),
    calib: Path = typer.Option(
        ..., "--calib", help="NPZ with calibration inputs 'x' (labels 'y' optional)."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Bundle folder (or .tar) to write."),
    timesteps: int = typer.Option(32, "--timesteps", help="Timesteps T per inference."),
    neuron: str = typer.Option("if", "--neuron", help="if | lif"),
    encoding: str = typer.Option("direct", "--encoding", help="direct | rate (Poisson, seeded)"),
    decoding: str = typer.Option("membrane", "--decoding", help="membrane | count"),
    percentile: float = typer.Option(
        99.9, "--percentile", help="Activation percentile for thresholds."
    ),
    per_channel: bool = typer.Option(
        False, "--per-channel", help="Thresholds per channel, not per layer."
    ),
    reset: str = typer.Option("subtract", "--reset", help="subtract | zero"),
    seed: int = typer.Option(0, "--seed", help="Seed of the rate encoder."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle at -o."),
) -> None:
    """Convert a trained ReLU network into a spiking program (IF/LIF neurons)."""
    from ganglion.converters.exported_archive import load_exported
    from ganglion.converters.spiking import SpikingOptions, convert_spiking
    from ganglion.converters.spiking.onnx_ann import read_ann_onnx
    from ganglion.runtime.bundle import save_bundle

    check_target(output, force)
    source = read_ann_onnx(model) if model.suffix == ".onnx" else load_exported(model)
    x, y = load_calibration(calib)
    opts = SpikingOptions(
        timesteps=timesteps,
        neuron=neuron,
        encoding=encoding,
        decoding=decoding,
        percentile=percentile,
        per_channel=per_channel,
        reset=reset,
        seed=seed,
    )
    deployable = convert_spiking(source, x, y, opts)
    deployable.manifest.provenance["source_file"] = model.name
    path = save_bundle(deployable, output, force)
    console = Console()
    report = deployable.manifest.report
    for name, layer in report["layers"].items():
        console.print(
            f"{name}: threshold {layer['threshold_min']:.4g}..{layer['threshold_max']:.4g}"
            f", firing rate {layer['firing_rate']:.3f}"
        )
    if "ann_accuracy" in report:
        console.print(
            f"accuracy on calibration data: ANN {report['ann_accuracy']:.4f}, "
            f"SNN {report['snn_accuracy']:.4f} (T={timesteps})"
        )
    console.print(f"bundle written to {path}")


@convert_app.command("dense")
def dense(
    model: Path = typer.Argument(
        ..., help="Trained network: torch.export.save archive (.pt2) or ONNX (.onnx)."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Bundle folder (or .tar) to write."),
    calib: Path | None = typer.Option(
        None,
        "--calib",
        help="NPZ of calibration inputs by name ('x' for a single input; integer labels 'y' "
        "optional): checks the ONNX graph against the source, calibrates int8.",
    ),
    precision: str = typer.Option(
        "fp32", "--precision", help="fp32 | int8 (adds ONNX Runtime's static QDQ graph)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle at -o."),
) -> None:
    """Deploy any trained network as it is (a dense program: named inputs and outputs)."""
    from ganglion.converters.dense import convert_dense
    from ganglion.converters.exported_archive import load_exported
    from ganglion.converters.onnx_file import load_onnx
    from ganglion.runtime.bundle import save_bundle

    check_target(output, force)
    source = load_onnx(model) if model.suffix == ".onnx" else load_exported(model)
    data = read_npz(calib) if calib is not None else None
    deployable = convert_dense(source, data, precision)
    deployable.manifest.provenance["source_file"] = model.name
    path = save_bundle(deployable, output, force)
    console = Console(highlight=False, soft_wrap=True)
    m = deployable.manifest
    for kind, specs in (("input", m.inputs), ("output", m.outputs)):
        for spec in specs:
            shape = ["batch" if d == -1 else d for d in spec.shape]
            console.print(f"{kind} {spec.name}: {spec.dtype} {shape}", markup=False)
    for check, figures in m.report.get("accuracy_check", {}).items():
        text = ", ".join(f"{k} {v:.4g}" for k, v in figures.items())
        console.print(f"{check.replace('_', ' ')}: {text}", markup=False)
    console.print(f"bundle written to {path} (precisions: {', '.join(m.provenance['precisions'])})")


def register(app: typer.Typer) -> None:
    """Add ``convert`` to the CLI."""
    app.add_typer(convert_app, name="convert")

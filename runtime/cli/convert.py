"""``ganglion convert spiking``: a torch.export archive plus calibration data -> a bundle."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import torch
import typer
from rich.console import Console

from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.errors import ConversionError
from ganglion.runtime.bundle import save_bundle

convert_app = typer.Typer(
    help="Convert a trained PyTorch model into a deployable bundle.", no_args_is_help=True
)


def load_exported(path: Path) -> torch.export.ExportedProgram:
    """Load a ``torch.export.save`` archive (.pt2), with a one-line error if it is not one."""
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ConversionError(f"{path}: not a torch.export archive (.pt2 is a zip archive)")
    export_log = logging.getLogger("torch.export")
    level = export_log.level
    export_log.setLevel(logging.CRITICAL)  # torch logs a traceback before raising
    try:
        return torch.export.load(str(path))
    except Exception as exc:  # torch raises RuntimeError, zipfile errors, ...
        raise ConversionError(
            f"{path}: not a torch.export archive (.pt2): {type(exc).__name__}"
        ) from exc
    finally:
        export_log.setLevel(level)


def load_calibration(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Array ``x`` (and optional labels ``y``) from a .npz file, never unpickling."""
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data:
                raise ConversionError(f"{path}: needs an array named 'x' (has {list(data.keys())})")
            y = data["y"] if "y" in data else None
            return data["x"], y
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(f"{path}: not a readable .npz file ({type(exc).__name__})") from exc


@convert_app.command("spiking")
def spiking(
    model: Path = typer.Argument(
        ..., help="Trained ReLU network saved with torch.export.save (.pt2)."
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
) -> None:
    """Convert a trained ReLU network into a spiking program (IF/LIF neurons)."""
    program = load_exported(model)
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
    deployable = convert_spiking(program, x, y, opts)
    deployable.manifest.provenance["source_file"] = model.name
    path = save_bundle(deployable, output)
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


def register(app: typer.Typer) -> None:
    """Add ``convert`` to the CLI."""
    app.add_typer(convert_app, name="convert")

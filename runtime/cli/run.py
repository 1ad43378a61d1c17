"""``ganglion run``: a bundle on a backend, .npy in, .npy out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from ganglion.models.errors import ShapeError
from ganglion.runtime.cli.convert import load_calibration
from ganglion.runtime.session import load


def read_npy(path: Path) -> np.ndarray:
    """Read a .npy array without unpickling; one-line error otherwise."""
    if not path.is_file():
        raise ShapeError(f"{path}: no such file")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ShapeError(f"{path}: not a readable .npy array ({type(exc).__name__})") from exc
    if not isinstance(data, np.ndarray):
        data.close()
        raise ShapeError(f"{path}: an .npz archive; give one array saved with np.save (.npy)")
    return data


def run(
    bundle: Path = typer.Argument(..., help="Bundle folder or .tar."),
    input: Path = typer.Option(
        ..., "--input", help="Input .npy, shaped as `ganglion inspect` states."
    ),
    output: Path = typer.Option(..., "--output", help="Where to write the output .npy."),
    backend: str = typer.Option("torch", "--backend", help="torch | onnxruntime | tensorrt | lava"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | loihi2 (lava)"),
    providers: str | None = typer.Option(
        None, "--providers", help="onnxruntime: providers in order, e.g. tensorrt,cuda,cpu."
    ),
    threads: int | None = typer.Option(None, "--threads", help="onnxruntime: intra-op threads."),
    precision: str | None = typer.Option(
        None, "--precision", help="tensorrt: fp32 (default) | fp16 | int8 | auto."
    ),
    calib: Path | None = typer.Option(
        None, "--calib", help="tensorrt int8: calibration .npz (array x shaped like --input)."
    ),
    max_batch: int | None = typer.Option(None, "--max-batch", help="tensorrt: largest batch."),
    workspace_mb: int | None = typer.Option(None, "--workspace-mb", help="tensorrt: workspace."),
    dla_core: int | None = typer.Option(None, "--dla-core", help="tensorrt: Jetson DLA core."),
    engine_cache: Path | None = typer.Option(
        None, "--engine-cache", help="tensorrt: engine cache folder."
    ),
    lava_precision: str | None = typer.Option(
        None,
        "--lava-precision",
        help="lava: fixed_pt (default for loihi2-fixed bundles) | floating_pt (default otherwise).",
    ),
) -> None:
    """Run a bundle on an input array and save the output."""
    x = read_npy(input)
    flags = {
        "providers": providers,
        "threads": threads,
        "precision": precision,
        "max_batch": max_batch,
        "workspace_mb": workspace_mb,
        "dla_core": dla_core,
        "engine_cache": engine_cache,
    }
    options: dict[str, object] = {k: v for k, v in flags.items() if v is not None}
    if calib is not None:
        options["calibration"] = load_calibration(calib)[0]
    if lava_precision is not None:
        options["precision"] = lava_precision
    with load(bundle, backend=backend, device=device, **options) as session:
        y = session.run(x)
    np.save(output, y)
    typer.echo(f"output {list(y.shape)} {y.dtype} written to {output}")


def register(app: typer.Typer) -> None:
    """Add ``run`` to the CLI."""
    app.command("run")(run)

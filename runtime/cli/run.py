"""``ganglion run``: a bundle on a backend, .npy in, .npy out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from ganglion.models.errors import ShapeError
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
    input: Path = typer.Option(..., "--input", help="Input .npy, shaped as `ganglion inspect` states."),
    output: Path = typer.Option(..., "--output", help="Where to write the output .npy."),
    backend: str = typer.Option("torch", "--backend", help="torch | onnxruntime | tensorrt | lava"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
) -> None:
    """Run a bundle on an input array and save the output."""
    x = read_npy(input)
    options: dict[str, object] = {}  # backend-specific flags, passed only when given
    with load(bundle, backend=backend, device=device, **options) as session:
        y = session.run(x)
    np.save(output, y)
    typer.echo(f"output {list(y.shape)} {y.dtype} written to {output}")


def register(app: typer.Typer) -> None:
    """Add ``run`` to the CLI."""
    app.command("run")(run)

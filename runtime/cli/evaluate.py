"""``ganglion eval``: score a classifier bundle against labelled test data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from ganglion.models.errors import ShapeError
from ganglion.runtime.cli.arrays import read_npz


def _reference_predictions(ann: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    from ganglion.converters.dense import dynamic_batch
    from ganglion.converters.exported_archive import load_exported

    program = load_exported(ann)  # its operators checked: ATen only, no file access
    module = dynamic_batch(program).module()
    try:
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()))
    except (AssertionError, RuntimeError, TypeError, ValueError) as exc:  # one line, named
        text = str(exc).strip().partition("\n")[0] or type(exc).__name__
        raise ShapeError(f"{ann}: cannot run on the test data: {text}") from exc
    out = out if isinstance(out, torch.Tensor) else next(iter(out.values()))
    return out.reshape(out.shape[0], -1).argmax(-1).numpy()


def evaluate_command(
    bundle: Path = typer.Argument(..., help="Classifier bundle (folder or .tar)."),
    data: Path = typer.Option(
        ..., "--data", help="NPZ: inputs by name ('x' for one input) and integer labels 'y'."
    ),
    backend: str = typer.Option("torch", "--backend", help="torch | onnxruntime | tensorrt | lava"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | loihi2 (lava)"),
    ann: Path | None = typer.Option(
        None, "--ann", help="The source ANN (.pt2): also report agreement with its predictions."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Accuracy, per-class accuracy, confusion matrix, spikes per sample, agreement with the ANN."""
    from ganglion.runtime.evaluation import classifier_classes, evaluate, sample_count
    from ganglion.runtime.session import load

    arrays = read_npz(data)
    if "y" not in arrays:
        raise ShapeError(f"{data}: needs integer labels 'y' (has {sorted(arrays)})")
    labels = arrays.pop("y")
    with load(bundle, backend=backend, device=device) as session:
        try:
            classifier_classes(session.manifest)  # before the data is matched to the program
        except ShapeError as exc:
            raise ShapeError(f"{bundle}: {exc}") from None
        names = [s.name for s in session.manifest.inputs]
        if len(names) == 1 and names[0] not in arrays and "x" in arrays:
            arrays = {names[0]: arrays["x"]}
        inputs = {n: arrays[n] for n in names if n in arrays}
        if len(inputs) != len(names):
            raise ShapeError(f"{data}: needs inputs {names} (or 'x' for one input)")
        try:
            sample_count(session, inputs)
        except ShapeError as exc:
            raise ShapeError(f"{data}: {exc}") from None
        reference = None if ann is None else _reference_predictions(ann, inputs)
        result = evaluate(session, inputs, labels, reference, where=str(data))
    if as_json:
        typer.echo(
            json.dumps(
                {"bundle": str(bundle), "backend": backend, **result.to_dict()}, allow_nan=False
            )
        )
        return
    console = Console(highlight=False, soft_wrap=True)
    console.print(
        f"{bundle} on {backend}: accuracy {result.accuracy:.4f} over {result.samples} "
        "samples (measured)"
    )
    if result.spikes_per_sample is not None:
        console.print(f"spikes per sample: {result.spikes_per_sample:,.1f}")
    if result.agreement is not None:
        console.print(f"agreement with {ann.name if ann else 'the ANN'}: {result.agreement:.4f}")
    classes = len(result.confusion)
    table = Table(
        "true \\ predicted", *(str(c) for c in range(classes)), "accuracy", title="confusion matrix"
    )
    for c, row in enumerate(result.confusion):
        acc = result.per_class_accuracy[c]
        table.add_row(str(c), *(str(v) for v in row), "-" if acc is None else f"{acc:.3f}")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the CLI."""
    app.command("eval")(evaluate_command)

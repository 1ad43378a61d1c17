"""The demo's spiking section: train digits networks, convert them to spiking programs, run
them, and the ANN-vs-SNN accuracy table over time steps it prints (`ganglion demo`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.recipes.digits import (
    DigitsData,
    accuracy,
    digits_cnn,
    digits_mlp,
    load_digits,
    train_classifier,
)
from ganglion.runtime.atomic import TargetExists, atomic_file, check_outside_bundles
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.session import load

NETWORKS: dict[str, tuple[Callable[[], torch.nn.Module], bool]] = {
    "mlp": (digits_mlp, False),
    "cnn": (digits_cnn, True),
}
DEMO_MARK = ".ganglion-demo"  # in the demo's output folder: the folder and its files are its own


def claim_demo_folder(out: Path, force: bool = False) -> None:
    """Make ``out`` the demo's folder, where each run replaces its own earlier outputs: a new or
    empty folder, or one an earlier run marked (``DEMO_MARK``). A folder holding anything
    else is refused (``TargetExists``) unless ``force``, and so is any folder inside a bundle
    or a bundle itself: the demo never writes over a user's files unasked."""
    mark = out / DEMO_MARK
    check_outside_bundles(mark)
    if out.exists() and not out.is_dir():
        raise TargetExists(f"{out} is not a folder; choose a folder for --out")
    foreign = out.is_dir() and any(out.iterdir()) and not (mark.is_file() or force)
    if foreign or mark.is_symlink():
        raise TargetExists(
            f"{out} holds files the demo did not write; choose another --out, or pass --force "
            "to let the demo replace its outputs there"
        )
    with atomic_file(mark, force=True) as tmp:
        tmp.write_text("Outputs of `ganglion demo`; each run replaces them.\n", encoding="utf-8")


@dataclass
class SweepRow:
    """Accuracy of one converted network at one timestep budget (test split)."""

    network: str
    timesteps: int
    ann_accuracy: float
    snn_accuracy: float
    seconds: float

    @property
    def gap_points(self) -> float:
        """ANN minus SNN accuracy, in percentage points."""
        return 100.0 * (self.ann_accuracy - self.snn_accuracy)


def train_network(name: str, seed: int = 0) -> tuple[torch.nn.Module, DigitsData]:
    """Train one of NETWORKS on digits; returns the model (eval mode) and its data split."""
    factory, image = NETWORKS[name]
    data = load_digits(image=image, seed=seed)
    torch.manual_seed(seed)
    model = factory()
    train_classifier(model, data, seed=seed)
    return model, data


def accuracy_sweep(
    name: str,
    model: torch.nn.Module,
    data: DigitsData,
    timesteps: list[int],
    options: SpikingOptions | None = None,
) -> list[SweepRow]:
    """Convert ``model`` at each T (calibrating on the train split) and score the test split."""
    base = options or SpikingOptions()
    ann = accuracy(model, data.x_test, data.y_test)
    rows = []
    for steps in timesteps:
        opts = SpikingOptions(**{**vars(base), "timesteps": steps})
        deployable = convert_spiking(model, data.x_train, None, opts)
        start = time.perf_counter()
        with load(deployable) as session:
            out = session.run(data.x_test)
        snn = float((out.argmax(-1) == data.y_test).mean())
        rows.append(SweepRow(name, steps, ann, snn, time.perf_counter() - start))
    return rows


def write_demo_bundle(
    name: str, model: torch.nn.Module, data: DigitsData, out: Path, timesteps: int
) -> Path:
    """Save the model (.pt2), calibration data (.npz), test data (``-test-x.npy`` and, with
    labels, ``-test.npz``) and its spiking bundle under ``out`` (the demo's folder:
    ``claim_demo_folder``), each file atomically, replacing the demo's own earlier outputs."""
    sample = torch.from_numpy(data.x_train[:2])
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    program = torch.export.export(model, (sample,), dynamic_shapes=({0: batch},))
    with atomic_file(out / f"{name}.pt2", force=True) as tmp:
        torch.export.save(program, str(tmp))
    arrays = {
        f"{name}-calib.npz": {"x": data.x_train, "y": data.y_train},
        f"{name}-test-x.npy": data.x_test,
        f"{name}-test.npz": {"x": data.x_test, "y": data.y_test},
    }
    for file_name, value in arrays.items():
        with atomic_file(out / file_name, force=True) as tmp, open(tmp, "wb") as fh:
            if isinstance(value, dict):
                np.savez(fh, **value)
            else:
                np.save(fh, value, allow_pickle=False)
    deployable = convert_spiking(
        model, data.x_train, data.y_train, SpikingOptions(timesteps=timesteps)
    )
    return save_bundle(deployable, out / f"{name}-snn-T{timesteps}", force=True)

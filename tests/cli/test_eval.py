"""``ganglion eval`` end to end on a converted digits MLP: the scores agree with the labels, with
predictions made here by the same program and by the source ANN, and with each other."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.cli.app import main
from ganglion.runtime.session import load

ABSENT = 7  # a digit left out of the test labels
SAMPLES = 60
CLASSES = 10


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, digits_mlp) -> Path:
    """A spiking bundle of the digits MLP, the MLP as a torch.export archive, and a labelled
    test set without the digit ABSENT."""
    model, data = digits_mlp
    root = tmp_path_factory.mktemp("eval")
    options = SpikingOptions(timesteps=16)
    save_bundle(convert_spiking(model, data.x_train[:300], None, options), root / "snn")
    example = (torch.from_numpy(data.x_train[:2]),)
    torch.export.save(torch.export.export(model, example), str(root / "mlp.pt2"))
    keep = data.y_test != ABSENT
    np.savez(root / "test.npz", x=data.x_test[keep][:SAMPLES], y=data.y_test[keep][:SAMPLES])
    return root


def _eval(workspace: Path, capsys, *flags: str) -> str:
    args = ["eval", str(workspace / "snn"), "--data", str(workspace / "test.npz"), *flags]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    assert not exit_info.value.code, captured.err
    return captured.out


def test_eval_json_scores_match_the_labels_and_the_ann(workspace: Path, digits_mlp, capsys):
    report = json.loads(_eval(workspace, capsys, "--json", "--ann", str(workspace / "mlp.pt2")))
    test = np.load(workspace / "test.npz", allow_pickle=False)
    x, y = test["x"], test["y"]
    confusion = np.asarray(report["confusion"])
    assert report["samples"] == SAMPLES and confusion.shape == (CLASSES, CLASSES)
    assert confusion.sum(axis=1).tolist() == np.bincount(y, minlength=CLASSES).tolist()
    assert report["accuracy"] == pytest.approx(np.trace(confusion) / SAMPLES)
    with load(workspace / "snn") as session:  # the same program, predicted here
        snn = session.run(x).argmax(-1)
    assert report["accuracy"] == pytest.approx(float((snn == y).mean()))
    assert report["accuracy"] > 0.5  # a trained network, not chance (0.1)
    per_class = report["per_class_accuracy"]
    assert per_class[ABSENT] is None and confusion[ABSENT].sum() == 0
    for c in set(range(CLASSES)) - {ABSENT}:
        assert per_class[c] == pytest.approx(confusion[c, c] / confusion[c].sum())
    with torch.no_grad():
        ann = digits_mlp[0](torch.from_numpy(x)).argmax(-1).numpy()
    assert 0.0 <= report["agreement"] <= 1.0
    assert report["agreement"] == pytest.approx(float((ann == snn).mean()))
    assert report["spikes_per_sample"] > 0


def test_eval_table_names_the_accuracy(workspace: Path, capsys):
    accuracy = json.loads(_eval(workspace, capsys, "--json"))["accuracy"]
    table = _eval(workspace, capsys)
    words = " ".join(table.split())  # rich wraps long lines at the terminal's width
    assert f"accuracy {accuracy:.4f} over {SAMPLES} samples" in words
    assert "confusion matrix" in table and "agreement" not in table  # no --ann given

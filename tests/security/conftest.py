"""Crafted hostile files: pickles that would create a marker file, rewritten .pt2 archives,
and the small networks they start from. Nothing here is unpickled by the tests themselves
except where a test proves an attack is live against plain torch."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn


class Payload:
    """Pickles as a call of ``function(*args)``: what an attacker's file carries."""

    def __init__(self, function: Callable, *args: object) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple:
        return self.function, self.args


def marker_pickles(marker: Path) -> dict[str, bytes]:
    """Three protocol-2 pickles that each create ``marker`` when unpickled."""
    code = f"open({str(marker)!r}, 'w').write('pwned')"
    return {
        "os.system": pickle.dumps(Payload(os.system, f"touch '{marker}'"), protocol=2),
        "builtins.exec": pickle.dumps(Payload(exec, code), protocol=2),
        "subprocess": pickle.dumps(
            Payload(subprocess.check_call, [sys.executable, "-c", code]), protocol=2
        ),
    }


def torch_save_zip(data_pkl: bytes | None = None) -> bytes:
    """A torch.save zip of a small tensor, its data.pkl replaced by ``data_pkl`` if given."""
    buffer = io.BytesIO()
    torch.save((torch.arange(4.0),), buffer)
    if data_pkl is None:
        return buffer.getvalue()
    return rewrite_zip(buffer.getvalue(), {"data.pkl": data_pkl})


def rewrite_zip(archive: bytes, replace: dict[str, bytes | None], add=None) -> bytes:
    """The zip with members replaced (or dropped, for None) by record name (the name without
    its root folder, as torch reads it), and ``add`` records appended under the same root."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(out, "w") as dst:
        root = src.infolist()[0].filename.partition("/")[0]
        for info in src.infolist():
            record = info.filename.partition("/")[2]
            data = replace.get(record, src.read(info))
            if data is not None:
                dst.writestr(info, data)
        for record, data in (add or {}).items():
            dst.writestr(f"{root}/{record}", data)
    return out.getvalue()


def edit_json(archive: bytes, record: str, edit: Callable[[dict], None]) -> bytes:
    """The zip with the JSON member ``record`` changed in place by ``edit``."""
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        name = next(n for n in zf.namelist() if n.partition("/")[2] == record)
        doc = json.loads(zf.read(name))
    edit(doc)
    return rewrite_zip(archive, {record: json.dumps(doc).encode()})


def small_mlp() -> nn.Module:
    """A digits-shaped MLP (64 -> 32 -> 10), untrained but seeded."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 10)).eval()


def small_cnn() -> nn.Module:
    """A digits-shaped CNN with BatchNorm, pooling and flatten, untrained but seeded."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 10),
    )
    bn = net[1]
    bn.running_mean.uniform_(-0.2, 0.2)
    bn.running_var.uniform_(0.5, 1.5)
    bn.weight.data.uniform_(0.5, 1.5)
    return net.eval()


class Craft:
    """The builders above, for tests (conftest modules cannot be imported by name)."""

    marker_pickles = staticmethod(marker_pickles)
    torch_save_zip = staticmethod(torch_save_zip)
    rewrite_zip = staticmethod(rewrite_zip)
    edit_json = staticmethod(edit_json)
    small_mlp = staticmethod(small_mlp)
    small_cnn = staticmethod(small_cnn)


@pytest.fixture(scope="session")
def craft() -> type[Craft]:
    """Builders of hostile files and the small networks they start from."""
    return Craft


@pytest.fixture(scope="session")
def mlp_archive_bytes() -> bytes:
    """``torch.export.save`` of the small MLP, as bytes."""
    program = torch.export.export(small_mlp(), (torch.zeros(2, 64),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def dynamic_archive_bytes() -> bytes:
    """The small MLP exported with a dynamic batch (its JSON holds sympy expressions)."""
    batch = torch.export.Dim("batch")
    program = torch.export.export(small_mlp(), (torch.zeros(4, 64),), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()

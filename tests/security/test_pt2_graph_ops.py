"""A ``.pt2`` archive is checked whenever it is opened, not only when it is converted: a hand
written dense bundle whose graph maps a file (``aten.from_file``) is refused by ``run``, and a
pickled weight that views far more elements than its storage holds is refused before anything
reads it whole."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ganglion.converters.dense import convert_dense
from ganglion.converters.exported_archive import ArchiveLimits, load_exported
from ganglion.models.errors import ConversionError
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.cli import invoke

# Exported in its own process: registering a fake kernel for aten.from_file there changes no
# operator in the test process.
FROM_FILE_PROGRAM = """
import sys, torch
from torch import nn
target, out = sys.argv[1], sys.argv[2]
@torch.library.register_fake("aten::from_file")
def _fake(filename, shared=None, size=0, *, dtype=None, layout=None, device=None, pin_memory=None):
    return torch.empty(size, dtype=dtype, device=device or "cpu")
class Leaky(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 3)
    def forward(self, x):
        mapped = torch.from_file(target, shared=True, size=3, dtype=torch.uint8)
        mapped.add_(1)  # writes the user's file
        return self.fc(x) + mapped.float()
program = torch.export.export(Leaky().eval(), (torch.zeros(2, 4),))
torch.export.save(program, out)
"""


@pytest.fixture(scope="module")
def file_mapping_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A dense bundle made honestly, then its model.pt2 swapped for one that maps and edits
    ``victim.txt``, the manifest's SHA-256 recomputed (anyone can write a bundle)."""
    root = tmp_path_factory.mktemp("from-file")
    victim = root / "victim.txt"
    victim.write_text("USER-DATA-KEEP-ME")
    torch.manual_seed(0)
    honest = torch.export.export(nn.Linear(4, 3).eval(), (torch.zeros(2, 4),))
    bundle = save_bundle(convert_dense(honest), root / "bundle")
    code = [sys.executable, "-c", FROM_FILE_PROGRAM, str(victim), str(root / "evil.pt2")]
    subprocess.run(code, check=True, capture_output=True, timeout=120)
    shutil.copyfile(root / "evil.pt2", bundle / "model.pt2")
    manifest = json.loads((bundle / "manifest.json").read_text())
    digest = hashlib.sha256((bundle / "model.pt2").read_bytes()).hexdigest()
    manifest["artifacts"]["model.pt2"] = digest
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle, victim


def test_a_graph_that_maps_a_file_is_refused_when_opened(file_mapping_bundle) -> None:
    bundle, _ = file_mapping_bundle
    with pytest.raises(ConversionError, match=r"evil|model\.pt2: operator aten::from_file"):
        load_exported(bundle / "model.pt2")


def test_running_such_a_bundle_refuses_it_and_leaves_the_file(
    file_mapping_bundle, tmp_path: Path, one_line_error
) -> None:
    bundle, victim = file_mapping_bundle
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.float32))
    for args in (
        ["run", bundle, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy"],
        ["inspect", bundle, "--operators"],
    ):
        code, _, err = invoke(*map(str, args))
        one_line_error(code, err, "operator aten::from_file", "touch no files")
    assert victim.read_text() == "USER-DATA-KEEP-ME"
    assert not (tmp_path / "y.npy").exists()


def _expanded_weight_archive(path: Path, elements: int) -> Path:
    """A .pt2 whose weight is a pickled stride-0 view: 4 bytes of storage, ``elements``
    values once read (torch.export.save writes it raw; rewritten as ``use_pickle``)."""

    class Expanded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = nn.Parameter(torch.zeros(1).expand(elements), requires_grad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.p[:1]

    saved = io.BytesIO()
    torch.export.save(torch.export.export(Expanded().eval(), (torch.zeros(2, 1),)), saved)
    pickled = io.BytesIO()
    torch.save(nn.Parameter(torch.zeros(1).expand(elements), requires_grad=False), pickled)
    source = zipfile.ZipFile(io.BytesIO(saved.getvalue()))
    members = {info.filename: source.read(info) for info in source.infolist()}
    config_name = next(n for n in members if n.endswith("model_weights_config.json"))
    config = json.loads(members[config_name])
    for entry in config["config"].values():
        entry["use_pickle"] = True
        weight = entry["path_name"]
    members[config_name] = json.dumps(config).encode()
    weight_name = next(n for n in members if n.endswith(f"/weights/{weight}"))
    members[weight_name] = pickled.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.filterwarnings("ignore:No complete tensor found")  # torch, on a pickled view
def test_a_weight_viewing_more_than_its_storage_is_refused_before_it_is_read(
    tmp_path: Path,
) -> None:
    limits = ArchiveLimits(max_total_bytes=1 << 20)
    small = _expanded_weight_archive(tmp_path / "small.pt2", 1_000)
    assert load_exported(small, limits) is not None  # 4 kB once read: within the limit
    large = _expanded_weight_archive(tmp_path / "large.pt2", 1 << 20)  # 4 MiB once read
    with pytest.raises(ConversionError, match=r"large\.pt2: tensor 'p' \[1048576\] brings"):
        load_exported(large, limits)

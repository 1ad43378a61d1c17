"""converters/hdf5_guard.py and read_nir: an NIR (HDF5) file may not read other files, loop
or declare more data than the limits; a valid file written by nir.write still imports."""

from __future__ import annotations

from pathlib import Path

import h5py
import nir
import numpy as np
import pytest

from ganglion.converters.hdf5_guard import HDF5Limits, check_hdf5
from ganglion.converters.nir_graph import read_nir
from ganglion.models.errors import NIRError

WEIGHT = "node/nodes/fc/weight"
SECRET = np.arange(6, dtype=np.float32) + 1000.0  # bytes a crafted file tries to pull in


def small_graph() -> nir.NIRGraph:
    """Input(3) -> Affine(3->2) -> LIF(2) -> Output, with Ganglion's metadata."""
    lif = nir.LIF(
        tau=np.full(2, 1e-3),
        r=np.full(2, 10.0),
        v_leak=np.zeros(2),
        v_threshold=np.ones(2),
        v_reset=np.zeros(2),
        metadata={"reset": "subtract", "v_init": np.full(2, 0.5)},
    )
    return nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type={"input": np.array([3])}),
            "fc": nir.Affine(weight=np.ones((2, 3), np.float32), bias=np.zeros(2, np.float32)),
            "lif": lif,
            "output": nir.Output(output_type={"output": np.array([2])}),
        },
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")],
    )


@pytest.fixture
def nir_file(tmp_path: Path) -> Path:
    """A valid NIR file written by nir.write."""
    path = tmp_path / "graph.nir"
    nir.write(str(path), small_graph())
    return path


def replace(path: Path, name: str, make) -> None:
    """Delete ``name`` in the file and let ``make(file)`` put something in its place."""
    with h5py.File(path, "a") as f:
        del f[name]
        make(f)


def test_valid_nir_file_still_imports(nir_file):
    check_hdf5(nir_file)
    graph = read_nir(nir_file, dt=1e-4)
    assert list(graph.nodes) == ["fc", "lif"]
    assert graph.nodes["fc"].weight.sum().item() == 6.0


def test_external_storage_is_refused_and_its_bytes_never_reach_the_graph(nir_file, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(SECRET.tobytes())
    replace(
        nir_file,
        WEIGHT,
        lambda f: f.create_dataset(WEIGHT, (2, 3), "f4", external=[(str(secret), 0, 24)]),
    )
    assert np.array_equal(nir.read(str(nir_file)).nodes["fc"].weight.ravel(), SECRET)  # live
    with pytest.raises(NIRError, match=f"graph.nir: /{WEIGHT}: external storage in .*secret.bin"):
        read_nir(nir_file)


def test_external_link_is_refused_without_following_it(nir_file, tmp_path):
    other = tmp_path / "other.nir"
    nir.write(str(other), small_graph())
    replace(
        nir_file,
        "node/nodes/fc",
        lambda f: f.__setitem__("node/nodes/fc", h5py.ExternalLink(str(other), "/node/nodes/fc")),
    )
    with pytest.raises(NIRError, match="/node/nodes/fc: external link to .*other.nir"):
        read_nir(nir_file)


def test_virtual_dataset_is_refused(nir_file, tmp_path):
    source = tmp_path / "source.h5"
    with h5py.File(source, "w") as f:
        f["data"] = SECRET.reshape(2, 3)

    def virtual(f: h5py.File) -> None:
        layout = h5py.VirtualLayout((2, 3), "f4")
        layout[:] = h5py.VirtualSource(str(source), "data", shape=(2, 3))
        f.create_virtual_dataset(WEIGHT, layout)

    replace(nir_file, WEIGHT, virtual)
    with pytest.raises(NIRError, match=f"/{WEIGHT}: a virtual dataset"):
        read_nir(nir_file)


def test_small_gzip_file_declaring_a_large_dataset_is_a_compression_bomb(nir_file):
    replace(
        nir_file,
        WEIGHT,
        lambda f: f.create_dataset(
            WEIGHT, data=np.zeros((2, 4 << 20), np.float32), chunks=(1, 1 << 20), compression=9
        ),
    )
    assert nir_file.stat().st_size < 1 << 20  # 32 MiB declared, under 1 MiB on disk
    with pytest.raises(NIRError, match=f"/{WEIGHT}: declares 33554432 bytes for .* stored"):
        read_nir(nir_file)


def test_dataset_declaring_more_than_the_limit_is_refused_before_reading(nir_file):
    replace(nir_file, WEIGHT, lambda f: f.create_dataset(WEIGHT, (1 << 20, 1 << 20), "f4"))
    with pytest.raises(NIRError, match=f"/{WEIGHT}: declares 4398046511104 bytes"):
        read_nir(nir_file)


@pytest.mark.parametrize(
    "target, why",
    [
        ("/node/nodes/missing", "soft link to '/node/nodes/missing' dangles or loops"),
        ("/node/nodes/loop", "soft link to '/node/nodes/loop' dangles or loops"),
        ("/node", "links back to a group above it"),
    ],
    ids=["dangling", "self", "ancestor"],
)
def test_soft_links_that_dangle_or_loop_are_refused(nir_file, target, why):
    with h5py.File(nir_file, "a") as f:
        f["node/nodes/loop"] = h5py.SoftLink(target)
    with pytest.raises(NIRError, match=f"/node/nodes/loop: {why}"):
        read_nir(nir_file)


def test_link_back_to_an_ancestor_is_refused(nir_file):
    with h5py.File(nir_file, "a") as f:
        f["node/nodes/fc/again"] = f["node"]  # a hard link: the group inside itself
    with pytest.raises(NIRError, match="/node/nodes/fc/again: links back to a group above"):
        read_nir(nir_file)


def test_link_graph_that_multiplies_visits_is_refused(nir_file):
    """Each level links the next twice: 2**16 paths from 32 links."""
    with h5py.File(nir_file, "a") as f:
        groups = [f.create_group(f"fan/{i}") for i in range(17)]
        for parent, child in zip(groups, groups[1:], strict=False):
            parent["a"], parent["b"] = child, child
    with pytest.raises(NIRError, match="a reader would visit more than 10000 objects"):
        read_nir(nir_file)


def test_filter_that_would_load_a_plugin_is_refused(nir_file):
    replace(
        nir_file,
        WEIGHT,
        lambda f: f.create_dataset(
            WEIGHT, data=np.ones((2, 3), np.float32), compression=32001, allow_unknown_filter=True
        ),
    )
    with pytest.raises(NIRError, match="filter 32001 is not built in"):
        read_nir(nir_file)


def test_strings_beyond_the_limit_are_refused(nir_file):
    with h5py.File(nir_file, "a") as f:
        f.create_dataset("node/nodes/fc/note", data="x" * 2000, dtype=h5py.string_dtype())
    with pytest.raises(NIRError, match="/node/nodes/fc/note: strings of 2000 bytes"):
        check_hdf5(nir_file, HDF5Limits(max_string_bytes=1000))


def test_not_an_hdf5_file_keeps_its_one_line_error(tmp_path):
    path = tmp_path / "notes.nir"
    path.write_text("not hdf5")
    with pytest.raises(NIRError, match=r"notes\.nir: not a readable NIR \(HDF5\) file"):
        read_nir(path)


def test_soft_link_that_resolves_inside_the_file_is_accepted(nir_file):
    with h5py.File(nir_file, "a") as f:
        f["extra/alias"] = h5py.SoftLink(f"/{WEIGHT}")
    check_hdf5(nir_file)

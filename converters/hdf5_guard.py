"""Check an HDF5 file (an NIR graph) before anything reads it: no other file may be touched,
no dataset may be bigger than declared limits, no traversal may run away.

``check_hdf5`` walks every link with h5py's low-level API, never following an external
link, and inspects every object's metadata:

- links: external and user-defined links are refused; soft links must resolve inside the
  file (a dangling or looping one is refused); link cycles and link graphs that would make
  a reader visit more than ``max_objects`` objects are refused;
- datasets: external storage (raw data in another file), virtual layouts (data mapped from
  other files), filters outside the built-in set (an unknown filter makes HDF5 load a
  plugin library), ranks above ``max_rank``, and types other than numbers, booleans and
  strings are refused; each dataset's declared ``shape x itemsize``, the total, the ratio of
  declared bytes to bytes stored (compression bombs) and string sizes are capped;
- attributes: their number and declared size are capped (nothing reads them).

Only variable-length strings are read, one element at a time, to measure them (their size
is not declared anywhere else); everything else is metadata.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from h5py import h5a, h5d, h5g, h5i, h5l, h5o, h5s, h5t, h5z

from ganglion.models.errors import NIRError, inflation_problem

# Built-in filters (and h5py's LZF): an unknown filter id makes HDF5 search for a plugin.
_FILTERS = {
    h5z.FILTER_DEFLATE: "deflate",
    h5z.FILTER_SHUFFLE: "shuffle",
    h5z.FILTER_FLETCHER32: "fletcher32",
    h5z.FILTER_SZIP: "szip",
    h5z.FILTER_NBIT: "nbit",
    h5z.FILTER_SCALEOFFSET: "scaleoffset",
    h5z.FILTER_LZF: "lzf",
}
_TYPES = {h5t.INTEGER: "integer", h5t.FLOAT: "float", h5t.ENUM: "enum", h5t.STRING: "string"}


@dataclass(frozen=True)
class HDF5Limits:
    """Caps checked before a reader allocates anything."""

    max_file_bytes: int = 1 << 30
    max_objects: int = 10_000  # links a full traversal visits (following soft links)
    max_rank: int = 8
    max_dataset_bytes: int = 256 << 20  # one dataset's declared shape x itemsize
    max_total_bytes: int = 1 << 30  # all datasets together
    max_ratio: float = 100.0  # declared / stored bytes, for one dataset and for the file ...
    ratio_floor_bytes: int = 16 << 20  # ... once the declared bytes pass this
    max_strings: int = 4096  # elements of one variable-length string dataset (edges: 2 per edge)
    max_string_bytes: int = 1 << 20  # bytes of one string dataset (all its elements)
    max_attributes: int = 64  # per object
    max_attribute_bytes: int = 64 << 10  # one attribute's declared size


class _Walk:
    """Two passes over one open file; ``refuse`` raises NIRError naming file and path."""

    def __init__(self, path: Path, limits: HDF5Limits, file_bytes: int) -> None:
        self.path, self.limits, self.file_bytes = path, limits, file_bytes
        self.visits = 0
        self.total = 0

    def refuse(self, where: str, why: str) -> NIRError:
        return NIRError(f"{self.path}: {where}: {why}")

    def links(self, group: h5g.GroupID, where: str) -> list[bytes]:
        names: list[bytes] = []

        def collect(name: bytes) -> bool | None:
            names.append(name)
            return True if len(names) > self.limits.max_objects else None

        group.links.iterate(collect)
        if len(names) > self.limits.max_objects:
            raise self.refuse(where, f"more than {self.limits.max_objects} links")
        return names

    def check_links(self, root: h5g.GroupID) -> None:
        """Pass 1: every group reachable by hard links, each once; no external or
        user-defined link anywhere (so resolving soft links later opens no other file)."""
        seen = {h5o.get_info(root).addr}
        pending = [(root, "")]
        while pending:
            group, where = pending.pop()
            for name in self.links(group, where or "/"):
                child = f"{where}/{name.decode(errors='replace')}"
                info = group.links.get_info(name)
                if info.type == h5l.TYPE_EXTERNAL:
                    target = b":".join(group.links.get_val(name)).decode(errors="replace")
                    raise self.refuse(child, f"external link to {target!r} (another file)")
                if info.type == h5l.TYPE_SOFT:
                    continue
                if info.type != h5l.TYPE_HARD:
                    raise self.refuse(child, f"user-defined link (type {info.type})")
                obj = h5o.open(group, name)
                address = h5o.get_info(obj).addr
                if h5i.get_type(obj) == h5i.GROUP and address not in seen:
                    seen.add(address)
                    pending.append((obj, child))

    def check_objects(self, root: h5g.GroupID) -> None:
        """Pass 2: what a reader traverses (soft links followed), every object checked."""
        pending = [(root, "", (h5o.get_info(root).addr,))]
        while pending:
            group, where, ancestors = pending.pop()
            self.check_attributes(group, where or "/")
            for name in self.links(group, where or "/"):
                child = f"{where}/{name.decode(errors='replace')}"
                self.visits += 1
                if self.visits > self.limits.max_objects:
                    raise self.refuse(
                        child, f"a reader would visit more than {self.limits.max_objects} objects"
                    )
                obj = self.open(group, name, child)
                kind = h5i.get_type(obj)
                if kind == h5i.GROUP:
                    address = h5o.get_info(obj).addr
                    if address in ancestors:
                        raise self.refuse(child, "links back to a group above it (a loop)")
                    pending.append((obj, child, (*ancestors, address)))
                elif kind == h5i.DATASET:
                    self.check_attributes(obj, child)
                    self.check_dataset(obj, child)
                else:
                    raise self.refuse(child, "neither a group nor a dataset")

    def open(self, group: h5g.GroupID, name: bytes, where: str) -> h5o.ObjectID:
        """The object a link names; a soft link is resolved inside this file only (pass 1
        found no external link to pass through)."""
        if group.links.get_info(name).type != h5l.TYPE_SOFT:
            return h5o.open(group, name)
        try:
            return h5o.open(group, name)
        except (KeyError, RuntimeError, OSError, ValueError) as exc:
            target = group.links.get_val(name).decode(errors="replace")
            raise self.refuse(where, f"soft link to {target!r} dangles or loops") from exc

    def check_attributes(self, obj: h5o.ObjectID, where: str) -> None:
        count = h5o.get_info(obj).num_attrs
        if count > self.limits.max_attributes:
            raise self.refuse(where, f"{count} attributes (limit {self.limits.max_attributes})")
        for index in range(count):
            attr = h5a.open(obj, index=index)
            size = attr.get_space().get_simple_extent_npoints() * attr.get_type().get_size()
            if size > self.limits.max_attribute_bytes:
                name = attr.get_name().decode(errors="replace")
                raise self.refuse(where, f"attribute {name!r} declares {size} bytes")

    def check_dataset(self, dset: h5d.DatasetID, where: str) -> None:  # noqa: C901 - one per rule
        limits = self.limits
        plist = dset.get_create_plist()
        if plist.get_layout() == h5d.VIRTUAL:
            raise self.refuse(where, "a virtual dataset (its data maps other files)")
        if plist.get_external_count():
            target = plist.get_external(0)[0].decode(errors="replace")
            raise self.refuse(where, f"external storage in {target!r} (another file)")
        for index in range(plist.get_nfilters()):
            code = plist.get_filter(index)[0]
            if code not in _FILTERS:
                raise self.refuse(
                    where, f"filter {code} is not built in (HDF5 would load a plugin)"
                )
        space = dset.get_space()
        rank = space.get_simple_extent_ndims()
        if space.get_simple_extent_type() not in (h5s.SCALAR, h5s.SIMPLE, h5s.NULL):
            raise self.refuse(where, "a dataspace that is not scalar or simple")
        if rank > limits.max_rank:
            raise self.refuse(where, f"rank {rank} (limit {limits.max_rank})")
        dtype = dset.get_type()
        if dtype.get_class() not in _TYPES:
            raise self.refuse(where, "a type other than numbers, booleans and strings")
        count = math.prod(space.get_simple_extent_dims()) if rank else 1
        declared = count * dtype.get_size()
        if declared > limits.max_dataset_bytes:
            raise self.refuse(
                where, f"declares {declared} bytes (limit {limits.max_dataset_bytes})"
            )
        self.total += declared
        if self.total > limits.max_total_bytes:
            raise self.refuse(where, f"datasets declare more than {limits.max_total_bytes} bytes")
        stored = dset.get_storage_size()
        for amount, against in ((declared, stored), (self.total, self.file_bytes)):
            bomb = inflation_problem(amount, against, limits.max_ratio, limits.ratio_floor_bytes)
            if bomb is not None:
                raise self.refuse(where, bomb)
        if dtype.get_class() == h5t.STRING:
            self.check_strings(dset, where, dtype, count)

    def check_strings(self, dset: h5d.DatasetID, where: str, dtype: h5t.TypeID, count: int) -> None:
        limits = self.limits
        if not dtype.is_variable_str():
            size = count * dtype.get_size()
        elif count > limits.max_strings:
            raise self.refuse(
                where, f"{count} variable-length strings (limit {limits.max_strings})"
            )
        else:  # sizes live in the global heap: measure one element at a time
            dataset = h5py.Dataset(dset)
            size = 0
            for index in np.ndindex(dataset.shape):
                value = dataset[index]
                size += len(value) if isinstance(value, bytes | str) else 0
                if size > limits.max_string_bytes:
                    break
        if size > limits.max_string_bytes:
            raise self.refuse(where, f"strings of {size} bytes (limit {limits.max_string_bytes})")


def check_hdf5(path: str | Path, limits: HDF5Limits = HDF5Limits()) -> None:
    """Refuse an HDF5 file that would make a reader open another file, load a plugin, loop,
    or allocate beyond ``limits``; NIRError names the file and the object path."""
    path = Path(path)
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise NIRError(f"{path}: {size} bytes (limit {limits.max_file_bytes})")
    try:
        handle = h5py.File(os.fspath(path), "r")
    except OSError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "no detail"
        raise NIRError(
            f"{path}: not a readable NIR (HDF5) file ({type(exc).__name__}: {first})"
        ) from exc
    with handle:
        walk = _Walk(path, limits, size)
        try:
            root = h5g.open(handle.id, b"/")
            walk.check_links(root)
            walk.check_objects(root)
        except (OSError, RuntimeError, KeyError, ValueError) as exc:  # a corrupt file
            raise NIRError(
                f"{path}: not a readable NIR (HDF5) file ({type(exc).__name__})"
            ) from exc

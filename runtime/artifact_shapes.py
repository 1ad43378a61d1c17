"""Tensor shapes a bundle's weight files declare, read without loading the tensors or torch.

- ``safetensors_shapes``: the header of a ``.safetensors`` artifact (the ``safetensors``
  library reads it lazily, with the numpy framework); ``safetensors_arrays`` reads just the
  tensors asked for the same way;
- ``exported_parameter_shapes``: the parameters a ``torch.export`` archive (``model.pt2``)
  declares in its program JSON (graph signature and tensor metadata), read as JSON only.

``inspect`` counts parameters from these, so it answers without rebuilding the program.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganglion.models.errors import BundleError

if TYPE_CHECKING:
    from ganglion.runtime.program import Program

Shape = tuple[int, ...]
EXPORTED_PROGRAM = re.compile(r"[^/]+/models/[^/]+\.json")  # as torch.export.save lays it out
MAX_PROGRAM_JSON_BYTES = 256 << 20


def element_count(shapes: Iterable[Shape]) -> int:
    """Elements in tensors of these shapes, all together."""
    return sum(math.prod(shape) for shape in shapes)


def safetensors_shapes(program: Program, name: str) -> dict[str, Shape]:
    """Shape of every tensor in the bundle's safetensors artifact ``name`` (empty when the
    bundle has none); BundleError when the file is not readable safetensors."""
    return _read_safetensors(
        program,
        name,
        lambda f: {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()},
    )


def safetensors_arrays(program: Program, name: str, keys: Iterable[str]) -> dict[str, Any]:
    """The tensors ``keys`` of the bundle's safetensors artifact ``name`` that it holds, as
    numpy arrays, the others left unread (empty when the bundle has no such file)."""
    wanted = set(keys)
    return _read_safetensors(
        program, name, lambda f: {k: f.get_tensor(k) for k in f.keys() if k in wanted}
    )


def _read_safetensors(program: Program, name: str, read: Any) -> dict[str, Any]:
    """``read(opened file)`` on the artifact ``name`` (numpy framework, lazily), ``{}`` when
    the bundle has none; BundleError when the file is not readable safetensors."""
    from safetensors import SafetensorError, safe_open

    if not program.has_artifact(name):
        return {}
    assert program.folder is not None
    try:
        with safe_open(str(program.folder / name), framework="numpy") as opened:
            return read(opened)
    except SafetensorError as exc:
        raise BundleError(f"{program.name}/{name}: not readable safetensors ({exc})") from exc


def exported_parameter_shapes(path: Path) -> dict[str, Shape] | None:
    """Shape of each parameter of a ``torch.export`` archive, by name, from its program's
    graph signature and tensor metadata; None when the archive does not hold one program
    JSON laid out as ``torch.export.save`` writes it (or sizes that are not plain integers)."""
    try:
        with zipfile.ZipFile(path) as archive:
            programs = [i for i in archive.infolist() if EXPORTED_PROGRAM.fullmatch(i.filename)]
            if len(programs) != 1 or programs[0].file_size > MAX_PROGRAM_JSON_BYTES:
                return None
            document = json.loads(archive.read(programs[0]))
        return _parameter_shapes(document["graph_module"])
    except (OSError, zipfile.BadZipFile, ValueError, RecursionError, KeyError, TypeError):
        return None


def _parameter_shapes(graph_module: dict[str, Any]) -> dict[str, Shape]:
    """Parameter name -> shape; a placeholder shared by several names counts once."""
    values = graph_module["graph"]["tensor_values"]
    shapes: dict[str, Shape] = {}
    seen: set[str] = set()
    for spec in graph_module["signature"]["input_specs"]:
        if "parameter" not in spec:
            continue
        arg = spec["parameter"]["arg"]["name"]
        if arg in seen:
            continue
        seen.add(arg)
        sizes = values[arg]["sizes"]
        shapes[spec["parameter"]["parameter_name"]] = tuple(int(s["as_int"]) for s in sizes)
    return shapes

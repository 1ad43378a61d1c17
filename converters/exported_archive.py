"""Open a torch.export archive (.pt2) without letting it run code, read other files or take
unbounded memory.

``torch.export.load`` (torch 2.13) unpickles sample inputs (falling back to
``weights_only=False``), weights and constants saved with ``use_pickle``, and legacy weight
files; it hands symbolic-shape strings to ``sympy.sympify``, which evaluates them; it loads
AOTInductor shared libraries and TorchScript objects; and it allocates ``torch.zeros`` of any
declared size for an empty weight record. ``check_exported_archive`` therefore inspects the
file first, executing nothing:

- zip: member count, total declared size, per-member compression ratio, stored or deflated
  members only, no encryption, no absolute, ``..`` or duplicate names, no overlapping members;
- code: no AOTInductor libraries, TorchScript archives, custom or opaque objects;
- pickles: every member torch unpickles (found by name and payload config) and every member
  whose bytes are a complete pickle (found by content) is walked opcode by opcode with
  ``pickletools.genops``; only the globals torch's weights-only unpickler allows may appear,
  and only they may be called or built;
- program JSON: symbolic expressions and guards fit a small arithmetic grammar, subgraph
  names are identifiers, every name torch pastes into the code it generates (parameter,
  buffer and constant names, node names and targets, module paths, payload-config keys) is a
  dotted name, declared weight sizes fit the size limit.

``load_exported`` then calls ``torch.export.load`` with torch.load forced to weights-only, and
refuses a program whose tensors would take more than the size limit once read (a pickled view
may expand a few bytes of storage), whose graph calls an operator that is not ATen or touches
files (``aten.from_file``), or whose float weights or constants hold NaN.
"""

from __future__ import annotations

import _compat_pickle
import ast
import contextlib
import io
import json
import logging
import math
import os
import pickle
import pickletools
import posixpath
import re
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from torch._export.serde.serialize import deserialize_scalar_type
from torch._utils import IMPORT_MAPPING as TORCH_IMPORT_MAPPING
from torch._utils import NAME_MAPPING as TORCH_NAME_MAPPING
from torch._weights_only_unpickler import _get_allowed_globals
from torch.export.pt2_archive import constants as pt2

from ganglion.models.errors import ConversionError, file_problem, inflation_problem


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps checked before anything is decompressed, unpickled or allocated."""

    max_members: int = 10_000  # per zip (the archive, and each torch.save zip inside it)
    max_total_bytes: int = 4 << 30  # declared uncompressed bytes; also declared tensor bytes
    max_ratio: float = 200.0  # uncompressed / compressed size of one member ...
    ratio_floor_bytes: int = 1 << 20  # ... checked for members declaring more than this
    max_json_bytes: int = 256 << 20  # one program or payload-config JSON member


class _Refused(Exception):
    """A member that must not reach torch: ``member`` names it, the message says why."""

    def __init__(self, member: str, reason: str) -> None:
        super().__init__(reason)
        self.member = member


class _NotAPickle(Exception):
    """The bytes do not parse as one complete pickle (unpickling them would fail too)."""


class _NotAZip(_Refused):
    """Bytes that start like a zip but do not open as one."""


class _Unsafe(Exception):
    """Unpickling would import or call something outside the allowlist."""


# ---------------------------------------------------------------------------------------------
# Pickles: walk the opcodes, never execute them.

_ALLOWED_GLOBALS = frozenset(_get_allowed_globals())  # torch's weights-only default set
_CALLS = {"REDUCE": 2, "NEWOBJ": 2, "NEWOBJ_EX": 3}  # opcode -> values popped (callable last)
_REFUSED_OPS = {"EXT1", "EXT2", "EXT4", "PERSID"}  # registry lookups, string persistent ids
_IN_PLACE = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS"}  # target stays on stack
_STRING_OPS = {
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "UNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
}
_MARK = pickletools.markobject


@dataclass(frozen=True)
class _Value:
    """What the walk knows of a stack value: kind is global | str | instance | other."""

    kind: str
    text: str = ""


_OTHER = _Value("other")


def _reader_names(module: str, name: str, protocol: int) -> set[str]:
    """Dotted names the readers may import for GLOBAL ``module name``: torch's weights-only
    unpickler renames with torch's table, pickle with its own below protocol 3."""
    mapped = TORCH_NAME_MAPPING.get((module, name))
    t_module, t_name = mapped or (TORCH_IMPORT_MAPPING.get(module, module), name)
    if protocol < 3:
        mapped = _compat_pickle.NAME_MAPPING.get((module, name))
        module, name = mapped or (_compat_pickle.IMPORT_MAPPING.get(module, module), name)
    return {f"{t_module}.{t_name}", f"{module}.{name}"}


class _PickleWalk:
    """Simulates the unpickler's stack and memo with opaque values, refusing anything that
    would import or call outside torch's weights-only allowlist."""

    def __init__(self) -> None:
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}
        self.protocol = 0

    def pop(self) -> _Value:
        if not self.stack or self.stack[-1] is _MARK:
            raise _NotAPickle("stack underflow")
        return self.stack.pop()

    def pop_mark(self) -> list[_Value]:
        if _MARK not in self.stack:
            raise _NotAPickle("no MARK to pop to")
        at = len(self.stack) - 1 - self.stack[::-1].index(_MARK)
        items, self.stack = self.stack[at + 1 :], self.stack[:at]
        return items

    def global_value(self, module: str, name: str) -> _Value:
        names = _reader_names(module, name, self.protocol)
        refused = sorted(names - _ALLOWED_GLOBALS)
        if refused:
            raise _Unsafe(f"global {refused[0]} is not in torch's weights-only allowlist")
        return _Value("global", f"{module}.{name}")

    def called(self, target: _Value, opcode: str) -> _Value:
        if target.kind != "global":
            raise _Unsafe(f"{opcode} calls a value of kind {target.kind}, not an allowed global")
        return _Value("instance", target.text)

    def step(self, op: pickletools.OpcodeInfo, arg: Any) -> None:  # noqa: C901 - one per opcode
        name = op.name
        if name in _REFUSED_OPS:
            raise _Unsafe(f"opcode {name} is not allowed")
        if name == "PROTO":
            self.protocol = int(arg)
        elif name in ("GLOBAL", "INST"):
            module, _, qualname = str(arg).partition(" ")
            value = self.global_value(module, qualname)
            if name == "INST":
                self.pop_mark()
                value = self.called(value, name)
            self.stack.append(value)
        elif name == "STACK_GLOBAL":
            qualname, module = self.pop(), self.pop()
            if module.kind != "str" or qualname.kind != "str":
                raise _Unsafe("STACK_GLOBAL operands are not string constants")
            self.stack.append(self.global_value(module.text, qualname.text))
        elif name in _CALLS:
            popped = [self.pop() for _ in range(_CALLS[name])]
            self.stack.append(self.called(popped[-1], name))
        elif name == "OBJ":
            items = self.pop_mark()
            if not items:
                raise _NotAPickle("OBJ without a class")
            self.stack.append(self.called(items[0], name))
        elif name == "BUILD":
            self.pop()
            target = self.pop()
            if target.kind != "instance":
                raise _Unsafe(f"BUILD on a value of kind {target.kind}, not an allowed object")
            self.stack.append(target)
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            value = self.pop()
            self.stack.append(value)
            self.memo[len(self.memo) if name == "MEMOIZE" else int(arg)] = value
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if int(arg) not in self.memo:
                raise _NotAPickle(f"memo {arg} is empty")
            self.stack.append(self.memo[int(arg)])
        elif name in _STRING_OPS:
            text = arg if isinstance(arg, str) else bytes(arg).decode("latin-1")
            self.stack.append(_Value("str", text))
        elif name == "DUP":
            value = self.pop()
            self.stack += [value, value]
        elif name == "POP":
            if not self.stack:
                raise _NotAPickle("stack underflow")
            self.stack.pop()  # pops a MARK too, as pickle does
        else:
            self.generic(op)

    def generic(self, op: pickletools.OpcodeInfo) -> None:
        before = op.stack_before
        if _MARK in before:
            self.pop_mark()
            before = before[: before.index(_MARK)]
        kept = [self.pop() for _ in before][::-1]
        if op.name in _IN_PLACE:
            self.stack.append(kept[0])
            return
        self.stack += [_MARK if item is _MARK else _OTHER for item in op.stack_after]


def check_pickle(stream: IO[bytes], member: str) -> None:
    """Walk one pickle with ``pickletools.genops``, executing nothing.

    Raises _Refused (naming ``member``) if unpickling it could import, call or build
    anything outside torch's weights-only allowlist (resolving STACK_GLOBAL through the
    memo), and _NotAPickle if the bytes are not exactly one pickle (what torch.save writes).
    """
    walk = _PickleWalk()
    position = 0
    try:
        for op, arg, at in pickletools.genops(stream):
            position = at
            walk.step(op, arg)
    except _Unsafe as exc:
        raise _Refused(member, f"pickle, byte {position}: {exc}") from None
    except ValueError as exc:  # genops: unknown opcode, truncated or malformed argument
        raise _NotAPickle(str(exc)) from None
    if stream.read(1):
        raise _NotAPickle("bytes after the pickle's STOP")


# ---------------------------------------------------------------------------------------------
# Zip archives: the .pt2 itself and the torch.save zips inside it.

_ZIP_MAGIC = b"PK\x03\x04"
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zipfile's structFileHeader (30 bytes)


def _join(outer: str, inner: str) -> str:
    return f"{outer} -> {inner}" if outer else inner


def _check_zip(
    zf: zipfile.ZipFile, raw: IO[bytes], label: str, limits: ArchiveLimits, spent: list[int]
) -> list[zipfile.ZipInfo]:
    """Bounds and names of every member, and that no two members share bytes."""
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise _Refused(label or "<archive>", f"{len(infos)} members (limit {limits.max_members})")
    seen: set[str] = set()
    for info in infos:
        name, where = info.filename, _join(label, info.filename)
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or ".." in parts or ":" in parts[0]:
            raise _Refused(where, "absolute or parent-relative member name")
        if not name.isascii():  # torch's reader and zipfile could decode it differently
            raise _Refused(where, "non-ASCII member name")
        if name in seen:
            raise _Refused(where, "duplicate member name")
        seen.add(name)
        if info.flag_bits & 0x1:
            raise _Refused(where, "encrypted member")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _Refused(where, f"compression method {info.compress_type} (stored or deflate)")
        spent[0] += info.file_size
        if spent[0] > limits.max_total_bytes:
            raise _Refused(where, f"members declare more than {limits.max_total_bytes} bytes")
        bomb = inflation_problem(
            info.file_size, info.compress_size, limits.max_ratio, limits.ratio_floor_bytes
        )
        if bomb is not None:
            raise _Refused(where, bomb)
    _check_no_overlap(infos, raw, label)
    return infos


def _check_no_overlap(infos: list[zipfile.ZipInfo], raw: IO[bytes], label: str) -> None:
    """Members start at byte 0 and never share bytes (overlapping members are how
    non-recursive zip bombs and parser confusion work)."""
    end = 0
    for info in sorted(infos, key=lambda i: i.header_offset):
        where = _join(label, info.filename)
        if info.header_offset < end or (end == 0 and info.header_offset != 0):
            raise _Refused(where, "member overlaps another or follows unknown bytes")
        raw.seek(info.header_offset)
        header = raw.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != _ZIP_MAGIC:
            raise _Refused(where, "no local header at the member's offset")
        name_length, extra_length = _LOCAL_HEADER.unpack(header)[-2:]
        end = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        end += info.compress_size


def _records(infos: list[zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo] | None:
    """Members by torch's record name (without the one root folder), or None if the members
    do not share one root folder (then torch could not read it either)."""
    roots = {info.filename.partition("/")[0] for info in infos}
    if len(roots) != 1 or any("/" not in info.filename for info in infos):
        return None
    return {i.filename.partition("/")[2]: i for i in infos if not i.is_dir()}


def _check_torch_save(data: bytes, where: str, limits: ArchiveLimits, spent: list[int]) -> None:
    """A member torch.load will read: it must be a torch.save zip whose pickles are safe."""
    if data[:4] != _ZIP_MAGIC:
        raise _Refused(where, "not a torch.save zip archive (legacy formats are not accepted)")
    raw = io.BytesIO(data)
    try:
        with zipfile.ZipFile(raw) as zf:
            infos = _check_zip(zf, raw, where, limits, spent)
            records = _records(infos)
            if records is None:
                raise _Refused(where, "not a torch.save archive (no single root folder)")
            if "constants.pkl" in records or any(r.startswith("code/") for r in records):
                raise _Refused(where, "a TorchScript archive (torch.load would run its code)")
            for record, info in records.items():
                inner = _join(where, info.filename)
                if record.endswith(".pkl"):
                    with zf.open(info) as stream:
                        try:
                            check_pickle(stream, inner)
                        except _NotAPickle as exc:
                            raise _Refused(inner, f"not a well-formed pickle ({exc})") from exc
                else:
                    _check_pickle_by_content(zf, info, inner)
    except zipfile.BadZipFile as exc:
        raise _NotAZip(where, f"not a readable zip archive ({exc})") from exc


def _check_pickle_by_content(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> None:
    """A member no loader names as a pickle is still refused if its bytes are a complete
    pickle (PROTO first, STOP last) that is unsafe."""
    with zf.open(info) as stream:
        head = stream.read(2)
    if len(head) == 2 and head[0] == pickle.PROTO[0] and head[1] <= pickle.HIGHEST_PROTOCOL:
        with zf.open(info) as stream, contextlib.suppress(_NotAPickle):
            check_pickle(stream, where)


def _check_by_content(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ArchiveLimits, spent: list[int]
) -> None:
    """An archive member no loader names: refused if it is an unsafe pickle, or a zip that
    holds one (a torch.save archive under another name)."""
    with zf.open(info) as stream:
        is_zip = stream.read(4) == _ZIP_MAGIC
    if not is_zip:
        _check_pickle_by_content(zf, info, info.filename)
        return
    with contextlib.suppress(_NotAZip):
        _check_torch_save(zf.read(info), info.filename, limits, spent)


# ---------------------------------------------------------------------------------------------
# The program and payload-config JSON.

_EXPR_NODES = (
    ast.Expression,
    ast.BoolOp,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.Call,
    ast.Name,
    ast.Constant,
    ast.Subscript,
    ast.Attribute,
    ast.keyword,
    ast.Load,
    ast.And,
    ast.Or,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.FloorDiv,
    ast.Mod,
    ast.BitAnd,
    ast.BitOr,
    ast.USub,
    ast.UAdd,
    ast.Not,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
)
# Names srepr() writes for shape arithmetic, torch's shape functions, and what guards read.
_EXPR_NAMES = frozenset(
    "Symbol Integer Float Rational Add Mul Max Min Mod Abs floor ceiling Eq Ne Lt Le Gt Ge "
    "Equality Unequality StrictGreaterThan StrictLessThan GreaterThan LessThan And Or Not "
    "true false True False oo zoo nan FloorDiv CeilDiv CleanDiv PythonMod ModularIndexing "
    "IntTrueDiv FloatTrueDiv TruncToInt TruncToFloat CeilToInt FloorToInt RoundToInt ToFloat "
    "Identity Where IsNonOverlappingAndDenseIndicator L math inf".split()
)
_EXPR_ATTRIBUTES = frozenset({"size", "stride", "storage_offset", "dim", "isnan", "inf"})
_SYMBOL = re.compile(r"[a-z]+[0-9]+")
_MAX_EXPR_CHARS = 10_000
_MAX_EXPR_INT = 1 << 63
_MAX_EXPR_POWER = 8  # the largest exponent of a symbolic size's power


def check_expression(text: str) -> str | None:
    """Why ``text`` is not plain shape arithmetic (what torch passes to sympify or exec), or
    None if it is: no attribute beyond size/stride, no call beyond shape functions, no
    power but to a small whole exponent, no name beyond symbols (s0, u1, ...) and those
    functions."""
    if not isinstance(text, str) or len(text) > _MAX_EXPR_CHARS:
        return "not a string of at most 10000 characters"
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "not an expression"
    names, powers = _name_strings(tree), _small_powers(tree)
    for node in ast.walk(tree):
        if not isinstance(node, _EXPR_NODES):
            return f"uses {type(node).__name__}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
            if id(node) not in names:
                return f"uses the string {_short(node.value)} (only a name may be one)"
        if isinstance(node, ast.Name) and not (
            node.id in _EXPR_NAMES or _SYMBOL.fullmatch(node.id) or id(node) in powers
        ):
            return f"uses the name {node.id!r}"
        if isinstance(node, ast.Attribute) and node.attr not in _EXPR_ATTRIBUTES:
            return f"uses the attribute {node.attr!r}"
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            if abs(node.value) > _MAX_EXPR_INT:
                return "uses an integer beyond 2**63"
    return None


def _small_powers(tree: ast.AST) -> set[int]:
    """The ``Pow`` names of ``tree`` that raise to a small whole exponent, ``Pow(x,
    Integer(2))`` (an L x L causal mask's size): sympy evaluates a power at once, so a large
    exponent would take unbounded time and memory; at most ``_MAX_EXPR_POWER``."""
    found = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        if node.func.id != "Pow" or len(node.args) != 2 or node.keywords:
            continue
        exponent = node.args[1]
        if isinstance(exponent, ast.Call) and isinstance(exponent.func, ast.Name):
            if exponent.func.id == "Integer" and len(exponent.args) == 1:
                exponent = exponent.args[0]
        if isinstance(exponent, ast.Constant) and type(exponent.value) is int:
            if 0 <= exponent.value <= _MAX_EXPR_POWER:
                found.add(id(node.func))
    return found


def _name_strings(tree: ast.AST) -> set[int]:
    """The string constants of ``tree`` that are names: a symbol's, ``Symbol('s0', ...)``, or
    an input's in a guard, ``L['x']``. sympy parses any other string argument as Python source
    (``floor("...")`` would run it)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
            first = node.args[0]
            if node.func.id == "Symbol" and isinstance(first, ast.Constant):
                if isinstance(first.value, str) and _SYMBOL.fullmatch(first.value):
                    names.add(id(first))
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            key = node.slice
            if node.value.id == "L" and isinstance(key, ast.Constant):
                if isinstance(key.value, str) and key.value.isidentifier():
                    names.add(id(key))
    return names


def _short(text: Any, limit: int = 60) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _walk_json(doc: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of a parsed JSON document, depth first, without recursion."""
    pending = [doc]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                yield key, value
                pending.append(value)
        elif isinstance(node, list):
            pending.extend(node)


def _read_json(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ArchiveLimits) -> Any:
    if info.file_size > limits.max_json_bytes:
        raise _Refused(info.filename, f"JSON of {info.file_size} bytes")
    try:
        return json.loads(zf.read(info))
    except (ValueError, RecursionError) as exc:
        raise _Refused(info.filename, f"not valid JSON ({type(exc).__name__})") from exc


# program JSON keys whose string values torch pastes into the Python source it generates and
# runs when it rebuilds the module (``getattr(r, "<name>")``): each must be a dotted name
_CODE_NAME_KEYS = frozenset(
    {"name", "parameter_name", "buffer_name", "tensor_constant_name", "custom_obj_name", "fqn",
     "target"}
)  # fmt: skip
_DOTTED_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")


def dotted_name(text: Any) -> bool:
    """Whether ``text`` is a dotted name: parts that are identifiers or digits (``0.weight``,
    ``blocks.1.attn``, ``torch.ops.aten.linear.default``), or empty (the root module)."""
    return isinstance(text, str) and (
        text == "" or all(_DOTTED_PART.fullmatch(part) for part in text.split("."))
    )


def _check_program(doc: Any, member: str) -> None:
    """Strings torch evaluates (sympy expressions, guards) and names it emits as code."""
    for key, value in _walk_json(doc):
        if key in _CODE_NAME_KEYS and isinstance(value, str) and not dotted_name(value):
            raise _Refused(member, f"{key} {_short(value)} is not a dotted name")
        if key == "expr_str":
            why = check_expression(value)
            if why:
                raise _Refused(member, f"symbolic expression {_short(value)} {why}")
        elif key == "guards_code":
            for guard in value if isinstance(value, list) else [value]:
                why = check_expression(guard)
                if why:
                    raise _Refused(member, f"guard {_short(guard)} {why}")
        elif key == "as_graph" and isinstance(value, dict):
            if not str(value.get("name", "")).isidentifier():
                raise _Refused(
                    member, f"subgraph name {_short(value.get('name'))} is not an identifier"
                )


def _declared_bytes(meta: Any, member: str) -> int:
    """Bytes a payload-config tensor declares: its sizes times its element size."""
    sizes = meta.get("sizes") if isinstance(meta, dict) else None
    if not isinstance(sizes, list) or not all(
        isinstance(s, dict) and isinstance(s.get("as_int"), int) and s["as_int"] >= 0 for s in sizes
    ):
        raise _Refused(member, "a tensor whose sizes are not non-negative integers")
    try:
        itemsize = deserialize_scalar_type(meta.get("dtype")).itemsize
    except (KeyError, TypeError) as exc:
        raise _Refused(member, f"a tensor of unknown dtype {_short(meta.get('dtype'))}") from exc
    return math.prod(s["as_int"] for s in sizes) * itemsize


# ---------------------------------------------------------------------------------------------
# The archive.


def _payload_config(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, folder: str, limits: ArchiveLimits
) -> tuple[set[str], int]:
    """Records a weights/constants config makes torch unpickle, and the bytes its raw
    tensors declare (torch allocates an empty record's declared size with torch.zeros)."""
    config = _read_json(zf, info, limits)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise _Refused(info.filename, "payload config without a 'config' object")
    pickled, declared = set(), 0
    for fqn, entry in entries.items():
        if not dotted_name(fqn):
            raise _Refused(info.filename, f"entry {_short(fqn)} is not a dotted name")
        if not isinstance(entry, dict) or not isinstance(entry.get("path_name"), str):
            raise _Refused(info.filename, f"entry {fqn!r} has no path_name")
        path_name = entry["path_name"]
        if path_name.startswith((pt2.CUSTOM_OBJ_FILENAME_PREFIX, pt2.OPAQUE_OBJ_FILENAME_PREFIX)):
            raise _Refused(info.filename, f"entry {fqn!r} is a custom or opaque Python object")
        if entry.get("use_pickle"):
            pickled.add(posixpath.join(folder, path_name))
        elif entry.get("tensor_meta") is not None:
            declared += _declared_bytes(entry["tensor_meta"], info.filename)
    return pickled, declared


def _torch_loaded(
    zf: zipfile.ZipFile, records: dict[str, zipfile.ZipInfo], limits: ArchiveLimits
) -> set[str]:
    """Records torch.export.load passes to torch.load, found by name and payload config;
    checks each program's JSON and the tensor sizes the configs declare on the way."""
    prefix, suffix = pt2.MODELS_FILENAME_FORMAT.split("{}")
    loaded: set[str] = set()
    declared = 0
    for record, program in records.items():
        if not record.startswith(prefix):
            continue
        model = record[len(prefix) : -len(suffix)]  # as torch names it, whatever the suffix
        _check_program(_read_json(zf, program, limits), program.filename)
        loaded |= {
            pt2.SAMPLE_INPUTS_FILENAME_FORMAT.format(model),
            f"{pt2.WEIGHTS_DIR}{model}.pt",  # legacy weights
            f"{pt2.CONSTANTS_DIR}{model}.pt",  # legacy constants
        }
        for folder, config in (
            (pt2.WEIGHTS_DIR, pt2.WEIGHTS_CONFIG_FILENAME_FORMAT.format(model)),
            (pt2.CONSTANTS_DIR, pt2.CONSTANTS_CONFIG_FILENAME_FORMAT.format(model)),
        ):
            if config in records:
                pickled, tensor_bytes = _payload_config(zf, records[config], folder, limits)
                loaded |= pickled
                declared += tensor_bytes
                if declared > limits.max_total_bytes:
                    raise _Refused(
                        records[config].filename,
                        f"tensors declare more than {limits.max_total_bytes} bytes",
                    )
    return loaded


def _check_no_code(records: dict[str, zipfile.ZipInfo]) -> None:
    """No member torch would load as compiled code or as a custom Python object."""
    for record, info in records.items():
        if record.startswith(pt2.AOTINDUCTOR_DIR):
            raise _Refused(info.filename, "AOTInductor compiled code (torch would load it)")
        if record.startswith(pt2.CONSTANTS_DIR) and posixpath.basename(record).startswith(
            (pt2.CUSTOM_OBJ_FILENAME_PREFIX, pt2.OPAQUE_OBJ_FILENAME_PREFIX)
        ):
            raise _Refused(info.filename, "a custom or opaque Python object")


def check_exported_archive(path: str | Path, limits: ArchiveLimits = ArchiveLimits()) -> None:
    """Inspect a .pt2 without executing anything; ConversionError names the file and member
    that torch.export.load must not see (see the module docstring for what is checked)."""
    path = Path(path)
    try:
        with open(path, "rb") as raw, zipfile.ZipFile(raw) as zf:
            spent = [0]
            infos = _check_zip(zf, raw, "", limits, spent)
            records = _records(infos)
            if records is None or pt2.ARCHIVE_VERSION_PATH not in records:
                raise ConversionError(
                    f"{path}: not a torch.export archive (.pt2): no {pt2.ARCHIVE_VERSION_PATH}"
                )
            _check_no_code(records)
            loaded = _torch_loaded(zf, records, limits)
            for record, info in records.items():
                if record in loaded:
                    _check_torch_save(zf.read(info), info.filename, limits, spent)
                else:
                    _check_by_content(zf, info, limits, spent)
    except _Refused as exc:
        raise ConversionError(f"{path}: refused member {exc.member!r}: {exc}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ConversionError(f"{path}: not a readable zip archive ({exc})") from exc


@contextlib.contextmanager
def weights_only_torch_load() -> Iterator[None]:
    """While active, every torch.load is weights-only, even where the caller asks for
    ``weights_only=False`` (torch's TORCH_FORCE_WEIGHTS_ONLY_LOAD switch)."""
    keys = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    saved = {key: os.environ.get(key) for key in keys}
    os.environ[keys[0]] = "1"
    os.environ.pop(keys[1], None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def load_exported(
    path: str | Path, limits: ArchiveLimits = ArchiveLimits()
) -> torch.export.ExportedProgram:
    """Load a ``torch.export.save`` archive (.pt2) after ``check_exported_archive`` passes,
    with torch.load forced to weights-only; a one-line ConversionError otherwise."""
    path = Path(path)
    if (problem := file_problem(path)) is not None:
        raise ConversionError(f"{path}: {problem}")
    if not zipfile.is_zipfile(path):
        raise ConversionError(f"{path}: not a torch.export archive (.pt2 is a zip archive)")
    check_exported_archive(path, limits)
    export_log = logging.getLogger("torch.export")
    level = export_log.level
    export_log.setLevel(logging.CRITICAL)  # torch logs a traceback before raising
    try:
        with weights_only_torch_load():
            program = torch.export.load(str(path))
    except Exception as exc:  # torch raises RuntimeError, zipfile errors, ...
        raise ConversionError(
            f"{path}: not a torch.export archive (.pt2): {type(exc).__name__}"
        ) from exc
    finally:
        export_log.setLevel(level)
    check_tensor_sizes(program, str(path), limits.max_total_bytes)
    try:
        check_graph_ops(program)
    except ConversionError as exc:
        raise ConversionError(f"{path}: {exc}") from None
    check_no_nan(program, str(path))
    return program


FILE_OPS = ("from_file", "_load", "save")  # ATen operators that read or write files


def check_graph_ops(program: torch.export.ExportedProgram) -> None:
    """ConversionError naming the first operator that is not ATen, or that touches files
    (``aten.from_file`` maps any file the user can write: a graph could read it, or add to it
    in place). ``load_exported`` checks every archive it opens; a program made in this process
    is checked where it is converted."""
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        target = node.target
        if isinstance(target, torch._ops.OpOverload):
            name = target.name()
            if target.namespace in ("aten", "prims") and not any(f in name for f in FILE_OPS):
                continue
        else:  # getitem and the arithmetic of symbolic sizes (operator.mul, torch.sym_max)
            name = str(target)
            module = getattr(target, "__module__", None) or ""
            if module in ("_operator", "math") or getattr(target, "__name__", "").startswith(
                "sym_"
            ):
                continue
        raise ConversionError(
            f"operator {name} (node {node.name}) is not allowed in a dense program: only ATen "
            "operators that touch no files"
        )


def check_tensor_sizes(program: torch.export.ExportedProgram, label: str, limit: int) -> None:
    """ConversionError when the weights, buffers and constants, as tensors, would take more
    than ``limit`` bytes: a pickled tensor may be a view of far more elements than its storage
    holds (a stride-0 expansion of 4 bytes to 2^32 values), which anything that reads it whole
    (the NaN check, a conversion) materializes."""
    tensors = {**program.state_dict, **program.constants}
    total = 0
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
            if total > limit:
                raise ConversionError(
                    f"{label}: tensor {name!r} {list(value.shape)} brings its tensors to more "
                    f"than {limit} bytes"
                )


def check_no_nan(program: torch.export.ExportedProgram, label: str) -> None:
    """Refuse a program whose float weights, buffers or constants hold NaN: a trained model's
    weights are numbers, and a NaN would pass through calibration and conversion as a
    plausible result. (Infinity is allowed: attention masks hold -inf.)"""
    tensors = {**program.state_dict, **program.constants}
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            nan = torch.isnan(value.detach())
            if bool(nan.any()):
                index = tuple(int(i) for i in nan.nonzero()[0])
                raise ConversionError(f"{label}: tensor {name!r} holds NaN at index {index}")

"""Bundles on disk: a folder (or a .tar of one) holding ``manifest.json`` and the files it lists.

Every kind writes ``config.json``, ``weights.safetensors`` where it has torch weights,
``initial_state.safetensors`` where it has state, and its own artifacts (``graph.nir``,
``model.onnx``, ...; see ``runtime/kinds``). A composite (ensemble) bundle holds its member
bundles under ``members/<name>/`` and pins each by the SHA-256 of its manifest, which pins
every member file in turn.

Writes are atomic (``runtime.atomic``): a failed write leaves nothing behind and never touches
what was there; an existing non-empty target is refused unless ``force``, which replaces it
as a whole.
Reads verify every checksum and refuse links anywhere in a bundle and files the manifest does
not list; an ensemble holds at most ``MAX_MEMBERS`` members, each in a folder of its own under
``members/``, nested at most ``MAX_MEMBER_DEPTH`` levels, all checked before any member is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ganglion.models.deployable import Deployable
from ganglion.models.errors import BundleError
from ganglion.models.manifest import Manifest, MemberRef
from ganglion.runtime.atomic import atomic_folder, check_target
from ganglion.runtime.bundle_archive import extracted_bundle, write_bundle_tar
from ganglion.runtime.kinds import kind_of
from ganglion.runtime.program import CONFIG, INITIAL_STATE, WEIGHTS, Program, initial_state_of

MANIFEST = "manifest.json"
MEMBERS = "members"
MAX_MANIFEST_BYTES = 16 << 20
MAX_MEMBER_DEPTH = 2
MAX_MEMBERS = 64  # members of one ensemble: as many experts as the exact selection solver takes


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- writing -----------------------------------------------------------------------------------


def save_bundle(deployable: Deployable, path: str | Path, force: bool = False) -> Path:
    """Write a bundle folder (or a .tar when ``path`` ends in .tar) atomically; returns ``path``.

    Raises BundleError when ``path`` exists and is not an empty folder, unless ``force``.
    """
    path = Path(path)
    if path.suffix == ".tar":
        check_target(path, force)
        with tempfile.TemporaryDirectory(prefix="ganglion-save-") as tmp:
            folder = Path(tmp) / path.stem
            _write_folder(deployable, folder, depth=0)
            write_bundle_tar(folder, path, force)
        return path
    with atomic_folder(path, force) as work:
        _write_folder(deployable, work, depth=0)
    return path


def _members_problem(count: int, depth: int) -> str | None:
    """Why a program with ``count`` members, itself a member ``depth`` levels down, cannot be a
    bundle (too many members, or nested too deep); None when it can."""
    if count > MAX_MEMBERS:
        return f"{count} members; an ensemble holds at most {MAX_MEMBERS}"
    if count and depth >= MAX_MEMBER_DEPTH:
        return f"members nest deeper than {MAX_MEMBER_DEPTH} levels"
    return None


def _write_folder(deployable: Deployable, folder: Path, depth: int) -> None:
    problem = _members_problem(len(deployable.members), depth)
    if problem is not None:
        raise BundleError(problem)
    folder.mkdir(parents=True)
    manifest = deployable.manifest
    kind = kind_of(manifest)
    (folder / CONFIG).write_text(json.dumps(deployable.config, indent=1, allow_nan=False))
    tensors = kind.module_tensors(deployable)
    if tensors:
        from safetensors.torch import save_file

        save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt"})  # as HF writes
    if manifest.state:
        from safetensors.numpy import save_file as save_numpy

        save_numpy(initial_state_of(deployable), str(folder / INITIAL_STATE))
    for name, writer in kind.artifact_writers(deployable).items():
        writer(deployable, folder / name)
    mode = (folder / CONFIG).stat().st_mode & 0o777  # the umask's, as open() gave config.json
    for written in folder.iterdir():  # safetensors writes 0600: every file gets the same mode
        if written.is_file():
            written.chmod(mode)
    refs = []
    for name, member in deployable.members.items():
        member_folder = folder / MEMBERS / name
        _write_folder(member, member_folder, depth + 1)
        refs.append(MemberRef(name, sha256_file(member_folder / MANIFEST)))
    manifest.members = refs
    manifest.artifacts = {f.name: sha256_file(f) for f in sorted(folder.iterdir()) if f.is_file()}
    text = json.dumps(manifest.to_dict(), indent=1, allow_nan=False)
    (folder / MANIFEST).write_text(text)


# ---- reading -----------------------------------------------------------------------------------


def read_manifest(folder: Path) -> Manifest:
    """Parse manifest.json of a bundle folder (size-bounded, one-line errors)."""
    path = folder / MANIFEST
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise BundleError(f"{path}: not a regular file (a link, a pipe or a device)")
    if not path.is_file():
        entries = itertools.islice(folder.iterdir(), 1000)  # a hint, not a search of a big folder
        inner = [d.name for d in entries if (d / MANIFEST).is_file()][:2]
        hint = f"; its folder {inner[0]!r} holds one" if len(inner) == 1 else ""
        raise BundleError(f"{folder}: not a bundle (no {MANIFEST}{hint})")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, huge integers, deep nesting
        raise BundleError(f"{path}: not valid JSON ({type(exc).__name__}: {exc})") from exc
    try:
        return Manifest.from_dict(data)
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}") from exc


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def verify_bundle(folder: Path, depth: int = 0) -> Manifest:
    """Check every listed file against its SHA-256 and refuse links and unlisted files, here and
    under ``members/`` (each member's own files are its own verification's); the manifest.
    ``depth``: how many levels down the folder is a member (0: the bundle opened)."""
    manifest = read_manifest(folder)
    member_folders = _member_folders(folder, manifest, depth)
    for required in kind_of(manifest).required_artifacts(manifest):
        if required not in manifest.artifacts:
            raise BundleError(f"{folder}: the manifest lists no {required}")
    for name, expected in manifest.artifacts.items():
        f = folder / name
        if Path(name).name != name or name in (MANIFEST, MEMBERS):
            raise BundleError(f"{folder}: artifact name {name!r} is not a plain file name")
        if f.is_symlink() or not f.is_file():
            raise BundleError(f"{folder}: {name} is missing or not a regular file")
        if sha256_file(f) != expected:
            raise BundleError(f"{folder}: {name} does not match its SHA-256 (corrupt or tampered)")
    allowed = {MANIFEST, *manifest.artifacts, *([MEMBERS] if manifest.members else [])}
    extra = sorted(p.name for p in folder.iterdir() if p.name not in allowed)
    if extra:
        raise BundleError(f"{folder}: files the manifest does not list: {', '.join(extra[:5])}")
    _check_members_tree(folder, member_folders)
    return manifest


def member_folder(folder: Path, ref: MemberRef) -> Path:
    """Member ``ref``'s folder in bundle ``folder``: ``members/<its one folder>``; a
    ``BundleError`` for a manifest that puts it anywhere else."""
    return folder / MEMBERS / _member_folder_name(folder, ref)


def _member_folder_name(folder: Path, ref: MemberRef) -> str:
    """The name of member ``ref``'s folder in ``members/`` of bundle ``folder``: the member's
    name, or its ``path`` when that is ``members/<one folder>`` (anything else is refused)."""
    if not ref.path:
        return ref.name
    head, _, name = ref.path.partition("/")
    if head != MEMBERS or name in ("", ".", "..") or "/" in name or "\\" in name:
        raise BundleError(
            f"{folder}: member {ref.name!r} is not in a folder of its own in {MEMBERS}/ "
            f"(path {ref.path[:100]!r})"
        )
    return name


def _member_folders(folder: Path, manifest: Manifest, depth: int) -> dict[str, str]:
    """Folder in ``members/`` -> member name, refusing before any member is read: too many
    members, members nested too deep, a member outside a folder of its own in ``members/`` and
    two members in one folder (so every member folder is verified once)."""
    problem = _members_problem(len(manifest.members), depth)
    if problem is not None:
        raise BundleError(f"{folder}: {problem}")
    folders: dict[str, str] = {}
    for ref in manifest.members:
        name = _member_folder_name(folder, ref)
        if name in folders:
            raise BundleError(
                f"{folder}: members {folders[name]!r} and {ref.name!r} share {MEMBERS}/{name}"
            )
        folders[name] = ref.name
    return folders


def _check_members_tree(folder: Path, folders: dict[str, str]) -> None:
    """Refuse a linked ``members/``, a member folder missing or linked, and files or folders in
    ``members/`` that no member lists (reading at most one entry more than it should hold)."""
    if not folders:
        return
    _check_plain_folder(folder, MEMBERS)
    entries = itertools.islice((folder / MEMBERS).iterdir(), len(folders) + 1)
    found = {entry.name for entry in entries}
    stray = sorted(found - folders.keys())
    if stray:
        listed = ", ".join(f"{MEMBERS}/{name}" for name in stray[:5])
        raise BundleError(f"{folder}: files no member lists: {listed}")
    missing = sorted(folders.keys() - found)
    if missing:
        name = missing[0]
        raise BundleError(f"{folder}: member {folders[name]!r} is missing ({MEMBERS}/{name})")
    for name in folders:
        _check_plain_folder(folder, f"{MEMBERS}/{name}")


def _check_plain_folder(folder: Path, path: str) -> None:
    """Refuse ``path`` in bundle ``folder`` unless it is a folder, not a link to one."""
    if (folder / path).is_symlink() or not (folder / path).is_dir():
        raise BundleError(f"{folder}: {path} is a link or not a folder")


def _open_folder(folder: Path, depth: int) -> Program:
    manifest = verify_bundle(folder, depth)
    members = {}
    for ref in manifest.members:
        inside = member_folder(folder, ref)
        pinned = inside / MANIFEST
        if pinned.is_symlink() or not pinned.is_file():
            raise BundleError(f"{folder}: member {ref.name!r} has no {MANIFEST} (or a link)")
        if sha256_file(pinned) != ref.sha256:
            raise BundleError(
                f"{folder}: member {ref.name!r} does not match its SHA-256 (corrupt or tampered)"
            )
        members[ref.name] = _open_folder(inside, depth + 1)
    return Program(manifest, folder, members)


@contextlib.contextmanager
def open_bundle(path: str | Path) -> Iterator[Program]:
    """The verified program of a bundle folder or .tar; a .tar is extracted into a temporary
    folder that is removed when the block ends (read what you need inside it)."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: no such bundle")
    if path.is_dir():
        yield _open_folder(path, 0)
        return
    with extracted_bundle(path) as folder:
        try:
            yield _open_folder(folder, 0)
        except BundleError as exc:  # name the tar, not the temporary folder
            raise BundleError(str(exc).replace(str(folder), str(path))) from exc


def load_bundle(path: str | Path) -> Deployable:
    """Verify and load a bundle into a Deployable (module rebuilt from its files)."""
    with open_bundle(path) as program:
        return program.deployable()

"""Hostile ensemble bundles: links and unlisted files under ``members/``, member refs that fan
out to one folder (N² verifications), too many members, members nested too deep. Each is
refused in one line naming the bundle and the path, before any member is read; a real
ensemble, as a folder or a .tar, still loads."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ganglion.converters.dense import convert_dense
from ganglion.converters.ensemble import convert_ensemble
from ganglion.models.errors import BundleError
from ganglion.runtime.bundle import (
    MAX_MEMBER_DEPTH,
    MAX_MEMBERS,
    load_bundle,
    open_bundle,
    save_bundle,
)
from ganglion.runtime.cli import main
from ganglion.runtime.ensemble_calibration import all_expert_probabilities

EXPERTS = ("low", "high")
FEATURES, CLASSES = 8, 4


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small dense experts and a gate trained briefly on 32 samples, saved as a bundle."""
    members = {}
    for seed, name in enumerate(EXPERTS):
        torch.manual_seed(seed)
        mlp = nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(), nn.Linear(8, CLASSES)).eval()
        members[name] = convert_dense(torch.export.export(mlp, (torch.zeros(2, FEATURES),)))
    x = np.random.default_rng(0).normal(size=(32, FEATURES)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, CLASSES, 32)
    probs = all_expert_probabilities(members, {"x": x})
    program = convert_ensemble(members, {"x": x}, labels, probs, epochs=5)
    return save_bundle(program, tmp_path_factory.mktemp("ensemble") / "moe")


def _copy(bundle: Path, target: Path) -> Path:
    """A copy of ``bundle`` at ``target``."""
    return Path(shutil.copytree(bundle, target))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _edit_manifest(folder: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """``edit`` applied to ``folder``'s manifest.json, written back."""
    data = json.loads((folder / "manifest.json").read_text())
    edit(data)
    (folder / "manifest.json").write_text(json.dumps(data))


def _refs_to(folder: Path, names: list[str], path: str) -> None:
    """``folder``'s members replaced by ``names``, all pinned to the member at ``path``."""
    pin = _sha(folder / path / "manifest.json")
    refs = [{"name": n, "sha256": pin, "path": path} for n in names]
    _edit_manifest(folder, lambda data: data.update(members=refs))


def _add_ref(folder: Path, **ref: str) -> None:
    """A member ref ``ref`` (pinned to nothing) added to ``folder``'s manifest."""
    _edit_manifest(folder, lambda data: data["members"].append({"sha256": "0" * 64, **ref}))


def _refused(bundle: Path, *words: str) -> str:
    """The one-line BundleError loading ``bundle``, holding the bundle's path and ``words``."""
    with pytest.raises(BundleError) as err:
        load_bundle(bundle)
    message = str(err.value)
    assert "\n" not in message and str(bundle) in message, message
    for word in words:
        assert word in message, message
    return message


def test_a_real_ensemble_loads_as_a_folder_and_as_a_tar(ensemble: Path, tmp_path: Path) -> None:
    assert sorted(load_bundle(ensemble).members) == sorted(EXPERTS)
    archive = save_bundle(load_bundle(ensemble), tmp_path / "moe.tar")
    assert sorted(load_bundle(archive).members) == sorted(EXPERTS)


def test_a_member_linked_to_a_folder_outside_the_bundle_is_refused(
    ensemble: Path, tmp_path: Path
) -> None:
    bundle = _copy(ensemble, tmp_path / "b")
    outside = Path(shutil.move(bundle / "members" / "low", tmp_path / "outside"))
    os.symlink(outside, bundle / "members" / "low")
    _refused(bundle, "members/low", "link")


def test_a_members_folder_linked_outside_the_bundle_is_refused(
    ensemble: Path, tmp_path: Path
) -> None:
    bundle = _copy(ensemble, tmp_path / "b")
    outside = Path(shutil.move(bundle / "members", tmp_path / "outside"))
    os.symlink(outside, bundle / "members")
    _refused(bundle, "members", "link")


def test_a_linked_member_manifest_is_refused(ensemble: Path, tmp_path: Path) -> None:
    bundle = _copy(ensemble, tmp_path / "b")
    pinned = bundle / "members" / "low" / "manifest.json"
    outside = Path(shutil.move(pinned, tmp_path / "manifest.json"))
    os.symlink(outside, pinned)
    _refused(bundle, "member 'low' has no manifest.json (or a link)")


@pytest.mark.parametrize(
    ("stray", "words"),
    [
        ("members/evil.txt", ["files no member lists: members/evil.txt"]),
        ("members/stray/", ["files no member lists: members/stray"]),
        ("members/low/members/", ["members/low: files the manifest does not list: members"]),
    ],
    ids=["file", "folder", "in-a-member"],
)
def test_files_or_folders_no_member_lists_are_refused_naming_them(
    ensemble: Path, tmp_path: Path, stray: str, words: list[str]
) -> None:
    bundle = _copy(ensemble, tmp_path / "b")
    if stray.endswith("/"):
        (bundle / stray).mkdir()
    else:
        (bundle / stray).write_text("x")
    _refused(bundle, *words)


def test_the_cli_says_one_line_for_a_linked_member(
    ensemble: Path, tmp_path: Path, capsys, one_line_error
) -> None:
    bundle = _copy(ensemble, tmp_path / "b")
    outside = Path(shutil.move(bundle / "members" / "high", tmp_path / "outside"))
    os.symlink(outside, bundle / "members" / "high")
    with pytest.raises(SystemExit) as done:
        main(["inspect", str(bundle)])
    one_line_error(int(done.value.code or 0), capsys.readouterr().err, str(bundle), "members/high")


def test_more_members_than_the_limit_are_refused_before_any_is_read(
    ensemble: Path, tmp_path: Path
) -> None:
    bundle = _copy(ensemble, tmp_path / "b")
    refs = [{"name": f"m{i}", "sha256": "0" * 64} for i in range(MAX_MEMBERS + 1)]
    _edit_manifest(bundle, lambda data: data.update(members=refs))  # none of them exists
    _refused(bundle, f"{MAX_MEMBERS + 1} members", f"at most {MAX_MEMBERS}")


def test_refs_fanning_out_to_one_nested_ensemble_are_refused_at_once(
    ensemble: Path, tmp_path: Path
) -> None:
    """MAX_MEMBERS refs to one nested ensemble whose MAX_MEMBERS refs name one leaf: MAX_MEMBERS²
    verifications of the leaf before; one folder, one member now."""
    bundle = _copy(ensemble, tmp_path / "b")
    inner = _copy(ensemble, bundle / "members" / "inner")
    _refs_to(inner, [f"i{k}" for k in range(MAX_MEMBERS)], "members/low")
    _refs_to(bundle, [f"m{k}" for k in range(MAX_MEMBERS)], "members/inner")
    start = time.perf_counter()
    _refused(bundle, "'m0' and 'm1' share members/inner")
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(
    ("path", "why"),
    [
        (".", "not in a folder of its own in members/"),
        ("members", "not in a folder of its own in members/"),
        ("members/", "not in a folder of its own in members/"),
        ("config.json", "not in a folder of its own in members/"),
        ("members/./low", "not in a folder of its own in members/"),
        ("members/low/members/low", "not in a folder of its own in members/"),
        ("members/low", "members 'low' and 'extra' share members/low"),
    ],
    ids=["itself", "members", "members-slash", "a-file", "dot", "inside-a-member", "shared"],
)
def test_member_paths_outside_members_or_shared_are_refused(
    ensemble: Path, tmp_path: Path, path: str, why: str
) -> None:
    bundle = _copy(ensemble, tmp_path / "b")
    _add_ref(bundle, name="extra", path=path)
    _refused(bundle, why)


@pytest.mark.parametrize("name", [".", ".."])
def test_a_member_named_as_the_members_folder_or_the_bundle_is_refused(
    ensemble: Path, tmp_path: Path, name: str
) -> None:
    bundle = _copy(ensemble, tmp_path / "b")
    _add_ref(bundle, name=name)
    _refused(bundle, f"member {name!r} is missing (members/{name})")


def _nest(outer: Path, inner: Path) -> Path:
    """``outer`` with a copy of ensemble ``inner`` as its only member, named ``inner``."""
    for member in EXPERTS:
        shutil.rmtree(outer / "members" / member)
    _copy(inner, outer / "members" / "inner")
    _refs_to(outer, ["inner"], "members/inner")
    return outer


def test_an_ensemble_of_ensembles_opens(ensemble: Path, tmp_path: Path) -> None:
    bundle = _nest(_copy(ensemble, tmp_path / "b"), ensemble)
    with open_bundle(bundle) as program:
        assert sorted(program.members["inner"].members) == sorted(EXPERTS)


def test_members_nested_too_deep_are_refused_before_the_deep_ones_are_read(
    ensemble: Path, tmp_path: Path
) -> None:
    deep = _copy(ensemble, tmp_path / "deep")
    shutil.rmtree(deep / "members")  # the members of a third level: never looked for
    middle = _nest(_copy(ensemble, tmp_path / "middle"), deep)
    top = _nest(_copy(ensemble, tmp_path / "top"), middle)
    _refused(top, f"members nest deeper than {MAX_MEMBER_DEPTH} levels", "inner/members/inner")


def test_saving_more_members_than_the_limit_is_refused(ensemble: Path, tmp_path: Path) -> None:
    program = load_bundle(ensemble)
    leaf = program.members["low"]
    crowded = dataclasses.replace(program, members={f"e{i}": leaf for i in range(MAX_MEMBERS + 1)})
    with pytest.raises(BundleError, match=f"at most {MAX_MEMBERS}"):
        save_bundle(crowded, tmp_path / "crowded")
    assert not (tmp_path / "crowded").exists()

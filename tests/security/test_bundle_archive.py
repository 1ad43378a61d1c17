"""runtime/bundle_archive.py: tar bundles extract into a temporary folder that is always
removed, within caps, holding only files and folders; tars are written atomically."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from ganglion.models.errors import BundleError
from ganglion.runtime.bundle_archive import TarLimits, extracted_bundle, write_bundle_tar

FILES = {"manifest.json": b'{"format": 1}', "weights.safetensors": bytes(range(256)) * 4}


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TMPDIR pointed at an empty test folder (tempfile re-reads it)."""
    root = tmp_path / "tmpdir"
    root.mkdir()
    monkeypatch.setenv("TMPDIR", str(root))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return root


@pytest.fixture
def bundle_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "bundle"
    (folder / "extra").mkdir(parents=True)
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
    (folder / "extra" / "notes.txt").write_text("nested")
    return folder


def tar_of(members: list[tuple[tarfile.TarInfo, bytes | None]], compress: bool = False) -> bytes:
    """A tar (gzip'd if ``compress``) of hand-made members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if compress else "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def test_round_trip_and_the_folder_is_removed_after_use(bundle_folder, tmp_path, temp_root):
    archive = write_bundle_tar(bundle_folder, tmp_path / "bundle.tar")
    with extracted_bundle(archive) as folder:
        assert folder.parent == temp_root
        for name, data in FILES.items():
            assert (folder / name).read_bytes() == data
        assert (folder / "extra" / "notes.txt").read_text() == "nested"
    assert not folder.exists() and list(temp_root.iterdir()) == []


def test_tar_made_by_gnu_tar_from_inside_the_folder_extracts(bundle_folder, tmp_path, temp_root):
    if shutil.which("tar") is None:
        pytest.skip("needs GNU tar")
    archive = tmp_path / "bundle.tar.gz"
    subprocess.run(["tar", "-czf", str(archive), "-C", str(bundle_folder), "."], check=True)
    with extracted_bundle(archive) as folder:
        assert (folder / "manifest.json").read_bytes() == FILES["manifest.json"]
        assert (folder / "extra" / "notes.txt").read_text() == "nested"
    assert list(temp_root.iterdir()) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_folder_is_removed_when_the_block_raises(error, bundle_folder, tmp_path, temp_root):
    archive = write_bundle_tar(bundle_folder, tmp_path / "bundle.tar")
    with pytest.raises(error), extracted_bundle(archive) as folder:
        assert (folder / "manifest.json").is_file()
        raise error()
    assert list(temp_root.iterdir()) == []


def test_folder_is_removed_when_extraction_fails_midway(tmp_path, temp_root):
    archive = tmp_path / "bad.tar"
    archive.write_bytes(tar_of([(member("manifest.json"), b"{}"), (member("../escape"), b"x")]))
    with pytest.raises(BundleError) as caught, extracted_bundle(archive):
        pass
    message = str(caught.value)
    assert message.startswith(f"{archive}: ") and "ganglion-bundle" not in message
    assert list(temp_root.iterdir()) == [] and not (tmp_path / "escape").exists()


@pytest.mark.parametrize(
    "bad, why",
    [
        (member("/etc/evil"), "absolute or parent-relative"),
        (member("a/../../evil"), "absolute or parent-relative"),
        (member("link", tarfile.SYMTYPE, linkname="/etc/passwd"), "bundles hold only files"),
        (member("hard", tarfile.LNKTYPE, linkname="manifest.json"), "bundles hold only files"),
        (member("tty", tarfile.CHRTYPE, devmajor=5, devminor=0), "bundles hold only files"),
        (member("pipe", tarfile.FIFOTYPE), "bundles hold only files"),
        (member("manifest.json"), "appears twice"),
    ],
    ids=["absolute", "dotdot", "symlink", "hardlink", "device", "fifo", "duplicate"],
)
def test_hostile_members_are_refused_naming_the_tar(bad, why, tmp_path, temp_root):
    data = b"x" if bad.type == tarfile.REGTYPE else None
    archive = tmp_path / "hostile.tar"
    archive.write_bytes(tar_of([(member("manifest.json"), b"{}"), (bad, data)]))
    with pytest.raises(BundleError, match=why) as caught, extracted_bundle(archive):
        pass
    assert str(archive) in str(caught.value) and "ganglion-bundle" not in str(caught.value)
    assert list(temp_root.iterdir()) == []


def test_too_many_members_stop_the_stream(tmp_path, temp_root):
    members = [(member(f"f{i}"), b"") for i in range(1_001)]
    archive = tmp_path / "many.tar.gz"
    archive.write_bytes(tar_of(members, compress=True))
    with pytest.raises(BundleError, match="more than 1000 members"), extracted_bundle(archive):
        pass
    assert list(temp_root.iterdir()) == []


def test_member_declaring_a_huge_size_is_refused_before_its_bytes(tmp_path, temp_root):
    """A 5 GiB header over a few bytes of data: refused on the header alone."""
    header = member("weights.safetensors", size=5 << 30).tobuf(tarfile.PAX_FORMAT)
    archive = tmp_path / "huge.tar"
    archive.write_bytes(header + bytes(1024))
    with pytest.raises(BundleError, match="declares 5368709120 bytes"), extracted_bundle(archive):
        pass
    assert list(temp_root.iterdir()) == []


def test_sparse_member_is_refused(tmp_path, temp_root):
    if shutil.which("tar") is None:
        pytest.skip("GNU tar writes the sparse member")
    holes = tmp_path / "src" / "weights.bin"
    holes.parent.mkdir()
    with open(holes, "wb") as f:
        f.truncate(1 << 30)  # 1 GiB of holes, nothing stored
    archive = tmp_path / "sparse.tar"
    subprocess.run(
        ["tar", "--sparse", "-cf", str(archive), "-C", str(holes.parent), "weights.bin"],
        check=True,
    )
    assert archive.stat().st_size < 1 << 20
    with pytest.raises(BundleError, match="sparse file"), extracted_bundle(archive):
        pass
    assert list(temp_root.iterdir()) == []


def test_gzip_bomb_is_stopped_by_the_ratio(tmp_path, temp_root):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = member("weights.safetensors", size=80 << 20)
        tar.addfile(info, io.BytesIO(bytes(80 << 20)))
    archive = tmp_path / "bomb.tar.gz"
    archive.write_bytes(gzip.compress(buffer.getvalue(), compresslevel=9))
    assert archive.stat().st_size < 1 << 20  # 80 MiB of tar in well under 1 MiB
    with pytest.raises(BundleError, match="compression bomb"), extracted_bundle(archive):
        pass
    assert list(temp_root.iterdir()) == []


def test_total_size_cap_applies_across_members(tmp_path, temp_root):
    archive = tmp_path / "two.tar"
    archive.write_bytes(tar_of([(member("a"), bytes(600)), (member("b"), bytes(600))]))
    limits = TarLimits(max_total_bytes=1_000)
    with pytest.raises(BundleError, match="declare more than 1000"):
        with extracted_bundle(archive, limits):
            pass


def test_not_a_tar_gets_a_one_line_error(tmp_path, temp_root):
    archive = tmp_path / "notes.tar"
    archive.write_text("hello " * 200)
    with pytest.raises(BundleError, match="not a readable bundle archive") as caught:
        with extracted_bundle(archive):
            pass
    assert "\n" not in str(caught.value) and list(temp_root.iterdir()) == []


def test_write_is_atomic_and_leaves_no_temporary_file(bundle_folder, tmp_path):
    target = tmp_path / "out" / "bundle.tar"
    target.parent.mkdir()
    target.write_bytes(b"previous bundle")
    (bundle_folder / "bad-link").symlink_to(bundle_folder / "manifest.json")
    with pytest.raises(BundleError, match="only files and folders"):
        write_bundle_tar(bundle_folder, target, force=True)
    assert target.read_bytes() == b"previous bundle"  # untouched on failure
    os.unlink(bundle_folder / "bad-link")
    write_bundle_tar(bundle_folder, target, force=True)
    assert os.listdir(target.parent) == ["bundle.tar"]
    with tarfile.open(target) as tar:
        assert {m.uname for m in tar.getmembers()} == {""}
        assert tar.extractfile("manifest.json").read() == FILES["manifest.json"]

"""The one bounded reader under a root: regular files only, capped size, timeout, chroot links."""

import os
import threading
import time
import tracemalloc

import pytest

from ganglion.device import sysroot
from ganglion.device.sysfs_fixtures import write_file
from ganglion.device.sysroot import (
    ReadTimeout,
    RootError,
    UnreadableFile,
    check_root,
    read_bytes,
    read_optional,
    under,
    with_timeout,
)


@pytest.mark.timeout(20)
def test_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "value")  # no writer: a plain open() would block forever
    t0 = time.perf_counter()
    with pytest.raises(UnreadableFile, match="value: a FIFO, not a regular file"):
        read_bytes(tmp_path / "value")
    assert time.perf_counter() - t0 < 2.0


def test_link_to_dev_zero_is_refused_before_reading(tmp_path):
    os.symlink("/dev/zero", tmp_path / "power1_input")
    tracemalloc.start()
    try:
        with pytest.raises(UnreadableFile, match="a character device"):
            read_bytes(tmp_path / "power1_input")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_huge_sparse_file_is_refused_by_its_size(tmp_path):
    big = tmp_path / "cpuinfo"
    with open(big, "wb") as f:
        f.truncate(3 * 2**30)  # 3 GB, no blocks written
    with pytest.raises(UnreadableFile, match=r"3221225472 bytes, larger than the 4096 read"):
        read_bytes(big, 4096)


def test_file_over_the_cap_is_refused_not_truncated(tmp_path):
    (tmp_path / "v").write_bytes(b"1" * 4097)
    (tmp_path / "ok").write_bytes(b"1" * 4096)
    with pytest.raises(UnreadableFile, match="larger than"):
        read_bytes(tmp_path / "v", 4096)
    assert len(read_bytes(tmp_path / "ok", 4096)) == 4096


def test_folder_where_a_file_belongs_is_refused(tmp_path):
    (tmp_path / "energy_uj").mkdir()
    with pytest.raises(UnreadableFile, match="a folder, not a regular file"):
        read_bytes(tmp_path / "energy_uj")


def test_read_optional_absent_is_none_present_but_bad_names_the_file(tmp_path):
    assert read_optional(tmp_path, "/proc/meminfo") is None
    os.mkfifo(tmp_path / "meminfo")
    (tmp_path / "proc").mkdir()
    os.replace(tmp_path / "meminfo", tmp_path / "proc/meminfo")
    with pytest.raises(UnreadableFile) as err:
        read_optional(tmp_path, "/proc/meminfo")
    assert str(err.value) == f"{tmp_path}/proc/meminfo: a FIFO, not a regular file"


def test_symlink_loop_is_unreadable_not_a_crash(tmp_path):
    (tmp_path / "etc").mkdir()
    os.symlink("/etc/nvpmodel.conf", tmp_path / "etc/nvpmodel.conf")  # points at itself
    with pytest.raises(UnreadableFile, match="too many symbolic links"):
        read_optional(tmp_path, "/etc/nvpmodel.conf")


def test_dotdot_links_stop_at_the_root(tmp_path):
    root = tmp_path / "root"
    write_file(root, "/etc/secret", "inside\n")
    write_file(tmp_path, "/etc/secret", "outside\n")
    (root / "proc").mkdir()
    os.symlink("../../../../etc/secret", root / "proc/model")
    assert under(root, "/proc/model") == root / "etc/secret"
    assert read_optional(root, "/proc/model") == "inside\n"


def test_a_blocked_read_times_out_and_the_next_one_works():
    release = threading.Event()
    t0 = time.perf_counter()
    with pytest.raises(ReadTimeout, match=r"rail X: no answer within 0.2 s"):
        with_timeout(lambda: release.wait(30), "rail X", timeout_s=0.2)
    assert time.perf_counter() - t0 < 2.0
    release.set()  # let the abandoned reader thread finish
    assert with_timeout(lambda: 42, "fresh reader", timeout_s=2.0) == 42


def test_reads_inside_a_timed_read_do_not_deadlock(monkeypatch):
    monkeypatch.setattr(sysroot, "READ_TIMEOUT_S", 2.0)
    assert with_timeout(lambda: with_timeout(lambda: "inner", "inner"), "outer") == "inner"


def test_root_must_be_an_existing_folder(tmp_path):
    assert check_root(tmp_path) == tmp_path
    with pytest.raises(RootError, match="does not exist"):
        check_root(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RootError, match="is not a folder"):
        check_root(tmp_path / "file")

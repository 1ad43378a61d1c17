"""Fuzzing the sysfs-tree readers with Hypothesis: random trees, never a traceback or a hang.

Each example starts from a fixture tree (empty, or an x86 host or one of the Jetson boards, each
with RAPL counters) and breaks up to six of its paths, or paths the readers look for: removed,
garbage bytes, NaN/inf/negative/huge numbers, Rich markup and escape codes, a symlink to
``/dev/zero``, a FIFO, a folder where a file belongs (or a file where a folder belongs), a
symlink loop, a 256 MiB sparse file. The property: ``devices`` (table and ``--json``, which run
`detect`) and the RAPL and Jetson-rails meters either succeed or report "unreadable"/one-line
errors; every number they give is finite, the JSON is strict, nothing blocks (no read hits the
timeout, each example meets the deadline) and memory stays bounded (traced peak under 64 MiB).
"""

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
import tracemalloc
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ganglion.device import sysroot
from ganglion.device.meters import JetsonRailsMeter, MeterError, RaplMeter
from ganglion.device.sysfs_fixtures import JETSON_BOARDS, write_host_cpu, write_jetson, write_rapl
from ganglion.runtime.cli.devices import devices

BASES = ["empty", "x86-rapl", *sorted(JETSON_BOARDS)]
LOOKED_FOR = [  # paths the readers open even when a base tree lacks them
    "proc/cpuinfo",
    "proc/meminfo",
    "proc/device-tree",
    "sys/firmware/devicetree/base/compatible",
    "etc/nv_tegra_release",
    "etc/nvpmodel.conf",
    "var/lib/nvpmodel/status",
    "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq",
    "sys/class/powercap/intel-rapl:0/energy_uj",
    "sys/class/powercap/intel-rapl:0/max_energy_range_uj",
    "sys/class/hwmon/hwmon0/name",
    "sys/class/hwmon/hwmon0/in1_label",
    "sys/class/hwmon/hwmon0/in1_input",
    "sys/class/hwmon/hwmon0/curr1_input",
    "sys/bus/i2c/drivers/ina3221x/1-0040/iio:device0/rail_name_0",
    "sys/bus/i2c/drivers/ina3221x/1-0040/iio:device0/in_power0_input",
]
NASTY_TEXT = [
    "nan\n",
    "NaN",
    "-inf\n",
    "inf",
    "1e999\n",
    "-5\n",
    "lots\n",
    "",
    "\x00",
    " 12 \n",
    "0x1F",
    "١٢٣",
    "[/bold] [link=x]",
    "\x1b[2J\x1b[31m",
    "VDD_IN\n",
    "ina3221\n",
    "pmode:99999999999999999999\n",
    "9" * 4000 + "\n",
    "MemTotal: 0 kB\n",
    "processor\t: 0\ncpu cores\t: -1\ncpu MHz\t: nan\n",
    "< POWER_MODEL ID=1 NAME=[/x] >\n< PM_CONFIG DEFAULT=1 >\n",
]
MUTATIONS = st.one_of(
    st.tuples(st.sampled_from(["missing", "dev_zero", "fifo", "folder", "loop", "sparse"])),
    st.tuples(st.just("bytes"), st.binary(max_size=64)),
    st.tuples(st.just("text"), st.sampled_from(NASTY_TEXT)),
    st.tuples(st.just("text"), st.integers(-(10**30), 10**400).map(lambda n: f"{n}\n")),
    st.tuples(st.just("text"), st.floats().map(repr)),
)
MEMORY_LIMIT = 64 * 2**20


def _base(root: Path, base: str) -> None:
    if base == "empty":
        return
    if base == "x86-rapl":
        write_host_cpu(root)
    else:
        write_jetson(root, base)
    write_rapl(root, packages=2)  # every non-empty base has counters, so RAPL is always fuzzed


def _targets(root: Path) -> st.SearchStrategy[str]:
    """Half the time a file the base holds (the values readers parse), else any path: folders,
    links, and paths the readers look for that the base lacks."""
    files, paths = set(), set(LOOKED_FOR)
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            rel = os.path.relpath(os.path.join(folder, name), root)
            paths.add(rel)
            if name in names:
                files.add(rel)
    anything = st.sampled_from(sorted(paths))
    return st.one_of(st.sampled_from(sorted(files)), anything) if files else anything


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def _mutate(root: Path, rel: str, mutation: tuple) -> None:
    path = root / rel
    try:
        _remove(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # a parent became a file or a FIFO in an earlier mutation
        return
    kind = mutation[0]
    if kind == "dev_zero":
        os.symlink("/dev/zero", path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "loop":
        os.symlink(path.name, path)
    elif kind == "sparse":
        with open(path, "wb") as f:
            f.truncate(256 * 2**20)
    elif kind == "bytes":
        path.write_bytes(mutation[1])
    elif kind == "text":
        path.write_text(mutation[1])


def _reject_constant(name: str) -> None:
    raise ValueError(f"not JSON: {name}")


def _check_meter(make, root: Path) -> None:
    try:
        meter = make(root)
        with meter:
            reading = meter.read()
    except MeterError as e:
        assert "\n" not in str(e)
        return
    assert math.isfinite(reading.joules) and reading.joules >= 0


def _check_tree(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(sysroot, "READ_TIMEOUT_S", 60.0)  # a block must show as a missed deadline
        root = Path(tmp)
        _base(root, data.draw(st.sampled_from(BASES), label="base"))
        changes = st.tuples(_targets(root), MUTATIONS)
        for rel, mutation in data.draw(st.lists(changes, min_size=1, max_size=6), label="changes"):
            _mutate(root, rel, mutation)
        out = io.StringIO()
        tracemalloc.start()  # traced: every reader runs in the --json call and the meters
        try:
            with contextlib.redirect_stdout(out):
                devices(as_json=True, root=root, device_files=[])
            for make in (JetsonRailsMeter, RaplMeter):
                _check_meter(make, root)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        as_json = out.getvalue()
        with contextlib.redirect_stdout(out):
            devices(as_json=False, root=root, device_files=[])
    parsed = json.loads(as_json, parse_constant=_reject_constant)  # strict: no NaN/Infinity
    assert "non_finite" not in parsed  # nothing non-finite reached the output at all
    assert all(w >= 0 for w in parsed["detected"]["rails_w"].values())
    assert "no answer within" not in out.getvalue()
    assert peak < MEMORY_LIMIT, f"traced peak {peak} bytes"


@settings(
    max_examples=60,
    deadline=timedelta(seconds=10),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_trees_give_results_or_unreadable_never_a_crash(data):
    _check_tree(data)


@pytest.mark.slow
@settings(
    max_examples=2000,
    deadline=timedelta(seconds=10),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_many_random_trees_give_results_or_unreadable_never_a_crash(data):
    _check_tree(data)

"""``ganglion devices`` on hostile and careless input: strict JSON, unreadable rows, one-line
errors.

The command is mounted on its own Typer app (as ``app._register`` mounts it), so these tests do
not depend on the other commands importing.
"""

import json
import os

import pytest
import typer
from typer.testing import CliRunner

from ganglion.device.profiles import ENV_VAR, ProfileError, builtin_profiles
from ganglion.device.sysfs_fixtures import write_file, write_host_cpu, write_jetson, write_rapl
from ganglion.device.sysroot import RootError
from ganglion.runtime.cli import devices

runner = CliRunner()
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def _group() -> None:
    """Keep ``devices`` a subcommand, as in the real CLI."""


devices.register(app)

HWMON = "/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"


def _reject_constant(name):
    raise ValueError(f"not JSON: {name}")


def strict_json(text):
    """Parse as a strict parser would: NaN/Infinity are errors."""
    return json.loads(text, parse_constant=_reject_constant)


def invoke(*args):
    return runner.invoke(app, ["devices", *map(str, args)])


def test_loihi_row_shows_a_dash_where_dense_figures_do_not_apply(tmp_path):
    write_host_cpu(tmp_path)
    result = invoke("--root", tmp_path)
    assert result.exit_code == 0, result.output
    (loihi,) = [line for line in result.output.splitlines() if "│ loihi2" in line]
    cells = [c.strip() for c in loihi.split("│")[1:-1]]
    assert cells[1] == "neuromorphic" and cells[2:5] == ["—", "—", "—"]
    (rtx,) = [line for line in result.output.splitlines() if "│ rtx-4090" in line]
    assert [c.strip() for c in rtx.split("│")[1:-1]][2:5] == ["82.60", "660.6", "1008"]


def test_a_non_finite_detected_value_is_a_one_line_error_naming_file_and_field(
    tmp_path, monkeypatch
):
    write_jetson(tmp_path, "agx-orin-64gb-jp512")
    data = builtin_profiles()["rtx-4060"].to_dict()
    data["name"], data["detected"] = "lab-gpu", {"clock_mhz": float("nan")}
    (tmp_path / "lab.json").write_text(json.dumps(data))  # Python writes a bare NaN
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "lab.json"))
    result = invoke("--json", "--root", tmp_path)
    assert result.exit_code != 0
    message = str(result.exception)
    assert "\n" not in message and "lab.json" in message
    assert "detected.clock_mhz must be a finite number, got nan" in message


@pytest.mark.parametrize("make", ["missing", "file"])
def test_root_that_is_not_a_folder_is_a_one_line_error(tmp_path, make):
    root = tmp_path / "root"
    if make == "file":
        root.write_text("")
    result = invoke("--root", root)
    assert result.exit_code != 0
    assert isinstance(result.exception, RootError)
    assert str(result.exception).count("\n") == 0 and str(root) in str(result.exception)


@pytest.mark.timeout(60)
def test_hostile_tree_gives_unreadable_rows_not_a_hang_or_an_abort(tmp_path):
    write_jetson(tmp_path, "agx-orin-64gb-jp512")
    write_rapl(tmp_path, packages=1)
    os.unlink(tmp_path / "proc/cpuinfo")
    os.mkfifo(tmp_path / "proc/cpuinfo")
    rail = tmp_path / HWMON.lstrip("/") / "in1_input"
    rail.unlink()
    os.mkfifo(tmp_path / "fifo")
    os.symlink("/fifo", rail)  # an absolute link: followed inside the root
    write_file(tmp_path, "/sys/class/powercap/intel-rapl:0/energy_uj", "lots\n")
    write_file(tmp_path, "/sys/firmware/devicetree/base/model", "NVIDIA Jetson [/b] \x1b[2J\x00")
    result = invoke("--root", tmp_path)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.replace("│", " ").split())  # undo the table's line wrapping
    assert "unreadable (" in out and "cpuinfo: a FIFO, not a regular file)" in out
    assert "VDD_GPU_SOC unreadable (" in out and "fifo: a FIFO, not a regular file" in out
    assert "energy_uj: holds 'lots', not a whole number of µJ)" in out
    assert "NVIDIA Jetson [/b] \ufffd[2J (module p3701-0005)" in out  # literal, no escape code
    assert "\x1b" not in result.output
    assert "board power unreadable (sum of 4 rails" in out
    assert (
        strict_json(invoke("--json", "--root", tmp_path).output)["detected"]["rapl_readable"]
        is False
    )


def test_bad_devices_file_is_a_one_line_error_naming_it(tmp_path):
    write_host_cpu(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2, 3]")
    result = invoke("--devices", bad, "--root", tmp_path)
    assert result.exit_code != 0 and isinstance(result.exception, ProfileError)
    assert str(result.exception) == f"device file {bad}: entry 1 is a int, not a profile table"


@pytest.mark.parametrize(
    "unsupported", ["nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetMemoryInfo"]
)
def test_an_unsupported_nvml_query_leaves_the_gpu_listed(tmp_path, monkeypatch, unsupported):
    import sys
    import types

    from rich.console import Console

    from ganglion.device import detect

    class NVMLError(Exception):
        pass

    def not_supported(_h):
        raise NVMLError("Not Supported")

    nvml = types.SimpleNamespace(
        NVMLError=NVMLError,
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda _h: "Stand-in GPU",
        nvmlDeviceGetMemoryInfo=lambda _h: types.SimpleNamespace(total=8 << 30),
        nvmlDeviceGetEnforcedPowerLimit=lambda _h: 115_000,
    )
    setattr(nvml, unsupported, not_supported)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    write_host_cpu(tmp_path)
    found = detect(tmp_path, use_nvml=True)
    assert found.gpu_error is None and found.gpus[0]["name"] == "Stand-in GPU"
    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(devices._detected_table(found.to_dict()))
    limit = "power limit unknown" if "PowerLimit" in unsupported else "115 W"
    assert f"Stand-in GPU ({limit})" in console.export_text()

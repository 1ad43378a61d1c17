"""``ganglion cluster up`` and ``down`` as a user runs them: what they refuse, and that down
never signals a process it did not start. (Up on a running cluster, and down stopping exactly
what up started, are the last test of ``test_coordinator.py``, on its cluster.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from ganglion.runtime.serving.cluster import read_state


def test_down_leaves_a_recorded_pid_that_another_process_now_holds(
    tmp_path: Path, ganglion_cli
) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        state = tmp_path / "state"
        state.mkdir()
        record = {
            "role": "node",
            "name": "gone",
            "address": "127.0.0.1:1",
            "pid": stranger.pid,
            "started": "1",  # not the stranger's start time: the pid was reused
            "log": str(state / "node-gone.log"),
            "command": ["ganglion", "serve"],
        }
        (state / "cluster.json").write_text(json.dumps({"config": "c", "processes": [record]}))
        done = ganglion_cli("cluster", "down", "--state-dir", str(state))
        assert done.returncode == 0 and "nothing running" in done.stdout
        time.sleep(0.2)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_up_refuses_a_node_serving_a_model_no_ensemble_has(
    tmp_path: Path, ensemble_bundle: Path, cluster_file, ganglion_cli
) -> None:
    config = cluster_file(tmp_path, ensemble_bundle, {"odd": {"models": ["e1", "zz"]}})
    done = ganglion_cli("cluster", "up", "--config", str(config), "--state-dir", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: node 'odd': no ensemble bundle folder has a member 'zz' to serve"
    )
    assert read_state(tmp_path) == []


def test_up_refuses_a_program_the_coordinator_cannot_serve_before_starting_anything(
    tmp_path: Path, ensemble_bundle: Path, cluster_file, ganglion_cli
) -> None:
    member = ensemble_bundle / "members" / "e1"  # a dense program, not an ensemble
    config = cluster_file(tmp_path, member, {"n": {"models": ["e1"]}})
    done = ganglion_cli("cluster", "up", "--config", str(config), "--state-dir", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: {member}: a dense program; the coordinator serves ensembles"
    )
    assert read_state(tmp_path) == [] and not list(tmp_path.glob("*.log"))


def test_coordinate_refuses_a_port_out_of_range(
    tmp_path: Path, ensemble_bundle: Path, cluster_file, ganglion_cli
) -> None:
    config = cluster_file(tmp_path, ensemble_bundle, {"n": {"models": ["e1"]}})
    for port in ("70000", "-1"):
        done = ganglion_cli("coordinate", "--config", str(config), "--port", port)
        assert done.returncode == 1
        assert done.stderr.strip() == f"error: --port must be in [0, 65535], got {port}"


def test_down_needs_a_cluster_file_or_a_state_folder(ganglion_cli) -> None:
    done = ganglion_cli("cluster", "down")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: give --config CLUSTER.toml or --state-dir DIR"


def test_up_and_down_refuse_a_wait_out_of_range_before_starting_anything(
    tmp_path: Path, ensemble_bundle: Path, cluster_file
) -> None:
    """``--timeout nan`` waited for ever (``now > nan`` is never true), ``-5`` started every
    process and then killed it."""
    from ganglion.runtime.cli import invoke

    config = cluster_file(tmp_path, ensemble_bundle, {"n": {"models": ["e1"]}})
    state = tmp_path / "state"
    for value in ("nan", "-5", "inf"):
        code, _, err = invoke(
            "cluster", "up", "--config", str(config), "--state-dir", str(state), "--timeout", value
        )
        assert code == 2 and "--timeout" in err and err.count("\n") == 1
    code, _, err = invoke("cluster", "down", "--state-dir", str(state), "--grace", "-1")
    assert code == 2 and "--grace" in err
    assert read_state(state) == []  # nothing was started


def test_up_refuses_a_member_outside_the_ensembles_members_folder(
    tmp_path: Path, ensemble_bundle: Path, cluster_file, ganglion_cli
) -> None:
    """A manifest may not point a node at a folder outside ``members/`` (the manifest reader
    already refuses one outside the bundle)."""
    import shutil

    copy = tmp_path / "ensemble"
    shutil.copytree(ensemble_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["members"][0]["path"] = "elsewhere/e1"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    config = cluster_file(tmp_path, copy, {"n": {"models": [manifest["members"][0]["name"]]}})
    done = ganglion_cli("cluster", "up", "--config", str(config), "--state-dir", str(tmp_path))
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "is not in a folder of its own in members/" in done.stderr
    assert read_state(tmp_path) == []

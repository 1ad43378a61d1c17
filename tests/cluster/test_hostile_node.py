"""A node that passes every health check but lies in its answers (tests/cluster/hostile_node.py,
a separate process) beside an honest one: the coordinator checks each answer against the
member's declared output, fails over to the honest replica and answers as the ensemble would,
never with the lie mixed in, and quotes no more of the node's message than its first line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ganglion.runtime.serving.client import NodeClient

from .conftest import CLASSES, EXPERTS, free_port

HOSTILE = Path(__file__).with_name("hostile_node.py")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, Path, int]:
    """(mode file, count file, port) of a running hostile node."""
    folder = tmp_path_factory.mktemp("hostile")
    mode, count, port = folder / "mode", folder / "count", free_port()
    mode.write_text("honest")
    command = [sys.executable, str(HOSTILE), str(port), str(mode), str(count), str(CLASSES)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield mode, count, port
    finally:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, hostile, ensemble_bundle, cluster_file, start_cluster):
    _, _, port = hostile
    nodes = {  # the liar sits on the faster device: the planner asks it first
        "liar": {"device": "rtx-4090", "models": list(EXPERTS), "start": "external", "port": port},
        "honest": {"device": "jetson-orin-nano-8gb", "models": list(EXPERTS)},
    }
    config = cluster_file(
        tmp_path_factory.mktemp("liar"),
        ensemble_bundle,
        nodes,
        health_interval_ms=200,
        telemetry_interval_ms=60_000,
    )
    return start_cluster(config)


def _admitted(address: str, node: str) -> None:
    async def wait() -> None:
        async with NodeClient(address, timeout_s=5.0) as client:
            for _ in range(100):
                if await client.health(f"node/{node}") == "SERVING":
                    return
                await asyncio.sleep(0.1)
        pytest.fail(f"node {node} was not re-admitted")

    asyncio.run(wait())


@pytest.mark.parametrize("lie", ["nan", "rows", "datatype", "name", "internal"])
def test_a_lying_node_is_failed_over_and_its_lie_never_mixed_in(
    cluster, hostile, ask_once, expected, lie
) -> None:
    mode, count, _ = hostile
    _admitted(cluster.coordinator, "liar")
    mode.write_text(lie)
    calls = int(count.read_text()) if count.exists() else 0
    x = np.random.default_rng(11).normal(size=(3, 8)).astype(np.float32)
    reply = ask_once(cluster.coordinator, x)
    assert int(count.read_text()) > calls  # the liar was asked
    assert reply.parameters["retries"] >= 1 and "liar" not in reply.parameters["nodes"]
    want = expected(x, reply.experts)
    for name in ("probs", "gate"):
        assert np.isfinite(reply.outputs[name]).all()
        np.testing.assert_allclose(reply.outputs[name], want[name], rtol=0, atol=1e-6)
    mode.write_text("honest")
    log = (cluster.state_dir / "coordinator-coordinator.log").read_text(errors="replace")
    assert "forged log line" not in log and "x" * 300 not in log
    time.sleep(0.05)


def test_a_node_ejected_by_its_calls_is_held_out_longer_each_time(hostile) -> None:
    """A node that passes its probes but fails its calls (hung, lying) used to be re-admitted
    at the next probe, costing most requests a failed call."""
    from ganglion.runtime.serving.cluster_config import NodeConfig
    from ganglion.runtime.serving.node_pool import HOLD_S, NodePool

    _, _, port = hostile

    async def run() -> list[tuple[bool, float]]:
        pool = NodePool([NodeConfig("liar", port, ("e1",))], 60.0, 60.0, 1.0)
        await pool.start()
        node, seen = pool.nodes["liar"], []
        for _ in range(2):
            assert node.admitted
            pool.eject(node, "a bad answer")
            await pool._probe(node)  # at once: still held out
            seen.append((node.admitted, node.held_until - time.monotonic()))
            await asyncio.sleep(node.held_until - time.monotonic() + 0.01)
            await pool._probe(node)  # after the hold: back
        pool.observe(node, "e1", 0.01)  # a good answer forgives
        assert node.ejections == 0 and "held out" not in node.reason
        return seen

    seen = asyncio.run(run())
    assert [admitted for admitted, _ in seen] == [False, False]
    assert 0.5 * HOLD_S < seen[0][1] <= HOLD_S and 1.5 * HOLD_S < seen[1][1] <= 2 * HOLD_S


def test_a_call_cut_short_raises_the_nodes_round_trip_to_at_least_its_wait() -> None:
    """Such a call ejects nothing (the client's deadline may be the cause) but must not leave
    a node that hangs looking fast."""
    from ganglion.runtime.serving.cluster_config import NodeConfig
    from ganglion.runtime.serving.node_pool import NodePool, NodeState

    pool = NodePool([], 60.0, 60.0, 1.0)
    node = NodeState(NodeConfig("n", 1, ("e1",)), client=None, admitted=True)
    pool.observe(node, "e1", 0.004)
    pool.observe_at_least(node, "e1", 0.002)
    assert node.observed_ms["e1"] == pytest.approx(4.0) and node.admitted
    pool.observe_at_least(node, "e1", 0.9)
    assert node.observed_ms["e1"] == pytest.approx(900.0) and node.admitted


def test_non_finite_scores_from_every_replica_refuse_the_request_and_eject_nobody(
    tmp_path_factory, hostile, ensemble_bundle, cluster_file, start_cluster, ask_once
) -> None:
    """The liar alone hosts every expert: its NaN scores have no replica to contradict them, so
    they are taken for an input beyond the experts' range (INVALID_ARGUMENT), and the node,
    which may be right, stays admitted. Beside an honest replica (above) it is ejected."""
    import grpc

    from ganglion.runtime.serving.client import NodeCallError

    mode, _, port = hostile
    node = {"device": "rtx-4090", "models": list(EXPERTS), "start": "external", "port": port}
    alone = start_cluster(
        cluster_file(
            tmp_path_factory.mktemp("alone"),
            ensemble_bundle,
            {"liar": node},
            health_interval_ms=200,
            telemetry_interval_ms=60_000,
        )
    )
    _admitted(alone.coordinator, "liar")
    mode.write_text("nan")
    try:
        x = np.random.default_rng(12).normal(size=(3, 8)).astype(np.float32)
        with pytest.raises(NodeCallError) as refused:
            ask_once(alone.coordinator, x)
    finally:
        mode.write_text("honest")
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "gives non-finite scores for this input on liar" in str(refused.value)

    async def health() -> str:
        async with NodeClient(alone.coordinator, timeout_s=2.0) as client:
            return await client.health("node/liar")

    assert asyncio.run(health()) == "SERVING"
    alone.down()

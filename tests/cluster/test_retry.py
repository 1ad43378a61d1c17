"""Calls that meet a hung node, deterministically: the coordinator probes its nodes only once
a minute here, so only a call's deadline can find the hang, and expert e1 has one replica, so a
request must call the hung node. A call cut short by the client's own deadline ejects no node;
a call that runs out its own ``call_timeout_ms`` is retried, and the request is answered by the
experts left (re-planned without e1), as the ensemble in this process answers for them."""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
import pytest

from ganglion.runtime.serving.client import NodeCallError, NodeClient

HOSTS = {"solo": ["e1", "e2"], "pair": ["e2", "e3"]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, ensemble_bundle, cluster_file, start_cluster):
    nodes = {name: {"device": "jetson-agx-orin-64gb", "models": m} for name, m in HOSTS.items()}
    config = cluster_file(
        tmp_path_factory.mktemp("retry"),
        ensemble_bundle,
        nodes,
        call_timeout_ms=1000,
        health_interval_ms=60_000,
        telemetry_interval_ms=60_000,
    )
    return start_cluster(config)


def test_a_call_cut_short_by_the_clients_deadline_ejects_no_node(
    cluster, ask_async, ask_once
) -> None:
    x = np.random.default_rng(6).normal(size=(3, 8)).astype(np.float32)
    assert "e1" in ask_once(cluster.coordinator, x).experts

    async def hurried() -> str:
        async with NodeClient(cluster.coordinator, timeout_s=10.0) as client:
            try:  # the call to the hung node is cut short at ~0.27 s, within call_timeout_ms
                reply = await ask_async(client, x, timeout_s=0.3)
                assert "e1" not in reply.experts  # answered by the experts left in time
            except NodeCallError:
                pass  # or not answered in time
            await asyncio.sleep(0.2)  # a node taken out shows on health at once
            return await client.health("node/solo")

    os.kill(cluster.pid("solo"), signal.SIGSTOP)
    try:
        health = asyncio.run(hurried())
    finally:
        os.kill(cluster.pid("solo"), signal.SIGCONT)
    assert health == "SERVING"


def test_a_call_to_a_hung_node_is_retried_and_the_rest_of_the_ensemble_answers(
    cluster, ask_once, expected
) -> None:
    x = np.random.default_rng(7).normal(size=(3, 8)).astype(np.float32)
    before = ask_once(cluster.coordinator, x)
    assert "e1" in before.experts and before.parameters["retries"] == 0
    os.kill(cluster.pid("solo"), signal.SIGSTOP)
    try:
        reply = ask_once(cluster.coordinator, x)
    finally:
        os.kill(cluster.pid("solo"), signal.SIGCONT)
    assert reply.parameters["retries"] >= 1 and reply.parameters["replans"] >= 1
    assert "e1" not in reply.experts and "solo" not in reply.parameters["nodes"]
    want = expected(x, reply.experts)
    for name in ("probs", "gate"):
        np.testing.assert_allclose(reply.outputs[name], want[name], rtol=0, atol=1e-6)

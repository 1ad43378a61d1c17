"""A call that meets a hung node is retried, deterministically: the coordinator probes its
nodes only once a minute here, so only the call's deadline can find the hang, and expert e1 has
one replica, so the request must call the hung node. The request is answered by the experts
left (re-planned without e1), as the ensemble in this process answers for them."""

from __future__ import annotations

import os
import signal

import numpy as np

HOSTS = {"solo": ["e1", "e2"], "pair": ["e2", "e3"]}


def test_a_call_to_a_hung_node_is_retried_and_the_rest_of_the_ensemble_answers(
    tmp_path, ensemble_bundle, cluster_file, start_cluster, ask_once, expected
) -> None:
    nodes = {name: {"device": "jetson-agx-orin-64gb", "models": m} for name, m in HOSTS.items()}
    config = cluster_file(
        tmp_path,
        ensemble_bundle,
        nodes,
        call_timeout_ms=1000,
        health_interval_ms=60_000,
        telemetry_interval_ms=60_000,
    )
    cluster = start_cluster(config)
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

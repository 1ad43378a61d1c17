"""The coordinator over three ``ganglion serve`` processes (every expert on two of them),
all started by ``ganglion cluster up``: collaborative answers equal the ensemble run in this
process, budgets choose the experts, and nodes that hang, die and come back are survived.
The last test stops the cluster with ``ganglion cluster down``."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from ganglion.runtime.bundle import read_manifest
from ganglion.runtime.serving.client import NodeCallError, NodeClient, infer_request
from ganglion.runtime.serving.cluster import read_state, running

HOSTS = {"orin-a": ["e1", "e2"], "orin-b": ["e2", "e3"], "orin-c": ["e1", "e3"]}
ALL = ["e1", "e2", "e3"]
CALL_TIMEOUT_MS = 1000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, ensemble_bundle: Path, cluster_file, start_cluster):
    folder = tmp_path_factory.mktemp("cluster")
    nodes = {
        name: {"device": "jetson-agx-orin-64gb", "models": models} for name, models in HOSTS.items()
    }
    config = cluster_file(
        folder,
        ensemble_bundle,
        nodes,
        call_timeout_ms=CALL_TIMEOUT_MS,
        health_interval_ms=200,
        telemetry_interval_ms=500,
    )
    return start_cluster(config)


def _x(seed: int, batch: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, 8)).astype(np.float32)


def _same(reply, expected, x: np.ndarray) -> None:
    want = expected(x, reply.experts)
    for name in ("probs", "gate"):
        np.testing.assert_allclose(reply.outputs[name], want[name], rtol=0, atol=1e-6)


async def _health(address: str, service: str) -> str:
    async with NodeClient(address, timeout_s=2.0) as client:
        return await client.health(service)


def _wait_health(address: str, service: str, status: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while asyncio.run(_health(address, service)) != status:
        assert time.monotonic() < deadline, f"{service} not {status} after {timeout_s} s"
        time.sleep(0.1)


def test_collaborative_inference_equals_the_ensemble_in_process(
    cluster, expected, ask_once
) -> None:
    x = _x(0)
    reply = ask_once(cluster.coordinator, x)
    assert reply.experts == ALL
    _same(reply, expected, x)


def test_response_names_the_nodes_and_marks_each_figure(cluster, ensemble_bundle, ask_once) -> None:
    reply = ask_once(cluster.coordinator, _x(1))
    p = reply.parameters
    used = dict(item.split("=") for item in p["nodes"].split(","))
    assert sorted(used) == ALL
    assert all(expert in HOSTS[node] for expert, node in used.items())
    quality = read_manifest(ensemble_bundle).report["quality"]["quality_all"]
    assert p["quality"] == pytest.approx(quality, rel=1e-5)
    kinds = {"measured", "simulated", "measured+simulated"}
    assert p["energy_kind"] in kinds and p["predicted_latency_kind"] in kinds
    assert p["latency_kind"] == "measured" and p["latency_ms"] > 0 and p["energy_j"] > 0
    assert (p["retries"], p["replans"]) == (0, 0)
    assert p["energy_budget_j"] == float("inf")


def test_infer_command_prints_the_chosen_experts_and_the_energy(
    cluster, ganglion_cli, tmp_path
) -> None:
    np.save(tmp_path / "x.npy", _x(5))
    done = ganglion_cli(
        "infer", "--to", cluster.coordinator, "--model", "moe", "--input", str(tmp_path / "x.npy")
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    assert sorted(lines["experts"].split(",")) == ALL
    assert float(lines["energy_j"]) > 0 and lines["latency_kind"] == "measured"


def test_an_energy_budget_in_the_request_chooses_fewer_experts_within_it(
    cluster, expected, ask_once
) -> None:
    x = _x(2)
    with pytest.raises(NodeCallError) as refused:
        ask_once(cluster.coordinator, x, {"energy_budget_j": 1e-12})
    cheapest = float(re.search(r"cheapest needs (\S+) J", str(refused.value)).group(1))
    budget = 1.5 * cheapest  # room for the cheapest expert, not for any two
    reply = ask_once(cluster.coordinator, x, {"energy_budget_j": budget})
    assert len(reply.experts) == 1
    assert cheapest * (1 - 1e-3) <= reply.parameters["energy_j"] <= budget
    assert reply.parameters["energy_budget_j"] == budget
    _same(reply, expected, x)


def test_a_budget_no_expert_meets_is_refused_with_what_the_cheapest_needs(
    cluster, ask_once
) -> None:
    with pytest.raises(NodeCallError) as refused:
        ask_once(cluster.coordinator, _x(3), {"energy_budget_j": 1e-12})
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "energy_budget_j=1e-12" in str(refused.value) and "cheapest needs" in str(refused.value)


def test_bad_requests_get_one_line_errors(cluster, ask_once) -> None:
    cases = [
        ({"energy_budget_j": -1.0}, _x(4), "energy_budget_j must be a number >= 0"),
        ({"sequence_id": 7}, _x(4), "takes no sequence_id"),
        ({}, np.zeros((2, 5), np.float32), "input 'input' must be"),
        ({}, np.zeros((0, 8), np.float32), "input 'input' of shape [0, 8] has an empty batch"),
        ({}, _x(0, 4097), "a batch of 4097 is more than this program takes (4096"),  # members'
        ({}, np.full((2, 8), 3e38, np.float32), "the gate's weights for sample 0 are not finite"),
        *(
            ({}, _x(4).astype(dtype), f"data-type is '{name}', but model 'moe' expects 'FP32'")
            for dtype, name in (
                (np.float64, "FP64"),
                (np.float16, "FP16"),
                (np.int8, "INT8"),
                (np.int64, "INT64"),
            )
        ),
    ]
    for parameters, x, message in cases:
        with pytest.raises(NodeCallError) as refused:
            ask_once(cluster.coordinator, x, parameters)
        assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert message in str(refused.value) and "\n" not in str(refused.value)
    for name in HOSTS:  # a bad request ejects no node
        assert asyncio.run(_health(cluster.coordinator, f"node/{name}")) == "SERVING"


def test_unimplemented_calls_and_options_are_refused_in_one_line(cluster) -> None:
    with grpc.insecure_channel(cluster.coordinator) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="moe"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert caught.value.details() == (
            "RepositoryModelLoad is not implemented by the ganglion-coordinator"
        )
        request = infer_request("moe", {"input": _x(6)})
        request.outputs.add(name="probs").parameters["classification"].int64_param = 2
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "classification (class_count) is not supported" in caught.value.details()


def test_metadata_readiness_and_node_health(cluster) -> None:
    async def look() -> tuple:
        async with NodeClient(cluster.coordinator, timeout_s=5.0) as client:
            meta = await client.metadata("moe")
            index = await client.index()
            health = [await client.health(f"node/{name}") for name in HOSTS]
            missing = None
            try:
                await client.metadata("nope")
            except NodeCallError as exc:
                missing = exc.code
            return meta, index, health, await client.model_ready("moe"), missing

    meta, index, health, ready, missing = asyncio.run(look())
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("input", "FP32", [-1, 8])
    ]
    assert [t.name for t in meta.outputs] == ["probs", "gate"]
    assert [(m.name, m.state) for m in index] == [("moe", "READY")]
    assert health == ["SERVING"] * 3 and ready
    assert missing == grpc.StatusCode.NOT_FOUND


def test_a_hung_node_times_out_and_a_replica_answers(cluster, expected, ask_once) -> None:
    x = _x(5)
    used = dict(
        item.split("=") for item in ask_once(cluster.coordinator, x).parameters["nodes"].split(",")
    )
    hung = used["e1"]
    os.kill(cluster.pid(hung), signal.SIGSTOP)
    try:
        # Calls go to the replica with the least observed latency, so a request may not route
        # to the hung node at all; up to four requests, each answered by the others in time.
        # Either a call's deadline found it hung (a retry), or a health probe ejects it (an
        # ejected node stays out while it cannot answer).
        replies, took = [], []
        for _ in range(4):
            started = time.monotonic()
            replies.append(ask_once(cluster.coordinator, x))
            took.append(time.monotonic() - started)
            if replies[-1].parameters["retries"] >= 1:
                break
        seen = "retry" if replies[-1].parameters["retries"] >= 1 else None
        deadline = time.monotonic() + 10.0
        while seen is None and time.monotonic() < deadline:
            if asyncio.run(_health(cluster.coordinator, f"node/{hung}")) != "SERVING":
                seen = "probe"
            time.sleep(0.1)
    finally:
        os.kill(cluster.pid(hung), signal.SIGCONT)
    for reply in replies:
        assert reply.experts == ALL and hung not in reply.parameters["nodes"]
        _same(reply, expected, x)
    assert seen in ("retry", "probe")
    assert max(took) < 2 * CALL_TIMEOUT_MS / 1e3
    _wait_health(cluster.coordinator, f"node/{hung}", "SERVING")


def test_the_clients_own_deadline_passing_is_deadline_exceeded(cluster, ask_async) -> None:
    """Every node hung and the client's deadline shorter than a node call's: the coordinator
    answers DEADLINE_EXCEEDED in its own words (gRPC clients retry UNAVAILABLE), ejecting
    nothing for a call the client's deadline cut short."""
    pids = [cluster.pid(name) for name in HOSTS]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)

    async def once() -> None:
        async with NodeClient(cluster.coordinator, timeout_s=10.0) as client:
            await ask_async(client, _x(6), None, 0.5 * CALL_TIMEOUT_MS / 1e3)

    try:
        with pytest.raises(NodeCallError) as refused:
            asyncio.run(once())
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    said = str(refused.value)
    if refused.value.code == grpc.StatusCode.UNAVAILABLE:  # probes took every node out first
        assert "no node hosting one of its experts is admitted" in said
    else:
        assert refused.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "the request's deadline passed before expert" in said
    for name in HOSTS:
        _wait_health(cluster.coordinator, f"node/{name}", "SERVING")


def test_killing_nodes_under_load_loses_no_request_and_restarted_nodes_return(
    cluster, expected, ask_async, ask_once
) -> None:
    total, concurrency, kill_after = 150, 10, 40
    inputs = [_x(100 + i, batch=2) for i in range(total)]

    async def load() -> list:
        done: list = [None] * total
        finished = 0
        gate = asyncio.Semaphore(concurrency)
        async with NodeClient(cluster.coordinator, timeout_s=10.0) as client:

            async def one(i: int) -> None:
                nonlocal finished
                async with gate:
                    try:
                        done[i] = await ask_async(client, inputs[i], timeout_s=10.0)
                    except NodeCallError as exc:
                        done[i] = exc
                finished += 1
                if finished == kill_after:
                    os.kill(cluster.pid("orin-a"), signal.SIGKILL)

            await asyncio.gather(*(one(i) for i in range(total)))
        return done

    replies = asyncio.run(load())
    failed = [r for r in replies if not hasattr(r, "outputs")]
    assert failed == [] and len(replies) == total
    for x, reply in zip(inputs, replies, strict=True):
        assert reply.experts == ALL
        _same(reply, expected, x)

    os.kill(cluster.pid("orin-b"), signal.SIGKILL)  # e2 had its replicas on orin-a and orin-b
    x = _x(6)
    reply = ask_once(cluster.coordinator, x)
    assert reply.experts == ["e1", "e3"]
    _same(reply, expected, x)

    cluster.up()  # restarts the two dead nodes on their ports
    for name in ("orin-a", "orin-b"):
        _wait_health(cluster.coordinator, f"node/{name}", "SERVING")
    reply = ask_once(cluster.coordinator, x)
    assert reply.experts == ALL
    _same(reply, expected, x)
    state = json.loads((cluster.state_dir / "cluster.json").read_text())
    assert len(state["processes"]) == 4


def test_up_again_starts_nothing_and_down_stops_exactly_what_up_started(
    cluster, ganglion_cli
) -> None:
    records = read_state(cluster.state_dir)
    assert [(r.role, r.name) for r in records] == [
        *(("node", name) for name in HOSTS),
        ("coordinator", "coordinator"),
    ]
    assert all(running(r) for r in records)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        again = cluster.up()
        assert [r.pid for r in read_state(cluster.state_dir)] == [r.pid for r in records]
        assert all(f"pid {r.pid}" in again.stdout for r in records)

        state = ["--state-dir", str(cluster.state_dir)]
        down = ganglion_cli("cluster", "down", *state)
        assert down.returncode == 0, down.stderr
        assert down.stdout.splitlines() == [
            f"stopped {r.role} {r.name} (pid {r.pid})" for r in records
        ]
        assert not any(running(r) for r in records)
        assert not (cluster.state_dir / "cluster.json").exists()
        assert bystander.poll() is None
        again = ganglion_cli("cluster", "down", *state)
        assert again.returncode == 0 and "nothing running" in again.stdout
    finally:
        bystander.kill()
        bystander.wait()

"""Failover: how long requests in flight take to complete when a node dies or hangs under
load, and how many requests are lost (the goal: none).

Set-up (all real processes on 127.0.0.1, started with ``runtime.serving.cluster``): the
digits MoE² ensemble of the demo (an expert for digits 0-4, dense; one for 5-9, spiking),
three ``ganglion serve`` nodes — ``orin`` (jetson-agx-orin-64gb) hosts both experts,
``nano`` (jetson-orin-nano-8gb) the first, ``loihi`` (loihi2 profile; ``--lava`` serves it
with the Lava backend, else ONNX Runtime) the second — and the coordinator
(``call_timeout_ms`` = ``--call-timeout-ms``). With ``--lava`` the spiking expert is the
Loihi-quantized one (``quantize_loihi2``; the Lava backend refuses the float program), on
every node.

Each row: ``--requests`` requests (one digit each, client deadline 10 s) kept ``concurrency``
in flight on one channel; after a quarter have completed, ``orin`` is killed (SIGKILL:
``crash``) or stopped (SIGSTOP: ``hang``). Reported: requests in flight at that moment and
the time until the last of them completed (``drain``), requests lost (no answer: must be 0),
answers that needed a retry, p50/p99 latency of the requests that started before and after
the failure, and the time from restarting (``ganglion cluster up``) or continuing (SIGCONT)
the node to its re-admission by the coordinator.

Usage: ``python benchmarks/failover.py [--requests 400] [--concurrency 8 32]
[--call-timeout-ms 1000] [--bundle ENSEMBLE] [--lava]``. Prints a JSON line per row and a
table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganglion.runtime.bundle import read_manifest
from ganglion.runtime.serving.client import NodeCallError, NodeClient, infer_request
from ganglion.runtime.serving.cluster import cluster_down, cluster_up, read_state
from ganglion.runtime.serving.cluster_config import read_cluster_config

ENSEMBLE = "digits-moe"
LOW, HIGH = "digits-0-4", "digits-5-9"
VICTIM = "orin"


def build_ensemble(folder: Path, lava: bool) -> Path:
    """The demo's digits ensemble (experts trained briefly), saved under ``folder``; with
    ``lava`` the spiking expert is quantized for Loihi 2 (the Lava backend runs only that)."""
    from ganglion.converters.ensemble import convert_ensemble
    from ganglion.converters.loihi_quantize import quantize_loihi2
    from ganglion.models.recipes.digits import load_digits
    from ganglion.runtime.bundle import save_bundle
    from ganglion.runtime.demo_ensembles import train_digits_expert
    from ganglion.runtime.ensemble_calibration import all_expert_probabilities

    data = load_digits(image=False)
    members = {
        LOW: train_digits_expert(data, range(0, 5), False, epochs=15),
        HIGH: train_digits_expert(data, range(5, 10), True, epochs=15),
    }
    if lava:
        members[HIGH] = quantize_loihi2(members[HIGH], data.x_train, data.y_train)
    probs = all_expert_probabilities(members, {"x": data.x_train})
    ensemble = convert_ensemble(members, {"x": data.x_train}, data.y_train, probs, epochs=100)
    return save_bundle(ensemble, folder / ENSEMBLE)


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(folder: Path, bundle: Path, call_timeout_ms: float, lava: bool) -> Path:
    """The cluster file of the set-up (free ports)."""
    nodes = [
        ("orin", "jetson-agx-orin-64gb", [LOW, HIGH], "auto"),
        ("nano", "jetson-orin-nano-8gb", [LOW], "auto"),
        ("loihi", "loihi2", [HIGH], "lava" if lava else "auto"),
    ]
    lines = [
        "[coordinator]",
        f"port = {_port()}",
        'device = "cpu"',
        f"call_timeout_ms = {call_timeout_ms}",
        "health_interval_ms = 200",
        "telemetry_interval_ms = 1000",
        "",
        "[[ensemble]]",
        f'name = "{ENSEMBLE}"',
        f'bundle = "{bundle}"',
    ]
    for name, device, models, backend in nodes:
        lines += ["", "[[node]]", f'name = "{name}"', f"port = {_port()}"]
        lines += [f'device = "{device}"', f"models = {json.dumps(models)}"]
        lines += [f'backend = "{backend}"']
    path = folder / "cluster.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Outcome:
    """One request: when it started and ended (monotonic s), and how it went."""

    start: float
    end: float
    ok: bool
    retries: int
    error: str


async def _admitted(coordinator: str, node: str) -> bool:
    async with NodeClient(coordinator, timeout_s=2.0) as client:
        return await client.health(f"node/{node}") == "SERVING"


def wait_admitted(coordinator: str, node: str, timeout_s: float = 60.0) -> float:
    """Seconds until the coordinator reports ``node`` admitted."""
    started = time.monotonic()
    while not asyncio.run(_admitted(coordinator, node)):
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"{node} not re-admitted after {timeout_s} s")
        time.sleep(0.05)
    return time.monotonic() - started


async def load(
    coordinator: str,
    name: str,
    inputs: np.ndarray,
    concurrency: int,
    fail_after: int,
    victim_pid: int,
    sig: signal.Signals,
) -> tuple[list[Outcome], float]:
    """Send every input (as input ``name``), ``concurrency`` at a time; signal the victim
    once ``fail_after`` requests completed. The outcomes and the moment of the signal."""
    outcomes: list[Outcome | None] = [None] * len(inputs)
    failed_at = [0.0]
    done = 0
    gate = asyncio.Semaphore(concurrency)
    async with NodeClient(coordinator, timeout_s=10.0) as client:

        async def one(i: int) -> None:
            nonlocal done
            async with gate:
                request = infer_request(ENSEMBLE, {name: inputs[i : i + 1]})
                start = time.monotonic()
                try:
                    response = await client.model_infer(request, 10.0)
                    retries = int(response.parameters["retries"].int64_param)
                    outcomes[i] = Outcome(start, time.monotonic(), True, retries, "")
                except NodeCallError as exc:
                    outcomes[i] = Outcome(start, time.monotonic(), False, 0, exc.code.name)
            done += 1
            if done == fail_after:
                failed_at[0] = time.monotonic()
                os.kill(victim_pid, sig)

        await asyncio.gather(*(one(i) for i in range(len(inputs))))
    return [o for o in outcomes if o is not None], failed_at[0]


def _ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1e3) if values else float("nan")


def measure(
    config: Path, state: Path, inputs: np.ndarray, failure: str, concurrency: int, requests: int
) -> dict:
    """One row: load, fail ``VICTIM`` a quarter of the way, restore it, wait for it back."""
    coordinator = read_cluster_config(config).coordinator
    address = coordinator.address
    pid = next(r.pid for r in read_state(state) if r.name == VICTIM)
    sig = signal.SIGKILL if failure == "crash" else signal.SIGSTOP
    chosen = inputs[np.arange(requests) % len(inputs)]
    name = read_manifest(read_cluster_config(config).ensembles[0].bundle).inputs[0].name
    outcomes, failed_at = asyncio.run(
        load(address, name, chosen, concurrency, requests // 4, pid, sig)
    )
    restored = time.monotonic()
    if failure == "crash":
        cluster_up(read_cluster_config(config), state)
    else:
        os.kill(pid, signal.SIGCONT)
    readmit_s = time.monotonic() - restored + wait_admitted(address, VICTIM)
    in_flight = [o for o in outcomes if o.start < failed_at < o.end]
    before = [o.end - o.start for o in outcomes if o.end <= failed_at]
    after = [o.end - o.start for o in outcomes if o.start >= failed_at]
    drain = [o.end - failed_at for o in in_flight]
    return {
        "failure": failure,
        "concurrency": concurrency,
        "requests": len(outcomes),
        "in_flight": len(in_flight),
        "drain_max_ms": max(drain) * 1e3 if drain else 0.0,
        "drain_p50_ms": _ms(drain, 50),
        "lost": sum(not o.ok for o in outcomes),
        "errors": sorted({o.error for o in outcomes if not o.ok}),
        "retried": sum(o.retries > 0 for o in outcomes),
        "p50_before_ms": _ms(before, 50),
        "p99_before_ms": _ms(before, 99),
        "p50_after_ms": _ms(after, 50),
        "p99_after_ms": _ms(after, 99),
        "readmit_s": readmit_s,
    }


def main() -> None:
    """Parse the options, run every row, print JSON lines and the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--call-timeout-ms", type=float, default=1000.0)
    parser.add_argument("--bundle", type=Path, default=None, help="an ensemble bundle folder")
    parser.add_argument("--lava", action="store_true", help="serve loihi with the Lava backend")
    args = parser.parse_args()
    from ganglion.models.recipes.digits import load_digits

    inputs = load_digits(image=False).x_test.astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="ganglion-failover-") as tmp:
        folder = Path(tmp)
        bundle = args.bundle.resolve() if args.bundle else build_ensemble(folder, args.lava)
        config = write_config(folder, bundle, args.call_timeout_ms, args.lava)
        state = folder / "state"
        started = time.monotonic()
        cluster_up(read_cluster_config(config), state)
        print(json.dumps({"cluster_up_s": round(time.monotonic() - started, 2)}), flush=True)
        rows = []
        try:
            for failure in ("crash", "hang"):
                for concurrency in args.concurrency:
                    row = measure(config, state, inputs, failure, concurrency, args.requests)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        finally:
            cluster_down(state, grace_s=5.0)
    print(
        f"\n{'failure':<8}{'conc':>5}{'in flight':>10}{'drain max':>11}{'drain p50':>11}"
        f"{'lost':>6}{'retried':>8}{'p50 before':>12}{'p50 after':>11}{'p99 after':>11}"
        f"{'readmit':>9}"
    )
    for r in rows:
        print(
            f"{r['failure']:<8}{r['concurrency']:>5}{r['in_flight']:>10}"
            f"{r['drain_max_ms']:>9.1f}ms{r['drain_p50_ms']:>9.1f}ms{r['lost']:>6}"
            f"{r['retried']:>8}{r['p50_before_ms']:>10.2f}ms{r['p50_after_ms']:>9.2f}ms"
            f"{r['p99_after_ms']:>9.2f}ms{r['readmit_s']:>8.2f}s"
        )


if __name__ == "__main__":
    main()

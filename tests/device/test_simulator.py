"""Roofline arithmetic, Loihi 2 event energies, the simulated meter and CPU calibration."""

import dataclasses
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from ganglion.device import SimulatedMeter
from ganglion.device.profiles import builtin_profiles, detect_cpu_profile
from ganglion.device.simulator import (
    LayerOpCounts,
    OpCounts,
    Sample,
    calibrate_cpu,
    dense_ops,
    dense_terms,
    measure_latency,
    predict,
)


@pytest.fixture(scope="module")
def profiles():
    return builtin_profiles()


def test_compute_bound_matmul_on_rtx_4090(profiles):
    p = profiles["rtx-4090"]
    counts = OpCounts(macs={"fp16": 1e12}, bytes_moved=1e6)
    pred = predict(counts, p)
    compute = 2e12 / 165.2e12
    assert pred.bound == "compute"
    assert pred.compute_s == pytest.approx(compute)
    assert pred.latency_s == pytest.approx(p.launch_overhead_s + compute)
    assert pred.energy_j == pytest.approx(p.idle_w * pred.latency_s + (450 - p.idle_w) * compute)
    assert pred.kind == "simulated"
    assert "launch_overhead_s" in pred.assumed and "peak_ops.fp16" not in pred.assumed


def test_memory_bound_when_bytes_dominate(profiles):
    p = profiles["jetson-agx-orin-64gb"]
    pred = predict(OpCounts(macs={"fp32": 1e6}, bytes_moved=204.8e9 * 0.01), p, mode="15W")
    assert pred.bound == "memory" and pred.memory_s == pytest.approx(0.01)
    assert pred.mode == "15W"
    assert pred.energy_j < predict(OpCounts(macs={"fp32": 1e6}, bytes_moved=2.048e9), p).energy_j


def test_unlisted_precision_runs_at_fp32_rate(profiles):
    p = profiles["rtx-4060"]
    a = predict(OpCounts(macs={"bf16": 1e10}), p)
    b = predict(OpCounts(macs={"fp32": 1e10}), p)
    assert a.compute_s == pytest.approx(b.compute_s)


def test_power_mode_changes_energy_not_latency(profiles):
    p = profiles["jetson-orin-nx-16gb"]
    counts = OpCounts(macs={"int8": 1e11})
    low, high = predict(counts, p, "10W"), predict(counts, p, "25W")
    assert low.latency_s == pytest.approx(high.latency_s)
    assert high.energy_j > low.energy_j


def test_loihi_energy_is_the_sum_of_event_energies(profiles):
    p = profiles["loihi2"]
    n = p.neuromorphic
    counts = OpCounts(synops=2e6, neuron_updates=1e5, spikes=3e4, timesteps=10)
    pred = predict(counts, p)
    busy = 2e6 / n.synops_per_s + 1e5 / n.neuron_updates_per_s
    latency = max(10 * n.min_timestep_s, busy)
    expected = 2e6 * 23.6e-12 + 1e5 * 52e-12 + 3e4 * n.energy_per_spike_j + n.static_w * latency
    assert pred.latency_s == pytest.approx(latency)
    assert pred.energy_j == pytest.approx(expected)
    assert "neuromorphic.energy_per_synop_j" in pred.assumed


def test_loihi_latency_has_a_timestep_floor(profiles):
    pred = predict(OpCounts(synops=10, timesteps=100), profiles["loihi2"])
    assert pred.bound == "timestep"
    assert pred.latency_s == pytest.approx(100 * profiles["loihi2"].neuromorphic.min_timestep_s)


def test_layers_add_up_and_report_spike_rates(profiles):
    layers = [
        LayerOpCounts(
            "fc1", synops=1e6, neuron_updates=1e4, spikes=2e3, neurons=1000, timesteps=10
        ),
        LayerOpCounts("fc2", synops=3e5, neuron_updates=1e3, spikes=50, neurons=100, timesteps=10),
    ]
    counts = OpCounts.from_layers(layers, timesteps=10)
    assert counts.synops == 1.3e6 and counts.spikes == 2050
    assert layers[0].spike_rate == pytest.approx(0.2)
    pred = predict(counts, profiles["loihi2"])
    dynamic = pred.energy_j - profiles["loihi2"].neuromorphic.static_w * pred.latency_s
    assert sum(lp.energy_j for lp in pred.layers) == pytest.approx(dynamic)
    assert pred.layers[0].energy_j > pred.layers[1].energy_j


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="unknown precisions"):
        OpCounts(macs={"fp8": 1})
    with pytest.raises(ValueError, match=">= 0"):
        OpCounts(synops=-1)


def test_simulated_meter_integrates_model_power_over_wall_clock():
    watts = iter([5.0, 20.0, 20.0])
    meter = SimulatedMeter(lambda: next(watts), source="test model")
    started = time.perf_counter()
    with meter:
        time.sleep(0.05)
        first = meter.read()  # 5 W until here, 20 W after
        time.sleep(0.05)
        last = meter.read()
    assert first.kind == last.kind == "simulated"
    assert first.joules == pytest.approx(5.0 * (first.timestamp - started), rel=0.05)
    assert (last - first).joules == pytest.approx(20.0 * (last.timestamp - first.timestamp))


def test_calibration_recovers_a_known_line(tmp_path):
    from ganglion.device.sysfs_fixtures import write_host_cpu

    write_host_cpu(tmp_path)
    cpu = detect_cpu_profile(tmp_path)
    rate, overhead = 5e10, 3e-4
    samples = [
        Sample(f"n{n}", OpCounts(macs={"fp32": n}), overhead + 2 * n / rate)
        for n in (1e6, 1e7, 1e8, 1e9)
    ]
    cal = calibrate_cpu(cpu, samples)
    assert cal.effective_ops_per_s == pytest.approx(rate, rel=1e-6)
    assert cal.overhead_s == pytest.approx(overhead, rel=1e-6)
    assert cal.mean_abs_error_pct < 1e-6
    assert not cal.profile.is_assumed("peak_ops.fp32")
    assert "calibrated" in cal.profile.sources["peak_ops.fp32"]


def test_calibration_on_a_real_run_predicts_held_out_sizes():
    cpu = detect_cpu_profile("/")
    cpu = dataclasses.replace(cpu, memory_bandwidth=1e15)  # matmuls here are compute-bound

    def sample(n: int) -> Sample:
        a, b = np.ones((n, n), np.float32), np.ones((n, n), np.float32)
        latency = min(measure_latency(lambda: a @ b, runs=7, warmup=2))  # least disturbed run
        return Sample(f"matmul{n}", OpCounts(macs={"fp32": float(n) ** 3}), latency)

    with threadpool_limits(1):  # one BLAS thread: a busy second core skews a 2-thread matmul
        fit = [sample(n) for n in (512, 768, 1024)]
        check = [sample(896)]
    cal = calibrate_cpu(cpu, fit, check)
    assert cal.held_out and set(cal.errors_pct) == {"matmul896"}
    assert abs(cal.errors_pct["matmul896"]) < 60.0
    assert dense_ops(check[0].counts) == 2 * 896**3


def test_dispatch_overhead_is_per_op_and_per_call(profiles):
    p = profiles["rtx-4090"]
    counts = OpCounts(macs={"fp32": 1e6}, launches=500, elementwise_bytes=1e6)
    one, many = predict(counts, p), predict(counts, p, batch=64)
    assert one.dispatch_s == pytest.approx(500 * p.launch_overhead_s)
    assert many.dispatch_s == one.dispatch_s  # a batched call pays the launches once
    compute = 2e6 / p.peak_ops["fp32"]
    elem = 1e6 / p.memory_bandwidth
    assert one.latency_s == pytest.approx(one.dispatch_s + compute + elem)
    assert many.latency_s == pytest.approx(one.dispatch_s + 64 * (compute + elem))
    assert one.bound == "overhead"
    assert many.energy_per_inference_j == pytest.approx(many.energy_j / 64)


def test_weights_are_read_once_per_batched_call(profiles):
    p = dataclasses.replace(profiles["rtx-4090"], launch_overhead_s=0.0)
    counts = OpCounts(bytes_moved=1e9 + 1e6, weight_bytes=1e9)
    pred = predict(counts, p, batch=10)
    assert pred.memory_s == pytest.approx((1e9 + 10 * 1e6) / p.memory_bandwidth)
    with pytest.raises(ValueError, match="weight_bytes"):
        OpCounts(bytes_moved=1.0, weight_bytes=2.0)


def test_dense_devices_run_synapses_densely_neuromorphic_ones_by_event(profiles):
    counts = OpCounts(synops=1e6, synaptic_macs=1e7, timesteps=4)
    assert dense_ops(counts) == 2e7
    assert dense_ops(OpCounts(synops=1e6)) == 1e6  # no dense count: one add per synop
    loihi = predict(counts, profiles["loihi2"])
    assert loihi.energy_j == pytest.approx(
        predict(OpCounts(synops=1e6, timesteps=4), profiles["loihi2"]).energy_j
    )


def test_calibration_recovers_known_overhead_rate_and_bandwidth(tmp_path):
    from ganglion.device.sysfs_fixtures import write_host_cpu

    write_host_cpu(tmp_path)
    cpu = detect_cpu_profile(tmp_path)
    overhead, rate, bandwidth = 4e-6, 3e10, 6e9
    samples = []
    grid = [
        (n, m, e, b) for n in (60, 200) for m in (1e5, 1e6) for e in (1e4, 2e5) for b in (1, 16)
    ]
    for launches, macs, elem_bytes, batch in grid:
        counts = OpCounts(
            macs={"fp32": macs}, elementwise_bytes=elem_bytes, bytes_moved=1e3, launches=launches
        )
        _, ops, _, elem = dense_terms(counts, batch)
        latency = overhead * launches + ops / rate + elem / bandwidth
        samples.append(Sample(f"{launches}-{macs}-{elem_bytes}-{batch}", counts, latency, batch))
    cal = calibrate_cpu(cpu, samples)
    assert cal.overhead_s == pytest.approx(overhead, rel=1e-4)
    assert cal.effective_ops_per_s == pytest.approx(rate, rel=1e-4)
    assert cal.effective_bandwidth == pytest.approx(bandwidth, rel=1e-4)
    assert cal.kept == () and cal.mean_abs_error_pct < 1e-3
    assert cal.profile.memory_bandwidth == pytest.approx(bandwidth, rel=1e-4)
    assert not cal.profile.is_assumed("launch_overhead_s")


def test_calibration_keeps_a_figure_no_sample_exercises(tmp_path):
    from ganglion.device.sysfs_fixtures import write_host_cpu

    write_host_cpu(tmp_path)
    cpu = detect_cpu_profile(tmp_path)
    samples = [Sample(f"n{n}", OpCounts(macs={"fp32": n}), 1e-4 + 2 * n / 1e10) for n in (1e6, 1e8)]
    cal = calibrate_cpu(cpu, samples)
    assert cal.kept == ("memory_bandwidth",)
    assert cal.profile.memory_bandwidth == cpu.memory_bandwidth
    assert cal.profile.is_assumed("memory_bandwidth")


def test_devices_pay_fused_launches_where_the_counts_know_them(profiles):
    """GPUs (Triton scan) and CPUs (compiled loops) run each layer as one call; a count without
    fused launches pays every op it dispatches."""
    counts = OpCounts(macs={"fp32": 1e3}, launches=500.0, fused_launches=6.0)
    cpu, gpu = detect_cpu_profile("/"), profiles["rtx-4090"]
    assert predict(counts, cpu).dispatch_s == pytest.approx(6 * cpu.launch_overhead_s)
    assert predict(counts, gpu).dispatch_s == pytest.approx(6 * gpu.launch_overhead_s)
    unfused = OpCounts(macs={"fp32": 1e3}, launches=500.0)
    assert predict(unfused, cpu).dispatch_s == pytest.approx(500 * cpu.launch_overhead_s)

"""A node's device figures: its profile, the energy meter that runs while it serves, and the
``ganglion.v1.Telemetry`` message built from them and from the loaded models.

The meter is the first that works here (NVML, Jetson rails, RAPL: ``measured``), else the
profile's power limit over the wall clock (``simulated``); every energy figure says which.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from ganglion.device import EnergyMeter, SimulatedMeter, detect, get_profile, open_hardware_meter
from ganglion.runtime.serving.protos import control_pb2
from ganglion.runtime.serving.served_model import Measurement, ServedModel

NODE_VERSION = "ganglion-node 1"


class NodeTelemetry:
    """The device profile and a running meter; ``message`` snapshots everything."""

    def __init__(self, device: str = "auto", simulate: bool = False, root: str = "/") -> None:
        name = detect(root).profile_name if device == "auto" else device
        self.profile = get_profile(name, root=root)
        self.skipped: dict[str, str] = {}
        meter: EnergyMeter | None = None
        if not simulate:
            meter, self.skipped = open_hardware_meter(root)
        if meter is None:
            mode = self.profile.mode()
            meter = SimulatedMeter(mode.watts, f"{self.profile.name} {mode.name} power limit")
        self.meter = meter
        self.meter.start()
        self.started = time.monotonic()

    def message(self, models: Iterable[ServedModel], max_concurrency: int) -> control_pb2.Telemetry:
        """The Telemetry message now."""
        reading = self.meter.read()
        uptime = time.monotonic() - self.started
        mode = self.profile.mode()
        device = control_pb2.DeviceTelemetry(
            profile=self.profile.name,
            power_mode=mode.name,
            power_limit_w=mode.watts,
            meter_kind=reading.kind,
            meter_source=reading.source,
            energy_j=reading.joules,
            average_power_w=reading.joules / uptime if uptime > 0 else 0.0,
        )
        rows = [_model_message(m) for m in models]
        return control_pb2.Telemetry(
            node_version=NODE_VERSION,
            uptime_s=uptime,
            device=device,
            models=rows,
            queue_depth=sum(r.queue_depth for r in rows),
            max_concurrency=max_concurrency,
        )

    def close(self) -> None:
        """Stop the meter."""
        self.meter.stop()


def measurement_message(m: Measurement | None) -> control_pb2.Measurement | None:
    """The Measurement message of a warm-up run (None before one)."""
    if m is None:
        return None
    return control_pb2.Measurement(
        runs=m.runs,
        latency_p50_s=m.latency_p50_s,
        latency_p99_s=m.latency_p99_s,
        energy_per_inference_j=m.energy_per_inference_j,
        energy_kind=m.energy_kind,
        energy_source=m.energy_source,
    )


def _model_message(model: ServedModel) -> control_pb2.ModelTelemetry:
    p50, p99 = model.latency_percentiles()
    return control_pb2.ModelTelemetry(
        name=model.name,
        kind=model.kind,
        backend=model.backend,
        inferences=model.inferences,
        failures=model.failures,
        latency_p50_s=0.0 if math.isnan(p50) else p50,
        latency_p99_s=0.0 if math.isnan(p99) else p99,
        queue_depth=model.queue_depth,
        live_sequences=len(model.sequences),
        measurement=measurement_message(model.measurement),
    )

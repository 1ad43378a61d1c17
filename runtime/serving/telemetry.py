"""A node's device figures: its profile, the energy meter that runs while it serves, and the
``ganglion.v1.Telemetry`` message built from them and from the loaded models.

The meter is that of the chip the sessions run on (`choose_meter`: NVML for ``cuda[:N]``, RAPL
for ``cpu``, a Jetson's rails for either: ``measured``), and only where the device profile is
what runs the work here; else the profile's power limit over the wall clock (``simulated``, its
source saying why). Every energy figure says which.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from ganglion.device import choose_meter, detect, get_profile
from ganglion.runtime.serving.protos import control_pb2
from ganglion.runtime.serving.served_model import Measurement, ServedModel

NODE_VERSION = "ganglion-node 1"


class NodeTelemetry:
    """The device profile and a running meter; ``message`` snapshots everything."""

    def __init__(
        self,
        device: str = "auto",
        simulate: bool = False,
        root: str = "/",
        backend_device: str = "cpu",
    ) -> None:
        found = detect(root)
        self.profile = get_profile(found.profile_name if device == "auto" else device, root=root)
        self.mode = found.active_mode(self.profile)
        self.meter, self.skipped = choose_meter(
            self.profile, backend_device, found.profile_name, root, simulate, self.mode
        )
        self.meter.start()
        self.started = time.monotonic()

    def message(self, models: Iterable[ServedModel], max_concurrency: int) -> control_pb2.Telemetry:
        """The Telemetry message now."""
        reading = self.meter.read()
        uptime = time.monotonic() - self.started
        device = control_pb2.DeviceTelemetry(
            profile=self.profile.name,
            power_mode=self.mode.name,
            power_limit_w=self.mode.watts,
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

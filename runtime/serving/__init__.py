"""Serving: a node that answers KServe v2 gRPC inference (so Triton's clients work unchanged),
health checks and reflection, plus its own ``ganglion.v1`` control service (bundle upload,
telemetry); and the client the CLI and the coordinator use to call nodes.

It calls only the Session contract (``runtime.session``), bundles (``runtime.bundle``,
``runtime.bundle_archive``) and ``device/``. Modules, from the wire inwards:
- ``protos/``: ``ganglion_control.proto``, compiled in memory at import (no generated code);
- ``kserve_tensors``: KServe datatypes and tensors <-> numpy;
- ``sequences``: per-sequence state (Triton's ``sequence_id`` convention);
- ``served_model``: a loaded model, the thread it runs on, its latency and warm-up figures;
- ``repository``: known bundles and loaded models; ``upload``: receive, prove, install;
- ``signing``: model-signing signatures beside bundles; ``security``: TLS and tokens;
- ``telemetry``: device profile and meter; ``status``: failures -> gRPC status codes;
- ``inference_service``, ``control_service``, ``node``: the services and the server;
- ``client``: ``NodeClient`` (async; channel reuse, deadlines) for the CLI and coordinator.
"""

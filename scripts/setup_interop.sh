#!/usr/bin/env bash
# Create or refresh .venv-interop: the Python that runs the cluster interop test's foreign
# inference servers (tests/cluster/test_interop.py), kept apart from .venv because KServe's
# and tritonclient's generated protobuf modules clash in one process and KServe pulls in
# Kubernetes, pandas and FastAPI, which nothing else needs.
#   nvidia-pytriton 0.7.0: NVIDIA Triton Inference Server 2.51 with its Python binding
#   kserve 0.21.0:         KServe's ModelServer (gRPC KServe v2)
#   onnxruntime, numpy:    what the served expert (an ONNX graph) runs on
# INTEROP_VENV overrides the folder (default .venv-interop beside .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=${INTEROP_VENV:-.venv-interop}
"$VENV/bin/python" -c "" 2>/dev/null || "$PY" -m venv --clear "$VENV"  # missing or broken
VPIP="$VENV/bin/python -m pip"
$VPIP install -q --upgrade pip
$VPIP install -q "nvidia-pytriton==0.7.0" "kserve==0.21.0" "onnxruntime>=1.31" "numpy>=1.26,<2"

#!/usr/bin/env bash
# Create or refresh the project's .venv with everything Ganglion and its tests need.
# Lava (lava-nc 0.10.0) declares Python <3.11; it is installed alone with --no-deps
# after its pinned dependencies (see README, "Lava on Python 3.11").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
# a .venv whose Python no longer runs (its interpreter moved or was removed) is made again
.venv/bin/python -c "" 2>/dev/null || "$PY" -m venv --clear .venv
VPIP=".venv/bin/python -m pip"
$VPIP install -q --upgrade pip setuptools wheel
$VPIP install -q -e ".[dev,lava,kernels,events]"
$VPIP install -q --no-deps --ignore-requires-python "lava-nc==0.10.0"
$VPIP install -q --no-deps "tensorrt-stubs==10.13.0.35.1"

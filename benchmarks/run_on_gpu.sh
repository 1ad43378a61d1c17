#!/usr/bin/env bash
# One prepared run on a lent NVIDIA GPU (see README "Kernels"): the kernel and parity tests
# with the kernels compiled for the GPU, the real NVML meter, the kernel benchmarks (against
# the PyTorch references and fla) and the launch-shape sweep. Output goes to $OUT (default
# ./gpu-out), one file per stage, written as it runs.
#
# The GPU image's own python3 (with torch and triton) runs everything: ganglion's folders are
# linked in as the ganglion.* namespace, and wheels in .whl/ (fla-core, nir) are unpacked.
# Stage time limits (seconds) come from GPU_STAGE_LIMITS="tests gla scans tuning".
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
read -r T_TESTS T_GLA T_SCANS T_TUNING <<<"${GPU_STAGE_LIMITS:-150 150 150 120}"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/ganglion-site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/ganglion-site
fi
SRC=/tmp/ganglion-src
mkdir -p "$SRC/ganglion"
for folder in runtime models converters device kernels; do
    ln -sfn "$PWD/$folder" "$SRC/ganglion/$folder"
done
export PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}"

{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
    python3 -c "import sys, torch, triton; print(sys.version.split()[0], torch.__version__, triton.__version__)"
} 2>&1 | tee "$OUT/env.txt"

TRITON_INTERPRET=0 timeout "$T_TESTS" python3 -m pytest -q -p no:cacheprovider -rs \
    tests/kernels tests/parity tests/device/test_nvml_meter.py \
    --deselect tests/kernels/test_compile.py 2>&1 | tee "$OUT/tests.txt"
timeout "$T_GLA" python3 benchmarks/kernels.py --ops gla --profile-gla 2>&1 | tee "$OUT/kernels_gla.txt"
timeout "$T_SCANS" python3 benchmarks/kernels.py --ops lif,lif_fixed,wkv 2>&1 \
    | tee "$OUT/kernels_scans.txt"
timeout "$T_TUNING" python3 benchmarks/kernel_tuning.py 2>&1 | tee "$OUT/tuning.txt"

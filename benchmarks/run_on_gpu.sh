#!/usr/bin/env bash
# One prepared run on a lent NVIDIA GPU (see README "Kernels"): the kernel and parity tests
# with the kernels compiled for the GPU, the real NVML meter, the kernel benchmarks (against
# the PyTorch references and fla) and the launch-shape sweep. Output goes to $OUT (default
# ./gpu-out), one file per stage, written as it runs.
#
# Usage: bash benchmarks/run_on_gpu.sh [STAGE...]   stages, in the order given, from
#   tests gla scans tuning (default: all four, in that order).
# The GPU image's own python3 (with torch and triton) runs everything: ganglion's folders are
# linked in as the ganglion.* namespace, and wheels in .whl/ (fla-core, nir) are unpacked.
# Stage time limits (seconds) come from GPU_STAGE_LIMITS="tests gla scans tuning"; the ops of
# the scans and tuning stages from GPU_SCAN_OPS and GPU_TUNING_OPS.
set -u
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
read -r T_TESTS T_GLA T_SCANS T_TUNING <<<"${GPU_STAGE_LIMITS:-150 150 150 120}"
SCAN_OPS=${GPU_SCAN_OPS:-lif,lif_fixed,wkv}
TUNING_OPS=${GPU_TUNING_OPS:-lif,lif_fixed,wkv,gla}
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

stages=("$@")
[ $# -gt 0 ] || stages=(tests gla scans tuning)
for stage in "${stages[@]}"; do
    case $stage in
        tests)
            TRITON_INTERPRET=0 timeout "$T_TESTS" python3 -m pytest -q -p no:cacheprovider -rs \
                tests/kernels tests/parity tests/device/test_nvml_meter.py \
                --deselect tests/kernels/test_compile.py 2>&1 | tee "$OUT/tests.txt" ;;
        gla)
            timeout "$T_GLA" python3 benchmarks/kernels.py --ops gla --profile-gla 2>&1 \
                | tee "$OUT/kernels_gla.txt" ;;
        scans)
            timeout "$T_SCANS" python3 benchmarks/kernels.py --ops "$SCAN_OPS" 2>&1 \
                | tee "$OUT/kernels_scans.txt" ;;
        tuning)
            timeout "$T_TUNING" python3 benchmarks/kernel_tuning.py --ops "$TUNING_OPS" 2>&1 \
                | tee "$OUT/tuning.txt" ;;
        *) echo "unknown stage $stage (expected tests, gla, scans or tuning)" >&2; exit 2 ;;
    esac
done

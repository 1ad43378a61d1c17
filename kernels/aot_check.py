"""Compile every Triton kernel ahead of time for a GPU architecture, with no GPU present.

The interpreter checks what a kernel computes but accepts programs that Triton's real compiler
rejects. This runs Triton's own compiler (TTIR → TTGIR → PTX → cubin through its bundled
``ptxas``) on each kernel, specialized as a real launch would be (16-byte aligned pointers), so
a kernel that would not build on a Jetson Orin (``sm_87``) or an H100/H200 (``sm_90``) fails
here first.

Usage: ``TRITON_INTERPRET=0 python -m ganglion.kernels.aot_check sm_87 [sm_90 ...]``; prints a
JSON line per kernel and exits 1 if any failed.
"""

import json
import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ganglion.kernels.gla import triton as gla
from ganglion.kernels.lif import triton as lif
from ganglion.kernels.wkv import triton as wkv
from ganglion.kernels.wkv import triton_chunk as wkv_chunk

ALIGNED_INTS = {"M", "C", "K", "V"}  # strides and head dims a real launch sees as multiples of 16

# name: (kernel, pointer types (others fp32), constexprs, compile options)
KERNELS = {
    "lif-fp16": (
        lif._lif_scan_kernel, {"current_ptr": "*fp16", "spikes_ptr": "*fp16"},
        {"RESET_ZERO": False, "BLOCK": 1024, "DEPTH": lif.DEPTH}, {"enable_fp_fusion": False},
    ),
    "lif-fixed": (
        lif._lif_fixed_scan_kernel, {p: "*i32" for p in lif._lif_fixed_scan_kernel.arg_names},
        {"UV_LIMIT": 2**23, "BLOCK": 256, "DEPTH": lif.FIXED_DEPTH}, {},
    ),
    "wkv-fp32": (
        wkv._wkv_scan_kernel, {},
        {"BLOCK_C": 128, "DEPTH": wkv.DEPTH}, {},
    ),
    # CHUNK 4 rather than the default 16: the same code, unrolled less (16 costs ~7 s per arch)
    "wkv-chunk-fp32": (
        wkv_chunk._wkv_chunk_kernel, {},
        {"BLOCK_C": 32, "CHUNK": 4, "GROUPS": wkv_chunk.GROUPS}, {"num_warps": 2},
    ),
    "wkv-segment-fp32": (
        wkv_chunk._wkv_segment_kernel, {},
        {"BLOCK_C": 32, "CHUNK": 4, "GROUPS": wkv_chunk.GROUPS}, {"num_warps": 2},
    ),
    "gla-cumsum": (gla._chunk_cumsum_kernel, {"g_ptr": "*bf16"}, {"BT": 64, "BK": 64}, {}),
    "gla-state": (
        gla._chunk_state_kernel, {"k_ptr": "*bf16", "v_ptr": "*bf16"},
        {"BT": 64, "BK": 64, "BV": 64, "USE_INITIAL": True, "STORE_FINAL": True,
         "SEGMENTED": False, "DOT_PRECISION": "tf32"}, {},
    ),
    "gla-state-segmented": (
        gla._chunk_state_kernel, {"k_ptr": "*bf16", "v_ptr": "*bf16"},
        {"BT": 64, "BK": 64, "BV": 32, "USE_INITIAL": True, "STORE_FINAL": False,
         "SEGMENTED": True, "DOT_PRECISION": "tf32"}, {},
    ),
    "gla-carry": (
        gla._segment_carry_kernel, {}, {"BK": 64, "BV": 64, "STORE_FINAL": True}, {},
    ),
    "gla-intra": (
        gla._chunk_intra_kernel, {"q_ptr": "*bf16", "k_ptr": "*bf16", "a_ptr": "*bf16"},
        {"BT": 64, "BC": gla.SUB_CHUNK, "BK": 64, "DOT_PRECISION": "ieee"},
        {"num_stages": 1, "num_warps": 8},
    ),
    "gla-output": (
        gla._chunk_output_kernel,
        {"q_ptr": "*bf16", "v_ptr": "*bf16", "a_ptr": "*bf16", "o_ptr": "*bf16"},
        {"BT": 64, "BK": 64, "BV": 64, "SEGMENTED": True, "DOT_PRECISION": "tf32"},
        {"num_stages": 1},
    ),
    "gla-recurrent": (
        gla._fused_recurrent_kernel,
        {p: "*bf16" for p in ("q_ptr", "k_ptr", "v_ptr", "g_ptr", "o_ptr")},
        {"BK": 64, "BV": 64, "USE_INITIAL": True, "STORE_FINAL": True}, {},
    ),
}  # fmt: skip


def kernel_source(fn, pointers: dict[str, str], constexprs: dict) -> ASTSource:
    """The kernel with a launch-like signature: ``*_ptr`` args typed and 16-byte aligned."""
    signature, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = pointers.get(name, "*fp32")
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "fp32" if name == "scale" else "i32"
            if name in ALIGNED_INTS:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return ASTSource(fn, signature, constexprs=constexprs, attrs=attrs)


def compile_kernel(name: str, arch: int) -> dict:
    """Compile one kernel of ``KERNELS`` for ``sm_<arch>``; the result as a JSON-able row."""
    fn, pointers, constexprs, options = KERNELS[name]
    row: dict = {"kernel": name, "arch": f"sm_{arch}"}
    try:
        compiled = triton.compile(
            kernel_source(fn, pointers, constexprs),
            target=GPUTarget("cuda", arch, 32),
            options=options,
        )
    except Exception as err:  # noqa: BLE001 - every compiler error is reported, not raised
        return row | {"ok": False, "error": f"{type(err).__name__}: {err}"[:2000]}
    ptx_target = f".target sm_{arch}" in compiled.asm["ptx"]
    return row | {
        "ok": ptx_target and len(compiled.asm["cubin"]) > 0,
        "shared": compiled.metadata.shared,
    }


def parse_arch(text: str) -> int:
    """``"sm_87"`` -> 87; a ``ValueError`` naming the expected form otherwise."""
    number = text.removeprefix("sm_")
    if not (text.startswith("sm_") and number.isdigit()):
        raise ValueError(f"expected a CUDA architecture like sm_87 or sm_90, got {text!r}")
    return int(number)


def main(argv: list[str]) -> int:
    """Compile every kernel for each architecture named in ``argv`` (default ``sm_90``)."""
    try:
        archs = [parse_arch(a) for a in argv or ["sm_90"]]
    except ValueError as err:
        print(f"aot_check: {err}", file=sys.stderr)
        return 2
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("aot_check: set TRITON_INTERPRET=0 (interpreted kernels cannot be compiled)",
              file=sys.stderr)  # fmt: skip
        return 2
    rows = [compile_kernel(name, arch) for arch in archs for name in KERNELS]
    for row in rows:
        print(json.dumps(row))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``fma32``: a fused multiply-add on fp32 inside numba-compiled loops (LLVM's ``llvm.fma``).

The CPU loops that reproduce a library kernel's bits (``kernels.conv``: oneDNN's convolution,
``kernels.linear``: MKL's matrix product) need the one rounding of the instruction those
kernels use, not ``a * b + c`` rounded twice.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def fma32(typingctx, a, b, c):  # noqa: ANN001, ANN202, ARG001
    """``a * b + c`` rounded once (LLVM's ``llvm.fma`` on fp32)."""
    signature = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202, ARG001
        f32 = ir.FloatType()
        fma = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32] * 3))
        return builder.call(fma, args)

    return signature, codegen

"""Explicit fp32 vectors inside numba-compiled loops: ``LANES`` floats held in one register value.

LLVM's auto-vectorizer keeps an accumulator in memory when a loop adds several rows into it
(each row's pass loads and stores it again); with a vector value the accumulator stays in
registers across the rows. ``vload``/``vstore`` move ``LANES`` consecutive floats of a
C-contiguous fp32 array from/to a flat element index (unchecked: the caller keeps the index in
bounds), ``vfma`` is LLVM's ``llvm.fma`` on every lane (one rounding, as ``kernels.fma.fma32``
per float), so a loop written with them computes each float exactly as the scalar loop does.
LLVM lowers the vectors to whatever the machine has (AVX-512/AVX2 registers, or NEON pairs on
an ARM board).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

LANES = 8  # floats per vector: one AVX2 register, two NEON registers


class Float32Vector(types.Type):
    """The numba type of a vector of ``LANES`` fp32 values."""

    def __init__(self) -> None:
        super().__init__(name=f"float32x{LANES}")


float32_vector = Float32Vector()
_VECTOR = ir.VectorType(ir.FloatType(), LANES)


@register_model(Float32Vector)
class _Float32VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type) -> None:  # noqa: ANN001
        super().__init__(dmm, fe_type, _VECTOR)


def _vector_pointer(context, builder, array_type, array, index):  # noqa: ANN001, ANN202
    """A pointer to ``LANES`` floats of ``array`` from flat element ``index``."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), _VECTOR.as_pointer())


def _float32_c_array(array) -> bool:  # noqa: ANN001
    return isinstance(array, types.Array) and array.dtype == types.float32 and array.layout == "C"


@intrinsic
def vload(typingctx, array, index):  # noqa: ANN001, ANN201, ARG001
    """``array.flat[index : index + LANES]`` as one vector (C-contiguous fp32 ``array``)."""
    if not (_float32_c_array(array) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        return builder.load(_vector_pointer(context, builder, sig.args[0], *args), align=4)

    return float32_vector(array, index), codegen


@intrinsic
def vstore(typingctx, array, index, vector):  # noqa: ANN001, ANN201, ARG001
    """``array.flat[index : index + LANES] = vector`` (C-contiguous fp32 ``array``)."""
    if not (_float32_c_array(array) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        pointer = _vector_pointer(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], pointer, align=4)
        return context.get_dummy_value()

    return types.none(array, index, float32_vector), codegen


@intrinsic
def vfma(typingctx, scalar, vector, acc):  # noqa: ANN001, ANN201, ARG001
    """``scalar * vector + acc`` on every lane, rounded once (``llvm.fma``)."""

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        undefined = ir.Constant(_VECTOR, ir.Undefined)
        one = builder.insert_element(undefined, args[0], ir.Constant(ir.IntType(32), 0))
        lanes = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
        splat = builder.shuffle_vector(one, undefined, lanes)
        fnty = ir.FunctionType(_VECTOR, [_VECTOR] * 3)
        fma = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fma.v{LANES}f32")
        return builder.call(fma, [splat, args[1], args[2]])

    return float32_vector(types.float32, float32_vector, float32_vector), codegen

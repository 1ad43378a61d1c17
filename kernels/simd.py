"""Explicit fp32 vectors inside numba-compiled loops: ``LANES`` floats held in one register value.

LLVM's auto-vectorizer keeps an accumulator in memory when a loop adds several rows into it
(each row's pass loads and stores it again); with a vector value the accumulator stays in
registers across the rows. ``vload``/``vstore`` move ``LANES`` consecutive floats of a
C-contiguous fp32 array from/to a flat element index and ``sload`` reads one float (unchecked:
the caller keeps the index in bounds; numba's own indexing tests every index for a negative
one), ``vfma`` is LLVM's ``llvm.fma`` on every lane (one rounding, as ``kernels.fma.fma32``
per float), ``vadd``/``vscale`` add two vectors and multiply one by a float lane by lane,
``vsplat`` holds one float in every lane, ``vzip_*`` interleave two vectors' lanes (a
transpose's steps), and ``vpair_sums`` adds adjacent pairs of the ``2·LANES`` floats of two
vectors: every lane rounds as the scalar operation does, so a loop
written with them computes each float exactly as the scalar loop does.
LLVM lowers the vectors to whatever the machine has (AVX-512/AVX2 registers, or NEON pairs on
an ARM board).
"""

from __future__ import annotations

from collections.abc import Callable

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


def _float32_c_array(array, writable: bool = False) -> bool:  # noqa: ANN001
    return (
        isinstance(array, types.Array)
        and array.dtype == types.float32
        and array.layout == "C"
        and (array.mutable or not writable)
    )


def _splat(builder, scalar):  # noqa: ANN001, ANN202
    """A vector holding ``scalar`` in every lane."""
    undefined = ir.Constant(_VECTOR, ir.Undefined)
    one = builder.insert_element(undefined, scalar, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, undefined, _lanes([0] * LANES))


def _lanes(indices: list[int]) -> ir.Constant:
    return ir.Constant(ir.VectorType(ir.IntType(32), LANES), indices)


@intrinsic
def vload(typingctx, array, index):  # noqa: ANN001, ANN201, ARG001
    """``array.flat[index : index + LANES]`` as one vector (C-contiguous fp32 ``array``)."""
    if not (_float32_c_array(array) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        return builder.load(_vector_pointer(context, builder, sig.args[0], *args), align=4)

    return float32_vector(array, index), codegen


@intrinsic
def sload(typingctx, array, index):  # noqa: ANN001, ANN201, ARG001
    """``array.flat[index]`` (C-contiguous fp32 ``array``), unchecked as ``vload``."""
    if not (_float32_c_array(array) and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        return builder.load(builder.gep(data, [args[1]]), align=4)

    return types.float32(array, index), codegen


@intrinsic
def vstore(typingctx, array, index, vector):  # noqa: ANN001, ANN201, ARG001
    """``array.flat[index : index + LANES] = vector`` (C-contiguous, writable fp32 ``array``)."""
    if not (_float32_c_array(array, writable=True) and isinstance(index, types.Integer)):
        return None
    if vector != float32_vector:
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        pointer = _vector_pointer(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], pointer, align=4)
        return context.get_dummy_value()

    return types.none(array, index, float32_vector), codegen


@intrinsic
def vfma(typingctx, scalar, vector, acc):  # noqa: ANN001, ANN201, ARG001
    """``scalar * vector + acc`` on every lane, rounded once (``llvm.fma``); ``scalar`` a
    float32 (another type is refused, not rounded)."""
    if scalar != types.float32 or vector != float32_vector or acc != float32_vector:
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        fnty = ir.FunctionType(_VECTOR, [_VECTOR] * 3)
        fma = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fma.v{LANES}f32")
        return builder.call(fma, [_splat(builder, args[0]), args[1], args[2]])

    return float32_vector(types.float32, float32_vector, float32_vector), codegen


@intrinsic
def vsplat(typingctx, scalar):  # noqa: ANN001, ANN201, ARG001
    """A vector holding ``scalar`` (a float32) in every lane."""
    if scalar != types.float32:
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        return _splat(builder, args[0])

    return float32_vector(types.float32), codegen


def _binary(name: str, build: Callable[..., ir.Value], doc: str):  # noqa: ANN202
    """The intrinsic ``name`` of two vectors -> a vector: ``build(builder, a, b)``'s IR."""

    def typer(typingctx, a, b):  # noqa: ANN001, ANN202, ARG001
        if a != float32_vector or b != float32_vector:
            return None

        def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
            return build(builder, *args)

        return float32_vector(float32_vector, float32_vector), codegen

    typer.__name__ = typer.__qualname__ = name
    typer.__doc__ = doc
    return intrinsic(typer)


def _shuffle(name: str, lanes: list[int], doc: str):  # noqa: ANN202
    """The intrinsic ``name``: lanes ``lanes`` of ``a`` then ``b`` (indices 0..2·LANES-1)."""
    return _binary(name, lambda builder, a, b: builder.shuffle_vector(a, b, _lanes(lanes)), doc)


def _pair_sums(builder, a, b):  # noqa: ANN001, ANN202
    """IR of ``vpair_sums``: the even lanes of ``a`` then ``b`` plus their odd lanes."""
    even = builder.shuffle_vector(a, b, _lanes(list(range(0, 2 * LANES, 2))))
    odd = builder.shuffle_vector(a, b, _lanes(list(range(1, 2 * LANES, 2))))
    return builder.fadd(even, odd)


vadd = _binary("vadd", lambda builder, a, b: builder.fadd(a, b), "``a + b`` lane by lane.")
vsub = _binary("vsub", lambda builder, a, b: builder.fsub(a, b), "``a - b`` lane by lane.")
vmul = _binary("vmul", lambda builder, a, b: builder.fmul(a, b), "``a * b`` lane by lane.")
vgreater = _binary(
    "vgreater",
    lambda builder, a, b: builder.uitofp(builder.fcmp_ordered(">", a, b), _VECTOR),
    "1.0 in the lanes where ``a > b`` (ordered: never for a NaN), 0.0 in the others.",
)
vpair_sums = _binary(
    "vpair_sums",
    _pair_sums,
    "The sums of the adjacent pairs of the ``2·LANES`` lanes of ``a`` then ``b``: lane ``l``"
    " holds lanes ``2l`` and ``2l + 1`` of the two, one after the other, added.",
)

_HALF = LANES // 2
vzip_low = _shuffle(
    "vzip_low",
    [i // 2 + (i % 2) * LANES for i in range(LANES)],
    "The first halves of ``a`` and ``b`` interleaved lane by lane: a0 b0 a1 b1 ...",
)
vzip_high = _shuffle(
    "vzip_high",
    [_HALF + i // 2 + (i % 2) * LANES for i in range(LANES)],
    "The second halves of ``a`` and ``b`` interleaved lane by lane.",
)
vzip_pairs_low = _shuffle(
    "vzip_pairs_low",
    [(i // 4) * 2 + i % 2 + (i // 2) % 2 * LANES for i in range(LANES)],
    "The first halves of ``a`` and ``b`` interleaved two lanes at a time: a0 a1 b0 b1 a2 ...",
)
vzip_pairs_high = _shuffle(
    "vzip_pairs_high",
    [_HALF + (i // 4) * 2 + i % 2 + (i // 2) % 2 * LANES for i in range(LANES)],
    "The second halves of ``a`` and ``b`` interleaved two lanes at a time.",
)


@intrinsic
def vwhere(typingctx, flags, a, b):  # noqa: ANN001, ANN201, ARG001
    """``a`` in the lanes where ``flags`` is not zero, ``b`` in the others."""
    if flags != float32_vector or a != float32_vector or b != float32_vector:
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        zero = ir.Constant(_VECTOR, [0.0] * LANES)
        return builder.select(builder.fcmp_unordered("!=", args[0], zero), args[1], args[2])

    return float32_vector(float32_vector, float32_vector, float32_vector), codegen


@intrinsic
def vscale(typingctx, vector, scalar):  # noqa: ANN001, ANN201, ARG001
    """``vector * scalar`` lane by lane (``scalar`` a float32)."""
    if vector != float32_vector or scalar != types.float32:
        return None

    def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
        return builder.fmul(args[0], _splat(builder, args[1]))

    return float32_vector(float32_vector, types.float32), codegen

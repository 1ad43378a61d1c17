"""Named tensors against a manifest: the checks every Session applies to what it is given.

A wrong name, dtype or shape (an empty batch or time axis among them) is a ``ShapeError``
naming the tensor with expected vs got; a float input holding NaN or infinity is refused with
the first offending index (unless the session allows non-finite values). Numeric inputs are
cast within safe families: any number or bool to a float tensor, integers to an integer tensor
(within its range); a float given for an integer tensor (token ids, say) is refused rather
than truncated.

A state's check depends on its names, shapes and the batch size alone, so ``StateCheck``
remembers the last signature it accepted: the state a step returned, passed back to the next
step, costs a comparison instead of the walk, and any other state is checked in full.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from ganglion.models.errors import ShapeError, first_line
from ganglion.models.manifest import TensorSpec
from ganglion.runtime.kinds import BATCH, TIME

State = dict[str, np.ndarray]
MAX_BATCH = 1 << 20  # samples in one call or state: more is refused before anything is allocated
MAX_STATE_BYTES = 16 << 30  # a fresh state (init_state) larger than this is refused
STEP_COUNTER = "t"  # the state every stepped kind counts its steps in (never negative)
FINITE_BY_MASK_MAX = 2**22  # elements: up to here a boolean mask is the fastest finite check


@functools.cache
def _dtype(name: str) -> np.dtype:
    return np.dtype(name)


def tensor_bytes(shape: Sequence[int], dtype: str | np.dtype) -> int:
    """Bytes of a dense tensor of ``shape`` and ``dtype`` (bool: one byte per element)."""
    return math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize


def shape_text(shape: Sequence[int], batched: bool = True) -> str:
    """``[batch, T, 64]`` for an expected shape: the first -1 (BATCH) is the batch axis, a
    later -1 a dimension of any length, TIME the time axis; without ``batched`` every -1 is a
    dimension of any length (a state whose first axis is not the batch, a KV cache's)."""
    words, seen_batch = [], not batched
    for d in shape:
        if d == BATCH:
            words.append("any" if seen_batch else "batch")
            seen_batch = True
        else:
            words.append("T" if d == TIME else str(d))
    return "[" + ", ".join(words) + "]"


def _as_array(what: str, value: object) -> np.ndarray:
    """``np.asarray(value)``; ShapeError naming ``what`` when it is not one (a ragged nested
    list, a tensor that needs grad or has no numpy dtype)."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ShapeError(f"{what} is not an array of numbers: {first_line(exc)}") from exc


def declared_state(specs: list[TensorSpec], state: Mapping[str, object]) -> State:
    """A checked ``state`` (``check_state``) with each tensor in its declared dtype (cast within
    its family, as inputs are): every backend then sees the same arrays. The arrays a session
    handed out pass as they are."""
    return {s.name: _cast(s.name, state[s.name], s.dtype, "state") for s in specs}


def _dtype_problem(got: np.dtype, dtype: str) -> str | None:
    """Why values of dtype ``got`` may not become ``dtype``, or None: numbers only, within safe
    families (any number to a float, integers to an integer, bool to bool)."""
    want = np.dtype(dtype)
    if got.kind not in "fiub":
        return f"must be a numeric {dtype} array, got {got}"
    ok = (
        (want.kind == "f" and got.kind in "fiub")
        or (want.kind in "iu" and got.kind in "iu")
        or (want.kind == "b" and got.kind == "b")
    )
    return None if ok else f"must be {dtype}, got {got}"


def _cast(name: str, value: object, dtype: str, what: str = "input") -> np.ndarray:
    if type(value) is np.ndarray and value.dtype == _dtype(dtype):
        return value  # the common case: already the declared dtype
    array = _as_array(f"{what} {name!r}", value)
    got = array.dtype
    if got == dtype:
        return array
    want = np.dtype(dtype)
    if (problem := _dtype_problem(got, dtype)) is not None:
        raise ShapeError(f"{what} {name!r} {problem}")
    if want.kind in "iu" and array.size:
        info = np.iinfo(want)
        low, high = int(array.min()), int(array.max())
        if low < info.min or high > info.max:
            raise ShapeError(f"{what} {name!r} ({got}) has values {low}..{high} outside {dtype}")
    if want.kind == "f" and got.kind == "f" and got.itemsize > want.itemsize and array.size:
        magnitude = np.abs(array)
        peak = float(magnitude.max(initial=0.0, where=np.isfinite(magnitude)))
        if peak > np.finfo(want).max:  # NaN and infinity: check_finite names them
            raise ShapeError(
                f"{what} {name!r} ({got}) has values of magnitude {peak:g}, beyond {dtype}'s "
                f"range (largest {np.finfo(want).max:g})"
            )
    with np.errstate(over="ignore"):  # only an infinity can overflow now: check_finite names it
        return array.astype(want)


def check_finite(name: str, array: np.ndarray, what: str = "input") -> None:
    """ShapeError naming the first NaN or infinity in a float array (``what``: "input" or
    "state", the kind of tensor the message names)."""
    if array.dtype.kind != "f" or not array.size:
        return
    if array.size <= FINITE_BY_MASK_MAX:
        finite = bool(np.isfinite(array).all())
    else:  # no mask as large as the input: a finite sum has only finite terms
        with np.errstate(over="ignore", invalid="ignore"):
            finite = bool(np.isfinite(np.add.reduce(array, axis=None)))
    if finite:
        return
    mask = np.isfinite(array)
    if mask.all():
        return  # the sum overflowed; every term is finite
    index = np.unravel_index(int(np.argmin(mask)), array.shape)
    raise ShapeError(
        f"{what} {name!r} holds {array[index]} at index {tuple(int(i) for i in index)} "
        "(non-finite values are refused; allow them explicitly to pass them through)"
    )


def check_batch_bound(batch: int | None, limit: int | None) -> None:
    """ShapeError when ``batch`` exceeds ``limit``, a manifest's ``max_batch`` (the bound the
    program's network was exported with: torch would refuse it, so every backend does)."""
    if batch is not None and limit is not None and batch > limit:
        raise ShapeError(
            f"a batch of {batch} is more than this program takes ({limit}: the bound its "
            "network was exported with)"
        )


def check_range(name: str, array: np.ndarray, low: int, high: int) -> None:
    """ShapeError naming the first value of integer input ``name`` outside [low, high] (the
    manifest's ``value_ranges``: an embedding's rows)."""
    if not array.size or (int(array.min()) >= low and int(array.max()) <= high):
        return
    index = np.unravel_index(int(np.argmax((array < low) | (array > high))), array.shape)
    raise ShapeError(
        f"input {name!r} holds {int(array[index])} at index {tuple(int(i) for i in index)}; "
        f"it takes integers in [{low}, {high}] (the rows of the table it indexes)"
    )


def check_bounds(
    inputs: Mapping[str, np.ndarray],
    batch: int | None,
    max_batch: int | None,
    value_ranges: Mapping[str, Sequence[int]],
) -> None:
    """ShapeError where checked ``inputs`` (of ``batch`` samples) exceed a manifest's
    ``max_batch`` or hold an integer outside its ``value_ranges``."""
    check_batch_bound(batch, max_batch)
    for name, (low, high) in value_ranges.items():
        check_range(name, inputs[name], low, high)


def check_inputs(
    specs: list[TensorSpec],
    expected: dict[str, list[int]],
    inputs: Mapping[str, object],
    allow_nonfinite: bool = False,
) -> dict[str, np.ndarray]:
    """``inputs`` as contiguous arrays of the declared dtypes, checked against ``expected``
    shapes (BATCH must be the same size in every input; TIME and -1 take any size; neither
    BATCH nor TIME may be empty)."""
    if len(inputs) != len(specs) or any(s.name not in inputs for s in specs):
        names = [s.name for s in specs]
        unknown = sorted(set(inputs) - set(names), key=repr)
        if unknown:
            raise ShapeError(f"unknown input {unknown[0]!r}; the program takes {', '.join(names)}")
        missing = next(n for n in names if n not in inputs)
        raise ShapeError(f"missing input {missing!r}; the program takes {', '.join(names)}")
    checked: dict[str, np.ndarray] = {}
    batch: tuple[str, int] | None = None
    for spec in specs:
        want = expected[spec.name]
        raw = _as_array(f"input {spec.name!r}", inputs[spec.name])  # no copy of an array
        if BATCH in want and raw.ndim == len(want) and raw.shape[want.index(BATCH)] > MAX_BATCH:
            raise ShapeError(
                f"input {spec.name!r} has a batch of {raw.shape[want.index(BATCH)]}, more than "
                f"the {MAX_BATCH} one call takes"
            )
        array = _cast(spec.name, raw, spec.dtype)
        fits = array.ndim == len(want) and all(
            w in (BATCH, TIME, -1) or w == g for w, g in zip(want, array.shape, strict=False)
        )
        if not fits:
            raise ShapeError(
                f"input {spec.name!r} must be {shape_text(want)}, got {list(array.shape)}"
            )
        if 0 in array.shape:
            _check_axes_filled(spec.name, want, array.shape)
        if BATCH in want:
            size = array.shape[want.index(BATCH)]
            if batch is not None and batch[1] != size:
                raise ShapeError(
                    f"inputs {batch[0]!r} and {spec.name!r} disagree on the batch size "
                    f"({batch[1]} vs {size})"
                )
            batch = (spec.name, size)
        if not allow_nonfinite:
            check_finite(spec.name, array)
        checked[spec.name] = array if array.flags.c_contiguous else np.ascontiguousarray(array)
    return checked


def _check_axes_filled(name: str, want: list[int], shape: tuple[int, ...]) -> None:
    """ShapeError when the batch or time axis of an input is empty (nothing to run)."""
    for axis, what in ((BATCH, "batch axis (send at least one sample)"), (TIME, "time axis")):
        if axis in want and shape[want.index(axis)] == 0:
            raise ShapeError(f"input {name!r} of shape {list(shape)} has an empty {what}")


def check_state(specs: list[TensorSpec], state: Mapping[str, object], batch: int | None) -> None:
    """ShapeError unless ``state`` has exactly the declared tensors with fitting shapes (and
    ``batch`` samples on batched tensors, when given), each of its dtype's family (no float
    for an integer tensor, nothing complex), and the step counter ``t`` not negative."""
    if not isinstance(state, Mapping):
        kind = type(state).__name__
        raise ShapeError(f"state must be a dict of named arrays (init_state gives one), got {kind}")
    if len(state) != len(specs) or any(s.name not in state for s in specs):
        names = [s.name for s in specs]
        missing = sorted(set(names) - set(state))
        extra = sorted(set(state) - set(names), key=repr)
        what = f"lacks {missing[0]!r}" if missing else f"has unknown {extra[0]!r}"
        raise ShapeError(f"state {what}; expected {', '.join(names) or 'no tensors'}")
    for spec in specs:
        value = state[spec.name]
        array = value if type(value) is np.ndarray else _as_array(f"state {spec.name!r}", value)
        shape = array.shape
        want = spec.shape
        if batch is not None and spec.batched:
            want = [batch, *want[1:]]
        fits = len(shape) == len(want) and all(
            w == -1 or w == g for w, g in zip(want, shape, strict=True)
        )
        if not fits:
            text = shape_text(want, spec.batched and want[0] == -1)  # else the batch is a number
            raise ShapeError(f"state {spec.name!r} must be {text}, got {list(shape)}")
        if (problem := _dtype_problem(array.dtype, spec.dtype)) is not None:
            raise ShapeError(f"state {spec.name!r} {problem}")
        if spec.name == STEP_COUNTER:
            _check_counter(array)


def _check_counter(counter: object) -> None:
    """ShapeError when the step counter (an integer array, checked) holds a negative value."""
    array = np.asarray(counter)
    if array.size and int(array.min()) < 0:
        raise ShapeError(f"state {STEP_COUNTER!r} counts steps: it must be >= 0, got {array}")


class StateCheck:
    """A session's check of the states it is given: ``check_state`` (skipped for a state whose
    names, shapes and batch size equal the last ones it accepted: the check depends on nothing
    else) and finite values, skipped for the arrays the session itself handed out last
    (``issued``): a state passed back from ``step`` costs an identity test per tensor, one made
    or replaced by the caller is checked. An issued array edited in place is not re-checked."""

    def __init__(self, specs: list[TensorSpec]) -> None:
        self.specs = specs
        self._accepted: tuple | None = None
        self._issued: dict[str, object] = {}

    def __call__(
        self, state: Mapping[str, object], batch: int | None, allow_nonfinite: bool = False
    ) -> None:
        """ShapeError as ``check_state``, or naming a state tensor's first NaN or infinity
        (unless ``allow_nonfinite``)."""
        signature = _signature(state, batch)
        if signature is None or signature != self._accepted:
            check_state(self.specs, state, batch)
            self._accepted = signature
        elif STEP_COUNTER in state and state[STEP_COUNTER] is not self._issued.get(STEP_COUNTER):
            _check_counter(state[STEP_COUNTER])  # a counter of the caller's: its value
        if allow_nonfinite:
            return
        for name, value in state.items():
            if value is not self._issued.get(name):
                check_finite(name, np.asarray(value), "state")

    def issued(self, state: Mapping[str, object]) -> None:
        """Note the state the session hands out (``init_state``, ``step``, ``prefill``)."""
        self._issued = dict(state)


def _signature(state: Mapping[str, object], batch: int | None) -> tuple | None:
    """(batch, (name, shape, dtype), ...) in the state's order, or None when a value is not an
    array (or the state not a dict)."""
    if not isinstance(state, Mapping):
        return None
    pairs = [(k, v.shape, v.dtype) for k, v in state.items() if type(v) is np.ndarray]
    return (batch, *pairs) if len(pairs) == len(state) else None


def batched_state(
    specs: list[TensorSpec], per_sample: Mapping[str, np.ndarray], batch: int
) -> State:
    """A state for ``batch`` samples from per-sample values (batched specs get axis 0)."""
    return {
        s.name: (
            np.broadcast_to(per_sample[s.name][None], (batch, *per_sample[s.name].shape)).copy()
            if s.batched
            else np.array(per_sample[s.name])
        )
        for s in specs
    }

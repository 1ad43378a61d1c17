"""JSON that strict parsers accept: non-finite floats become ``null`` with a reason.

Python's `json.dumps` writes ``NaN`` and ``Infinity``, which are not JSON; other tools (``jq``,
JavaScript's ``JSON.parse``, Go, Rust) reject the whole document. `dumps_strict` replaces each
non-finite float by ``null``, lists where and what it was under the key ``non_finite`` (a dotted
path → reason), and writes with ``allow_nan=False`` so nothing non-finite can slip through.
"""

from __future__ import annotations

import json
import math
from typing import Any

NON_FINITE_KEY = "non_finite"


def finite_or_null(data: Any, path: str = "") -> tuple[Any, dict[str, str]]:
    """``data`` with every non-finite float replaced by ``None``, and for each replaced one its
    dotted path (``profiles.x.peak_ops.fp32``) → the reason (``was nan, not a finite number``)."""
    reasons: dict[str, str] = {}

    def clean(value: Any, where: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            reasons[where or "."] = f"was {value!r}, not a finite number"
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    return clean(data, path), reasons


def dumps_strict(data: dict[str, Any]) -> str:
    """``data`` as strict JSON; non-finite floats become ``null``, explained under
    ``non_finite`` (only present when something was replaced)."""
    cleaned, reasons = finite_or_null(data)
    if reasons:
        cleaned[NON_FINITE_KEY] = reasons
    return json.dumps(cleaned, allow_nan=False)

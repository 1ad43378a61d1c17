"""``KEY=VALUE`` command-line values (``--placement EXPERT=DEVICE``, ``--input NAME=FILE``...)."""

from __future__ import annotations

from ganglion.models.errors import GanglionError


def option_pairs(
    items: list[str], option: str, form: str, error: type[Exception] = GanglionError
) -> dict[str, str]:
    """``items`` as a dict; ``error`` with one line naming ``option`` when an item is not
    ``form`` (KEY=VALUE, both non-empty) or a key repeats."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key or not value:
            raise error(f"{option} {item!r}: give {form}")
        if key in pairs:
            raise error(f"{option} names {key!r} twice")
        pairs[key] = value
    return pairs

"""Text read from files, shown on the terminal as it is: ``plain`` for every command that
prints a name, a label or a path a file gave it."""

from __future__ import annotations

import re

from rich.text import Text

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain(value: object) -> Text:
    """``value`` as plain text for the terminal (a table cell, a title, a line): markup is not
    parsed, control characters are replaced (text from a file cannot restyle or move it)."""
    return Text(_CONTROL.sub("\ufffd", str(value)))

"""Text read from files, shown on the terminal as it is: ``plain`` for every command that
prints a name, a label or a path a file gave it."""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain(value: object) -> Text:
    """``value`` as plain text for the terminal (a table cell, a title, a line): markup is not
    parsed, control characters are replaced (text from a file cannot restyle or move it)."""
    return Text(printable(str(value)))


def printable(text: str) -> str:
    """``text`` with control characters replaced (an error line naming a file whose name holds
    an escape sequence or a newline stays one harmless line)."""
    return _CONTROL.sub("\ufffd", text)


class PlainConsole(Console):
    """A Console whose ``print`` shows every string it is given as ``plain`` text: for
    commands that print what files say (names, labels), so none of it is markup or a terminal
    control sequence."""

    def print(self, *objects: Any, **kwargs: Any) -> None:  # noqa: A003 - Console's API
        """``Console.print`` with each string argument passed through ``plain``."""
        kwargs.pop("markup", None)
        super().print(*(plain(o) if isinstance(o, str) else o for o in objects), **kwargs)


def plain_row(table: Table, *cells: object) -> None:
    """``table.add_row`` with every cell as ``plain`` text."""
    table.add_row(*(plain(cell) for cell in cells))

"""The Typer application: each command lives in its own module and registers itself here.

Errors: a bad input exits non-zero with one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from typing import Any, get_args

import typer
import typer.core
import typer.exceptions
from click import Context

from ganglion.models.errors import GanglionError, OptionError, first_line
from ganglion.runtime.cli.terminal import printable

_REGISTERED: list[str] = []  # command and group names in the order ``_register`` adds them


class _RegisteredOrder(typer.core.TyperGroup):
    """Lists commands in the order ``_register`` adds them (Typer lists groups last)."""

    def list_commands(self, ctx: Context) -> list[str]:
        """Registered names first, in registration order; any other after, as Typer has them."""
        rank = {name: i for i, name in enumerate(_REGISTERED)}
        return sorted(super().list_commands(ctx), key=lambda name: rank.get(name, len(rank)))


class _PlainArgument(typer.core.TyperArgument):
    """An argument shown as Click shows one (``BUNDLE``, ``[BUNDLE]``, ``MEMBERS...``), where
    Typer adds braces and Python types (``{BUNDLE}``, ``BUNDLE <path>``, ``<list[Path]>``)."""

    def get_usage_pieces(self, ctx: Context) -> list[str]:
        """The name, in brackets when optional, with ``...`` when it takes several values."""
        name = (self.name or "value").upper()
        name = name if self.required else f"[{name}]"
        return [name + ("..." if self.nargs != 1 else "")]

    def display_type_rich(self, ctx: Context) -> str | None:
        """No type after the name in the Arguments section: the help says what it is."""
        return None


app = typer.Typer(
    cls=_RegisteredOrder,
    rich_markup_mode=None,
    name="ganglion",
    help="Convert trained PyTorch models into spiking and linear-time programs and run them "
    "on CPU, GPU, Jetson and Loihi 2.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """Ganglion: edge and neuromorphic deployment runtime."""


def _names(typer_app: typer.Typer) -> list[str]:
    """The names commands and groups were added under so far (every module names its own)."""
    infos = [*typer_app.registered_commands, *typer_app.registered_groups]
    return [info.name for info in infos if info.name]


def _register() -> None:
    """Add every command to ``app`` once, noting their order for ``--help``."""
    if _REGISTERED:
        return
    from ganglion.runtime.cli import (
        cluster,
        convert,
        demo,
        deploy,
        devices,
        evaluate,
        generate,
        inspect,
        nir_io,
        profile,
        quantize,
        run,
        select,
        serve,
        sweep,
        train,
    )

    commands = (
        train,
        convert,
        nir_io,
        quantize,
        run,
        evaluate,
        generate,
        inspect,
        select,
        profile,
        sweep,
        devices,
        serve,
        deploy,
        cluster,
        demo,
    )
    for module in commands:
        known = set(_names(app))
        module.register(app)
        _REGISTERED.extend(name for name in _names(app) if name not in known)


def _metavar(param: Any) -> str:
    """``PATH``, ``INTEGER``, ``a|b``, ``NAME``: plain names where Typer prints Python types
    (``<list[Path]>``, ``{bundle}``); flags get none."""
    if getattr(param, "is_flag", False):
        return ""
    desc = param.type_descriptor
    if desc.is_choice:
        return "|".join(str(c) for c in desc.choices or ())
    if param.param_type_name == "argument":
        return (param.name or "value").upper() + ("..." if param.nargs != 1 else "")
    inner = get_args(desc.annotation)
    base = inner[0] if desc.is_list and inner else desc.annotation
    names = {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH", bool: "BOOLEAN"}
    return names.get(base, getattr(base, "__name__", "VALUE").upper())


def _plain_help(command: Any) -> None:
    for param in command.params:
        param.metavar = _metavar(param)
        if type(param) is typer.core.TyperArgument:
            param.__class__ = _PlainArgument  # same state, plain help text
    if isinstance(command, typer.core.TyperGroup):
        for sub in command.commands.values():
            _plain_help(sub)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``ganglion`` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    _register()
    command = typer.main.get_command(app)
    _plain_help(command)
    try:
        code = command.main(args=args, prog_name="ganglion", standalone_mode=False)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    except typer.exceptions.TyperException as exc:  # Click's errors: a bad flag or value
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare ``ganglion``: the help, as Click
            print(exc.format_message())
        else:  # one line too, naming the command whose --help explains the flags
            print(f"error: {_usage_line(exc)}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except SystemExit:
        raise
    except Exception as exc:  # every error becomes one line unless --debug
        if debug:
            raise
        # our messages are one line but for the names they quote (a file's may hold a newline
        # or an escape sequence): shown whole, those replaced; another library's: its first line
        text = str(exc).strip() if isinstance(exc, GanglionError) and str(exc).strip() else None
        message = printable(text if text is not None else first_line(exc))
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, OptionError) else 1)
    sys.exit(code if isinstance(code, int) else 0)  # typer.Exit(n) returns n here


def _usage_line(exc: typer.exceptions.TyperException) -> str:
    """Click's message on one line, with the command whose ``--help`` explains the flags."""
    message = " ".join(exc.format_message().split())
    context = getattr(exc, "ctx", None)
    if context is None:
        return message
    return f"{message} (see '{context.command_path} --help')"


def invoke(*args: str) -> tuple[int, str, str]:
    """Run ``ganglion ARGS`` in this process, capturing what it prints: (exit code, stdout,
    stderr). For scripts and tests that drive the command line without a subprocess."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()

"""The Typer application: each command lives in its own module and registers itself here.

Errors: a bad input exits non-zero with one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, get_args

import typer
import typer.core

app = typer.Typer(
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


def _register() -> None:
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
        module.register(app)


def _metavar(param: Any) -> str:
    """``PATH``, ``INTEGER``, ``a|b``, ``NAME``: plain names where Typer prints Python types
    (``<list[Path]>``, ``{bundle}``); flags get none."""
    if getattr(param, "is_flag", False):
        return ""
    desc = param.type_descriptor
    if desc.is_choice:
        return "|".join(str(c) for c in desc.choices or ())
    if param.param_type_name == "argument":
        return (param.name or "value").upper()
    inner = get_args(desc.annotation)
    base = inner[0] if desc.is_list and inner else desc.annotation
    names = {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH", bool: "BOOLEAN"}
    return names.get(base, getattr(base, "__name__", "VALUE").upper())


def _plain_help(command: Any) -> None:
    for param in command.params:
        param.metavar = _metavar(param)
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
        command.main(args=args, prog_name="ganglion", standalone_mode=True)
    except SystemExit:
        raise
    except Exception as exc:  # every error becomes one line unless --debug
        if debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)

"""The Typer application: each command lives in its own module and registers itself here.

Errors: a bad input exits non-zero with one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
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
        devices,
        serve,
        deploy,
        demo,
    )
    for module in commands:
        module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``ganglion`` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    _register()
    try:
        app(args=args, prog_name="ganglion")
    except SystemExit:
        raise
    except Exception as exc:  # every error becomes one line unless --debug
        if debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)

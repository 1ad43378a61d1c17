"""The ``ganglion`` command line."""

from ganglion.runtime.cli.app import invoke, main

__all__ = ["invoke", "main"]

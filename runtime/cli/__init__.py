"""The ``ganglion`` command line."""

from ganglion.runtime.cli.app import main

__all__ = ["main"]

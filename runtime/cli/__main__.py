"""``python -m ganglion.runtime.cli``: the same as the ``ganglion`` command."""

from ganglion.runtime.cli.app import main

main()

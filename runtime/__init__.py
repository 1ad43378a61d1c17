"""Ganglion runtime: ``load`` a bundle on a backend and run it (see ``runtime.session``)."""

from ganglion.models.errors import BackendUnavailable, OptionError
from ganglion.runtime.session import BACKENDS, Session, load

__all__ = ["BACKENDS", "BackendUnavailable", "OptionError", "Session", "load"]

"""Errors Ganglion raises for bad input; each carries a one-line, user-facing reason."""


class GanglionError(Exception):
    """Base class: the message is one line a user can act on."""


class ConversionError(GanglionError):
    """A model cannot be converted (unsupported layer, missing calibration data, ...)."""


class BundleError(GanglionError):
    """A bundle is missing, malformed, corrupt or tampered with."""


class NIRError(GanglionError):
    """An NIR file cannot be read or uses something Ganglion does not support."""


class ShapeError(GanglionError):
    """An input has the wrong shape or dtype for the program."""


class BackendUnavailable(GanglionError):
    """A backend cannot run here (missing package, no device, unsupported program)."""

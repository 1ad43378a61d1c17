"""Which gRPC status answers which failure: one table for the inference and control services.

Bad requests never crash the node: every failure a request can cause maps to a status and a
one-line message (Triton's wording where Triton has one), and anything unforeseen is INTERNAL.
"""

from __future__ import annotations

import grpc

from ganglion.models.errors import (
    BackendFailure,
    BackendUnavailable,
    BundleError,
    GanglionError,
    ShapeError,
    first_line,
)
from ganglion.runtime.atomic import TargetExists
from ganglion.runtime.serving.kserve_tensors import WireError
from ganglion.runtime.serving.sequences import SequenceError, SequenceLimit

# a status message travels percent-encoded in a header (up to 12 bytes a character) that clients
# cap at 8 KiB by default
MAX_STATUS_CHARS = 500


class NodeError(GanglionError):
    """A request refused with a given status (unknown model, over capacity, not allowed...)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def unknown_model(name: str) -> NodeError:
    """Triton's answer for a model the node does not have."""
    return NodeError(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{name}' is not found")


def is_served_version(version: str) -> bool:
    """Whether ``version`` names the one version every model has: "" (any), "1" or "01"."""
    return version == "" or (_is_number(version) and version.lstrip("0") == "1")


def check_version(name: str, version: str) -> None:
    """Refuse a version other than the one each model has (1), in Triton's words: a string
    that is not a version number is INVALID_ARGUMENT, another number NOT_FOUND; "" (any
    version) and "1" (also written "01") pass. Digits are compared as text: no int() of a
    client's 5,000-digit string."""
    if is_served_version(version):
        return
    if not _is_number(version):
        raise NodeError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"failed to get model version from specified version string '{version[:64]}'",
        )
    number = version.lstrip("0")[:64] or "0"
    raise NodeError(
        grpc.StatusCode.NOT_FOUND,
        f"Request for unknown model: '{name}' version {number} is not found",
    )


def _is_number(version: str) -> bool:
    return version.isascii() and version.isdigit()


_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (SequenceLimit, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (TargetExists, grpc.StatusCode.ALREADY_EXISTS),
    (BackendUnavailable, grpc.StatusCode.FAILED_PRECONDITION),
    (BackendFailure, grpc.StatusCode.INTERNAL),
    (WireError, grpc.StatusCode.INVALID_ARGUMENT),
    (ShapeError, grpc.StatusCode.INVALID_ARGUMENT),
    (SequenceError, grpc.StatusCode.INVALID_ARGUMENT),
    (BundleError, grpc.StatusCode.INVALID_ARGUMENT),
    (GanglionError, grpc.StatusCode.INVALID_ARGUMENT),
)


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and one-line message that answer ``exc``, at most ``MAX_STATUS_CHARS``
    characters: a message echoing a client's 10,000-character name would not fit gRPC's
    header limits, and the client would get RESOURCE_EXHAUSTED instead."""
    text = first_line(exc, MAX_STATUS_CHARS)
    if isinstance(exc, NodeError):
        return exc.code, text
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code, text
    return grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {text}"

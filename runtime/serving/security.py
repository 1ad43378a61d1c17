"""Who may talk to a node: TLS credentials (optionally mutual) and a bearer token.

The token travels as the call metadata ``authorization: Bearer <token>`` (tritonclient:
``headers={"authorization": "Bearer ..."}``) and is compared in constant time. A call without
it, or with another, is answered UNAUTHENTICATED before its handler runs; health checks stay
open (load balancers and orchestrators probe them without credentials). Send tokens over TLS
unless the node listens on loopback only.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from ganglion.models.errors import GanglionError

AUTHORIZATION = "authorization"
BEARER = "Bearer "
MAX_TOKEN_BYTES = 4096
OPEN_METHODS = frozenset(
    {"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch", "/grpc.health.v1.Health/List"}
)


class CredentialsError(GanglionError):
    """A token, certificate or key file that cannot be used."""


def read_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace stripped); CredentialsError when the file
    is empty, too large or not text."""
    if not path.is_file():
        raise CredentialsError(f"{path}: no such token file")
    data = path.read_bytes()
    if len(data) > MAX_TOKEN_BYTES:
        raise CredentialsError(f"{path}: a token is at most {MAX_TOKEN_BYTES} bytes")
    try:
        token = data.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise CredentialsError(f"{path}: the token must be printable ASCII") from exc
    if not token or not token.isprintable() or " " in token:
        raise CredentialsError(f"{path}: the token must be one word of printable ASCII")
    return token


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CredentialsError(f"{what} {path}: cannot read ({exc.strerror})") from exc


def server_credentials(cert: Path, key: Path, client_ca: Path | None) -> grpc.ServerCredentials:
    """TLS for a node; with ``client_ca`` clients must present a certificate it signed."""
    pair = (_read(key, "--tls-key"), _read(cert, "--tls-cert"))
    ca = _read(client_ca, "--tls-ca")
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=bool(ca))


def channel_credentials(
    ca: Path | None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """TLS for a client: ``ca`` verifies the node (None: the system's roots); ``cert`` and
    ``key`` identify the client to a node that asks for client certificates."""
    return grpc.ssl_channel_credentials(
        _read(ca, "--tls-ca"), _read(key, "--tls-key"), _read(cert, "--tls-cert")
    )


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``token`` (empty without one)."""
    return () if token is None else ((AUTHORIZATION, BEARER + token),)


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Answers UNAUTHENTICATED unless a call carries the node's bearer token."""

    def __init__(self, token: str) -> None:
        self._expected = token.encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Pass authorized and open calls on; refuse the others."""
        if details.method in OPEN_METHODS:
            return await continuation(details)
        given = [v for k, v in details.invocation_metadata or () if k == AUTHORIZATION]
        if given and hmac.compare_digest(_bearer_token(_as_bytes(given[0])), self._expected):
            return await continuation(details)
        handler = await continuation(details)
        if handler is None:
            return handler
        reason = "wrong bearer token" if given else "missing bearer token"
        return _refusing(handler, f"{reason}: send metadata 'authorization: Bearer <token>'")


def _bearer_token(value: bytes) -> bytes:
    """The token of an ``authorization`` value "Bearer <token>", the scheme in any case (RFC
    6750, as HTTP's auth-scheme: case-insensitive); b"" for another scheme."""
    scheme, _, token = value.partition(b" ")
    return token if scheme.lower() == BEARER.strip().lower().encode() else b""


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "replace")


def _refusing(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that aborts with UNAUTHENTICATED."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    codecs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **codecs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **codecs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **codecs)
    return grpc.unary_unary_rpc_method_handler(refuse, **codecs)

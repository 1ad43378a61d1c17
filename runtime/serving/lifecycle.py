"""Serving until told to stop: start a server, hand it to the caller, and on SIGTERM or SIGINT
(or when the server ends by itself) stop it gracefully. Shared by the node and the coordinator."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Protocol, TypeVar


class Servable(Protocol):
    """What ``serve_until_signal`` drives: a gRPC server's start, stop and wait."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def wait(self) -> None: ...


S = TypeVar("S", bound=Servable)


async def serve_until_signal(server: S, on_ready: Callable[[S], None]) -> None:
    """Start ``server``, call ``on_ready`` and serve until SIGTERM or SIGINT, then stop it."""
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    on_ready(server)
    waiter = asyncio.create_task(server.wait())
    stopper = asyncio.create_task(stopping.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    await server.stop()
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter

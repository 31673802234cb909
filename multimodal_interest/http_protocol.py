"""uvicorn's HTTP/1.1 protocol with a deadline on reading a request's headers.

uvicorn closes a keep-alive connection that stays idle, but any byte received resets that
timer, and a connection that never completes its headers has no bound at all: a client
sending half a header (or one byte every few seconds) holds a connection, and its memory,
forever. :func:`header_deadline` gives each request ``timeout`` seconds, counted from the
connection's opening or the previous answer, to complete its headers; then the connection
is closed without an answer (as nginx's ``client_header_timeout`` does). The body has its
own bound in the app (:class:`~multimodal_interest.server.BodyLimit`).
"""
from __future__ import annotations

import asyncio
import importlib.util

HEADER_TIMEOUT = 10.0  # seconds from a connection's opening (or the last answer) to a request's headers


def http_protocol() -> type[asyncio.Protocol]:
    """uvicorn's fastest HTTP/1.1 protocol installed: httptools' when present, else h11's."""
    if importlib.util.find_spec("httptools") is not None:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        return HttpToolsProtocol
    from uvicorn.protocols.http.h11_impl import H11Protocol
    return H11Protocol


def header_deadline(base: type[asyncio.Protocol], timeout: float = HEADER_TIMEOUT) -> type[asyncio.Protocol]:
    """``base`` (a uvicorn HTTP protocol) closing a connection whose request headers are not
    complete ``timeout`` seconds after it opened or after its previous answer was sent."""

    class HeaderDeadline(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._timer: asyncio.TimerHandle | None = None
            app = self.app

            async def headers_complete(scope, receive, send) -> None:  # uvicorn calls the app then
                self._disarm()
                await app(scope, receive, send)

            self.app = headers_complete

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers (an idle connection: uvicorn's keep-alive)

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._timer = self.loop.call_later(timeout, self.transport.close)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    HeaderDeadline.__qualname__ = HeaderDeadline.__name__ = f"HeaderDeadline{base.__name__}"
    return HeaderDeadline

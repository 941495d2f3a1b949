"""The console's HTTP/1.1 server: asyncio streams, one request per connection, bounded like the daemon's
own endpoints (gatewayd.peerlimits).

- at most `connections` connections, `connections_per_address` from one client address; a refused
  connection is closed before anything is read from it;
- the request head must arrive within `header_timeout` and fit `request_bytes`; a body (the login form)
  must declare its length, fit `request_bytes` and arrive within the same time;
- every answer carries a Content-Security-Policy that allows the page's own files only (no inline
  script, no other origin), and `Cache-Control: no-store`;
- a handler's fault is answered 500 and logged once per client and period (`RefusalLog`), never with
  the request's body or cookies in it.

A handler returns a `Response`; one whose `stream` is set (server-sent events) keeps the connection and
writes each chunk as it comes, and a client that does not take a chunk within `header_timeout` loses
the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from gatewayd.config.model import ACCEPT_BURST, ConsoleConfig
from gatewayd.peerlimits import RefusalLog, Slots

log = logging.getLogger("gatewayd.console")

HEADER_END = b"\r\n\r\n"
REFUSAL_INTERVAL = 60.0
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
REASONS = {200: "OK", 303: "See Other", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 413: "Payload Too Large",
           431: "Request Header Fields Too Large", 429: "Too Many Requests", 500: "Internal Server Error",
           503: "Service Unavailable"}


class HttpError(Exception):
    """A request refused with an HTTP status; the reason goes to the client and, once per period, the log."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    address: str
    body: bytes = b""

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
        return None

    def form(self) -> dict[str, str]:
        """An application/x-www-form-urlencoded body, one value a key."""
        return {key: values[0] for key, values in parse_qs(self.body.decode("utf-8", errors="replace")).items()}


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    stream: AsyncIterator[bytes] | None = None  # server-sent events: chunks written as they come

    def head(self) -> bytes:
        headers = {"Content-Type": self.content_type, **SECURITY_HEADERS, **self.headers}
        if self.stream is None:
            headers["Content-Length"] = str(len(self.body))
        headers["Connection"] = "close"
        lines = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Status')}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


Handler = Callable[[Request], Awaitable[Response]]


def text_response(status: int, text: str) -> Response:
    return Response(status, (text + "\n").encode())


def parse_head(head: bytes, address: str) -> Request:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "not an HTTP/1.x request")
    method, target = parts[0], urlsplit(parts[1])
    if method not in ("GET", "POST"):
        raise HttpError(405, f"method {method[:20]!r}")
    headers = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise HttpError(400, "a header line without ':'")
            headers[name.strip().lower()] = value.strip()
    return Request(method, target.path or "/", parse_qs(target.query), headers, address)


class ConsoleServer:
    """`await server.start()` listens (OSError when the address is taken); `await server.stop()`."""

    def __init__(self, config: ConsoleConfig, handler: Handler, tls: ssl.SSLContext | None = None):
        self.config, self.handler, self.tls = config, handler, tls
        self.slots = Slots(config.connections, config.connections_per_address, None)
        self.refusals = RefusalLog("console", REFUSAL_INTERVAL)
        self.port = config.port
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.config.host, self.config.port, ssl=self.tls,
                                                  limit=self.config.request_bytes, backlog=ACCEPT_BURST,
                                                  ssl_handshake_timeout=self.config.header_timeout
                                                  if self.tls else None)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = str((writer.get_extra_info("peername") or ("?",))[0])
        refusal = self.slots.admit(address)
        if refusal is not None:
            self.refusals.refused(f"address {address}", refusal)
            writer.transport.abort()
            return
        self._writers.add(writer)
        try:
            await self._exchange(reader, writer, address)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client went away, or does not take its answer
        finally:
            self._writers.discard(writer)
            self.slots.release(address)
            writer.transport.abort()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str) -> None:
        try:
            request = await asyncio.wait_for(self._read(reader, address), self.config.header_timeout)
            response = await self.handler(request)
        except HttpError as exc:
            self.refusals.refused(f"address {address}", f"{exc.status}: {exc}")
            response = text_response(exc.status, str(exc))
        except asyncio.IncompleteReadError:
            return  # the client closed before its request was complete: nobody to answer
        except TimeoutError:
            self.refusals.refused(f"address {address}", f"request not complete within "
                                  f"{self.config.header_timeout:g} s (console.header_timeout)")
            response = text_response(408, "request not complete in time")
        except Exception as exc:  # noqa: BLE001 - answered 500; the console keeps serving
            self.refusals.refused(f"address {address}", f"fault: {type(exc).__name__}: {exc}")
            response = text_response(500, "internal error; see the console's log")
        writer.write(response.head())
        if response.stream is None:
            writer.write(response.body)
            await asyncio.wait_for(writer.drain(), self.config.header_timeout)
            return
        try:
            async for chunk in response.stream:
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), self.config.header_timeout)
        finally:
            with contextlib.suppress(Exception):
                await response.stream.aclose()

    async def _read(self, reader: asyncio.StreamReader, address: str) -> Request:
        limit = self.config.request_bytes
        try:
            head = await reader.readuntil(HEADER_END)
        except asyncio.LimitOverrunError:
            raise HttpError(431, f"request head longer than {limit} bytes (console.request_bytes)") from None
        request = parse_head(head, address)
        length = request.headers.get("content-length")
        if request.method == "POST":
            if length is None or not length.isdigit():
                raise HttpError(400, "a POST needs a Content-Length")
            if int(length) > limit:
                raise HttpError(413, f"request body of {length} bytes is longer than {limit} (console.request_bytes)")
            request.body = await reader.readexactly(int(length))
        elif length not in (None, "0"):
            raise HttpError(400, f"a {request.method} has no body")
        return request

"""The console's pages and API: what each path answers, and who may ask.

    GET  /                 the page (static/index.html): overview, points, alarms, interlocks, trends
    GET  /static/NAME      its script and style sheet (hand-written, served from the package)
    GET  /api/snapshot     the latest snapshot (gatewayd.console.source) as JSON
    GET  /api/stream       server-sent events: each new snapshot as it is taken
    GET  /api/trend        ?tag=A&tag=B&from=T0&to=T1: samples and quality stretches (gatewayd.console.trend)
    GET  /login, POST /login, POST /logout   only when a users file is configured

Nothing here changes the plant or the daemon: the console holds the view role and asks view commands.
With a users file, every path but the login page and its style sheet needs a session; an API call
without one is answered 401, a page 303 to /login.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from importlib import resources

from gatewayd.config.model import ConsoleConfig
from gatewayd.console import auth
from gatewayd.console.http import HttpError, Request, Response, text_response
from gatewayd.console.source import Poller
from gatewayd.console.trend import TrendError, Trends, parse_query

log = logging.getLogger("gatewayd.console")

STATIC = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8",
          "index.html": "text/html; charset=utf-8", "login.html": "text/html; charset=utf-8"}
OPEN_PATHS = ("/login", "/static/console.css")  # reachable without a session
STREAM_KEEPALIVE = 15.0  # seconds: an idle event stream sends a comment, so a vanished browser is noticed
WRONG_PASSWORD_DELAY = 1.0  # seconds every refused login waits before it is answered


def static_file(name: str) -> bytes:
    return resources.files("gatewayd.console").joinpath("static", name).read_bytes()


class ConsoleApp:
    """`await app(request)` -> Response."""

    def __init__(self, config: ConsoleConfig, poller: Poller, trends: Trends | None,
                 users: dict[str, str] | None):
        self.config, self.poller, self.trends, self.users = config, poller, trends, users
        self.sessions = auth.Sessions(config.session_lifetime)
        self.throttle = auth.LoginThrottle(config.login_failures, config.login_lockout)
        self.files = {name: static_file(name) for name in STATIC}
        # an unknown user costs the same scrypt as a wrong password: the time does not tell names apart
        self._decoy = auth.hash_password(secrets.token_hex(16)) if users is not None else ""

    async def __call__(self, request: Request) -> Response:
        if self.users is not None and request.path not in OPEN_PATHS and self.user_of(request) is None:
            if request.path.startswith("/api/"):
                return text_response(401, "log in first")
            return Response(303, headers={"Location": "/login"})
        route = (request.method, request.path)
        if route == ("GET", "/"):
            return self.file("index.html")
        if request.method == "GET" and request.path.startswith("/static/"):
            return self.file(request.path.removeprefix("/static/"))
        if route == ("GET", "/api/snapshot"):
            return Response(200, self.poller.snapshot.json, "application/json")
        if route == ("GET", "/api/stream"):
            return Response(200, content_type="text/event-stream", stream=self.stream())
        if route == ("GET", "/api/trend"):
            return await self.trend(request)
        if route == ("GET", "/login") and self.users is not None:
            return self.login_page(200, "")
        if route == ("POST", "/login") and self.users is not None:
            return await self.login(request)
        if route == ("POST", "/logout") and self.users is not None:
            self.sessions.close(request.cookie(auth.COOKIE))
            return Response(303, headers={"Location": "/login",
                                          "Set-Cookie": auth.expired_cookie_header(self.config.tls)})
        raise HttpError(404 if request.method == "GET" else 405, f"{request.method} {request.path[:100]}")

    def user_of(self, request: Request) -> str | None:
        return self.sessions.user(request.cookie(auth.COOKIE))

    def file(self, name: str) -> Response:
        if name not in self.files:
            raise HttpError(404, f"no file {name[:100]!r}")
        return Response(200, self.files[name], STATIC[name])

    def named(self, user: str) -> str:
        """How the log names a login's user: a known name, or not at all (a password typed into the user
        field must not end up in the journal)."""
        return f"user {user}" if user in self.users else "an unknown user"

    def login_page(self, status: int, message: str) -> Response:
        """The login form, with a fixed message of ours (nothing the client sent is put into it)."""
        note = f'<p class="error">{message}</p>'.encode() if message else b""
        return Response(status, self.files["login.html"].replace(b"<!--message-->", note), STATIC["login.html"])

    async def stream(self):
        """Each snapshot newer than the last one sent, as one `data:` event."""
        version = -1
        while True:
            snapshot = await self.poller.changed(version, STREAM_KEEPALIVE)
            if snapshot.version == version:
                yield b": keepalive\n\n"
                continue
            version = snapshot.version
            yield b"data: " + snapshot.json + b"\n\n"

    async def trend(self, request: Request) -> Response:
        if self.trends is None:
            raise HttpError(503, "no history to draw trends from")
        try:
            tags, start, end = parse_query(request.query, time.time())
            answer = await self.trends.query(tags, start, end)
        except TrendError as exc:
            return Response(400, json.dumps({"error": str(exc)}).encode(), "application/json")
        return Response(200, json.dumps(answer, allow_nan=False).encode(), "application/json")

    async def login(self, request: Request) -> Response:
        form = request.form()
        user, password = form.get("user", ""), form.get("password", "")
        wait = self.throttle.wait(request.address, user)
        if wait > 0:
            log.warning("console: login of %s from %s refused: too many wrong passwords, %.0f s left",
                        self.named(user), request.address, wait)
            return self.login_page(429, f"Too many wrong passwords: try again in {wait:.0f} s.")
        stored = self.users.get(user)
        matches = await asyncio.to_thread(auth.password_matches, stored or self._decoy, password)
        matches = matches and stored is not None
        if not matches:
            self.throttle.failed(request.address, user)
            log.warning("console: wrong password for %s from %s", self.named(user), request.address)
            await asyncio.sleep(WRONG_PASSWORD_DELAY)
            return self.login_page(401, "Wrong user or password.")
        self.throttle.succeeded(request.address, user)
        log.info("console: %s logged in from %s", user, request.address)
        token = self.sessions.open(user)
        return Response(303, headers={"Location": "/",
                                      "Set-Cookie": auth.cookie_header(token, self.config.session_lifetime,
                                                                       self.config.tls)})

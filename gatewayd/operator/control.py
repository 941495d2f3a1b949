"""The control socket: operators act on the running daemon (`gatewayd ack ...`) through it.

A Unix stream socket at `<gateway.runtime_dir>/control.sock`, created mode 0660 (its directory, when
the daemon creates it, 0750): the file permissions decide who may connect, the daemon's user and its
group. Who the caller is comes from the kernel (SO_PEERCRED) and nothing else: what each account may
do is its roles' (`gatewayd.operator.access`, checked before any handler runs when the server has an `access`),
and every audit record is headed by that account. A request that names a person (`user`,
`approved_by`, `requested_by`) is refused: nobody types in who they are.

Protocol: one JSON object per line each way, any number of requests per connection.

    -> {"cmd": "ack", "alarm": "PT101.HH", "reason": "seen on the DCS"}
    <- {"ok": true, "result": {...}}          or   {"ok": false, "error": "the alarm is NORM; ..."}

Commands are handlers registered by name in `ControlServer.handlers`, so other parts of the daemon
add theirs without touching the dispatch here. A handler is called as `handler(request, peer)`:
- a function or coroutine function returns the result: one response line;
- an async generator streams: every value it yields is a line `{"ok": true, "result": value}`, and
  its end a line `{"ok": true, "end": true}`; the stream stops when the client disconnects.
A handler refuses with `CommandError` (or any ValueError, such as the rules' ActionError): the
client gets `{"ok": false, "error": message}` and the connection stays usable.

`call()` and `stream()` are the client side, used by the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import pwd
import socket
import stat
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gatewayd.config.model import ACCEPT_BURST, LimitsConfig
from gatewayd.peerlimits import DescriptorReserve, RefusalLog, Slots, nesting_depth
from core.types import Event
from core.waits import end_tasks

log = logging.getLogger("gatewayd.control")

SOCKET_NAME = "control.sock"
SOCKET_UMASK = 0o117  # the socket file comes out rw-rw----
DIRECTORY_MODE = 0o750
BACKLOG_RETRY = 0.02  # seconds between connects while the backlog is full
Handler = Callable[[dict[str, Any], "Peer"], Any]


class CommandError(ValueError):
    """A request the daemon refuses; the message tells the operator why."""


class ControlError(RuntimeError):
    """The client cannot reach the daemon, or the socket cannot be set up; the message says why."""


@dataclass(frozen=True)
class Peer:
    """The process on the other end of a connection, as the kernel reports it."""

    pid: int
    uid: int
    gid: int
    user: str  # account name, or the uid as text when it has no name


def peer_of(sock: Any) -> Peer:
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                       struct.calcsize("3i")))
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return Peer(pid, uid, gid, user)


def socket_path(runtime_dir: Path) -> Path:
    return Path(runtime_dir) / SOCKET_NAME


def remove_stale_socket(path: Path) -> None:
    """A socket left by a crashed daemon is removed; one that answers belongs to a running daemon."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlError(f"{path} exists and is not a socket; remove it or change gateway.runtime_dir")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            path.unlink()
            return
    raise ControlError(f"another gatewayd answers on {path}; two daemons must not share a runtime_dir")


def peer_account(peer: Peer) -> str:
    """How refusals name a peer: by its kernel account."""
    return f"account {peer.user} (uid {peer.uid})"


def _dumps(message: Mapping[str, Any]) -> bytes:
    return (json.dumps(message, default=_json_default) + "\n").encode()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays in results
        return obj.tolist()
    raise TypeError(f"{obj!r} ({type(obj).__name__}) is not JSON-serialisable")


# ------------------------------------------------------------------------------------------ server

class ControlServer:
    """`await server.start()` listens; `await server.close()` stops listening, ends open connections
    and removes the socket file. Register commands in `handlers` before or after starting.

    What a peer can hold is bounded by `limits` (gatewayd.peerlimits): connections in total and per
    kernel account, the time to complete a request, its bytes and nesting; `reserve` keeps the last
    descriptors of the process for the devices."""

    def __init__(self, path: Path, limits: LimitsConfig | None = None, reserve: DescriptorReserve | None = None,
                 access: Any = None):
        self.path = Path(path)
        self.limits = limits = limits or LimitsConfig()
        self.access = access  # a gatewayd.operator.access.Access, or None: every command to whoever may connect
        self.handlers: dict[str, Handler] = {}
        self.slots = Slots(limits.control_connections, limits.control_connections_per_account, reserve)
        self.refusals = RefusalLog("control socket", limits.refusal_log_interval)
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task] = set()

    async def start(self) -> None:
        directory = self.path.parent
        if not directory.exists():
            directory.mkdir(mode=DIRECTORY_MODE, parents=True)
        remove_stale_socket(self.path)
        previous = os.umask(SOCKET_UMASK)
        try:
            # the reader's limit is the longest line, its newline not counted
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), backlog=ACCEPT_BURST,
                                                           limit=self.limits.control_request_bytes)
        finally:
            os.umask(previous)
        log.info("control socket listening at %s (%d connections, %d per account)", self.path,
                 self.limits.control_connections, self.limits.control_connections_per_account)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        await end_tasks(self._connections, log)
        await self._server.wait_closed()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_of(writer.get_extra_info("socket"))
        refusal = self.slots.admit(peer.uid)
        if refusal is not None:
            self.refusals.refused(peer_account(peer), refusal)
            writer.transport.abort()  # nothing is read, nothing is answered: the descriptor goes back now
            return
        # close() cancels the conversation, not this task: asyncio (3.11) reports a cancelled connection
        # callback as an unhandled error, and a `tail` stream is usually open when the daemon stops
        conversation = asyncio.create_task(self._converse(reader, writer, peer))
        self._connections.add(conversation)
        try:
            await asyncio.wait([conversation])
        finally:
            conversation.cancel()
            self._connections.discard(conversation)
            self.slots.release(peer.uid)

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer) -> None:
        limits = self.limits
        try:
            while True:
                try:
                    async with asyncio.timeout(limits.control_idle_timeout):
                        line = await reader.readline()
                except TimeoutError:  # idle, or a request sent too slowly: the place goes to someone else
                    break
                except ValueError:  # longer than the limit: the stream cannot be resynchronised
                    await self._refuse(writer, peer, f"request longer than {limits.control_request_bytes} bytes",
                                       "control_request_bytes")
                    break
                if not line:
                    break
                if nesting_depth(line) > limits.control_request_depth:  # before the recursive parser sees it
                    await self._refuse(writer, peer, f"request nested deeper than {limits.control_request_depth} "
                                       "levels", "control_request_depth")
                    continue
                await self._answer(line, peer, writer)
        except (ConnectionError, TimeoutError):
            pass  # the client went away, or stopped reading its answers; nothing more to say
        finally:
            writer.close()

    async def _refuse(self, writer: asyncio.StreamWriter, peer: Peer, error: str, limit: str) -> None:
        """A request beyond a limit: the peer is told, the log hears of it once per period."""
        self.refusals.refused(peer_account(peer), f"{error} (limits.{limit})")
        await self._send(writer, {"ok": False, "error": error})

    async def _answer(self, line: bytes, peer: Peer, writer: asyncio.StreamWriter) -> None:
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                raise CommandError('a request is a JSON object with "cmd"')
            handler = self.handlers.get(request["cmd"])
            if handler is None:
                raise CommandError(f"unknown command {request['cmd']!r}; known: {', '.join(sorted(self.handlers))}")
            if self.access is not None:
                try:
                    self.access.check(request["cmd"], peer)
                except CommandError as exc:
                    self.refusals.refused(peer_account(peer), f"{request['cmd']}: {exc}")
                    raise
            refuse_names(request, peer)
            result = handler(request, peer)
            if inspect.isasyncgen(result):
                try:
                    async for item in result:
                        await self._send(writer, {"ok": True, "result": item})
                finally:
                    await result.aclose()  # a reader gone or too slow ends the stream's subscription now
                await self._send(writer, {"ok": True, "end": True})
                return
            if inspect.isawaitable(result):
                result = await result
        except json.JSONDecodeError as exc:
            await self._send(writer, {"ok": False, "error": f"not JSON: {exc}"})
            return
        except ValueError as exc:  # CommandError, the rules' ActionError
            await self._send(writer, {"ok": False, "error": str(exc)})
            return
        except (ConnectionError, TimeoutError):
            raise
        except Exception as exc:
            log.exception("control command %r from %s failed", line[:200], peer.user)
            await self._send(writer, {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"})
            return
        await self._send(writer, {"ok": True, "result": result})

    async def _send(self, writer: asyncio.StreamWriter, message: Mapping[str, Any]) -> None:
        """Write one line; a peer that does not take it within the idle timeout (a `tail` that stopped
        reading) loses the connection (TimeoutError), so it cannot hold the daemon's buffers."""
        writer.write(_dumps(message))
        async with asyncio.timeout(self.limits.control_idle_timeout):
            await writer.drain()


# ------------------------------------------------------------------------------------------ client

def _connect(path: Path, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        _connect_when_accepted(sock, path, time.monotonic() + (timeout or 0.0))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise ControlError(f"gatewayd is not running (nothing answers on {path})") from None
    except PermissionError:
        sock.close()
        raise ControlError(f"permission denied on {path}: operators need to be in the group that owns it "
                           f"(see `ls -l {path}`)") from None
    except OSError as exc:
        sock.close()
        raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
    return sock


def _connect_when_accepted(sock: socket.socket, path: Path, deadline: float) -> None:
    """Connect, waiting while the socket's backlog is full. A Unix socket with a timeout is refused with
    EAGAIN while its backlog is full (one without waits in the kernel), and another account can keep it
    full by connecting in a loop; the daemon accepts a burst at a time, so `status` gets in at the next."""
    while True:
        try:
            sock.connect(str(path))
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(BACKLOG_RETRY)


def _responses(sock: socket.socket, request: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    sock.sendall(_dumps(request))
    with sock.makefile("rb") as lines:
        for line in lines:
            yield json.loads(line)
    raise ControlError("gatewayd closed the connection without answering (is it stopping?)")


def call(path: Path, request: Mapping[str, Any], timeout: float = 30.0) -> Any:
    """Send one request and return its result; raises CommandError when refused, ControlError when
    the daemon cannot be reached."""
    with _connect(path, timeout) as sock:
        try:
            response = next(_responses(sock, request))
        except TimeoutError:
            raise ControlError(f"gatewayd did not answer on {path} within {timeout:g} s "
                               f"(it compiles its rule kernels while starting)") from None
    if not response.get("ok"):
        raise CommandError(response.get("error", "refused"))
    return response.get("result")


def stream(path: Path, request: Mapping[str, Any], timeout: float | None = None) -> Iterator[Any]:
    """Send a streaming request and yield each result until the daemon ends the stream."""
    with _connect(path, timeout) as sock:
        for response in _responses(sock, request):
            if not response.get("ok"):
                raise CommandError(response.get("error", "refused"))
            if response.get("end"):
                return
            yield response.get("result")


# ------------------------------------------------------------------------------------------ rule commands

ALARM_ACTIONS = ("ack", "shelve", "unshelve", "out_of_service", "return_to_service", "reset")


NAMES_NOT_TAKEN = ("user", "approved_by", "requested_by")  # who someone is: the kernel says it, not a request


def refuse_names(request: Mapping[str, Any], peer: Peer) -> None:
    """A request naming a person is refused: who acts is the account the kernel reports, nothing typed."""
    named = [key for key in NAMES_NOT_TAKEN if request.get(key) is not None]
    if named:
        raise CommandError(f"{', '.join(repr(key) for key in named)} is not accepted: the daemon takes who you are "
                           f"from the kernel (account {peer.user}); put a name or comment in the reason")


def _text(request: Mapping[str, Any], key: str, required: bool = True) -> str:
    value = request.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise CommandError(f"{key!r} is required (text)")
    return value


def _seconds(request: Mapping[str, Any], key: str) -> float:
    value = request.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CommandError(f"{key!r} is required (seconds)")
    return float(value)


def _stamp(events: Sequence[Event], peer: Peer) -> list[Event]:
    """Add the kernel-reported account, uid and pid to every audit record."""
    return [replace(event, data={**event.data, "account": peer.user, "uid": peer.uid, "pid": peer.pid})
            if event.kind == "audit" else event for event in events]


def _described(events: Sequence[Event]) -> list[dict[str, Any]]:
    return [{"kind": event.kind, "message": event.message, "priority": int(event.priority), "data": event.data}
            for event in events]


def _tags(request: Mapping[str, Any], engine: Any) -> list[str]:
    tags = request.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise CommandError("'tags' is a list of tag names")
    unknown = [tag for tag in tags if tag not in engine.tag_rows]
    if unknown:
        raise CommandError(f"not tags of this gateway: {', '.join(unknown)}")
    return tags


def _number(request: Mapping[str, Any], key: str, what: str) -> int:
    value = request.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CommandError(f"{key!r} is required ({what})")
    return value


def rule_handlers(engine: Any, commit: Callable[[Sequence[Event]], None],
                  approval_window: float = 3600.0) -> dict[str, Handler]:
    """The operator commands over a `rules.engine.RuleEngine`. `commit(events)` stores an action's
    events like a scan's (so they go upstream) and saves the engine's state. A bypass, or shelving a
    highly managed alarm (or taking it out of service), is a request by the calling account that
    another account approves (`approve`) within `approval_window` seconds."""

    def done(events: Sequence[Event], peer: Peer, **result: Any) -> dict[str, Any]:
        events = _stamp(events, peer)
        commit(events)
        return {**result, "events": _described(events)}

    def alarms(request: dict[str, Any], peer: Peer) -> list[dict[str, Any]]:
        return engine.alarms(include_normal=bool(request.get("all")))

    def action(name: str) -> Handler:
        def handle(request: dict[str, Any], peer: Peer) -> dict[str, Any]:
            alarm, reason = _text(request, "alarm"), _text(request, "reason", required=False)
            if name in ("shelve", "out_of_service") and engine.highly_managed(alarm):
                if request.get("duration") is None or not request.get("permit"):
                    doing = "shelving" if name == "shelve" else "taking out of service"
                    raise CommandError(f"{alarm} is a highly managed alarm: {doing} it needs a request with a permit "
                                       "and a duration (--permit, --for), which another account approves")
                events = engine.request_action(name, alarm, reason=reason, permit=_text(request, "permit"),
                                               requested_by=peer.user, duration=_seconds(request, "duration"),
                                               one_shot=bool(request.get("one_shot")), window=approval_window)
                return done(events, peer, request=events[0].data["request"])
            options: dict[str, Any] = {}
            if name == "shelve":
                options = {"duration": _seconds(request, "duration"), "one_shot": bool(request.get("one_shot"))}
            elif name == "out_of_service" and request.get("duration") is not None:
                options = {"duration": _seconds(request, "duration")}
            return done(engine.act(name, alarm, peer.user, reason, **options), peer)
        return handle

    def bypass_request(request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        tags = _tags(request, engine)
        events = engine.request_bypass(
            _text(request, "interlock"), reason=_text(request, "reason"), permit=_text(request, "permit"),
            requested_by=peer.user, duration=_seconds(request, "duration"), measures=_text(request, "measures"),
            affected_tags=tags, window=approval_window)
        return done(events, peer, request=events[0].data["request"])

    def approve(request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        number = _number(request, "id", "the request number from `gatewayd requests`")
        kind = request.get("kind")
        if kind is not None:
            asked = next((item["kind"] for item in engine.request_list(include_closed=True) if item["id"] == number),
                         kind)
            if asked != kind:
                raise CommandError(f"request {number} asks to {asked.replace('_', ' ')}, not for a {kind}; "
                                   f"approve it with `gatewayd approve {number}`")
        events = engine.approve(number, approved_by=peer.user)
        audit = next(event for event in events if event.kind == "audit")
        return done(events, peer, request=audit.data["request"], authorization=audit.data.get("authorization"))

    def requests(request: dict[str, Any], peer: Peer) -> list[dict[str, Any]]:
        return engine.request_list(include_closed=bool(request.get("all")))

    def bypass_revoke(request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        number = _number(request, "id", "the authorization number from `bypass list`")
        return done(engine.bypass_revoke(number, user=peer.user, reason=_text(request, "reason")), peer)

    def bypass_list(request: dict[str, Any], peer: Peer) -> list[dict[str, Any]]:
        return engine.bypass_list(include_closed=bool(request.get("all")))

    def interlocks(request: dict[str, Any], peer: Peer) -> list[dict[str, Any]]:
        return engine.interlocks()

    handlers: dict[str, Handler] = {"alarms": alarms, "interlocks": interlocks, "bypass_request": bypass_request,
                                    "approve": approve, "requests": requests, "bypass_revoke": bypass_revoke,
                                    "bypass_list": bypass_list}
    handlers.update({name: action(name) for name in ALARM_ACTIONS})
    return handlers

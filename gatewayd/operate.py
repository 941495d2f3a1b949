"""Operating the running daemon: `status`, `tail` and `reload` on the control socket.

- `status`: one screen of the daemon's health, built from the same snapshot the Prometheus endpoint
  uses (`gatewayd.metrics.snapshot`) plus what a person needs beside the figures: since when each
  device is up or down, which tags are bad and why, which alarms are active at which priority, which
  interlocks are bypassed, and the uplink's recent rate. `render_status` turns it into text.
- `tail`: live samples and events. The scanner hands every committed tick to `Operate.on_commit`,
  which copies the matching lines into each subscriber's bounded buffer; a reader slower than the
  plant loses lines (and is told how many), never the scan its time.
- `reload`: see `gatewayd.reload`.

    operate = Operate(daemon)
    daemon.control.handlers.update(operate.handlers())
    scanner.tap = operate.on_commit
"""

from __future__ import annotations

import asyncio
import fnmatch
import math
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gatewayd import __version__
from gatewayd.operator.control import CommandError, Handler, Peer
from gatewayd.types import QUALITY_BAD_MIN, Event, Quality

TAIL_CAPACITY = 2000  # lines buffered per subscriber before lines are dropped
MAX_SUBSCRIBERS = 8  # each costs the scan a filter per tick
TAIL_KEEPALIVE = 5.0  # seconds: an idle stream sends a keepalive, so a vanished reader is noticed
RATE_SAMPLE = 5.0  # seconds between uplink counter samples
RATE_WINDOW = 60.0  # seconds the uplink rate is averaged over
DEVICE_EVENTS = {"device_down": False, "device_up": True}


# ------------------------------------------------------------------------------------------ tail

@dataclass(frozen=True)
class TailFilter:
    """Which lines a subscriber wants: tags matching a glob, tags of one device, events only."""

    tag: str | None = None
    device: str | None = None
    events_only: bool = False

    @classmethod
    def from_request(cls, request: dict[str, Any], devices: Sequence[str]) -> TailFilter:
        tag, device = request.get("tag"), request.get("device")
        for key, value in (("tag", tag), ("device", device)):
            if value is not None and (not isinstance(value, str) or not value):
                raise CommandError(f"{key!r} is a non-empty text")
        if device is not None and device not in devices:
            raise CommandError(f"no device {device!r}; devices: {', '.join(devices) or 'none'}")
        return cls(tag, device, bool(request.get("events_only")))

    def tag_matches(self, tag: Any) -> bool:
        """`tag` is a TagConfig."""
        return ((self.tag is None or fnmatch.fnmatchcase(tag.name, self.tag))
                and (self.device is None or tag.device == self.device))

    def rows(self, table: Any) -> np.ndarray:
        """A mask over the table's rows: the tags whose samples this subscriber wants."""
        if self.events_only:
            return np.zeros(len(table), dtype=np.bool_)
        return np.fromiter((self.tag_matches(tag) for tag in table.tags), dtype=np.bool_, count=len(table))

    def event_matches(self, event: Event, table: Any) -> bool:
        """An event concerns the filter when its source (or the tag it names) is a matching tag, or, for
        a device filter, the device itself."""
        if self.tag is None and self.device is None:
            return True
        names = {event.source}
        tag = event.data.get("tag") if isinstance(event.data, dict) else None
        if isinstance(tag, str):
            names.add(tag)
        if self.device is not None and event.source == self.device and self.tag is None:
            return True
        for name in names:
            row = table.rows.get(name)
            if row is not None and self.tag_matches(table.tags[row]):
                return True
            if row is None and self.device is None and fnmatch.fnmatchcase(name, self.tag):
                return True  # an interlock or unit named by the pattern
        return False


class Subscriber:
    """One tail reader's buffer: at most `capacity` lines; what does not fit is counted, and the count is
    delivered as a `dropped` line right after the lines that did fit."""

    def __init__(self, filter: TailFilter, capacity: int = TAIL_CAPACITY):
        self.filter, self.capacity = filter, capacity
        self.lines: deque[dict[str, Any]] = deque()
        self.dropped = self.dropped_total = 0
        self.ready = asyncio.Event()
        self._mask: np.ndarray | None = None
        self._mask_of: Any = None  # the table the mask was computed for (a reload makes a new one)

    def mask(self, table: Any) -> np.ndarray:
        if self._mask_of is not table:
            self._mask, self._mask_of = self.filter.rows(table), table
        return self._mask

    @property
    def room(self) -> int:
        return max(0, self.capacity - len(self.lines))

    def offer(self, lines: Sequence[dict[str, Any]], more: int = 0) -> None:
        """Queue what fits of `lines`; the rest and `more` lines not even built count as dropped."""
        fitting = lines[:self.room]
        self.lines.extend(fitting)
        lost = len(lines) - len(fitting) + more
        self.dropped += lost
        self.dropped_total += lost
        if fitting or lost:
            self.ready.set()

    def take(self) -> list[dict[str, Any]]:
        lines = list(self.lines)
        self.lines.clear()
        if self.dropped:
            lines.append({"type": "dropped", "count": self.dropped})
            self.dropped = 0
        self.ready.clear()
        return lines

    async def next(self, timeout: float) -> list[dict[str, Any]]:
        """The lines queued since the last call; an empty list after `timeout` seconds without any."""
        if not self.lines and not self.dropped:
            try:
                await asyncio.wait_for(self.ready.wait(), timeout)
            except TimeoutError:
                return []
        return self.take()


def sample_line(table: Any, row: int, samples: Any, index: int) -> dict[str, Any]:
    tag = table.tags[row]
    value = float(samples.value[index])
    return {"type": "sample", "tag": tag.name, "device": tag.device, "ts": float(samples.ts[index]),
            "value": None if math.isnan(value) else value, "unit": tag.unit,
            "quality": int(samples.quality[index])}


def event_line(event: Event) -> dict[str, Any]:
    return {"type": "event", "kind": event.kind, "source": event.source, "ts": event.ts,
            "priority": int(event.priority), "message": event.message}


class Fanout:
    """Delivers each committed tick to the tail subscribers. Called on the scan's path: with nobody
    subscribed it costs one test; with subscribers, one mask lookup each and at most `room` lines built."""

    def __init__(self) -> None:
        self.subscribers: list[Subscriber] = []

    def subscribe(self, filter: TailFilter, capacity: int = TAIL_CAPACITY) -> Subscriber:
        if len(self.subscribers) >= MAX_SUBSCRIBERS:
            raise CommandError(f"already {MAX_SUBSCRIBERS} tails follow this gateway; end one first")
        subscriber = Subscriber(filter, capacity)
        self.subscribers.append(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)

    def publish(self, table: Any, rows: np.ndarray | None, samples: Any, events: Sequence[Event]) -> None:
        built: dict[int, dict[str, Any]] = {}  # a line is built once, however many subscribers want it
        for subscriber in self.subscribers:
            lines = [event_line(event) for event in events if subscriber.filter.event_matches(event, table)]
            more = 0
            if rows is not None and len(rows) and not subscriber.filter.events_only:
                picked = np.nonzero(subscriber.mask(table)[rows])[0].tolist()
                room = max(0, subscriber.room - len(lines))
                for i in picked[:room]:
                    line = built.get(i)
                    if line is None:
                        line = built[i] = sample_line(table, int(rows[i]), samples, i)
                    lines.append(line)
                more = max(0, len(picked) - room)
            if lines or more:
                subscriber.offer(lines, more)


# ------------------------------------------------------------------------------------------ status

class RateWindow:
    """Uplink counters sampled every RATE_SAMPLE seconds; rates over the last RATE_WINDOW seconds."""

    FIELDS = ("acknowledged", "rows_acknowledged", "bytes_published")

    def __init__(self) -> None:
        self.samples: deque[tuple[float, dict[str, float]]] = deque(maxlen=int(RATE_WINDOW / RATE_SAMPLE) + 1)

    def add(self, now: float, stats: Any) -> None:
        self.samples.append((now, {name: float(getattr(stats, name)) for name in self.FIELDS}))

    def rates(self, now: float, stats: Any) -> dict[str, float] | None:
        """Per second since the oldest sample in the window; None before the first sample."""
        if not self.samples:
            return None
        then, figures = self.samples[0]
        seconds = now - then
        if seconds <= 0:
            return None
        return {f"{name}_per_second": (float(getattr(stats, name)) - figures[name]) / seconds
                for name in self.FIELDS} | {"window_seconds": seconds}


def quality_name(code: int) -> str:
    try:
        return Quality(code).name.lower()
    except ValueError:
        return f"code {code}"


def tag_quality(table: Any) -> dict[str, Any]:
    """How many tags are good, uncertain (stale among them) and bad, each kind but good by reason."""
    quality = table.quality
    bad = quality[quality >= QUALITY_BAD_MIN]
    uncertain = quality[(quality > 0) & (quality < QUALITY_BAD_MIN)]
    return {"total": len(table), "good": int((quality == 0).sum()), "uncertain": int(uncertain.size),
            "bad": int(bad.size), "uncertain_by_reason": _by_reason(uncertain), "bad_by_reason": _by_reason(bad)}


def _by_reason(codes: np.ndarray) -> dict[str, int]:
    return {quality_name(code): count for code, count in sorted(Counter(codes.tolist()).items())}


def alarms_by_priority(states: Sequence[tuple[str, str, int]], levels: dict[str, int]) -> list[dict[str, Any]]:
    """(priority, ISA state, count) of the alarms outside NORM, grouped by priority, most urgent first."""
    grouped: dict[str, dict[str, int]] = {}
    for priority, state, count in states:
        grouped.setdefault(priority, {})[state] = count
    return [{"priority": priority, "total": sum(counts.values()), "states": counts}
            for priority, counts in sorted(grouped.items(), key=lambda item: -levels.get(item[0], 0))]


FLAGGED_SHOWN = 20  # tags frozen or outside their range that the status screen names


def data_quality_status(figures: dict[str, Any] | None, quality: Any) -> dict[str, Any] | None:
    """The data-quality figures per device (current period and since start) and the flagged tags."""
    if figures is None:
        return None
    return {**figures, "flagged": quality.flagged()}


class Operate:
    """The operating commands of one daemon, and the small bookkeeping they need."""

    def __init__(self, daemon: Any):
        from gatewayd.reload import Reloader

        self.daemon = daemon
        self.fanout = Fanout()
        self.reloader = Reloader(daemon)
        self.rates = RateWindow()
        self.started = time.time()
        self.device_since: dict[str, float] = {}
        self._signal_reloads: set[asyncio.Task] = set()

    # the scanner calls this after every commit (a scan tick or an operator action)
    def on_commit(self, table: Any, rows: np.ndarray | None, samples: Any, events: Sequence[Event]) -> None:
        for event in events:
            if event.kind in DEVICE_EVENTS:
                self.device_since[event.source] = event.ts
        if self.fanout.subscribers:
            self.fanout.publish(table, rows, samples, events)

    def device_started(self, name: str) -> None:
        self.device_since[name] = time.time()

    async def sample_rates(self) -> None:
        """Keep the uplink rate window filled; runs as one of the daemon's tasks."""
        while True:
            self.rates.add(time.monotonic(), self.daemon.publisher.stats)
            await asyncio.sleep(RATE_SAMPLE)

    def handlers(self) -> dict[str, Handler]:
        return {"status": self.status, "tail": self.tail, "reload": self.reload}

    # ---------------------------------------------------------------------------------- commands

    def status(self, request: dict[str, Any] | None = None, peer: Peer | None = None) -> dict[str, Any]:
        from gatewayd.metrics import snapshot

        daemon = self.daemon
        snap = snapshot(daemon)
        rules = daemon.scanner.engine.status()
        devices = {device.name: device for device in daemon.config.devices}
        for item in snap["devices"]:
            device = devices.get(item["name"])
            item["driver"] = device.driver if device else ""
            item["poll_interval"] = device.poll_interval if device else None
            item["tags"] = len(device.tags) if device else 0
            item["since"] = self.device_since.get(item["name"])
        store = snap["store"]
        oldest = store.get("oldest_pending_ts")
        store["oldest_pending_age"] = max(0.0, snap["wall"] - oldest) if oldest is not None else None
        uplink = snap["uplink"]
        uplink["rates"] = self.rates.rates(snap["monotonic"], daemon.publisher.stats)
        last_ack = uplink.get("last_ack_monotonic")
        uplink["last_ack_age"] = snap["monotonic"] - last_ack if last_ack else None
        uplink["broker"] = f"{daemon.config.uplink.host}:{daemon.config.uplink.port}"
        config = daemon.config
        return {
            "gateway": {"id": config.gateway.id, "name": config.gateway.name, "version": __version__,
                        "boot_id": daemon.boot_id.hex(), "config": str(config.file),
                        "config_sha256": self.reloader.digest, "started": self.started, "now": snap["wall"],
                        "reloads": self.reloader.reloads, "reloads_refused": self.reloader.rejections},
            "devices": snap["devices"],
            "scan": snap["scan"],
            "tags": tag_quality(daemon.table),
            "alarms": {"by_priority": alarms_by_priority(rules["states"], rules["priorities"]), **rules["counts"]},
            "interlocks": {"total": rules["interlocks"],
                           "bypassed": [{key: item[key] for key in ("id", "unit", "bypassed_since",
                                                                    "authorized_until", "flags")}
                                        for item in rules["bypassed"]]},
            "store": store,
            "uplink": uplink,
            "data_quality": data_quality_status(snap["data_quality"], daemon.scanner.data_quality),
            "tails": len(self.fanout.subscribers),
        }

    async def tail(self, request: dict[str, Any], peer: Peer) -> AsyncIterator[dict[str, Any]]:
        daemon = self.daemon
        filter = TailFilter.from_request(request, list(daemon.drivers))
        subscriber = self.fanout.subscribe(filter)
        try:
            following = int(filter.rows(daemon.table).sum())
            yield {"type": "following", "tags": following, "filter": {"tag": filter.tag, "device": filter.device,
                                                                      "events_only": filter.events_only}}
            while True:
                lines = await subscriber.next(TAIL_KEEPALIVE)
                if not lines:
                    yield {"type": "keepalive"}
                for line in lines:
                    yield line
        finally:
            self.fanout.unsubscribe(subscriber)

    async def reload(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        wanted = request.get("config")
        running = self.daemon.config.file
        if wanted is not None and str(wanted) != str(running.resolve()):
            raise CommandError(f"this daemon runs {running.resolve()} and reloads only that file, not {wanted}")
        return await self.reloader.reload(peer.user)

    def reload_on_signal(self) -> None:
        """SIGHUP: the same reload, logged (and recorded as an event) instead of answered."""
        from gatewayd.reload import ReloadRefused

        async def run() -> None:
            try:
                await self.reloader.reload("SIGHUP")
            except ReloadRefused:
                pass  # already logged and recorded as a config_rejected event

        task = asyncio.get_running_loop().create_task(run(), name="reload")
        self._signal_reloads.add(task)
        task.add_done_callback(self._signal_reloads.discard)


# ------------------------------------------------------------------------------------------ rendering

def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _ms(seconds: float | None) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    return f"{seconds * 1000:.0f} ms"


def _bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [headers] + [["-" if cell is None or cell == "" else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    return ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in cells]


def render_status(status: dict[str, Any]) -> str:
    """The `gatewayd status` screen (a pure function of the status answer)."""
    gateway, now = status["gateway"], status["gateway"]["now"]
    lines = [f"gateway {gateway['id']}" + (f" ({gateway['name']})" if gateway["name"] else "")
             + f"  gatewayd {gateway['version']}  up {_ago(now - gateway['started'])}",
             f"config  {gateway['config']}  sha256 {gateway['config_sha256'][:16]}"
             + (f"  reloaded {gateway['reloads']}x" if gateway["reloads"] else "")
             + (f", {gateway['reloads_refused']} refused" if gateway["reloads_refused"] else ""), ""]
    devices = status["devices"]
    down = sum(1 for device in devices if not device["up"])
    lines.append(f"devices: {len(devices) - down}/{len(devices)} up")
    rows = []
    for device in devices:
        since = device.get("since")
        rows.append([device["name"], device.get("driver"), "up" if device["up"] else "DOWN",
                     _ago(now - since) if since else None, _ms(device.get("last_poll_latency")),
                     device.get("requests_per_poll"), device.get("polls"), device.get("failures"),
                     device.get("reconnects")])
    if rows:
        lines += _table(["DEVICE", "DRIVER", "STATE", "FOR", "LAST POLL", "REQ/POLL", "POLLS", "FAILURES",
                         "RECONNECTS"], rows)
    tags = status["tags"]
    lines += ["", f"tags: {tags['total']}, {tags['good']} good, {tags['uncertain']} uncertain"
              f"{_reasons(tags['uncertain_by_reason'])}, {tags['bad']} bad{_reasons(tags['bad_by_reason'])}"]
    scan = status["scan"]
    lines.append(f"scan: {scan['scans']} ticks, last {_ms(scan['last_scan_seconds'])} "
                 f"(rules {_ms(scan['last_rules_seconds'])}); {scan['samples']} samples, {scan['events']} events "
                 "committed")
    alarms = status["alarms"]
    by_priority = "; ".join(f"{item['priority']} {item['total']} ("
                            + ", ".join(f"{count} {state}" for state, count in item["states"].items()) + ")"
                            for item in alarms["by_priority"])
    lines.append(f"alarms: {alarms['active']} active, {alarms['unacknowledged']} unacknowledged"
                 + (f"; {by_priority}" if by_priority else "") + f" (of {alarms['alarms']} configured)")
    interlocks = status["interlocks"]
    bypassed = interlocks["bypassed"]
    lines.append(f"interlocks: {interlocks['total']}, {len(bypassed)} bypassed")
    for item in bypassed:
        until, since = item.get("authorized_until"), item.get("bypassed_since")
        lines.append(f"  {item['id']} bypassed for {_ago(now - since) if since else '-'}"
                     + (f", authorized for {_ago(until - now)} more" if until else ", NO AUTHORIZATION")
                     + (f" [{', '.join(item['flags'])}]" if item["flags"] else ""))
    store = status["store"]
    lines += ["", f"store: {store['rows_pending']} rows pending, {store['rows_inflight']} in flight in "
              f"{store['batches_pending']} batches; oldest unsent {_ago(store['oldest_pending_age'])}; "
              f"{_bytes(store['db_bytes'])} on disk"
              + (f"; {store['evicted']} samples evicted" if store.get("evicted") else "")]
    uplink = status["uplink"]
    state = "connected" if uplink["connected"] else "DISCONNECTED"
    rates = uplink.get("rates")
    rate = (f"{rates['acknowledged_per_second'] * 60:.1f} batches/min, {rates['rows_acknowledged_per_second']:.1f} "
            f"rows/s, {_bytes(rates['bytes_published_per_second'])}/s over {rates['window_seconds']:.0f} s"
            if rates else "rate: not measured yet")
    lines.append(f"uplink: {state} to {uplink['broker']}; {uplink['inflight']} batches in flight, "
                 f"{uplink['acknowledged']} acknowledged (last {_ago(uplink['last_ack_age'])} ago), "
                 f"{uplink['disconnects']} disconnects; {rate}")
    lines += _data_quality_lines(status.get("data_quality"))
    if status.get("tails"):
        lines.append(f"tails following: {status['tails']}")
    return "\n".join(lines)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _reasons(by_reason: dict[str, int]) -> str:
    """` (3 stale, 1 uncertain)`, or nothing when there are none."""
    return f" ({', '.join(f'{count} {reason}' for reason, count in by_reason.items())})" if by_reason else ""


def _data_quality_lines(quality: dict[str, Any] | None) -> list[str]:
    """Per device: online share, completeness and age p50/p95 of the period and since start."""
    if quality is None:
        return []
    lines = ["", f"data quality: period {_ago(quality['period_seconds'])} of {_ago(quality['interval'])}, "
             f"since start {_ago(quality['since_start_seconds'])}"]
    rows = []
    for device in quality["devices"]:
        period, total = device["period"], device["since_start"]
        rows.append([device["device"], f"{_share(period['online'])} / {_share(total['online'])}",
                     f"{_share(period['completeness'])} / {_share(total['completeness'])}",
                     f"{_ms(period['age_p50'])} / {_ms(period['age_p95'])}",
                     device["frozen_tags"], device["outside_range_tags"],
                     period["rate_violations"]])
    if rows:
        lines += _table(["DEVICE", "ONLINE (PERIOD / START)", "COMPLETE (PERIOD / START)", "AGE P50 / P95",
                         "FROZEN", "OUT OF RANGE", "RATE VIOLATIONS"], rows)
    flagged = quality["flagged"]
    for item in flagged[:FLAGGED_SHOWN]:
        what = " and ".join(flag for flag, on in (("frozen", item["frozen"]),
                                                  ("outside its range", item["outside_range"])) if on)
        lines.append(f"  {item['tag']} {what}")
    if len(flagged) > FLAGGED_SHOWN:
        lines.append(f"  ... and {len(flagged) - FLAGGED_SHOWN} more (gatewayd status --json)")
    return lines


def render_tail_line(line: dict[str, Any]) -> str | None:
    """One `gatewayd tail` line; None for lines that carry nothing to show (keepalives)."""
    kind = line.get("type")
    if kind == "sample":
        stamp = time.strftime("%H:%M:%S", time.localtime(line["ts"])) + f".{int(line['ts'] * 1000) % 1000:03d}"
        value = "-" if line["value"] is None else f"{line['value']:.6g}"
        quality = "" if line["quality"] == 0 else f"  {quality_name(line['quality'])}"
        unit = f" {line['unit']}" if line.get("unit") else ""
        return f"{stamp}  {line['tag']:<16} {value}{unit}{quality}"
    if kind == "event":
        stamp = time.strftime("%H:%M:%S", time.localtime(line["ts"])) + f".{int(line['ts'] * 1000) % 1000:03d}"
        return f"{stamp}  EVENT {line['kind']} [{line['source']}] {line['message']}"
    if kind == "dropped":
        return f"... {line['count']} lines dropped: this terminal reads slower than the gateway produces"
    if kind == "following":
        filter = line["filter"]
        what = " ".join(f"{key} {value}" for key, value in (("tag", filter["tag"]), ("device", filter["device"]))
                        if value) or "all tags"
        samples = "events only" if filter["events_only"] else f"{line['tags']} tags"
        return f"following {what}: {samples} and their events (Ctrl-C ends)"
    return None


def render_reload(result: dict[str, Any]) -> str:
    if not result["applied"]:
        return f"configuration unchanged (sha256 {result['sha256'][:16]})"
    lines = [f"configuration reloaded (sha256 {result['sha256'][:16]}): {result['summary']}"]
    lines += [f"note: {note}" for note in result.get("notes", [])]
    return "\n".join(lines)

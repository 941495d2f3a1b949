"""`gatewayd watch`: a live terminal view of what arrives upstream, verified batch by batch.

It is what the platform would see: the newest value of each tag with its quality, the latest alarms
and events, and whether every batch so far was authentic, in sequence and chained.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime

from core.types import Priority, Quality
from core.batchformat import BatchFormatError, decode_body, parse_envelope
from gatewayd.platform.verify import ChainVerifier

SHOWN_TAGS = 40
SHOWN_EVENTS = 10
CLEAR = "\x1b[H\x1b[2J"
BOLD, RED, YELLOW, GREEN, RESET = "\x1b[1m", "\x1b[31m", "\x1b[33m", "\x1b[32m", "\x1b[0m"


def quality_name(code: int) -> str:
    try:
        return Quality(code).name.lower()
    except ValueError:
        return f"q{code}"


def clock(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000).strftime("%H:%M:%S.%f")[:-3]


class View:
    """The state behind the screen, fed one batch at a time."""

    def __init__(self, public_key):
        self.verifier = ChainVerifier(public_key)
        self.latest: dict[str, tuple[float | None, int, int | None]] = {}
        self.units: dict[str, str] = {}
        self.events: deque[dict] = deque(maxlen=SHOWN_EVENTS)
        self.findings: deque[str] = deque(maxlen=5)
        self.batches = self.samples = self.event_count = 0
        self.last_seq = 0
        self.gateway = ""

    def feed(self, frame: bytes) -> None:
        self.findings.extend(str(finding) for finding in self.verifier.feed(frame))
        try:
            envelope = parse_envelope(frame)
            body = decode_body(envelope)
        except BatchFormatError:
            return
        self.batches += 1
        self.last_seq = max(self.last_seq, envelope.seq)
        self.gateway = envelope.gateway_id
        names, samples = body["tags"], body["samples"]
        for index, ts, value, quality in zip(samples["tag"], samples["ts"], samples["value"], samples["quality"]):
            self.latest[names[index]] = (value, quality, ts)
        self.samples += len(samples["tag"])
        for event in body["events"]:
            self.event_count += 1
            if event["kind"] == "tag_metadata":
                self.units.update({tag["tag"]: tag.get("unit", "") for tag in event["data"]["tags"]})
            else:
                self.events.appendleft(event)

    def render(self, source: str, note: str = "") -> str:
        report = self.verifier.report()
        chain = f"{GREEN}verified{RESET}" if report.ok else f"{RED}PROBLEMS{RESET}"
        lines = [f"{BOLD}gatewayd watch{RESET}  {source}  {datetime.now():%Y-%m-%d %H:%M:%S}",
                 *([note] if note else []),
                 f"gateway {self.gateway or '-'}  batches {self.batches}  last seq {self.last_seq}  "
                 f"samples {self.samples}  events {self.event_count}  chain {chain}", "",
                 f"{BOLD}{'TAG':<12}{'VALUE':>12}  {'UNIT':<6}{'QUALITY':<15}TIME{RESET}"]
        for name in sorted(self.latest)[:SHOWN_TAGS]:
            value, quality, ts = self.latest[name]
            shown = "-" if value is None else f"{value:.3f}"
            colour = GREEN if quality == Quality.GOOD else RED
            lines.append(f"{name:<12}{shown:>12}  {self.units.get(name, ''):<6}"
                         f"{colour}{quality_name(quality):<15}{RESET}{clock(ts)}")
        if len(self.latest) > SHOWN_TAGS:
            lines.append(f"... and {len(self.latest) - SHOWN_TAGS} more tags")
        lines += ["", f"{BOLD}latest events{RESET}"]
        for event in self.events:
            colour = RED if event["priority"] >= Priority.HIGH else YELLOW if event["priority"] else ""
            lines.append(f"{clock(event['ts'])} {colour}{Priority(event['priority']).name:<9}{RESET}"
                         f"{event['kind']:<16}{event['message']}")
        if self.findings:
            lines += ["", f"{BOLD}verification findings{RESET}", *self.findings]
        return "\n".join(lines)


def watch(receiver, public_key, refresh: float = 1.0, out=sys.stdout, note: str | Callable[[], str] = "") -> int:
    """Run until interrupted; each refresh feeds the batches that arrived since the last one. `note` is a
    line shown under the title, or a function asked for it at each refresh (the demo names its console
    there, and counts what its ingest worker stored)."""
    view = View(public_key)
    receiver.start()
    seen = 0
    try:
        while True:
            frames = receiver.frames()
            for frame in frames[seen:]:
                view.feed(frame)
            seen = len(frames)
            line = note() if callable(note) else note
            out.write(CLEAR + view.render(f"{receiver.host}:{receiver.port} {receiver.topic}", line) + "\n")
            out.flush()
            time.sleep(refresh)
    except KeyboardInterrupt:
        return 0
    finally:
        receiver.stop()

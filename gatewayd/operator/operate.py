"""Operating the running daemon: `status`, `tail` and `reload` on the control socket.

- `status`: one screen of the daemon's health, built from the same snapshot the Prometheus endpoint
  uses (`gatewayd.metrics.snapshot`) plus what a person needs beside the figures: since when each
  device is up or down, which tags are bad and why, which alarms are active at which priority, which
  interlocks are bypassed, and the uplink's recent rate (`gatewayd.operator.status`). The CLI turns
  the answer into text with `gatewayd.operator.render`.
- `tail`: live samples and events (`gatewayd.operator.tail`); `on_commit` is the scanner's tap.
- `points` and `alarm_actions`: every tag's value, quality, age, range and limits, and who shelved or took
  out of service which alarm (`gatewayd.operator.points`), for the console (`gatewayd.console`).
- `reload`: the daemon's `gatewayd.reload.Reloader`, for the running config file only.

    operate = Operate(daemon, reloader)
    daemon.control.handlers.update(operate.handlers())
    scanner.tap = operate.on_commit
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gatewayd import __version__
from gatewayd.operator.control import CommandError, Handler, Peer
from gatewayd.operator.points import ActionRecord, point_list
from gatewayd.operator.status import RATE_SAMPLE, RateWindow, alarms_by_priority, data_quality_status, tag_quality
from gatewayd.operator.tail import Fanout, TailFilter
from core.types import Event

if TYPE_CHECKING:
    from gatewayd.reload import Reloader

TAIL_KEEPALIVE = 5.0  # seconds: an idle stream sends a keepalive, so a vanished reader is noticed
DEVICE_EVENTS = {"device_down": False, "device_up": True}


class Operate:
    """The operating commands of one daemon, and the small bookkeeping they need."""

    def __init__(self, daemon: Any, reloader: Reloader):
        self.daemon, self.reloader = daemon, reloader
        self.fanout = Fanout()
        self.rates = RateWindow()
        self.started = time.time()
        self.device_since: dict[str, float] = {}
        self.device_error: dict[str, tuple[float, str]] = {}  # the latest device_down: when and why
        self.actions = ActionRecord()

    # the scanner calls this after every commit (a scan tick or an operator action)
    def on_commit(self, table: Any, rows: np.ndarray | None, samples: Any, events: Sequence[Event]) -> None:
        for event in events:
            if event.kind in DEVICE_EVENTS:
                self.device_since[event.source] = event.ts
            if event.kind == "device_down":
                self.device_error[event.source] = (event.ts, event.message)
        self.actions.feed(events)
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
        return {"status": self.status, "tail": self.tail, "reload": self.reload, "points": self.points,
                "alarm_actions": self.alarm_actions}

    # ---------------------------------------------------------------------------------- commands

    def status(self, request: dict[str, Any] | None = None, peer: Peer | None = None) -> dict[str, Any]:
        from gatewayd.metrics import snapshot  # here: prometheus-client is loaded only where figures are asked for

        daemon = self.daemon
        snap = snapshot(daemon)
        rules = daemon.scanner.engine.status()
        analytics = snap["rules"]["analytics"]
        devices = {device.name: device for device in daemon.config.devices}
        for item in snap["devices"]:
            device = devices.get(item["name"])
            item["driver"] = device.driver if device else ""
            item["poll_interval"] = device.poll_interval if device else None
            item["tags"] = len(device.tags) if device else 0
            item["since"] = self.device_since.get(item["name"])
            item["last_error_at"], item["last_error"] = self.device_error.get(item["name"], (None, None))
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
            "alarms": {"by_priority": alarms_by_priority(rules["states"], rules["priorities"]), **rules["counts"],
                       "flood": bool(analytics["flood"]), "per_10min": analytics["current_per_10min"]},
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

    def points(self, request: dict[str, Any], peer: Peer) -> list[dict[str, Any]]:
        return point_list(self.daemon.table, self.daemon.config.rules.gas)

    def alarm_actions(self, request: dict[str, Any], peer: Peer) -> dict[str, dict[str, Any]]:
        return self.actions.latest

    async def reload(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        wanted = request.get("config")
        running = self.daemon.config.file
        if wanted is not None and str(wanted) != str(running.resolve()):
            raise CommandError(f"this daemon runs {running.resolve()} and reloads only that file, not {wanted}")
        return await self.reloader.reload(peer.user)

"""The running daemon: builds the pieces from a validated config and supervises their tasks.

Drivers, the scan loop and the uplink are separate tasks. A driver that dies of an unexpected error
is logged and restarted after a pause, so polling never stops for good; the scan and uplink loops
are the daemon's heart: if one of them fails the daemon exits non-zero and systemd restarts it,
since the store keeps everything it had accepted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import time

from gatewayd import __version__
from gatewayd.config.model import Config
from gatewayd.systemd import notify, watchdog_interval
from gatewayd.types import QUALITY_BAD_MIN, Event, Priority

log = logging.getLogger("gatewayd")

MIN_SCAN_SPACING = 0.05  # coalesce the wake-ups of many devices finishing their polls together
DRIVER_RESTART_DELAY = 5.0
WATCHDOG_STALL = 30.0  # a loop that has not turned for this long stops the watchdog pings
METADATA_CHUNK = 500
STOP_DRAIN_SECONDS = 5.0  # well inside systemd's TimeoutStopSec
SUMMARY_INTERVAL = 300.0  # one summary line instead of a line per poll


def prepare_numba_cache(config: Config) -> None:
    """Numba reads NUMBA_CACHE_DIR at import: point it at the daemon's cache directory first."""
    cache = config.gateway.cache_dir / "numba"
    cache.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(cache))


class Daemon:
    def __init__(self, config: Config):
        prepare_numba_cache(config)
        # imported here so that numba sees the cache directory and check-config stays light
        import drivers
        from gatewayd.keys import load_private_key
        from gatewayd.points import PointTable
        from gatewayd.scan import Scanner
        from gatewayd.uplink.publisher import Publisher, new_boot_id
        from store import Store

        self.config = config
        self.boot_id = new_boot_id()
        self.store = Store.open(config.store.path, config.store.synchronous)
        self.table = PointTable(config.tags)
        tag_ids = self.store.tag_ids(config.tag_names())
        self.scanner = Scanner(self.table, tag_ids, self.store)
        self.publisher = Publisher(config.uplink, config.gateway.id, self.store,
                                   load_private_key(config.uplink.signing_key), self.boot_id)
        self.drivers = {}
        for device in config.devices:
            rows = self.table.rows_of([tag.name for tag in device.tags])
            self.drivers[device.name] = drivers.create(device, rows)
        self.scan_progress = time.monotonic()
        self._stopping = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        self._record_start()
        tasks = [asyncio.create_task(self._supervise_driver(name, driver), name=f"driver:{name}")
                 for name, driver in self.drivers.items()]
        heart = [asyncio.create_task(self._scan_loop(), name="scan"),
                 asyncio.create_task(self.publisher.run(), name="uplink")]
        tasks += heart + [asyncio.create_task(self._watchdog(), name="watchdog"),
                          asyncio.create_task(self._summaries(), name="summary")]
        stop = asyncio.create_task(self._stopping.wait(), name="stop")
        done, _ = await asyncio.wait([stop, *heart], return_when=asyncio.FIRST_COMPLETED)
        exit_code = 0
        for task in done:
            if task is not stop:
                log.critical("%s loop ended: %r", task.get_name(), task.exception())
                exit_code = 1
        notify("STOPPING=1")
        stop.cancel()
        uplink = heart[1]
        for task in tasks:
            if task is not uplink:
                task.cancel()
        await asyncio.gather(*(task for task in tasks if task is not uplink), stop, return_exceptions=True)
        try:
            self.scanner.tick()  # commit what the last polls brought
            await self._drain(uplink)
        finally:
            self.store.close()
        log.info("stopped: %d samples and %d events committed in this run, %d batches acknowledged",
                 self.scanner.stats.samples, self.scanner.stats.events, self.publisher.stats.acknowledged)
        return exit_code

    async def _drain(self, uplink: asyncio.Task) -> None:
        """Give the uplink a few seconds to send what is stored; what remains waits for the next start."""
        deadline = time.monotonic() + STOP_DRAIN_SECONDS
        while not uplink.done() and time.monotonic() < deadline and self.publisher.stats.connected:
            if self.store.stats().rows_pending == 0 and self.publisher.inflight == 0:
                break
            self.publisher.wake()
            await asyncio.sleep(0.05)
        uplink.cancel()
        await asyncio.gather(uplink, return_exceptions=True)

    def _record_start(self) -> None:
        config = self.config
        digest = hashlib.sha256(config.file.read_bytes()).hexdigest()
        self.table.event(Event(
            "gateway_started", time.time(), config.gateway.id,
            f"gatewayd {__version__} started with {len(config.tags)} tags on {len(config.devices)} devices",
            Priority.INFO,
            {"version": __version__, "boot_id": self.boot_id.hex(), "config_sha256": digest,
             "tags": len(config.tags), "devices": [device.name for device in config.devices]}))
        metadata = [{"tag": tag.name, **tag.metadata()} for tag in config.tags]
        for start in range(0, len(metadata), METADATA_CHUNK):
            chunk = metadata[start:start + METADATA_CHUNK]
            self.table.event(Event("tag_metadata", time.time(), config.gateway.id,
                                   f"metadata of {len(chunk)} tags", Priority.INFO, {"tags": chunk}))
        log.info("gatewayd %s starting: gateway %s, %d devices, %d tags, boot %s, config sha256 %s",
                 __version__, config.gateway.id, len(config.devices), len(config.tags),
                 self.boot_id.hex(), digest[:16])

    async def _supervise_driver(self, name: str, driver) -> None:
        while True:
            try:
                await driver.run(self.table)
                log.error("driver %s returned; restarting it", name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("driver %s failed; restarting it in %.0f s", name, DRIVER_RESTART_DELAY)
                self.table.event(Event("driver_crashed", time.time(), name,
                                       f"driver {name} failed unexpectedly and is restarted", Priority.HIGH))
            await asyncio.sleep(DRIVER_RESTART_DELAY)

    async def _scan_loop(self) -> None:
        interval = self.config.gateway.scan_interval
        changed = self.table.changed
        last = 0.0
        while True:
            try:
                await asyncio.wait_for(changed.wait(), timeout=interval)
            except TimeoutError:
                pass
            delay = last + MIN_SCAN_SPACING - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            changed.clear()
            first = self.scanner.stats.scans == 0
            self.scanner.tick()
            last = self.scan_progress = time.monotonic()
            self.publisher.wake()
            if first:
                notify("READY=1\nSTATUS=scanning")
                log.info("first scan done: ready")

    async def _watchdog(self) -> None:
        """Ping systemd only while the scan and uplink loops really turn."""
        interval = watchdog_interval()
        if interval is None:
            return
        while True:
            now = time.monotonic()
            stalled = [name for name, progress in (("scan", self.scan_progress),
                                                   ("uplink", self.publisher.progress_monotonic))
                       if now - progress > WATCHDOG_STALL]
            if stalled:
                log.error("loops stalled: %s; withholding the watchdog ping", ", ".join(stalled))
            else:
                notify("WATCHDOG=1")
            await asyncio.sleep(interval)


    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(SUMMARY_INTERVAL)
            store, uplink = self.store.stats(), self.publisher.stats
            bad = int((self.table.quality >= QUALITY_BAD_MIN).sum())
            log.info("summary: %d scans, %d samples, %d events; %d tags bad; store %d rows pending, "
                     "%d batches in flight; uplink %s, %d batches acknowledged",
                     self.scanner.stats.scans, self.scanner.stats.samples, self.scanner.stats.events, bad,
                     store.rows_pending, self.publisher.inflight,
                     "connected" if uplink.connected else "disconnected", uplink.acknowledged)
            notify(f"STATUS={bad} tags bad, {store.rows_pending} rows pending, "
                   f"uplink {'up' if uplink.connected else 'down'}")


def run_daemon(config: Config) -> int:
    import uvloop

    return uvloop.run(Daemon(config).run())

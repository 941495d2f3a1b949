"""The running daemon: builds the pieces from a validated config and supervises their tasks.

Drivers, the scan loop and the uplink are separate tasks. A driver that dies of an unexpected error
is logged and restarted after a pause, so polling never stops for good; the scan and uplink loops
are the daemon's heart: if one of them fails the daemon exits non-zero and systemd restarts it,
since the store keeps everything it had accepted.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import replace
from pathlib import Path

from gatewayd import __version__
from gatewayd.config.model import Config, UplinkConfig, point_tags
from gatewayd.kernelcache import use_kernel_cache
from gatewayd.secretfiles import refuse_loose
from gatewayd.systemd import notify, secret_path, watchdog_interval
from gatewayd.trust import refuse_root_over_foreign_directories
from gatewayd.types import QUALITY_BAD_MIN, Event, Priority

log = logging.getLogger("gatewayd")

MIN_SCAN_SPACING = 0.05  # coalesce the wake-ups of many devices finishing their polls together
DRIVER_RESTART_DELAY = 5.0
WATCHDOG_STALL = 30.0  # a loop that has not turned for this long (or 3 of its periods) stops the pings
STATUS_INTERVAL = 10.0  # STATUS= refresh when systemd does not ask for watchdog pings
METADATA_CHUNK = 500
STOP_DRAIN_SECONDS = 5.0  # well inside systemd's TimeoutStopSec
SUMMARY_INTERVAL = 300.0  # one summary line instead of a line per poll


def resolve_uplink(uplink: UplinkConfig) -> UplinkConfig:
    """Secrets given as credential:NAME are files in $CREDENTIALS_DIRECTORY while the service runs."""
    return replace(uplink, signing_key=secret_path(uplink.signing_key),
                   password_file=uplink.password_file and secret_path(uplink.password_file))


def secret_files(config: Config, uplink: UplinkConfig) -> list[tuple[str, Path | None]]:
    """(what, path) of every file of the config that holds a secret, `uplink` with its credentials resolved:
    start and reload refuse them when loose (`gatewayd.secretfiles`), as check-config does."""
    import drivers

    files = [("signing key", uplink.signing_key), ("broker password file", uplink.password_file),
             ("MQTT client key", uplink.tls.key_file)]
    for device in config.devices:
        for key, what in getattr(drivers.schema(device.driver), "SECRET_FILES", {}).items():
            files.append((f"{what} of device {device.name}", getattr(device.settings, key)))
    return files


def prepare_start(config: Config) -> None:
    """Before anything is read from the daemon's directories: as root only over root's own directories,
    and numba's kernel cache checked (gatewayd.kernelcache) before numba is first imported."""
    gateway = config.gateway
    refuse_root_over_foreign_directories((gateway.state_dir, gateway.cache_dir, gateway.runtime_dir,
                                          config.store.path.parent))
    use_kernel_cache(gateway.cache_dir)


class Daemon:
    def __init__(self, config: Config):
        prepare_start(config)
        # imported here so that numba sees the cache directory and check-config stays light
        from gatewayd.access import Access
        from gatewayd.operator.control import ControlServer, rule_handlers, socket_path
        from gatewayd.keys import load_private_key
        from gatewayd.values.points import PointTable
        from gatewayd.values.scan import Scanner, build_data_quality, build_engine
        from gatewayd.uplink.publisher import Publisher, new_boot_id
        from gatewayd.values.clock import ClockGuard
        from gatewayd.operate import Operate
        from gatewayd.peerlimits import DescriptorReserve, raise_descriptor_limit
        from gatewayd.reload import create_driver
        from store import Retention, Store
        from store.spill import Spill

        self.config = config
        self.boot_id = new_boot_id()
        uplink = resolve_uplink(config.uplink)
        refuse_loose(secret_files(config, uplink))
        self.store = Store.open(config.store.path, config.store.synchronous,
                                Retention(config.store.max_bytes, config.store.thinning))
        self.table = PointTable(point_tags(config))
        tag_ids = self.store.tag_ids([tag.name for tag in self.table.tags])
        self.engine = build_engine(config, self.table)
        self.scanner = Scanner(self.table, tag_ids, self.store, self.engine,
                               build_data_quality(config, self.table, time.monotonic(), time.time()))
        self.scanner.restore_state()
        # peers (control socket, metrics) never get the last descriptors: drivers, store and uplink keep them
        self.reserve = DescriptorReserve(raise_descriptor_limit(), config.limits.reserved_descriptors)
        self.reserve.warn_if_short(config.limits.control_connections
                                   + (config.limits.metrics_connections if config.metrics else 0))
        self.control = ControlServer(socket_path(config.gateway.runtime_dir), config.limits, self.reserve,
                                     Access(config.control))
        self.control.handlers.update(rule_handlers(self.engine, self.scanner.commit,
                                                   config.control.approval_window))
        self.operate = Operate(self)  # status, tail, reload
        self.control.handlers.update(self.operate.handlers())
        self.scanner.tap = self.operate.on_commit
        self.spill = Spill(self.store)  # a full disk stops storing, never scanning
        self.clock = ClockGuard(self.spill)
        self.scanner.outbox = self.clock
        self.publisher = Publisher(uplink, config.gateway.id, self.store,
                                   load_private_key(uplink.signing_key), self.boot_id)
        self.publisher.on_built = self._samples_sent
        self.drivers, self.sinks = {}, {}  # a driver writes through its sink, which a reload may retarget
        for device in config.devices:
            self.drivers[device.name], self.sinks[device.name] = create_driver(device, self.table)
        self.driver_tasks: dict[str, asyncio.Task] = {}
        self._publisher_swaps: asyncio.Queue = asyncio.Queue()
        self.scan_progress = time.monotonic()
        self._stopping = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.operate.reload_on_signal)
        metrics = await self._start_metrics()
        if metrics is False:
            self.store.close()
            return 1
        notify(f"STATUS=starting: {len(self.drivers)} devices, {len(self.config.tags)} tags, first scan pending")
        self._record_start()
        await self.control.start()
        for name in self.drivers:
            self.start_driver(name)
        heart = [asyncio.create_task(self._scan_loop(), name="scan"),
                 asyncio.create_task(self._uplink(), name="uplink")]
        tasks = heart + [asyncio.create_task(self._watchdog(), name="watchdog"),
                         asyncio.create_task(self._summaries(), name="summary"),
                         asyncio.create_task(self.operate.sample_rates(), name="rates")]
        stop = asyncio.create_task(self._stopping.wait(), name="stop")
        done, _ = await asyncio.wait([stop, *heart], return_when=asyncio.FIRST_COMPLETED)
        exit_code = 0
        for task in done:
            if task is not stop:
                log.critical("%s loop ended: %r", task.get_name(), task.exception())
                exit_code = 1
        stopping_at = time.monotonic()  # a tag is not stale because its driver was stopped after this
        notify("STOPPING=1\nSTATUS=stopping: last scan, then up to 5 s to send what is stored")
        if metrics is not None:
            await metrics.stop()
        stop.cancel()
        uplink = heart[1]
        tasks += self.driver_tasks.values()  # as they are now: a reload may have replaced some
        for task in tasks:
            if task is not uplink:
                task.cancel()
        await asyncio.gather(*(task for task in tasks if task is not uplink), stop, return_exceptions=True)
        await self.control.close()
        try:
            self.scanner.tick(stale_as_of=stopping_at)  # commit what the last polls brought
            self.scanner.save_state()
            if not self.spill.flush():
                log.error("disk still full at stop: %d samples and %d events held in memory are lost",
                          self.spill.stats.waiting_samples, self.spill.stats.waiting_events)
            await self._drain(uplink)
        finally:
            self.store.close()
        log.info("stopped: %d samples and %d events committed in this run, %d batches acknowledged",
                 self.scanner.stats.samples, self.scanner.stats.events, self.publisher.stats.acknowledged)
        return exit_code

    async def _start_metrics(self):
        """The Prometheus endpoint if configured: the server, None when not configured, False if it cannot listen."""
        where = self.config.metrics
        if where is None:
            return None
        from gatewayd.operator.control import ControlError
        from gatewayd.metrics import MetricsServer

        server = MetricsServer(self, where, self.config.limits, self.reserve)
        try:
            await server.start()
        except (OSError, ControlError) as exc:
            log.critical("metrics endpoint %s cannot listen: %s", where.where(), getattr(exc, "strerror", None) or exc)
            return False
        log.info("metrics on %s (%d connections)", where.where(), self.config.limits.metrics_connections)
        return server

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
        digest = self.operate.reloader.digest = config.config_sha256
        self.table.event(Event(
            "gateway_started", time.time(), config.gateway.id,
            f"gatewayd {__version__} started with {len(config.tags)} tags on {len(config.devices)} devices",
            Priority.INFO,
            {"version": __version__, "boot_id": self.boot_id.hex(), "config_sha256": digest,
             "config_files": config.source_list(), "tags": len(config.tags),
             "devices": [device.name for device in config.devices]}))
        metadata = [{"tag": tag.name, **tag.metadata()} for tag in self.table.tags]
        for start in range(0, len(metadata), METADATA_CHUNK):
            chunk = metadata[start:start + METADATA_CHUNK]
            self.table.event(Event("tag_metadata", time.time(), config.gateway.id,
                                   f"metadata of {len(chunk)} tags", Priority.INFO, {"tags": chunk}))
        log.info("gatewayd %s starting: gateway %s, %d devices, %d tags, boot %s, config sha256 %s",
                 __version__, config.gateway.id, len(config.devices), len(config.tags),
                 self.boot_id.hex(), digest[:16])

    def start_driver(self, name: str) -> None:
        self.driver_tasks[name] = asyncio.create_task(self._supervise_driver(name, self.drivers[name]),
                                                      name=f"driver:{name}")
        self.operate.device_started(name)

    async def stop_driver(self, name: str) -> None:
        task = self.driver_tasks.pop(name)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _supervise_driver(self, name: str, driver) -> None:
        while True:
            try:
                await driver.run(self.sinks[name])
                log.error("driver %s returned; restarting it", name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("driver %s failed; restarting it in %.0f s", name, DRIVER_RESTART_DELAY)
                self.table.event(Event("driver_crashed", time.time(), name,
                                       f"driver {name} failed unexpectedly and is restarted", Priority.HIGH))
            await asyncio.sleep(DRIVER_RESTART_DELAY)

    async def _scan_loop(self) -> None:
        last = 0.0
        while True:
            changed = self.table.changed  # a reload may replace the table and the interval
            # the next stale deadline wakes the scan too, so a silent tag turns STALE on time
            wait = min(self.config.gateway.scan_interval, max(0.0, self.table.stale_due - time.monotonic()))
            try:
                await asyncio.wait_for(changed.wait(), timeout=wait)
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
                notify(f"READY=1\nSTATUS={self._status()}")
                log.info("first scan done: ready")

    async def _uplink(self) -> None:
        """Run the publisher. A reload that changes `uplink:` hands a new one in (`replace_publisher`): the
        old one stops first, so the new one reads every batch the old one built from the store."""
        while True:
            run = asyncio.create_task(self.publisher.run(), name="publisher")
            swap = asyncio.create_task(self._publisher_swaps.get(), name="publisher-swap")
            try:
                await asyncio.wait([run, swap], return_when=asyncio.FIRST_COMPLETED)
            finally:
                run.cancel()
                swap.cancel()
                await asyncio.gather(run, swap, return_exceptions=True)
            if swap.cancelled():
                run.result()  # the publisher failed: the uplink loop ends with its error
                return
            build, started = swap.result()
            previous = self.publisher
            try:
                self.publisher = build()
            except BaseException as exc:
                started.set_exception(exc)
                raise
            self.publisher.stats = replace(previous.stats, connected=False)  # counters go on, never back
            self.publisher.on_built = self._samples_sent
            started.set_result(None)
            log.info("uplink restarted for the new configuration: %s:%d", self.publisher.config.host,
                     self.publisher.config.port)

    def _samples_sent(self, samples, created: float) -> None:
        self.scanner.samples_sent(samples, created)  # the scanner of the moment: a reload may replace it

    async def replace_publisher(self, build) -> None:
        """Stop the running publisher, then run `build()` instead; returns once the new one runs."""
        started = asyncio.get_running_loop().create_future()
        self._publisher_swaps.put_nowait((build, started))
        await started

    def _status(self) -> str:
        """One line for `systemctl status`: devices, bad tags, backlog, uplink."""
        down = sum(1 for driver in self.drivers.values() if driver.is_down)
        bad = int((self.table.quality >= QUALITY_BAD_MIN).sum())
        pending = self.store.stats().rows_pending
        return (f"{len(self.drivers) - down}/{len(self.drivers)} devices up, {bad} tags bad, "
                f"{pending} rows pending, uplink {'up' if self.publisher.stats.connected else 'down'}")

    async def _watchdog(self) -> None:
        """Ping systemd only while the scan and uplink loops really turn; refresh STATUS= as we go."""
        interval = watchdog_interval()
        if interval is None and not notify(f"STATUS={self._status()}"):
            return  # not run by systemd
        was_stalled: list[str] = []
        while True:
            scan_period = self.config.gateway.scan_interval  # a reload may change it
            stalled = stalled_loops(time.monotonic(), {"scan": (self.scan_progress, scan_period),
                                                       "uplink": (self.publisher.progress_monotonic, 1.0)})
            if stalled and stalled != was_stalled:
                log.error("%s loop stalled; withholding the watchdog ping so that systemd restarts the daemon",
                          " and ".join(stalled))
            was_stalled = stalled
            if stalled:
                notify(f"STATUS={' and '.join(stalled)} loop stalled")
            elif interval:
                notify(f"WATCHDOG=1\nSTATUS={self._status()}")
            else:
                notify(f"STATUS={self._status()}")
            await asyncio.sleep(interval or STATUS_INTERVAL)


    async def _summaries(self) -> None:
        """One line every SUMMARY_INTERVAL instead of a line per poll: drivers log only state changes,
        so a device down for a week costs one line when it goes, one when it is back, and a mention here."""
        while True:
            await asyncio.sleep(SUMMARY_INTERVAL)
            store, uplink = self.store.stats(), self.publisher.stats
            bad = int((self.table.quality >= QUALITY_BAD_MIN).sum())
            down = [f"{name} ({driver.stats.failures} failed polls so far)"
                    for name, driver in self.drivers.items() if driver.is_down]
            log.info("summary: %d scans, %d samples, %d events; %d tags bad; devices down: %s; "
                     "store %d rows pending, %d batches in flight; uplink %s, %d batches acknowledged",
                     self.scanner.stats.scans, self.scanner.stats.samples, self.scanner.stats.events, bad,
                     ", ".join(down) or "none", store.rows_pending, self.publisher.inflight,
                     "connected" if uplink.connected else "disconnected", uplink.acknowledged)


def stalled_loops(now: float, loops: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the loops that have not turned lately, given each loop's last progress and normal period.

    A loop counts as stalled after WATCHDOG_STALL seconds without progress, or three of its periods
    when those are longer (a scan loop at scan_interval 1 min is not stalled after 30 s).
    """
    return [name for name, (progress, period) in loops.items()
            if now - progress > max(WATCHDOG_STALL, 3 * period)]


def run_daemon(config: Config) -> int:
    import uvloop

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the loop handles it: a reload too early must not kill

    return uvloop.run(Daemon(config).run())

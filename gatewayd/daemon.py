"""The running daemon: runs the pieces `gatewayd.assembly` builds from a validated config, supervises
their tasks, and applies the plans `gatewayd.reload` prepares.

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

import uvloop

from gatewayd import __version__, heap
from gatewayd.operator.access import Access
from gatewayd.assembly import (
    Points,
    PublisherFactory,
    build_driver,
    build_outbox,
    build_points,
    check_secrets,
    device_sink,
    metadata_events,
    open_store,
    publisher_factory,
)
from gatewayd.config.diff import ConfigDiff
from gatewayd.config.model import Config
from gatewayd.operator.control import ControlError, ControlServer, rule_handlers, socket_path
from gatewayd.operator.operate import Operate
from gatewayd.peerlimits import DescriptorReserve, raise_descriptor_limit
from gatewayd.reload import ReloadPlan, Reloader, ReloadRefused
from gatewayd.systemd import notify, watchdog_interval
from core.types import QUALITY_BAD_MIN, Event, Priority
from gatewayd.uplink.epoch import begin_epoch_if_needed
from gatewayd.uplink.publisher import new_boot_id
from gatewayd.values.carry import carry_over
from core.waits import end_tasks, wait_set

log = logging.getLogger("gatewayd")

MIN_SCAN_SPACING = 0.05  # coalesce the wake-ups of many devices finishing their polls together
WRITES_PAUSE = 0.01  # a poll's blocks arrive back to back: the scan waits for its writes to pause this long
DRIVER_RESTART_DELAY = 5.0
WATCHDOG_STALL = 30.0  # a loop that has not turned for this long (or 3 of its periods) stops the pings
STATUS_INTERVAL = 10.0  # STATUS= refresh when systemd does not ask for watchdog pings
STOP_DRAIN_SECONDS = 5.0  # well inside systemd's TimeoutStopSec
SUMMARY_INTERVAL = 300.0  # one summary line instead of a line per poll


class Daemon:
    """The pieces of one running configuration (built by `gatewayd.assembly`) and the tasks that run them;
    `run()` until SIGTERM, `apply(plan)` for a reload."""

    def __init__(self, config: Config):
        self.config = config
        self.boot_id = new_boot_id()
        check_secrets(config)  # a loose or missing secret fails before anything opens
        make_publisher = publisher_factory(config, self.boot_id)
        self.store = open_store(config)
        begin_epoch_if_needed(self.store, config.gateway.id)
        points = build_points(config, self.store)
        self.table, self.engine, self.scanner = points.table, points.engine, points.scanner
        self.scanner.restore_state()
        self.spill, self.clock = build_outbox(self.store)
        self.scanner.outbox = self.clock
        self.reloader = Reloader(self)
        self.operate = Operate(self, self.reloader)  # status, tail, reload
        self.scanner.tap = self.operate.on_commit
        # peers (control socket, metrics) never get the last descriptors: drivers, store and uplink keep them
        self.reserve = DescriptorReserve(raise_descriptor_limit(), config.limits.reserved_descriptors)
        self.reserve.warn_if_short(config.limits.control_connections
                                   + (config.limits.metrics_connections if config.metrics else 0))
        self.control = ControlServer(socket_path(config.gateway.runtime_dir), config.limits, self.reserve,
                                     Access(config.control))
        self.control.handlers.update(rule_handlers(self.engine, self.scanner.commit,
                                                   config.control.approval_window))
        self.control.handlers.update(self.operate.handlers())
        self.publisher = make_publisher(self.store)
        self.publisher.on_built = self._samples_sent
        self.drivers = {device.name: build_driver(device) for device in config.devices}
        # a driver writes through its sink, which a reload may retarget
        self.sinks = {device.name: device_sink(device, self.table) for device in config.devices}
        self.driver_tasks: dict[str, asyncio.Task] = {}
        self._publisher_swaps: asyncio.Queue = asyncio.Queue()
        self._signal_reloads: set[asyncio.Task] = set()
        self.scan_progress = time.monotonic()
        self._stopping = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)
        metrics = await self._start_metrics()
        if metrics is False:
            self.store.close()
            return 1
        notify(f"STATUS=starting: {len(self.drivers)} devices, {len(self.config.tags)} tags, first scan pending")
        self._record_start()
        await self.control.start()
        self.scanner.warm()  # before any driver's connect timer runs
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
        await end_tasks([*(task for task in tasks if task is not uplink), stop], log)
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
        from gatewayd.metrics import MetricsServer  # prometheus-client (12 MiB) only when metrics are configured

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
        digest = self.reloader.digest = config.config_sha256
        self.table.event(Event(
            "gateway_started", time.time(), config.gateway.id,
            f"gatewayd {__version__} started with {len(config.tags)} tags on {len(config.devices)} devices",
            Priority.INFO,
            {"version": __version__, "boot_id": self.boot_id.hex(), "config_sha256": digest,
             "config_files": config.source_list(), "tags": len(config.tags),
             "devices": [device.name for device in config.devices]}))
        for event in metadata_events(config.gateway.id, self.table.tags):
            self.table.event(event)
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
            if await wait_set(changed, wait):
                await writes_pause(changed, time.monotonic() + MIN_SCAN_SPACING)
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
                heap.settle()  # what is alive now lives as long as the daemon

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
                self.publisher = build(self.store)
            except BaseException as exc:
                started.set_exception(exc)
                raise
            self.publisher.stats = replace(previous.stats, connected=False)  # counters go on, never back
            self.publisher.on_built = self._samples_sent
            started.set_result(None)
            log.info("uplink restarted for the new configuration: %s:%d", self.publisher.config.host,
                     self.publisher.config.port)

    # ---------------------------------------------------------------------------------- reload

    def record(self, event: Event) -> None:
        """An event of the daemon itself, committed by the next scan like a driver's."""
        self.table.event(event)

    async def apply(self, plan: ReloadPlan) -> list[str]:
        """Run a reload's plan (`gatewayd.reload`): stop the devices it removes or restarts, swap in the
        new value path, start the new drivers, hand the new publisher over. Returns notes about rule
        state that did not carry over."""
        diff = plan.diff
        for name in diff.devices_removed + diff.devices_restarted:
            await self.stop_driver(name)
            del self.drivers[name], self.sinks[name]
        notes = self._adopt_points(plan.config, diff, plan.points) if plan.points is not None else []
        self.config = plan.config
        devices = {device.name: device for device in plan.config.devices}
        for name, driver in plan.drivers.items():
            self.drivers[name], self.sinks[name] = driver, device_sink(devices[name], self.table)
            self.start_driver(name)
        if plan.publisher is not None:
            await self.replace_publisher(plan.publisher)
        heap.resettle()  # the replaced objects were frozen at READY
        return notes

    def _adopt_points(self, config: Config, diff: ConfigDiff, points: Points) -> list[str]:
        """The new point table, rule engine and scanner take over with the state of the old ones;
        synchronous, so no poll or scan runs halfway through."""
        old_scanner = self.scanner
        old_scanner.tick()  # commit what the polls brought under the old configuration
        notes = carry_over(old_scanner, points.scanner)
        table = points.table
        devices = {device.name: device for device in config.devices}
        for name, sink in self.sinks.items():
            sink.retarget(table, table.rows_of([tag.name for tag in devices[name].tags]))
        self.table, self.engine, self.scanner = table, points.engine, points.scanner
        self.control.handlers.update(rule_handlers(self.engine, self.scanner.commit,
                                                   config.control.approval_window))
        self.scanner.save_state()
        described = set(diff.tags_added) | set(diff.tags_changed)
        for event in metadata_events(config.gateway.id, [tag for tag in table.tags if tag.name in described]):
            table.event(event)
        return notes

    def _reload_on_signal(self) -> None:
        """SIGHUP: the same reload as `gatewayd reload`, logged (and recorded as an event) instead of answered."""

        async def run() -> None:
            try:
                await self.reloader.reload("SIGHUP")
            except ReloadRefused:
                pass  # already logged and recorded as a config_rejected event

        task = asyncio.get_running_loop().create_task(run(), name="reload")
        self._signal_reloads.add(task)
        task.add_done_callback(self._signal_reloads.discard)

    def _samples_sent(self, samples, created: float) -> None:
        self.scanner.samples_sent(samples, created)  # the scanner of the moment: a reload may replace it

    async def replace_publisher(self, build: PublisherFactory) -> None:
        """Stop the running publisher, then run `build(store)` instead; returns once the new one runs."""
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
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the loop handles it: a reload too early must not kill

    return uvloop.run(Daemon(config).run())


async def writes_pause(changed: asyncio.Event, until: float) -> None:
    """Wait until no write has set `changed` for WRITES_PAUSE seconds, or until `until` (monotonic).

    One poll writes its blocks one after another, each the moment its answer is in; a scan woken by the
    first would store that block alone and the next scan the rest: two synced commits and more batches
    for one poll. Waiting for the writes to pause scans a poll whose blocks come back to back once,
    WRITES_PAUSE after its last block; a write is scanned at most MIN_SCAN_SPACING after the one that
    woke the scan, however long the writes go on.
    """
    while True:
        changed.clear()
        await asyncio.sleep(max(0.0, min(WRITES_PAUSE, until - time.monotonic())))
        if not changed.is_set() or time.monotonic() >= until:
            return

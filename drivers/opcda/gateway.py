"""OPC DA gateway driver runtime: group reads through an OpenOPC gateway service over Pyro5. Read-only.

The gateway exposes a DA client object (`PYRO:OpcDaClient@host:7766`); a proxy to it gets its own
session instance there, which is told once which DA server to `connect(server, opc_host)` to and
is then asked to `read(items, group=...)` every `poll_interval`. The gateway keeps the named group
between reads, so a read after the first comes from the DA server's cache at the group's update rate.

Pyro5 calls block and a proxy belongs to the thread that uses it, so each device has one worker
thread that creates, uses and releases its proxy; the event loop only awaits that thread. Every call
is bounded by `device.timeout` (the proxy's Pyro timeout). When the gateway cannot be reached, does
not answer in time or reports an error, the proxy is dropped (the next poll builds a new session),
all the device's rows become COMM_FAILURE, one `device_down` event starts the outage, and polls back
off exponentially; the first answered read ends it with one `device_up` event. Per-item qualities
come from the DA quality of each reading (`readings.quality_of`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import Pyro5.client
import Pyro5.errors

from drivers.kit import Backoff, DeviceHealth, DriverStats, Problems, next_tick
from drivers.opcda.config import OpcDaSettings
from drivers.opcda.readings import decode
from drivers.opcda.wire import ForeignSerializer, harden
from core.types import Quality, SampleSink

log = logging.getLogger("gatewayd.drivers.opcda")


@dataclass
class OpcDaStats(DriverStats):
    """The kit's figures and the gateway sessions opened."""

    sessions: int = 0


class GatewayError(Exception):
    """The gateway could not be reached, did not answer in time, or reported an error."""


class OpcDaGatewayDriver:
    """Polls the items of one DA server through one gateway service into a SampleSink.

    Figures in `stats` (`OpcDaStats`): `polls` (answered reads), `failures` (failed reads),
    `sessions` (gateway sessions opened; `reconnects` those after the first), `last_poll_latency`
    (seconds, of the last answered read), `skipped_ticks`.
    """

    def __init__(self, name: str, settings: OpcDaSettings, poll_interval: float, timeout: float,
                 items: Sequence[str], rows: np.ndarray) -> None:
        self.name, self.settings = name, settings
        self.poll_interval, self.timeout = poll_interval, timeout
        self.items = list(items)
        self.rows = np.asarray(rows, dtype=np.intp)
        self.group = settings.group or f"gatewayd.{name}"
        self.stats = OpcDaStats(requests_per_poll=1)
        self.health = DeviceHealth(name, {"host": settings.host, "port": settings.port, "server": settings.server},
                                   log, label=f"device {name} (gateway {settings.host}:{settings.port}, "
                                              f"server {settings.server})")
        self._problems = Problems(log, f"device {name}")
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        self._proxy: Pyro5.client.Proxy | None = None  # touched only by the worker thread
        harden()  # serpent only, bounded messages: before the first proxy

    @classmethod
    def from_config(cls, device: Any, rows: np.ndarray) -> OpcDaGatewayDriver:
        rows = np.asarray(rows, dtype=np.intp)
        if rows.shape != (len(device.tags),):
            raise ValueError(f"device {device.name}: {len(device.tags)} tags but {rows.size} point-table rows")
        return cls(device.name, device.settings, device.poll_interval, device.timeout,
                   [tag.address.item for tag in device.tags], rows)

    @property
    def is_down(self) -> bool:
        return self.health.is_down

    async def run(self, sink: SampleSink) -> None:
        """Poll until cancelled; the worker thread releases the proxy when the driver stops."""
        worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"opcda-{self.name}")
        loop = asyncio.get_running_loop()
        try:
            tick = time.monotonic()
            while True:
                started = time.monotonic()
                try:
                    answer, read_at = await loop.run_in_executor(worker, self._read)
                except GatewayError as exc:
                    self._device_down(sink, str(exc))
                    tick = time.monotonic() + self._backoff.next()
                else:
                    self.stats.last_poll_latency = time.monotonic() - started
                    self._deliver(sink, answer, read_at)
                    self._backoff.reset()
                    tick, skipped = next_tick(tick, self.poll_interval, time.monotonic())
                    self.stats.skipped_ticks += skipped
                await asyncio.sleep(max(0.0, tick - time.monotonic()))
        finally:
            worker.submit(self._release)
            worker.shutdown(wait=False)

    def _read(self) -> tuple[Any, float]:
        """In the worker thread: one group read, opening the gateway session first if there is none;
        returns the answer and the monotonic time it arrived (before the event loop got to it)."""
        settings = self.settings
        try:
            if self._proxy is None:
                proxy = Pyro5.client.Proxy(f"PYRO:{settings.object_id}@{settings.host}:{settings.port}")
                proxy._pyroTimeout = self.timeout
                self._proxy = proxy
                proxy.connect(settings.server, settings.opc_host)
                self.stats.reconnects += self.stats.sessions > 0
                self.stats.sessions += 1
            answer = self._proxy.read(self.items, group=self.group, update=int(self.poll_interval * 1000),
                                      timeout=int(self.timeout * 1000), source=settings.source)
            return answer, time.monotonic()
        except Pyro5.errors.TimeoutError as exc:
            self._release()
            raise GatewayError(f"gateway {settings.host}:{settings.port} did not answer within {self.timeout:g} s") \
                from exc
        except (ForeignSerializer, Pyro5.errors.ProtocolError) as exc:
            self._release()
            raise GatewayError(f"gateway {settings.host}:{settings.port} answer refused: {exc}") from exc
        except Pyro5.errors.CommunicationError as exc:
            self._release()
            if isinstance(exc.__cause__, ForeignSerializer):  # Pyro5 wraps what fails in its handshake
                raise GatewayError(f"gateway {settings.host}:{settings.port} answer refused: {exc.__cause__}") \
                    from exc
            raise GatewayError(f"gateway {settings.host}:{settings.port} unreachable ({exc})") from exc
        except Pyro5.errors.SerializeError as exc:  # the gateway raised an error class Pyro5 cannot rebuild
            self._release()
            raise GatewayError(f"gateway reported an error ({exc})") from exc
        except Exception as exc:  # noqa: BLE001 - an error raised by the DA server, re-raised here by Pyro5
            self._release()
            raise GatewayError(f"gateway reported {type(exc).__name__}: {exc}") from exc

    def _release(self) -> None:
        proxy, self._proxy = self._proxy, None
        if proxy is not None:
            proxy._pyroRelease()

    def _deliver(self, sink: SampleSink, answer: Any, read_at: float) -> None:
        values, qualities, stamps, notes = decode(answer, self.items)
        sink.write(self.rows, values, qualities, stamps, read_at)
        for note in notes:
            self._problems.note(note, note)
        self.stats.polls += 1
        self.health.up(sink)

    def _device_down(self, sink: SampleSink, cause: str) -> None:
        self.stats.failures += 1
        sink.set_quality(self.rows, int(Quality.COMM_FAILURE))
        self.health.down(sink, cause, Quality.COMM_FAILURE)

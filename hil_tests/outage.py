"""A broker outage, measured: seconds from the broker's return to the first live sample at the platform.

The daemon polls the PLC simulator and reports every tag every `period`; the broker (mosquitto) is
stopped for `outage` seconds and restarted on the same port. The clock starts when the restart is
ordered (mosquitto's own start-up counts against the daemon) and stops when a subscriber standing for
the platform holds a sample read after that moment. The subscriber leaves with the broker and comes
back with it under the same persistent session, connecting at once, so its own reconnect delay is
not part of the figure. `hil_tests/test_faults.py` asserts a bound on it; `bench/bench_reconnect.py`
prints it.

    seconds = reconnect_to_live(Path("/tmp/outage"), outage=16.0)
"""

from __future__ import annotations

import time
from pathlib import Path

from core.batchformat import decode_body, parse_envelope
from gatewayd.platform.receiver import Receiver
from hil_tests.harness import Broker, Daemon, Simulator, plant_config, stop_all

GATEWAY_ID = "GW-OUTAGE-001"
TOPIC = f"gatewayd/{GATEWAY_ID}/batch"


def newest_read_ms(frames: list[bytes]) -> int:
    """The latest sample time (ms since the epoch) that `frames` carry; 0 when they carry none."""
    newest = 0
    for frame in frames:
        times = decode_body(parse_envelope(frame))["samples"]["ts"]
        newest = max(newest, *times) if times else newest
    return newest


def platform(port: int) -> Receiver:
    receiver = Receiver("127.0.0.1", port, TOPIC, insecure_plain=True, client_id="outage-platform",
                        session_expiry=3600)
    receiver.start()
    return receiver


def wait_for_read_after(receiver: Receiver, since: float, timeout: float) -> float:
    """Wall time at which the receiver first held a sample read at or after `since`; polls every 10 ms."""
    deadline, seen = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        frames = receiver.frames()
        if newest_read_ms(frames[seen:]) >= since * 1000:
            return time.time()
        seen = len(frames)
        time.sleep(0.01)
    raise TimeoutError(f"no sample read after the broker's return arrived within {timeout} s")


def reconnect_to_live(workdir: Path, outage: float, tags: int = 200, period: float = 0.2) -> float:
    """Seconds from ordering the broker's restart to the first sample read after it, at the platform."""
    broker = Broker(workdir).start()
    plc = Simulator(workdir, tags, period=period).start()
    config = plant_config(workdir, gateway_id=GATEWAY_ID, plc_port=plc.port, broker_port=broker.port, tags=tags,
                          poll_interval=period, scan_interval=period, max_interval=period)
    daemon = Daemon(workdir, config).start()
    receiver = platform(broker.port)
    try:
        wait_for_read_after(receiver, time.time(), timeout=120)  # the daemon is up and publishing
        receiver.stop()
        broker.stop()
        time.sleep(outage)
        back = time.time()
        broker = Broker(workdir, broker.port).start()
        receiver = platform(broker.port)
        return wait_for_read_after(receiver, back, timeout=120) - back
    finally:
        receiver.stop()
        stop_all(daemon, plc, broker)

"""report: every_read with real processes: PLC simulator -> daemon -> mosquitto -> receiver.

The simulator records every read request it answers (`--served`). Every read the daemon completed must
arrive upstream exactly once, at the time its answer came, and nothing else may arrive for a tag in
that mode: the tags are polled several times between two scan ticks, so this also proves that no read
is lost when the point table holds only the latest value.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import yaml

from core.types import Quality
from gatewayd.platform.receiver import Receiver
from hil_tests.conftest import GATEWAY_ID, TOPIC, Plant, committed
from hil_tests.harness import Broker, Simulator, plant_config
from hil_tests.sim.plc import FUNCTION_TABLES
from hil_tests.test_end_to_end import samples_by_tag, wait_quiet

POLL = 0.025  # two scans are at least 50 ms apart (daemon.MIN_SCAN_SPACING): reads pile up between them
TAGS = 29  # the tank (holding and a coil) and two slots of generic values (input)
RUN = 6.0
ARRIVAL = 1.0  # an answer reaches the daemon this long after the simulator sent it, at most, under load
WAIT = 60.0


def every_read_plant(workdir: Path, served: Path) -> tuple[Plant, list[dict]]:
    broker = Broker(workdir).start()
    plc = Simulator(workdir, TAGS, period=0.1, served=served).start()
    receiver = Receiver("127.0.0.1", broker.port, TOPIC, insecure_plain=True, client_id="hil-platform",
                        session_expiry=3600)
    receiver.start()
    path = plant_config(workdir, gateway_id=GATEWAY_ID, plc_port=plc.port, broker_port=broker.port, tags=TAGS,
                        poll_interval=POLL)
    config = yaml.safe_load(path.read_text())
    device = config["devices"][0]
    device.update(report="every_read", stale_after="10s", timeout=1.0)
    for tag in device["tags"]:
        del tag["deadband"], tag["max_interval"]  # report: exception only
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return Plant(workdir, broker, plc, receiver, path), device["tags"]


def covers(request: list, tag: dict) -> bool:
    """Whether a served read request (time, function, address, count) returned this tag's registers."""
    _, function, address, count = request
    table = FUNCTION_TABLES[function]
    if table != tag.get("table", "holding"):
        return False
    if table in ("coil", "discrete"):  # the hook gets a bit address and a count of 16-bit words
        return address <= tag["address"] < address + 16 * count
    return address <= tag["address"] < address + count


def wait_until(condition, what: str, daemon) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert daemon.running, daemon.log_text()[-3000:]
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def test_every_read_arrives_exactly_once_at_its_read_time(tmp_path: Path):
    served_path = tmp_path / "served.json"
    plant, tags = every_read_plant(tmp_path, served_path)
    try:
        daemon = plant.start_daemon()
        names = [tag["name"] for tag in tags]
        wait_until(lambda: set(samples_by_tag(plant)) >= set(names), "every tag arrives", daemon)
        time.sleep(RUN)
        assert plant.plc.stop() == 0, "the simulator writes what it served when it stops cleanly"
        wait_until(lambda: all(rows[-1][2] == Quality.COMM_FAILURE for name, rows in samples_by_tag(plant).items()
                               if name in names), "the daemon noticed the simulator went", daemon)
        assert daemon.stop() == 0
        samples, _ = committed(daemon)
        wait_quiet(plant)
        report = plant.report()
        assert report.ok and report.samples == samples
    finally:
        plant.receiver.stop()
        for process in plant.processes():
            process.stop()

    served = json.loads(served_path.read_text())
    received = samples_by_tag(plant)
    reads_per_tag = defaultdict(list)
    for tag in tags:
        reads_per_tag[tag["name"]] = [request[0] for request in served if covers(request, tag)]
    polls = len(reads_per_tag["LT101"])
    assert polls >= RUN / POLL / 4, f"only {polls} polls in {RUN} s"
    print(json.dumps({"report": "every_read", "requests_served": len(served), "polls": polls, "samples": samples}))
    for name in names:
        rows = received[name]
        assert rows[-1][2] == Quality.COMM_FAILURE and rows[-1][1] is None, rows[-1]
        reads = rows[:-1]  # no NO_VALUE sample first: in this mode only reads and quality changes are sent
        assert all(quality == Quality.GOOD for _, _, quality in reads), f"{name}: nothing but reads before the end"
        answered = reads_per_tag[name]
        assert len(reads) == len(answered), f"{name}: {len(answered)} reads served, {len(reads)} samples arrived"
        for (ts_ms, _, _), sent in zip(reads, answered):
            assert -0.002 <= ts_ms / 1000 - sent <= ARRIVAL, f"{name}: read at {sent:.3f} stamped {ts_ms / 1000:.3f}"
        stamps = [ts for ts, _, _ in reads]
        assert stamps == sorted(stamps), f"{name}: reads arrive in the order they were made"

"""Simulated smart sensors publishing to a real broker: wireless gas detectors (JSON) and a Sparkplug B edge node.

    python -m hil_tests.sim.sensor_fleet --port BROKER_PORT [--detectors N] [--topic plant/area1/gas]
        [--sparkplug GROUP/NODE] [--period 1.0] [--client-id ID] [--commands]

Detector GD-001..GD-N publishes `{"id": ..., "ch4": %LEL, "ts": epoch ms, "status": "ok"}` to
`<topic>/GD-00i` (QoS 1) every period, its reading going up by 0.5 each time (back down by 50 past 60).
The edge node publishes NBIRTH (with bdSeq, and a node metric `uptime`), DBIRTH of device `pump-1`
(metrics `vibration` Float, `temperature` Double, `running` Boolean, with aliases 1..3), then DDATA by
alias only every period; its will is an NDEATH with the same bdSeq.

With --commands, commands, one a line on stdin, each answered with one line on stdout:
    silence ID / speak ID   stop / resume publishing detector ID (or `node` for the edge node)
    rate N                  publish every detector N times faster (a flood); `rate 1` to end it
    quiet                   stop publishing altogether, and answer once the broker acknowledged what was sent
    rebirth                 the edge node publishes NDEATH, then NBIRTH and DBIRTH with its aliases swapped
    skip                    the edge node skips one seq number (a lost message, as the host sees it)
    stats                   JSON: {"acked": [[key, value, ts_ms], ...]}: the readings the broker acknowledged;
                            key is the detector id, or node/device/metric for the edge node
Prints "READY" once connected. Reconnects by itself when the broker goes away.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt

from hil_tests.sim.sparkplug_encode import MetricOut, encode_payload

PUMP_METRICS = (("vibration", "Float"), ("temperature", "Double"), ("running", "Boolean"))


class Fleet:
    def __init__(self, client: mqtt.Client, detectors: int, topic: str, sparkplug: str | None, period: float):
        self.client, self.topic, self.period = client, topic, period
        self.detectors = {f"GD-{index:03d}": 10.0 + index for index in range(1, detectors + 1)}
        self.group, self.node = sparkplug.split("/") if sparkplug else (None, None)
        self.silent: set[str] = set()
        self.rate = 1.0
        self.lock = threading.Lock()  # the readings in flight and acknowledged
        self.node_lock = threading.Lock()  # the edge node's seq, aliases and values
        self.pending: dict[int, list[tuple[str, float, int]]] = {}
        self.answered: dict[int, mqtt.ReasonCode] = {}  # mids the broker answered before they were pending
        self.acked: list[tuple[str, float, int]] = []
        self.seq = 0
        self.bd_seq = 0
        self.aliases = {name: alias for alias, (name, _) in enumerate(PUMP_METRICS, start=1)}
        self.pump = 0
        self.born = False

    # publishing
    def publish(self, topic: str, payload: bytes, readings: list[tuple[str, float, int]], qos: int = 1) -> None:
        if qos == 0 and not self.client.is_connected():
            return  # a Sparkplug node sends nothing while offline; it is born again when it reconnects
        # not under self.lock: paho calls on_publish holding its own message lock, which publish() takes too
        info = self.client.publish(topic, payload, qos=qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and info.rc != mqtt.MQTT_ERR_NO_CONN:
            return
        with self.lock:
            reason_code = self.answered.pop(info.mid, None)
            if reason_code is None:
                self.pending[info.mid] = readings
            elif not reason_code.is_failure:
                self.acked.extend(readings)  # the broker answered before publish() returned

    def pending_count(self) -> int:
        with self.lock:
            return len(self.pending)

    def on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self.lock:
            if mid not in self.pending:
                self.answered[mid] = reason_code
                return
            readings = self.pending.pop(mid)
            if not reason_code.is_failure:
                self.acked.extend(readings)

    def detectors_tick(self) -> None:
        for detector, reading in list(self.detectors.items()):
            if detector in self.silent:
                continue
            ts = int(time.time() * 1000)
            self.detectors[detector] = round(reading + 0.5 if reading < 60 else reading - 50, 3)
            payload = json.dumps({"id": detector, "ch4": reading, "ts": ts, "status": "ok"}).encode()
            self.publish(f"{self.topic}/{detector}", payload, [(detector, reading, ts)])

    def sparkplug_topic(self, kind: str, device: str | None = None) -> str:
        return f"spBv1.0/{self.group}/{kind}/{self.node}" + (f"/{device}" if device else "")

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def death_payload(self) -> bytes:
        return encode_payload([MetricOut("bdSeq", "UInt64", self.bd_seq)])

    def birth(self) -> None:
        with self.node_lock:
            self._birth()

    def _birth(self) -> None:
        ts = int(time.time() * 1000)
        self.seq = 0
        self.publish(self.sparkplug_topic("NBIRTH"), encode_payload(
            [MetricOut("bdSeq", "UInt64", self.bd_seq), MetricOut("uptime", "Int64", self.pump, alias=100)],
            seq=0, timestamp=ts), [(f"{self.node}//uptime", float(self.pump), ts)], qos=0)
        metrics, readings = self.pump_metrics(ts, named=True)
        self.publish(self.sparkplug_topic("DBIRTH", "pump-1"), encode_payload(metrics, seq=self.next_seq(),
                                                                                 timestamp=ts), readings, qos=0)
        self.born = True

    def pump_metrics(self, ts: int, named: bool) -> tuple[list[MetricOut], list[tuple[str, float, int]]]:
        self.pump += 1
        values = {"vibration": 2.5 + self.pump % 7 * 0.25, "temperature": 40.0 + self.pump * 0.125,
                  "running": self.pump % 2 == 0}
        metrics = [MetricOut(name if named else None, datatype, values[name], alias=self.aliases[name])
                   for name, datatype in PUMP_METRICS]
        readings = [(f"{self.node}/pump-1/{name}", float(values[name]), ts) for name, _ in PUMP_METRICS]
        return metrics, readings

    def node_tick(self) -> None:
        with self.node_lock:
            if self.born and "node" not in self.silent:
                self._data()

    def _data(self) -> None:
        ts = int(time.time() * 1000)
        metrics, readings = self.pump_metrics(ts, named=False)
        self.publish(self.sparkplug_topic("DDATA", "pump-1"), encode_payload(metrics, seq=self.next_seq(),
                                                                                timestamp=ts), readings, qos=0)

    def rebirth(self) -> None:
        with self.node_lock:
            self._rebirth()

    def _rebirth(self) -> None:
        self.publish(self.sparkplug_topic("NDEATH"), self.death_payload(), [], qos=0)
        self.bd_seq += 1
        self.client.will_set(self.sparkplug_topic("NDEATH"), self.death_payload(), qos=1)
        names = list(self.aliases)
        self.aliases = dict(zip(names, reversed(list(self.aliases.values()))))
        self._birth()

    def run(self) -> None:
        while True:
            started = time.monotonic()
            with self.lock:
                rate = self.rate
            self.detectors_tick()
            if self.group:
                self.node_tick()
            time.sleep(max(0.0, self.period / rate - (time.monotonic() - started)))

    def command(self, line: str) -> dict:
        words = line.split()
        if not words:
            return {}
        if words[0] == "silence":
            self.silent.add(words[1])
        elif words[0] == "speak":
            self.silent.discard(words[1])
        elif words[0] == "rate":
            with self.lock:
                self.rate = float(words[1])
        elif words[0] == "rebirth":
            self.rebirth()
        elif words[0] == "quiet":
            self.silent.update([*self.detectors, "node"])
            time.sleep(self.period / self.rate + 0.1)  # a tick under way ends
            deadline = time.monotonic() + 30.0  # under load acknowledgements come late
            while self.pending_count() and time.monotonic() < deadline:
                time.sleep(0.05)
        elif words[0] == "skip":
            with self.node_lock:
                self.next_seq()
        elif words[0] == "stats":
            with self.lock:
                return {"acked": list(self.acked)}
        else:
            return {"error": f"unknown command {words[0]}"}
        return {"ok": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--detectors", type=int, default=3)
    parser.add_argument("--topic", default="plant/area1/gas")
    parser.add_argument("--sparkplug", default=None, help="GROUP/NODE of a simulated edge node")
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--client-id", default="sensor-fleet")
    parser.add_argument("--commands", action="store_true", help="take commands on stdin (see above)")
    args = parser.parse_args(argv)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id, clean_session=True)
    fleet = Fleet(client, args.detectors, args.topic, args.sparkplug, args.period)
    client.on_publish = fleet.on_publish
    connected = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        connected.set()
        if fleet.group:  # a Sparkplug node is born again on every connection, with a new bdSeq
            threading.Thread(target=born_again, daemon=True).start()

    def born_again() -> None:
        time.sleep(0.05)
        fleet.birth()

    if fleet.group:
        client.will_set(fleet.sparkplug_topic("NDEATH"), fleet.death_payload(), qos=1)
    client.on_connect = on_connect
    client.reconnect_delay_set(0.2, 0.5)
    client.max_queued_messages_set(0)
    client.connect_async("127.0.0.1", args.port, keepalive=5)
    client.loop_start()
    connected.wait(30)
    threading.Thread(target=fleet.run, daemon=True).start()
    print("READY", flush=True)
    if not args.commands:
        threading.Event().wait()  # publish until stopped by a signal
    for line in sys.stdin:
        print(json.dumps(fleet.command(line)), flush=True)
    client.disconnect()
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

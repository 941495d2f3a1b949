"""The `sparkplug_b` payload profile: the state a Sparkplug host keeps per edge node, without ever commanding.

Topics are `spBv1.0/<group>/<type>/<node>[/<device>]`. Per edge node of the configured group:

- NBIRTH starts a session: its `seq` is the base, its `bdSeq` metric names the session, its
  metrics give names, aliases (later data may carry only the alias) and current values; every
  device of the node must be born again (DBIRTH). Aliases are rebuilt from each birth, so a node that
  renumbers them on rebirth is followed.
- NDATA, DBIRTH, DDATA and DDEATH carry the node's next `seq` (0..255, wrapping). A message whose
  seq is not the previous one plus one means messages were lost (or the birth was missed): the
  node's tags, and its devices', turn STALE and its data is ignored (counted in `sparkplug_ignored`)
  until the next NBIRTH. A message that is not a Sparkplug payload counts the same way, since its
  seq cannot be checked; its own tags are DECODE_ERROR.
- NDEATH (the broker's will for the node, with the session's bdSeq; one of an older session is
  ignored) turns the node's and its devices' tags COMM_FAILURE until the next NBIRTH; DDEATH does
  so for one device until its DBIRTH.
- The host never asks for a rebirth (NCMD `Node Control/Rebirth` is a write): after a gap or a death
  the tags wait for the node to be born again on its own (at its reconnect or restart, or when
  another host application with write permission asks for it).

A metric's value comes with its own timestamp, else the payload's (ms), as the source time. A null
metric is NO_VALUE; a type that is not a number (String, DataSet, Template...) is DECODE_ERROR.
Messages of nodes no tag reads, of other groups, and STATE messages are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from drivers.mqtt.config import SPARKPLUG_NAMESPACE, SparkplugMetric
from drivers.inbox import Message
from drivers.intake import Intake
from drivers.mqtt.sparkplug import UNSUPPORTED, Metric, Payload, SparkplugError, decode_payload
from drivers.values import describe, to_float
from core.types import Quality

SEQ_MODULUS = 256
BD_SEQ = "bdSeq"
NODE_MESSAGES = frozenset({"NBIRTH", "NDEATH", "NDATA"})
DEVICE_MESSAGES = frozenset({"DBIRTH", "DDEATH", "DDATA"})

Edge = tuple[str, str | None]  # (node, device); device None for the node's own metrics


@dataclass
class NodeSession:
    """What the host knows of one edge node since its last birth."""

    trusted: bool = False  # born, and no seq gap or death since
    seq: int = 0
    bd_seq: int | None = None
    aliases: dict[Edge, dict[int, str]] = field(default_factory=dict)  # born edges -> alias -> metric name


class SparkplugProfile:
    def __init__(self, group: str, tags: Sequence[SparkplugMetric], intake: Intake) -> None:
        self.group, self.intake = group, intake
        self.by_edge: dict[Edge, dict[str, int]] = {}
        self.of_node: dict[str, list[int]] = {}
        for position, tag in enumerate(tags):
            self.by_edge.setdefault((tag.node, tag.device), {})[tag.metric] = position
            self.of_node.setdefault(tag.node, []).append(position)
        self.sessions: dict[str, NodeSession] = {node: NodeSession() for node in self.of_node}

    def _parse(self, topic: str) -> tuple[str, str, str | None] | None:
        """(message type, node, device) of a topic of our group whose node a tag reads, else None."""
        parts = topic.split("/")
        if len(parts) not in (4, 5) or parts[0] != SPARKPLUG_NAMESPACE or parts[1] != self.group:
            return None
        kind, node = parts[2], parts[3]
        device = parts[4] if len(parts) == 5 else None
        if node not in self.of_node or (kind in DEVICE_MESSAGES) != (device is not None):
            return None
        if kind not in NODE_MESSAGES and kind not in DEVICE_MESSAGES:
            return None
        return kind, node, device

    def positions(self, topic: str) -> list[int]:
        parsed = self._parse(topic)
        if parsed is None:
            return []
        kind, node, device = parsed
        if kind in ("NBIRTH", "NDEATH"):
            return self.of_node[node]
        return list(self.by_edge.get((node, device), {}).values())

    def handle(self, message: Message) -> bool:
        parsed = self._parse(message.topic)
        if parsed is None:
            return False
        kind, node, device = parsed
        session = self.sessions[node]
        try:
            if message.payload is None:
                raise SparkplugError("payload larger than max_payload")
            payload = decode_payload(message.payload)
        except SparkplugError as exc:
            if session.trusted and kind != "NDEATH":
                self._lose_sequence(node, session, message.read_at, f"undecodable {kind}")
            for position in self.positions(message.topic):
                self.intake.bad(position, Quality.DECODE_ERROR, message.read_at, f"{message.topic}: {exc}")
            return True
        if kind == "NBIRTH":
            self._node_birth(node, payload, message.read_at)
        elif kind == "NDEATH":
            self._node_death(node, session, payload, message.read_at)
        elif not session.trusted:
            self.intake.stats.sparkplug_ignored += 1
        elif not self._in_sequence(node, session, payload, kind, message.read_at):
            pass
        elif kind == "DBIRTH":
            session.aliases[(node, device)] = aliases_of(payload)
            self._apply((node, device), payload, session, message.read_at, birth=True)
        elif (node, device) not in session.aliases:
            self.intake.stats.sparkplug_ignored += 1  # data or death of a device not born in this session
        elif kind == "DDEATH":
            del session.aliases[(node, device)]
            self.intake.lost(list(self.by_edge.get((node, device), {}).values()), Quality.COMM_FAILURE,
                             message.read_at)
        else:
            self._apply((node, device), payload, session, message.read_at, birth=False)
        return True

    def _node_birth(self, node: str, payload: Payload, read_at: float) -> None:
        session = NodeSession(trusted=payload.seq is not None, seq=payload.seq or 0, bd_seq=bd_seq_of(payload))
        session.aliases[(node, None)] = aliases_of(payload)
        self.sessions[node] = session
        self.intake.order.forget(self.of_node[node])  # a new session: its clock may have been reset
        if payload.seq is None:
            self.intake.problems.note(("nbirth", node), f"node {node}: NBIRTH without seq; waiting for another")
        self._apply((node, None), payload, session, read_at, birth=True)

    def _node_death(self, node: str, session: NodeSession, payload: Payload, read_at: float) -> None:
        death = bd_seq_of(payload)
        if death is not None and session.bd_seq is not None and death != session.bd_seq:
            return  # the will of an earlier session, delivered after the node was born again
        session.trusted = False
        session.aliases.clear()
        self.intake.lost(self.of_node[node], Quality.COMM_FAILURE, read_at)

    def _in_sequence(self, node: str, session: NodeSession, payload: Payload, kind: str, read_at: float) -> bool:
        expected = (session.seq + 1) % SEQ_MODULUS
        if payload.seq == expected:
            session.seq = expected
            return True
        self._lose_sequence(node, session, read_at, f"{kind} seq {payload.seq}, expected {expected}")
        return False

    def _lose_sequence(self, node: str, session: NodeSession, read_at: float, why: str) -> None:
        session.trusted = False
        session.aliases.clear()
        self.intake.stats.sparkplug_seq_gaps += 1
        self.intake.stats.sparkplug_ignored += 1
        self.intake.problems.note(("seq", node), f"node {node}: {why}; its tags are STALE until its next NBIRTH "
                                  "(no rebirth is requested: that would be a write)")
        self.intake.lost(self.of_node[node], Quality.STALE, read_at)

    def _apply(self, edge: Edge, payload: Payload, session: NodeSession, read_at: float, birth: bool) -> None:
        """Write the payload's metrics that tags read; on a birth, a configured metric it lacks is DECODE_ERROR."""
        wanted = self.by_edge.get(edge)
        if not wanted:
            return
        aliases = session.aliases.get(edge, {})
        seen: set[int] = set()
        for metric in payload.metrics:
            name = metric.name if metric.name is not None else aliases.get(metric.alias)
            position = wanted.get(name) if name is not None else None
            if position is None:
                continue
            seen.add(position)
            self._metric(position, metric, payload, read_at)
        if birth:
            for name, position in wanted.items():
                if position not in seen:
                    self.intake.bad(position, Quality.DECODE_ERROR, read_at, f"metric {name!r} is not in the birth "
                                    f"certificate of {edge[0]}{'/' + edge[1] if edge[1] else ''}")

    def _metric(self, position: int, metric: Metric, payload: Payload, read_at: float) -> None:
        stamp = metric.timestamp if metric.timestamp is not None else payload.timestamp
        source_ts = stamp / 1000.0 if stamp is not None else math.nan
        if metric.is_null:
            self.intake.reading(position, math.nan, Quality.NO_VALUE, source_ts, read_at)
            return
        if metric.value is UNSUPPORTED or metric.value is None:
            why = "has no value field for its datatype" if metric.value is None else "is not a number"
            self.intake.bad(position, Quality.DECODE_ERROR, read_at, f"{metric.type_name} metric {why}")
            return
        value, quality = to_float(metric.value)
        if quality == Quality.DECODE_ERROR:
            self.intake.bad(position, quality, read_at, f"{metric.type_name} metric is {describe(metric.value)}")
        else:
            self.intake.reading(position, value, quality, source_ts, read_at)


def aliases_of(payload: Payload) -> dict[int, str]:
    return {metric.alias: metric.name for metric in payload.metrics
            if metric.alias is not None and metric.name is not None}


def bd_seq_of(payload: Payload) -> int | None:
    for metric in payload.metrics:
        if metric.name == BD_SEQ and isinstance(metric.value, int):
            return metric.value
    return None

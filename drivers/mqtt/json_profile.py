"""The `json` payload profile: a message's topic picks its tags, their JSON mappings read the payload.

Tags are indexed by their topic (or filter): a message goes to every tag whose topic matches it and
whose `match` pairs the payload carries. A payload that is not JSON, or larger than `max_payload`,
is DECODE_ERROR for every tag its topic feeds (any of them might have been in it); a tag whose
mapping finds no usable value is DECODE_ERROR alone, the message's other tags unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence

from drivers.mqtt.config import JsonTopicTag
from drivers.inbox import Message
from drivers.intake import Intake
from drivers.jsonmap import BadDocument, decode_document
from drivers.mqtt.topics import TopicIndex
from core.types import Quality


class JsonProfile:
    def __init__(self, tags: Sequence[JsonTopicTag], intake: Intake, max_payload: int) -> None:
        self.intake, self.max_payload = intake, max_payload
        self.index = TopicIndex((tag.topic, (position, tag.mapping)) for position, tag in enumerate(tags))

    def positions(self, topic: str) -> list[int]:
        return [position for position, _ in self.index.lookup(topic)]

    def handle(self, message: Message) -> bool:
        """Decode one message into its tags; False when no tag reads its topic."""
        routed = self.index.lookup(message.topic)
        if not routed:
            return False
        intake, read_at = self.intake, message.read_at
        if message.payload is None:
            for position, _ in routed:
                intake.bad(position, Quality.DECODE_ERROR, read_at,
                           f"{message.topic}: payload larger than max_payload ({self.max_payload} bytes)")
            return True
        try:
            document = decode_document(message.payload)
        except BadDocument as exc:
            for position, _ in routed:
                intake.bad(position, Quality.DECODE_ERROR, read_at, f"{message.topic}: {exc}")
            return True
        for position, mapping in routed:
            if mapping.match and not mapping.selects(document):
                continue
            reading = mapping.read(document)
            if reading.problem is not None:
                intake.bad(position, Quality.DECODE_ERROR, read_at, f"{message.topic}: {reading.problem}")
            else:
                intake.reading(position, reading.value, reading.quality, reading.source_ts, read_at)
        return True

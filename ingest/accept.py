"""Check a group of received payloads against the gateways' chain state and store them, in one transaction.

The steps are docs/uplink.md's "Verifying a stream, step by step" (protocol 1.1, which accepts 1.0): parse,
gateway id, key, signature, heartbeat, epoch, dedup, decode, keys, chain, order and gaps, store. What needs
no state (parse, signature, decode, rows) happens before the transaction; what does happens with the rows
of the group's gateways locked (SELECT ... FOR UPDATE, in gateway order, so two workers never deadlock),
which is what makes the checks hold across workers. A gateway another worker has locked is skipped (SKIP
LOCKED) and its payloads are handed back as deferred, so workers do not queue behind each other's groups.
Every other payload ends stored, as a harmless duplicate,
held (its key or its epoch is not known yet: kept in `held` and looked at again when it is), or dropped
with a finding; the caller acknowledges the group only after `process` returns (committed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core.batchformat import (
    CHAIN_RESET,
    KEY_ROTATION,
    ZERO_EPOCH,
    ZERO_HASH,
    BatchFormatError,
    Envelope,
    decode_body,
    parse_envelope,
    verify_signature,
)
from ingest.chainstate import ChainState, EpochState
from ingest.findings import Finding, Kind
from ingest.rows import EVENT_COLUMNS, SAMPLE_COLUMNS, BatchRows, UnstorableBody, body_rows
from ingest.schema import ensure_partitions

log = logging.getLogger(__name__)

SEQ_MAX = 2**63 - 1  # what a PostgreSQL bigint holds; a gateway reaches it after 2.9e11 years at 1 batch/s


@dataclass(frozen=True)
class Message:
    """One MQTT delivery: `mid` is what the broker is acknowledged with."""

    topic: str
    payload: bytes
    mid: int = 0


@dataclass
class Outcome:
    """What became of one message: stored (with its counts), duplicate, held, heartbeat or dropped; or
    deferred: its gateway is locked by another worker's transaction, so it was not looked at (yet)."""

    message: Message
    deferred: bool = False
    stored: bool = False
    duplicate: bool = False
    held: bool = False
    heartbeat: bool = False
    late: bool = False
    samples: int = 0
    events: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def label(self) -> str:
        for name in ("stored", "duplicate", "held", "heartbeat"):
            if getattr(self, name):
                return name
        return "dropped"


@dataclass
class _Prepared:
    """A payload that parsed and names an enrolled gateway; `key` is None until its key is known."""

    outcome: Outcome
    envelope: Envelope
    key: bytes | None = None
    body: dict | None = None
    rows: BatchRows | None = None
    undecodable: str | None = None  # why the signed body cannot be decoded or stored

    def note(self, kind: Kind, detail: str, epoch: bytes | None = None) -> None:
        self.outcome.findings.append(Finding(kind, self.envelope.gateway_id, epoch or self.envelope.epoch,
                                             self.envelope.seq, detail))


TOPIC_KINDS = ("batch", "heartbeat")  # the last level of the uplink's topics


def gateway_of_topic(topic: str) -> str | None:
    """`<prefix>/<gateway_id>/batch` or `.../heartbeat` -> gateway_id (the prefix may contain slashes).
    Which of the two a payload is, is its envelope's type byte that says, never the topic."""
    parts = topic.split("/")
    return parts[-2] if len(parts) >= 3 and parts[-1] in TOPIC_KINDS else None


class Acceptor:
    """Checks and stores groups of messages for one worker; caches pinned keys and known day partitions."""

    def __init__(self, conn: psycopg.Connection, side_conn: psycopg.Connection, worker: str,
                 late_after: float = 60.0) -> None:
        """`conn` carries the transactions; `side_conn` (autocommit) creates partitions and reads keys
        outside them."""
        self._conn = conn
        self._ddl = side_conn
        self.worker = worker
        self.late_after = late_after
        self._chain = ChainState(conn, side_conn)
        self._days: set[int] = set()
        self._content: list[tuple[tuple, BatchRows]] = []  # stored in this transaction, not yet copied

    def close(self) -> None:
        for conn in (self._conn, self._ddl):
            conn.close()

    # ---- before the transaction: what needs no state ----

    def _prepare(self, message: Message) -> _Prepared | Outcome:
        outcome = Outcome(message)
        topic_gateway = gateway_of_topic(message.topic)

        def drop(kind: Kind, detail: str, gateway_id: str | None = topic_gateway, envelope: Envelope | None = None):
            outcome.findings.append(Finding(kind, gateway_id, envelope and envelope.epoch,
                                            envelope and envelope.seq, detail))
            return outcome

        try:  # step 1
            envelope = parse_envelope(message.payload)
        except BatchFormatError as exc:
            return drop(Kind.MALFORMED, f"on {message.topic}: {exc}")
        if envelope.seq > SEQ_MAX:
            return drop(Kind.MALFORMED, f"seq {envelope.seq} is beyond what the receiver stores")
        gateway_id = envelope.gateway_id
        if gateway_id != topic_gateway:  # step 2
            return drop(Kind.WRONG_GATEWAY, f"envelope names {gateway_id!r} on topic {message.topic}",
                        envelope=envelope)
        if self._chain.cached_keys(gateway_id) is None:
            return drop(Kind.UNKNOWN_GATEWAY, "no gateway of this id is enrolled (gatewayd-ingest enrol)",
                        gateway_id, envelope)
        item = _Prepared(outcome, envelope)
        key = self._chain.key_for(envelope)  # step 3; None: held once the gateway is locked
        if key is not None and not self._check_signature(item, key):
            return outcome
        return item

    def _check_signature(self, item: _Prepared, key: bytes) -> bool:
        """Step 4, then decode (steps 5 and 8) what a valid signature lets us look at."""
        if not verify_signature(item.envelope, Ed25519PublicKey.from_public_bytes(key)):
            item.note(Kind.BAD_SIGNATURE, "signature does not verify with the pinned key")
            return False
        item.key = key
        try:
            item.body = decode_body(item.envelope)
            if not item.envelope.is_heartbeat:
                item.rows = body_rows(item.body)
        except (BatchFormatError, UnstorableBody) as exc:
            item.undecodable = str(exc)
        return True

    # ---- in the transaction ----

    def process(self, messages: list[Message]) -> list[Outcome]:
        """Check and store `messages`, committed on return (raises psycopg errors with nothing committed)."""
        prepared = [self._prepare(message) for message in messages]
        ready = [p for p in prepared if isinstance(p, _Prepared)]
        self._ensure_days(ready, self._ddl)
        self._content = []
        with self._conn.transaction():
            locked = self._chain.lock({p.envelope.gateway_id for p in ready})
            for item in ready:
                if item.envelope.gateway_id in locked:
                    self._accept(item)
                else:
                    item.outcome.deferred = True
            self._copy_content()
            self._chain.save()
            outcomes = [p.outcome if isinstance(p, _Prepared) else p for p in prepared]
            self.record([f for o in outcomes for f in o.findings])
        return outcomes

    def _copy_content(self) -> None:
        """The samples and events of every batch the transaction stored, in one COPY each: no row of them is
        read back by the checks, so they wait until the end of the group (a round trip per group, not per
        batch)."""
        content, self._content = self._content, []
        with self._conn.cursor() as cur:
            for table, columns in (("samples", SAMPLE_COLUMNS), ("events", EVENT_COLUMNS)):
                if any(getattr(rows, table) for _, rows in content):
                    with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                        for key, rows in content:
                            for row in getattr(rows, table):
                                copy.write_row(key + row)

    def _ensure_days(self, items: list[_Prepared], conn: psycopg.Connection) -> None:
        days = set().union(*(p.rows.days for p in items if p.rows)) - self._days
        if days:
            ensure_partitions(conn, days)
            self._days |= days

    def _accept(self, item: _Prepared) -> None:
        envelope = item.envelope
        if item.key is None:
            key = self._chain.key_for(envelope)  # pinned by an earlier payload of this group?
            if key is None:
                self._hold(item, "unknown_key", Kind.UNKNOWN_KEY, f"key id {envelope.key_id.hex()} is not pinned")
                return
            if not self._check_signature(item, key):
                return
        if envelope.is_heartbeat:
            self._heartbeat(item)
        else:
            self._batch(item)

    def _hold(self, item: _Prepared, reason: str, kind: Kind, detail: str) -> None:
        envelope = item.envelope
        self._conn.execute(
            "INSERT INTO held (gateway_id, reason, key_id, epoch, seq, topic, payload) VALUES (%s, %s, %s, %s, %s,"
            " %s, %s)", (envelope.gateway_id, reason, envelope.key_id, envelope.epoch, envelope.seq,
                         item.outcome.message.topic, envelope.raw))
        item.outcome.held = True
        item.note(kind, f"{detail}: held until it is")

    def _release(self, gateway_id: str, reason: str, match: bytes, into: Outcome) -> None:
        """Look again at the payloads held for a key id or an epoch that is now known; their findings go
        to the outcome of the batch that released them."""
        column = "key_id" if reason == "unknown_key" else "epoch"
        rows = self._conn.execute(
            f"DELETE FROM held WHERE gateway_id = %s AND reason = %s AND {column} = %s RETURNING topic, payload",
            (gateway_id, reason, match)).fetchall()
        released = [self._prepare(Message(topic, bytes(payload))) for topic, payload in rows]
        items = [p for p in released if isinstance(p, _Prepared)]
        self._ensure_days(items, self._conn)
        for item in items:
            self._accept(item)
        into.findings += [f for p in released for f in (p.outcome if isinstance(p, _Prepared) else p).findings]
        into.samples += sum(p.outcome.samples for p in items)
        into.events += sum(p.outcome.events for p in items)

    # step 5
    def _heartbeat(self, item: _Prepared) -> None:
        envelope, outcome = item.envelope, item.outcome
        outcome.heartbeat = True
        if item.undecodable:
            item.note(Kind.MALFORMED, f"heartbeat body: {item.undecodable}")
            return
        gateway = self._chain.gateway(envelope.gateway_id)
        if gateway.current_epoch is None:
            epoch = self._chain.new_epoch(gateway, envelope.epoch, None)
            epoch.anchor_seq, epoch.anchor_hash = envelope.seq, envelope.prev_hash
            epoch.top_seq = envelope.seq
            self._chain.heard(epoch, envelope, item.body)
            item.note(Kind.ANCHOR, f"anchored at head seq {envelope.seq}")
            return
        epoch = self._chain.epoch(gateway, envelope.epoch)
        if envelope.epoch != gateway.current_epoch or epoch is None:
            item.note(Kind.STALE_HEARTBEAT, "of an epoch other than the current one")
            return
        if epoch.hb_boot_id == envelope.boot_id and envelope.created_ms <= (epoch.hb_created_ms or 0):
            item.note(Kind.STALE_HEARTBEAT, f"created_ms {envelope.created_ms} is not later than the last "
                                            f"heartbeat's ({epoch.hb_created_ms})")
            return
        self._chain.heard(epoch, envelope, item.body)
        held = self._chain.batch_digests(epoch, [envelope.seq]).get(envelope.seq)
        if held is not None and held[0] != envelope.prev_hash:
            item.note(Kind.CHAIN_BREAK, f"heartbeat names head hash {envelope.prev_hash.hex()[:16]}.., seq "
                                        f"{envelope.seq} is {held[0].hex()[:16]}..")
        if envelope.seq > epoch.top_seq and (epoch.low_seq or epoch.anchor_seq is not None):
            self._chain.open_gap(epoch, epoch.top_seq + 1, envelope.seq)
            epoch.top_seq = envelope.seq
        self._chain.mark_lost(epoch, item.body["oldest_unacknowledged"])

    # steps 6 to 12
    def _batch(self, item: _Prepared) -> None:
        envelope = item.envelope
        gateway = self._chain.gateway(envelope.gateway_id)
        epoch = self._epoch(item, gateway)
        if epoch is None:
            return
        seq = envelope.seq
        near = self._chain.batch_digests(epoch, [seq - 1, seq, seq + 1])
        digest = envelope.digest
        if seq in near:  # step 7
            if near[seq][0] == digest:
                item.outcome.duplicate = True
                gateway.duplicates += 1
            else:
                item.note(Kind.CONFLICT, "different batch with an already accepted seq (kept the first)")
            return
        if item.undecodable:  # step 8
            item.note(Kind.UNDECODABLE, f"signed batch with a bad body, accepted into the chain without its "
                                        f"content: {item.undecodable}")
        key_id = self._chain.signing_key_id(gateway, envelope)
        newer = self._chain.retired_by(gateway, epoch, key_id, seq)  # step 9
        if newer is not None:
            item.note(Kind.RETIRED_KEY, f"key {key_id.hex()} was replaced by {newer.hex()} from a lower seq "
                                        "of this epoch")
            return
        self._chain_check(item, epoch, near, digest)  # step 10
        self._order(item, epoch)  # step 11
        if seq > epoch.head_seq:
            if epoch.boot_id is not None and envelope.boot_id != epoch.boot_id:
                item.note(Kind.NEW_BOOT, f"boot id {envelope.boot_id.hex()} after {epoch.boot_id.hex()}")
            epoch.head_seq, epoch.head_hash, epoch.boot_id = seq, digest, envelope.boot_id
        epoch.newest_created_ms = max(epoch.newest_created_ms or envelope.created_ms, envelope.created_ms)
        self._chain.used_key(epoch, key_id, seq)
        self._store(item, gateway, epoch, key_id, digest)  # step 12
        if seq == 1:
            self._release(gateway.gateway_id, "unanchored_epoch", epoch.epoch, item.outcome)
        for event in (item.body or {}).get("events", []):
            if event["kind"] == KEY_ROTATION:
                self._rotate(item, gateway, key_id, event["data"])

    def _epoch(self, item: _Prepared, gateway) -> EpochState | None:
        """Step 6: the epoch the batch belongs to, begun or adopted if need be; None when it is not accepted."""
        envelope = item.envelope
        epoch = self._chain.epoch(gateway, envelope.epoch)
        if epoch is not None:
            if envelope.seq == 1:
                self._late_reset(item, epoch)
            return epoch
        reset = self._reset_event(item)
        if gateway.current_epoch is None:
            epoch = self._chain.new_epoch(gateway, envelope.epoch, reset and reset["reason"])
            if reset:
                item.note(Kind.CHAIN_RESET, f"epoch {envelope.epoch.hex()} begun: {reset['reason']}")
            return epoch
        if envelope.seq != 1 or envelope.epoch == ZERO_EPOCH:
            self._hold(item, "unanchored_epoch", Kind.UNANCHORED_EPOCH,
                       f"epoch {envelope.epoch.hex()} has not begun here")
            return None
        if reset is None:
            item.note(Kind.UNDECODABLE, f"seq 1 of epoch {envelope.epoch.hex()} without a readable chain_reset: "
                                        f"{item.undecodable}")
            return None
        current = self._chain.epoch(gateway, gateway.current_epoch)
        if current.newest_created_ms is not None and envelope.created_ms < current.newest_created_ms:
            item.note(Kind.REPLAYED_RESET, f"created_ms {envelope.created_ms} is older than the newest batch of "
                                           f"the current epoch ({current.newest_created_ms})")
            return None
        self._check_reset_past(item, gateway, reset)
        epoch = self._chain.new_epoch(gateway, envelope.epoch, reset["reason"])
        gateway.current_epoch = envelope.epoch
        item.note(Kind.CHAIN_RESET, f"epoch {envelope.epoch.hex()} begun: {reset['reason']} (previous epoch "
                                    f"{reset['previous_epoch']}, seq {reset['previous_seq']})")
        return epoch

    def _late_reset(self, item: _Prepared, epoch: EpochState) -> None:
        """Seq 1 of an epoch a heartbeat began here first (the broker orders a gateway's batches and its
        heartbeats each on their own topic, not with each other): its chain_reset says why it began."""
        reset = self._reset_event(item)
        if reset is not None and self._chain.learn_reset_reason(epoch, reset["reason"]):
            item.note(Kind.CHAIN_RESET, f"epoch {item.envelope.epoch.hex()} begun: {reset['reason']}")

    def _reset_event(self, item: _Prepared) -> dict | None:
        events = (item.body or {}).get("events", [])
        return events[0]["data"] if events and events[0]["kind"] == CHAIN_RESET else None

    def _check_reset_past(self, item: _Prepared, gateway, reset: dict) -> None:
        if reset["previous_epoch"] is None or reset["previous_seq"] is None or reset["previous_hash"] is None:
            return
        previous = self._chain.epoch(gateway, bytes.fromhex(reset["previous_epoch"]))
        if previous is None:
            return
        held = self._chain.batch_digests(previous, [reset["previous_seq"]]).get(reset["previous_seq"])
        if held is not None and held[0].hex() != reset["previous_hash"]:
            item.note(Kind.RESET_MISMATCH, f"the reset names seq {reset['previous_seq']} of epoch "
                                           f"{reset['previous_epoch']} as {reset['previous_hash'][:16]}.., "
                                           f"accepted here as {held[0].hex()[:16]}..")

    def _chain_check(self, item: _Prepared, epoch: EpochState, near: dict, digest: bytes) -> None:
        envelope, seq = item.envelope, item.envelope.seq
        if seq == 1:
            expected = ZERO_HASH
        elif seq - 1 in near:
            expected = near[seq - 1][0]
        elif seq - 1 == epoch.anchor_seq:
            expected = epoch.anchor_hash
        else:
            expected = None
        if expected is not None and envelope.prev_hash != expected:
            item.note(Kind.CHAIN_BREAK, f"prev_hash {envelope.prev_hash.hex()[:16]}.. does not match seq {seq - 1} "
                                        f"({expected.hex()[:16]}..)")
        if seq + 1 in near and near[seq + 1][1] != digest:
            item.note(Kind.CHAIN_BREAK, f"seq {seq + 1} names {near[seq + 1][1].hex()[:16]}.. as its predecessor, "
                                        f"this batch is {digest.hex()[:16]}..")

    def _order(self, item: _Prepared, epoch: EpochState) -> None:
        """Open a gap for the seqs skipped, or close the part of a gap this seq fills."""
        seq = item.envelope.seq
        if epoch.low_seq == 0:  # the first batch of the epoch here: it, or the anchor, is the start
            epoch.low_seq = epoch.anchor_seq + 1 if epoch.anchor_seq is not None else seq
            epoch.top_seq = max(epoch.top_seq, epoch.low_seq - 1)
        if seq > epoch.top_seq:
            if seq > epoch.top_seq + 1:
                self._chain.open_gap(epoch, epoch.top_seq + 1, seq - 1)
            epoch.top_seq = seq
            return
        item.outcome.late = seq < epoch.head_seq
        if seq < epoch.low_seq:
            if epoch.anchor_seq is None:  # below the anchor nothing is expected
                if seq < epoch.low_seq - 1:
                    self._chain.open_gap(epoch, seq + 1, epoch.low_seq - 1)
                epoch.low_seq = seq
            return
        waited = self._chain.fill_gap(epoch, seq)
        if waited is not None and waited > self.late_after:
            item.note(Kind.LATE_ARRIVAL, f"filled a gap open for {waited:.0f} s")

    def _rotate(self, item: _Prepared, gateway, key_id: bytes, data: dict) -> None:
        next_key = bytes.fromhex(data["next_public_key"])
        next_id = bytes.fromhex(data["next_key_id"])
        if self._chain.pin(gateway, key_id, next_id, next_key, item.envelope):
            item.note(Kind.KEY_ROTATION, f"key {next_id.hex()} pinned as the successor of {key_id.hex()}")
            self._release(gateway.gateway_id, "unknown_key", next_id, item.outcome)

    def _store(self, item: _Prepared, gateway, epoch: EpochState, key_id: bytes, digest: bytes) -> None:
        envelope, rows, outcome = item.envelope, item.rows, item.outcome
        content = rows if rows is not None and not item.undecodable else None
        self._conn.execute(
            "INSERT INTO batches (gateway_id, epoch, seq, key_id, boot_id, created_ms, prev_hash, digest, samples,"
            " events, undecodable, worker) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (envelope.gateway_id, epoch.epoch, envelope.seq, key_id, envelope.boot_id, envelope.created_ms,
             envelope.prev_hash, digest, len(content.samples) if content else 0,
             len(content.events) if content else 0, content is None, self.worker))
        outcome.stored = True
        gateway.batches += 1
        if content is None:
            return
        self._content.append(((envelope.gateway_id, epoch.id, envelope.seq), content))
        outcome.samples += len(content.samples)
        outcome.events += len(content.events)
        gateway.samples += len(content.samples)
        gateway.events += len(content.events)

    def alert_overdue_gaps(self, gap_after: float, lost_after: float) -> list[Finding]:
        """Step 11's alerts, once per gap: `lost` for a gap a heartbeat said the gateway no longer holds,
        open longer than `lost_after` seconds (a short grace: with several workers the batch may still be
        on its way through another one), `gap` for any other gap open longer than `gap_after`."""
        with self._conn.transaction():
            rows = self._conn.execute(
                "UPDATE gaps SET alerted = true WHERE NOT alerted AND opened_at < now() - make_interval(secs => "
                "CASE WHEN lost THEN %s ELSE %s END) RETURNING gateway_id, epoch, first_seq, last_seq, lost, "
                "extract(epoch FROM now() - opened_at)::float8", (lost_after, gap_after)).fetchall()
            findings = [
                Finding(Kind.LOST, gateway_id, bytes(epoch), first,
                        f"seq {first}..{last} missing for {waited:.0f} s, and the gateway no longer holds it")
                if lost else
                Finding(Kind.GAP, gateway_id, bytes(epoch), first, f"seq {first}..{last} missing for {waited:.0f} s")
                for gateway_id, epoch, first, last, lost, waited in rows]
            self.record(findings)
        return findings

    def record(self, findings: list[Finding]) -> None:
        """Write findings as rows (in the caller's transaction if one is open, else in one of their own)."""
        if not findings:
            return
        with self._conn.transaction(), self._conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO findings (gateway_id, epoch, seq, kind, serious, detail, worker) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [(f.gateway_id, f.epoch, f.seq, f.kind.label, f.kind.serious, f.detail, self.worker)
                 for f in findings])
        for finding in findings:
            log.log(logging.WARNING if finding.kind.serious else logging.INFO, "%s %s seq %s: %s",
                    finding.kind.label, finding.gateway_id, finding.seq, finding.detail)


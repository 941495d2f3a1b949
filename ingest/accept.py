"""Check a group of received batches against the gateways' chain state and store them, in one transaction.

The steps are docs/uplink.md's "Verifying a stream": parse, verify the signature with the pinned key, check
the gateway id against the topic, deduplicate, decode, chain, order and gaps, store. What needs no state
(parse, signature, decode, rows) happens before the transaction; what does (dedup, chain, gaps, writes)
happens with the rows of the group's gateways locked (SELECT ... FOR UPDATE, in gateway order, so two
workers never deadlock), which is what makes the checks hold across workers. Every message ends as stored,
as a harmless duplicate, or as a finding; the caller acknowledges the group only after `commit`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core.batchformat import BatchFormatError, Envelope, decode_body, parse_envelope, verify_signature
from ingest.findings import Finding, Kind
from ingest.rows import EVENT_COLUMNS, SAMPLE_COLUMNS, BatchRows, UnstorableBody, body_rows
from ingest.schema import ensure_partitions

log = logging.getLogger(__name__)

ZERO_HASH = bytes(32)
SEQ_MAX = 2**63 - 1  # what a PostgreSQL bigint holds; a gateway reaches it after 2.9e11 years at 1 batch/s


@dataclass(frozen=True)
class Message:
    """One MQTT delivery: `mid` is what the broker is acknowledged with."""

    topic: str
    payload: bytes
    mid: int = 0


@dataclass
class Outcome:
    """What became of one message: stored (with its counts), duplicate, or dropped; plus its findings."""

    message: Message
    stored: bool = False
    duplicate: bool = False
    samples: int = 0
    events: int = 0
    findings: list[Finding] = field(default_factory=list)


@dataclass
class _Prepared:
    outcome: Outcome
    envelope: Envelope
    key: bytes
    rows: BatchRows


@dataclass
class _State:
    """A gateway's row of `gateways`, locked for the transaction."""

    gateway_id: str
    public_key: bytes
    epoch: int
    boot_id: bytes | None
    low_seq: int
    head_seq: int
    head_hash: bytes | None
    batches: int = 0
    samples: int = 0
    events: int = 0
    duplicates: int = 0


def gateway_of_topic(topic: str) -> str | None:
    """`<prefix>/<gateway_id>/batch` -> gateway_id (the prefix may itself contain slashes)."""
    parts = topic.split("/")
    return parts[-2] if len(parts) >= 3 and parts[-1] == "batch" else None


class Acceptor:
    """Checks and stores groups of messages for one worker; holds a cache of pinned keys and known days."""

    def __init__(self, conn: psycopg.Connection, ddl_conn: psycopg.Connection, worker: str,
                 late_after: float = 60.0) -> None:
        self._conn = conn
        self._ddl = ddl_conn
        self.worker = worker
        self.late_after = late_after
        self._keys: dict[str, bytes] = {}
        self._days: set[int] = set()

    def close(self) -> None:
        for conn in (self._conn, self._ddl):
            conn.close()

    # ---- before the transaction: what needs no state ----

    def _pinned_key(self, gateway_id: str, refresh: bool = False) -> bytes | None:
        if refresh or gateway_id not in self._keys:
            row = self._conn.execute("SELECT public_key FROM gateways WHERE gateway_id = %s",
                                     (gateway_id,)).fetchone()
            self._conn.commit()
            if row is None:
                self._keys.pop(gateway_id, None)
                return None
            self._keys[gateway_id] = bytes(row[0])
        return self._keys[gateway_id]

    def _signed_by(self, envelope: Envelope, gateway_id: str) -> bytes | None:
        """The pinned key that verifies the envelope (asking the database again once: another worker may
        have pinned a new key), or None."""
        for refresh in (False, True):
            key = self._pinned_key(gateway_id, refresh)
            if key is None:
                return None
            if verify_signature(envelope, Ed25519PublicKey.from_public_bytes(key)):
                return key
        return None

    def _prepare(self, message: Message) -> _Prepared | Outcome:
        outcome = Outcome(message)
        topic_gateway = gateway_of_topic(message.topic)

        def drop(kind: Kind, detail: str, gateway_id: str | None = topic_gateway, seq: int | None = None):
            outcome.findings.append(Finding(kind, gateway_id, None, seq, detail))
            return outcome

        try:
            envelope = parse_envelope(message.payload)
        except BatchFormatError as exc:
            return drop(Kind.MALFORMED, f"on {message.topic}: {exc}")
        gateway_id, seq = envelope.gateway_id, envelope.seq
        if gateway_id != topic_gateway:
            return drop(Kind.WRONG_GATEWAY, f"envelope names {gateway_id!r} on topic {message.topic}", seq=seq)
        if self._pinned_key(gateway_id) is None:
            return drop(Kind.UNKNOWN_GATEWAY, "no key is pinned for this gateway (gatewayd-ingest enrol)",
                        gateway_id, seq)
        key = self._signed_by(envelope, gateway_id)
        if key is None:
            return drop(Kind.BAD_SIGNATURE, "signature does not verify with the pinned key", gateway_id, seq)
        if seq > SEQ_MAX:
            return drop(Kind.MALFORMED, f"seq {seq} is beyond what the receiver stores", gateway_id, None)
        try:
            body = decode_body(envelope)
            rows = body_rows(body)
        except (BatchFormatError, UnstorableBody) as exc:
            return drop(Kind.BAD_BODY, f"signed batch with a bad body: {exc}", gateway_id, seq)
        return _Prepared(outcome, envelope, key, rows)

    # ---- in the transaction ----

    def process(self, messages: list[Message]) -> list[Outcome]:
        """Check and store `messages`, committed on return (raises psycopg errors with nothing committed)."""
        prepared = [self._prepare(message) for message in messages]
        ready = [p for p in prepared if isinstance(p, _Prepared)]
        days = set().union(*(p.rows.days for p in ready)) - self._days
        if days:
            ensure_partitions(self._ddl, days)
            self._days |= days
        with self._conn.transaction():
            states = self._lock({p.envelope.gateway_id for p in ready})
            for item in ready:
                self._accept(item, states[item.envelope.gateway_id])
            for state in states.values():
                self._save(state)
            outcomes = [p.outcome if isinstance(p, _Prepared) else p for p in prepared]
            self.record([f for o in outcomes for f in o.findings])
        return outcomes

    def _lock(self, gateway_ids: set[str]) -> dict[str, _State]:
        rows = self._conn.execute(
            "SELECT gateway_id, public_key, epoch, boot_id, low_seq, head_seq, head_hash FROM gateways "
            "WHERE gateway_id = ANY(%s) ORDER BY gateway_id FOR UPDATE", (sorted(gateway_ids),)
        ).fetchall()
        return {row[0]: _State(row[0], bytes(row[1]), row[2], row[3] and bytes(row[3]), row[4], row[5],
                               row[6] and bytes(row[6])) for row in rows}

    def _accept(self, item: _Prepared, state: _State) -> None:
        envelope, outcome = item.envelope, item.outcome
        gateway_id, seq, epoch = envelope.gateway_id, envelope.seq, state.epoch

        def note(kind: Kind, detail: str) -> None:
            outcome.findings.append(Finding(kind, gateway_id, epoch, seq, detail))

        if item.key != state.public_key and not verify_signature(
                envelope, Ed25519PublicKey.from_public_bytes(state.public_key)):
            note(Kind.BAD_SIGNATURE, "signature does not verify with the key pinned now")
            return
        near = {row[0]: (bytes(row[1]), bytes(row[2])) for row in self._conn.execute(
            "SELECT seq, digest, prev_hash FROM batches WHERE gateway_id = %s AND epoch = %s AND seq = ANY(%s)",
            (gateway_id, epoch, [seq - 1, seq, seq + 1]))}
        digest = envelope.digest
        if seq in near:
            if near[seq][0] == digest:
                outcome.duplicate = True
                state.duplicates += 1
            else:
                note(Kind.CONFLICT, "different batch with an already accepted seq (kept the first)")
            return
        expected = ZERO_HASH if seq == 1 else near.get(seq - 1, (None,))[0]
        if expected is not None and envelope.prev_hash != expected:
            note(Kind.CHAIN_BREAK, f"prev_hash {envelope.prev_hash.hex()[:16]}.. does not match seq {seq - 1} "
                                   f"({expected.hex()[:16]}..)")
        if seq + 1 in near and near[seq + 1][1] != digest:
            note(Kind.CHAIN_BREAK, f"seq {seq + 1} names {near[seq + 1][1].hex()[:16]}.. as its predecessor, "
                                   f"this batch is {digest.hex()[:16]}..")
        self._order(state, seq, note)
        if seq > state.head_seq:
            if state.boot_id is not None and envelope.boot_id != state.boot_id:
                note(Kind.NEW_BOOT, f"boot id {envelope.boot_id.hex()} after {state.boot_id.hex()}")
            state.head_seq, state.head_hash, state.boot_id = seq, digest, envelope.boot_id
        self._store(item, state, digest)

    def _order(self, state: _State, seq: int, note) -> None:
        """Open a gap for the seqs skipped, or close the part of a gap this seq fills."""
        gateway_id, epoch = state.gateway_id, state.epoch
        if state.head_seq == 0:  # the first batch of the epoch anchors the chain
            state.low_seq = seq
            return
        if seq > state.head_seq + 1:
            self._open_gap(gateway_id, epoch, state.head_seq + 1, seq - 1)
        elif seq < state.low_seq:
            if seq < state.low_seq - 1:
                self._open_gap(gateway_id, epoch, seq + 1, state.low_seq - 1)
            state.low_seq = seq
        elif seq < state.head_seq:
            self._fill_gap(gateway_id, epoch, seq, note)

    def _open_gap(self, gateway_id: str, epoch: int, first: int, last: int) -> None:
        self._conn.execute("INSERT INTO gaps (gateway_id, epoch, first_seq, last_seq) VALUES (%s, %s, %s, %s)",
                           (gateway_id, epoch, first, last))

    def _fill_gap(self, gateway_id: str, epoch: int, seq: int, note) -> None:
        row = self._conn.execute(
            "DELETE FROM gaps WHERE gateway_id = %s AND epoch = %s AND first_seq <= %s AND last_seq >= %s "
            "RETURNING first_seq, last_seq, opened_at, extract(epoch FROM now() - opened_at)::float8",
            (gateway_id, epoch, seq, seq)).fetchone()
        if row is None:
            return
        first, last, opened_at, waited = row
        for low, high in ((first, seq - 1), (seq + 1, last)):
            if low <= high:
                self._conn.execute("INSERT INTO gaps (gateway_id, epoch, first_seq, last_seq, opened_at) "
                                   "VALUES (%s, %s, %s, %s, %s)", (gateway_id, epoch, low, high, opened_at))
        if waited > self.late_after:
            note(Kind.LATE, f"filled a gap open for {waited:.0f} s")

    def _store(self, item: _Prepared, state: _State, digest: bytes) -> None:
        envelope, rows, outcome = item.envelope, item.rows, item.outcome
        key = (envelope.gateway_id, state.epoch, envelope.seq)
        self._conn.execute(
            "INSERT INTO batches (gateway_id, epoch, seq, boot_id, created_ms, prev_hash, digest, samples, events,"
            " worker) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (*key, envelope.boot_id, envelope.created_ms, envelope.prev_hash,
             digest, len(rows.samples), len(rows.events), self.worker))
        with self._conn.cursor() as cur:
            if rows.samples:
                with cur.copy(f"COPY samples ({SAMPLE_COLUMNS}) FROM STDIN") as copy:
                    for row in rows.samples:
                        copy.write_row(key + row)
            if rows.events:
                with cur.copy(f"COPY events ({EVENT_COLUMNS}) FROM STDIN") as copy:
                    for row in rows.events:
                        copy.write_row(key + row)
        outcome.stored, outcome.samples, outcome.events = True, len(rows.samples), len(rows.events)
        state.batches += 1
        state.samples += outcome.samples
        state.events += outcome.events

    def _save(self, state: _State) -> None:
        self._conn.execute(
            "UPDATE gateways SET epoch = %s, boot_id = %s, low_seq = %s, head_seq = %s, head_hash = %s,"
            " batches = batches + %s, samples = samples + %s, events = events + %s, duplicates = duplicates + %s,"
            " last_batch_at = CASE WHEN %s > 0 THEN now() ELSE last_batch_at END WHERE gateway_id = %s",
            (state.epoch, state.boot_id, state.low_seq, state.head_seq, state.head_hash, state.batches,
             state.samples, state.events, state.duplicates, state.batches, state.gateway_id))

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

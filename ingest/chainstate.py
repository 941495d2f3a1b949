"""The per-gateway verification state in PostgreSQL, as the Acceptor reads and changes it.

Keys are cached in the worker (they change only by enrolment or a signed rotation) and read on a separate
autocommit connection when missing, so a payload's signature is checked before any transaction. Gateways
and epochs are read inside the transaction, the gateways' rows locked, and written back by `save`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from core.batchformat import VERSION_1_0, Envelope


@dataclass
class Keys:
    enrolled: bytes  # key id of the enrolled key
    public: dict[bytes, bytes] = field(default_factory=dict)  # key id -> raw 32-byte key
    successor: dict[bytes, bytes] = field(default_factory=dict)  # key id -> the key id it announced


@dataclass
class GatewayState:
    gateway_id: str
    current_epoch: bytes | None
    batches: int = 0  # increments to add at save
    samples: int = 0
    events: int = 0
    duplicates: int = 0


@dataclass
class EpochState:
    id: int
    gateway_id: str
    epoch: bytes
    low_seq: int = 0
    top_seq: int = 0
    head_seq: int = 0
    head_hash: bytes | None = None
    boot_id: bytes | None = None
    newest_created_ms: int | None = None
    anchor_seq: int | None = None
    anchor_hash: bytes | None = None
    hb_boot_id: bytes | None = None
    hb_created_ms: int | None = None
    hb_head_seq: int | None = None
    hb_oldest_unacknowledged: int | None = None


_EPOCH_COLUMNS = ("low_seq", "top_seq", "head_seq", "head_hash", "boot_id", "newest_created_ms", "anchor_seq",
                  "anchor_hash", "hb_boot_id", "hb_created_ms", "hb_head_seq", "hb_oldest_unacknowledged")


def _bytes(value) -> bytes | None:
    return bytes(value) if value is not None else None


class ChainState:
    def __init__(self, conn: psycopg.Connection, lookup_conn: psycopg.Connection) -> None:
        self._conn = conn
        self._lookup = lookup_conn  # autocommit
        self._keys: dict[str, Keys] = {}
        self._gateways: dict[str, GatewayState] = {}
        self._epochs: dict[tuple[str, bytes], EpochState | None] = {}

    # ---- keys: cached, usable outside a transaction ----

    def _load_keys(self, conn: psycopg.Connection, gateway_ids: list[str]) -> None:
        rows = conn.execute(
            "SELECT g.gateway_id, g.enrolled_key_id, k.key_id, k.public_key, k.successor FROM gateways g "
            "JOIN gateway_keys k USING (gateway_id) WHERE g.gateway_id = ANY(%s)", (gateway_ids,)).fetchall()
        fresh: dict[str, Keys] = {}
        for gateway_id, enrolled, key_id, public, successor in rows:
            keys = fresh.setdefault(gateway_id, Keys(bytes(enrolled)))
            keys.public[bytes(key_id)] = bytes(public)
            if successor is not None:
                keys.successor[bytes(key_id)] = bytes(successor)
        for gateway_id in gateway_ids:
            if gateway_id in fresh:
                self._keys[gateway_id] = fresh[gateway_id]
            else:
                self._keys.pop(gateway_id, None)

    def cached_keys(self, gateway_id: str) -> Keys | None:
        """The gateway's pinned keys, None when it is not enrolled."""
        if gateway_id not in self._keys:
            self._load_keys(self._lookup, [gateway_id])
        return self._keys.get(gateway_id)

    def key_for(self, envelope: Envelope) -> bytes | None:
        """Step 3: the enrolled key for 1.0, the pinned key of `key_id` for 1.1 (asking the database once
        more on a miss: another worker may have pinned it); None when no such key is pinned."""
        for refresh in (False, True):
            if refresh:
                self._load_keys(self._lookup, [envelope.gateway_id])
            keys = self._keys.get(envelope.gateway_id)
            if keys is None:
                return None
            found = keys.public.get(self.signing_key_id_of(keys, envelope))
            if found is not None:
                return found
        return None

    @staticmethod
    def signing_key_id_of(keys: Keys, envelope: Envelope) -> bytes:
        return keys.enrolled if envelope.version == VERSION_1_0 else envelope.key_id

    def signing_key_id(self, gateway: GatewayState, envelope: Envelope) -> bytes:
        return self.signing_key_id_of(self._keys[gateway.gateway_id], envelope)

    def pin(self, gateway: GatewayState, key_id: bytes, next_id: bytes, next_key: bytes,
            envelope: Envelope) -> bool:
        """Pin the key a rotation announced as `key_id`'s successor; False if it was pinned already."""
        inserted = self._conn.execute(
            "INSERT INTO gateway_keys (gateway_id, key_id, public_key, pinned_by) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING", (gateway.gateway_id, next_id, next_key,
                                       f"epoch {envelope.epoch.hex()} seq {envelope.seq}")).rowcount
        self._conn.execute("UPDATE gateway_keys SET successor = %s WHERE gateway_id = %s AND key_id = %s",
                           (next_id, gateway.gateway_id, key_id))
        keys = self._keys[gateway.gateway_id]
        keys.public[next_id] = next_key
        keys.successor[key_id] = next_id
        return inserted == 1

    def retired_by(self, gateway: GatewayState, epoch: EpochState, key_id: bytes, seq: int) -> bytes | None:
        """Step 9: the successor (or its successor...) of `key_id` accepted in this epoch below `seq`."""
        keys = self._keys[gateway.gateway_id]
        successor, seen = keys.successor.get(key_id), {key_id}
        while successor is not None and successor not in seen:
            row = self._conn.execute("SELECT first_seq FROM epoch_keys WHERE gateway_id = %s AND epoch = %s AND "
                                     "key_id = %s", (gateway.gateway_id, epoch.epoch, successor)).fetchone()
            if row is not None and row[0] < seq:
                return successor
            seen.add(successor)
            successor = keys.successor.get(successor)
        return None

    def used_key(self, epoch: EpochState, key_id: bytes, seq: int) -> None:
        self._conn.execute(
            "INSERT INTO epoch_keys (gateway_id, epoch, key_id, first_seq) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (gateway_id, epoch, key_id) DO UPDATE SET first_seq = least(epoch_keys.first_seq, "
            "excluded.first_seq)", (epoch.gateway_id, epoch.epoch, key_id, seq))

    # ---- gateways and epochs: locked in the transaction ----

    def lock(self, gateway_ids: set[str]) -> set[str]:
        """Lock the rows of those of `gateway_ids` no other transaction holds (SKIP LOCKED: never wait, never
        deadlock); returns the ones locked, whose state the transaction may now read and change."""
        self._gateways.clear()
        self._epochs.clear()
        for gateway_id, current in self._conn.execute(
                "SELECT gateway_id, current_epoch FROM gateways WHERE gateway_id = ANY(%s) FOR UPDATE SKIP LOCKED",
                (sorted(gateway_ids),)):
            self._gateways[gateway_id] = GatewayState(gateway_id, _bytes(current))
        self._load_keys(self._conn, sorted(self._gateways))  # the locked view: rotations by others included
        return set(self._gateways)

    def gateway(self, gateway_id: str) -> GatewayState:
        return self._gateways[gateway_id]

    def epoch(self, gateway: GatewayState, epoch: bytes) -> EpochState | None:
        key = (gateway.gateway_id, epoch)
        if key not in self._epochs:
            row = self._conn.execute(f"SELECT id, {', '.join(_EPOCH_COLUMNS)} FROM epochs WHERE gateway_id = %s "
                                     "AND epoch = %s", key).fetchone()
            self._epochs[key] = None if row is None else EpochState(
                row[0], gateway.gateway_id, epoch,
                *(_bytes(v) if isinstance(v, memoryview) else v for v in row[1:]))
        return self._epochs[key]

    def new_epoch(self, gateway: GatewayState, epoch: bytes, reason: str | None) -> EpochState:
        epoch_id = self._conn.execute(
            "INSERT INTO epochs (gateway_id, epoch, reset_reason) VALUES (%s, %s, %s) RETURNING id",
            (gateway.gateway_id, epoch, reason)).fetchone()[0]
        state = self._epochs[(gateway.gateway_id, epoch)] = EpochState(epoch_id, gateway.gateway_id, epoch)
        if gateway.current_epoch is None:
            gateway.current_epoch = epoch
        return state

    def learn_reset_reason(self, epoch: EpochState, reason: str) -> bool:
        """Record why `epoch` began, unless that is known already; True if it was not."""
        return self._conn.execute("UPDATE epochs SET reset_reason = %s WHERE id = %s AND reset_reason IS NULL",
                                  (reason, epoch.id)).rowcount == 1

    def heard(self, epoch: EpochState, envelope: Envelope, body: dict) -> None:
        epoch.hb_boot_id, epoch.hb_created_ms = envelope.boot_id, envelope.created_ms
        epoch.hb_head_seq, epoch.hb_oldest_unacknowledged = envelope.seq, body["oldest_unacknowledged"]

    def batch_digests(self, epoch: EpochState, seqs: list[int]) -> dict[int, tuple[bytes, bytes]]:
        """{seq: (digest, prev_hash)} of the accepted batches among `seqs`."""
        return {row[0]: (bytes(row[1]), bytes(row[2])) for row in self._conn.execute(
            "SELECT seq, digest, prev_hash FROM batches WHERE gateway_id = %s AND epoch = %s AND seq = ANY(%s)",
            (epoch.gateway_id, epoch.epoch, seqs))}

    def open_gap(self, epoch: EpochState, first: int, last: int) -> None:
        self._conn.execute("INSERT INTO gaps (gateway_id, epoch, first_seq, last_seq) VALUES (%s, %s, %s, %s)",
                           (epoch.gateway_id, epoch.epoch, first, last))

    def fill_gap(self, epoch: EpochState, seq: int) -> float | None:
        """Take `seq` out of the gap holding it; the seconds that gap had been open, None if none held it."""
        row = self._conn.execute(
            "DELETE FROM gaps WHERE gateway_id = %s AND epoch = %s AND first_seq <= %s AND last_seq >= %s "
            "RETURNING first_seq, last_seq, opened_at, alerted, lost, extract(epoch FROM now() - opened_at)::float8",
            (epoch.gateway_id, epoch.epoch, seq, seq)).fetchone()
        if row is None:
            return None
        first, last, opened_at, alerted, lost, waited = row
        for low, high in ((first, seq - 1), (seq + 1, last)):
            if low <= high:
                self._conn.execute(
                    "INSERT INTO gaps (gateway_id, epoch, first_seq, last_seq, opened_at, alerted, lost) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)", (epoch.gateway_id, epoch.epoch, low, high, opened_at,
                                                            alerted, lost))
        return waited

    def mark_lost(self, epoch: EpochState, oldest_unacknowledged: int | None) -> None:
        """Gaps below the oldest batch the gateway still holds (all, when it holds none): lost for good."""
        bound = oldest_unacknowledged if oldest_unacknowledged is not None else 2**63 - 1
        self._conn.execute("UPDATE gaps SET lost = true WHERE gateway_id = %s AND epoch = %s AND first_seq < %s",
                           (epoch.gateway_id, epoch.epoch, bound))

    def save(self) -> None:
        for state in self._epochs.values():
            if state is not None:
                self._conn.execute(
                    f"UPDATE epochs SET {', '.join(f'{c} = %s' for c in _EPOCH_COLUMNS)} WHERE id = %s",
                    (*(getattr(state, c) for c in _EPOCH_COLUMNS), state.id))
        for gateway in self._gateways.values():
            self._conn.execute(
                "UPDATE gateways SET current_epoch = %s, batches = batches + %s, samples = samples + %s,"
                " events = events + %s, duplicates = duplicates + %s,"
                " last_batch_at = CASE WHEN %s > 0 THEN now() ELSE last_batch_at END WHERE gateway_id = %s",
                (gateway.current_epoch, gateway.batches, gateway.samples, gateway.events, gateway.duplicates,
                 gateway.batches, gateway.gateway_id))

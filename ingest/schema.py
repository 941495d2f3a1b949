"""The PostgreSQL schema of gatewayd-ingest, its migrations, and the day partitions of the data tables.

`gateways`, `gateway_keys`, `epochs` and `epoch_keys` are the per-gateway verification state of
docs/uplink.md ("Verifying a stream"): every worker locks a gateway's row (SELECT ... FOR UPDATE) in the
transaction that reads and writes that gateway's state and rows, so the checks of one gateway never
interleave. `batches` is keyed by (gateway_id, epoch, seq): a batch is written once, and its samples and
events with it in the same transaction, which is what makes a redelivered batch a no-op. `samples` and `events` are
partitioned by day of their `ts_ms`, so retention is a DROP TABLE of old partitions.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

DAY_MS = 86_400_000
PARTITIONED = ("samples", "events")

MIGRATIONS: list[tuple[str, str]] = [
    (
        "initial",
        """
        CREATE TABLE gateways (
            gateway_id      text PRIMARY KEY,
            enrolled_key_id bytea NOT NULL,     -- the key handed over at enrolment: it signs 1.0 envelopes
            current_epoch   bytea,              -- the epoch begun by the latest accepted reset, or the first seen
            enrolled_at     timestamptz NOT NULL DEFAULT now(),
            batches         bigint NOT NULL DEFAULT 0,
            samples         bigint NOT NULL DEFAULT 0,
            events          bigint NOT NULL DEFAULT 0,
            duplicates      bigint NOT NULL DEFAULT 0,
            last_batch_at   timestamptz
        );
        CREATE TABLE gateway_keys (
            gateway_id text NOT NULL REFERENCES gateways ON DELETE CASCADE,
            key_id     bytea NOT NULL,          -- first 8 bytes of SHA-256 of the raw key
            public_key bytea NOT NULL,          -- raw 32-byte Ed25519 key
            successor  bytea,                   -- key id its key_rotation announced
            pinned_at  timestamptz NOT NULL DEFAULT now(),
            pinned_by  text NOT NULL,           -- "enrol", or the epoch and seq of the announcing batch
            PRIMARY KEY (gateway_id, key_id)
        );
        CREATE TABLE epochs (
            id           bigserial UNIQUE,      -- what samples and events carry, instead of 16 bytes a row
            gateway_id   text NOT NULL REFERENCES gateways ON DELETE CASCADE,
            epoch        bytea NOT NULL,
            reset_reason text,                  -- of the chain_reset that began it, if one did
            begun_at     timestamptz NOT NULL DEFAULT now(),
            low_seq      bigint NOT NULL DEFAULT 0,  -- lowest seq expected: the first accepted or anchor + 1
            top_seq      bigint NOT NULL DEFAULT 0,  -- highest seq known to exist: accepted or a heartbeat's head
            head_seq     bigint NOT NULL DEFAULT 0,  -- highest seq accepted
            head_hash    bytea,
            boot_id      bytea,                 -- of the highest seq accepted
            newest_created_ms bigint,           -- newest created_ms accepted
            anchor_seq   bigint,                -- head of the heartbeat that anchored a late start
            anchor_hash  bytea,
            hb_boot_id   bytea,                 -- the latest heartbeat accepted
            hb_created_ms bigint,
            hb_head_seq  bigint,
            hb_oldest_unacknowledged bigint,
            PRIMARY KEY (gateway_id, epoch)
        );
        CREATE TABLE epoch_keys (
            gateway_id text NOT NULL,
            epoch      bytea NOT NULL,
            key_id     bytea NOT NULL,
            first_seq  bigint NOT NULL,         -- lowest seq of the epoch accepted with this key
            PRIMARY KEY (gateway_id, epoch, key_id)
        );
        CREATE TABLE batches (
            gateway_id  text NOT NULL,
            epoch       bytea NOT NULL,
            seq         bigint NOT NULL,
            key_id      bytea NOT NULL,
            boot_id     bytea NOT NULL,
            created_ms  bigint NOT NULL,
            prev_hash   bytea NOT NULL,
            digest      bytea NOT NULL,
            samples     integer NOT NULL,
            events      integer NOT NULL,
            undecodable boolean NOT NULL DEFAULT false,  -- accepted into the chain, content not stored
            received_at timestamptz NOT NULL DEFAULT now(),
            worker      text NOT NULL,
            PRIMARY KEY (gateway_id, epoch, seq)
        );
        CREATE TABLE gaps (
            gateway_id text NOT NULL,
            epoch      bytea NOT NULL,
            first_seq  bigint NOT NULL,
            last_seq   bigint NOT NULL,
            opened_at  timestamptz NOT NULL DEFAULT now(),
            alerted    boolean NOT NULL DEFAULT false,  -- a gap finding was recorded for it
            lost       boolean NOT NULL DEFAULT false,  -- a heartbeat said the gateway no longer holds it
            PRIMARY KEY (gateway_id, epoch, first_seq)
        );
        CREATE TABLE held (
            id          bigserial PRIMARY KEY,
            gateway_id  text NOT NULL,
            reason      text NOT NULL,          -- unknown_key or unanchored_epoch
            key_id      bytea NOT NULL,
            epoch       bytea NOT NULL,
            seq         bigint NOT NULL,
            topic       text NOT NULL,
            payload     bytea NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX held_by_gateway ON held (gateway_id, reason);
        CREATE TABLE findings (
            id         bigserial PRIMARY KEY,
            at         timestamptz NOT NULL DEFAULT now(),
            gateway_id text,
            epoch      bytea,
            seq        numeric(20),
            kind       text NOT NULL,
            serious    boolean NOT NULL,
            detail     text NOT NULL,
            worker     text NOT NULL
        );
        CREATE INDEX findings_by_gateway ON findings (gateway_id, at);
        CREATE TABLE samples (
            gateway_id   text NOT NULL,
            epoch_id     bigint NOT NULL,       -- epochs.id
            seq          bigint NOT NULL,
            tag          text NOT NULL,
            ts_ms        bigint NOT NULL,
            value        double precision,
            quality      smallint NOT NULL,
            source_ts_ms bigint
        ) PARTITION BY RANGE (ts_ms);
        CREATE TABLE events (
            gateway_id text NOT NULL,
            epoch_id   bigint NOT NULL,
            seq        bigint NOT NULL,
            ts_ms      bigint NOT NULL,
            kind       text NOT NULL,
            source     text NOT NULL,
            priority   integer NOT NULL,
            message    text NOT NULL,
            data       jsonb NOT NULL
        ) PARTITION BY RANGE (ts_ms);
        -- what a platform reads: one tag's history, one gateway's events; each day partition has its own
        CREATE INDEX samples_by_tag ON samples (gateway_id, tag, ts_ms);
        CREATE INDEX events_by_gateway ON events (gateway_id, ts_ms);
        """,
    ),
]


def migrate(conn: psycopg.Connection) -> list[str]:
    """Apply the migrations not applied yet, in order, under an advisory lock; return their names."""
    applied = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('gatewayd-ingest schema'))")
        conn.execute("CREATE TABLE IF NOT EXISTS ingest_migrations (name text PRIMARY KEY, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        done = {row[0] for row in conn.execute("SELECT name FROM ingest_migrations")}
        for name, sql in MIGRATIONS:
            if name not in done:
                conn.execute(sql)
                conn.execute("INSERT INTO ingest_migrations (name) VALUES (%s)", (name,))
                applied.append(name)
    return applied


def pending(conn: psycopg.Connection) -> list[str]:
    """Names of the migrations `migrate` would apply."""
    exists = conn.execute("SELECT to_regclass('ingest_migrations')").fetchone()[0]
    done = {row[0] for row in conn.execute("SELECT name FROM ingest_migrations")} if exists else set()
    return [name for name, _ in MIGRATIONS if name not in done]


def partition_name(table: str, day: int) -> str:
    """`samples_d20561` holds the samples of day 20561 since 1970-01-01 (UTC)."""
    return f"{table}_d{day}" if day >= 0 else f"{table}_dm{-day}"


def ensure_partitions(conn: psycopg.Connection, days: Iterable[int]) -> None:
    """Create the day partitions of every data table for `days` (day numbers since 1970-01-01 UTC).

    Normally in its own short transaction on a connection with no other open transaction: creating a
    partition locks the parent table, and workers create the same day at midnight concurrently. Called
    inside an open transaction (a held batch released by another) it runs in that one.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('gatewayd-ingest partitions'))")
        for day in sorted(set(days)):
            for table in PARTITIONED:
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {partition_name(table, day)} PARTITION OF {table} "
                    f"FOR VALUES FROM ({day * DAY_MS}) TO ({(day + 1) * DAY_MS})"
                )


def drop_partitions_before(conn: psycopg.Connection, day: int) -> list[str]:
    """Retention: drop the data partitions of days before `day`; return the tables dropped."""
    dropped = []
    with conn.transaction():
        rows = conn.execute(
            "SELECT c.relname, p.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = ANY(%s)", (list(PARTITIONED),)
        ).fetchall()
        for child, parent in rows:
            suffix = child[len(parent) + 2:]
            child_day = -int(suffix[1:]) if suffix.startswith("m") else int(suffix)
            if child_day < day:
                conn.execute(f"DROP TABLE {child}")
                dropped.append(child)
    return sorted(dropped)

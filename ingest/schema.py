"""The PostgreSQL schema of gatewayd-ingest, its migrations, and the day partitions of the data tables.

`gateways` is the per-gateway verification state: every worker locks a gateway's row (SELECT ... FOR UPDATE)
in the transaction that writes that gateway's rows, so checks and writes of one gateway never interleave.
`batches` is keyed by (gateway_id, epoch, seq): a batch is written once, and its samples and events with
it in the same transaction, which is what makes a redelivered batch a no-op. `samples` and `events` are
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
            gateway_id   text PRIMARY KEY,
            public_key   bytea NOT NULL,            -- raw 32-byte Ed25519 key pinned now
            enrolled_at  timestamptz NOT NULL DEFAULT now(),
            epoch        bigint NOT NULL DEFAULT 0,  -- current chain epoch (0 until a chain_reset)
            boot_id      bytea,                      -- boot id of the highest seq accepted
            low_seq      bigint NOT NULL DEFAULT 0,  -- lowest seq accepted in the epoch (0: none yet)
            head_seq     bigint NOT NULL DEFAULT 0,  -- highest seq accepted in the epoch
            head_hash    bytea,                      -- SHA-256 of that batch
            batches      bigint NOT NULL DEFAULT 0,
            samples      bigint NOT NULL DEFAULT 0,
            events       bigint NOT NULL DEFAULT 0,
            duplicates   bigint NOT NULL DEFAULT 0,
            last_batch_at timestamptz
        );
        CREATE TABLE batches (
            gateway_id  text NOT NULL,
            epoch       bigint NOT NULL,
            seq         bigint NOT NULL,
            boot_id     bytea NOT NULL,
            created_ms  bigint NOT NULL,
            prev_hash   bytea NOT NULL,
            digest      bytea NOT NULL,
            samples     integer NOT NULL,
            events      integer NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            worker      text NOT NULL,
            PRIMARY KEY (gateway_id, epoch, seq)
        );
        CREATE TABLE gaps (
            gateway_id text NOT NULL,
            epoch      bigint NOT NULL,
            first_seq  bigint NOT NULL,
            last_seq   bigint NOT NULL,
            opened_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (gateway_id, epoch, first_seq)
        );
        CREATE TABLE findings (
            id         bigserial PRIMARY KEY,
            at         timestamptz NOT NULL DEFAULT now(),
            gateway_id text,
            epoch      bigint,
            seq        numeric(20),
            kind       text NOT NULL,
            serious    boolean NOT NULL,
            detail     text NOT NULL,
            worker     text NOT NULL
        );
        CREATE INDEX findings_by_gateway ON findings (gateway_id, at);
        CREATE TABLE samples (
            gateway_id   text NOT NULL,
            epoch        bigint NOT NULL,
            seq          bigint NOT NULL,
            tag          text NOT NULL,
            ts_ms        bigint NOT NULL,
            value        double precision,
            quality      smallint NOT NULL,
            source_ts_ms bigint
        ) PARTITION BY RANGE (ts_ms);
        CREATE TABLE events (
            gateway_id text NOT NULL,
            epoch      bigint NOT NULL,
            seq        bigint NOT NULL,
            ts_ms      bigint NOT NULL,
            kind       text NOT NULL,
            source     text NOT NULL,
            priority   integer NOT NULL,
            message    text NOT NULL,
            data       jsonb NOT NULL
        ) PARTITION BY RANGE (ts_ms);
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

    Runs in its own short transaction on a connection with no other open transaction: creating a
    partition locks the parent table, and workers create the same day at midnight concurrently.
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

"""`gatewayd-ingest`: run a worker, prepare the database, enrol gateways, look at gaps and chains.

Thin: each command opens the database and calls one function of ingest.admin, ingest.schema or
ingest.worker; their errors become messages (and exit status 2) here and nowhere else.
The database is `--db` or the environment variable GATEWAYD_INGEST_DB (a libpq connection string).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

import psycopg
from prometheus_client import start_http_server

from ingest.admin import AdminError, chain_state, enrol, fingerprint, open_gaps, raw_public_key
from ingest.schema import DAY_MS, drop_partitions_before, migrate, pending


def _broker(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host, int(port)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="gatewayd-ingest", description=__doc__.split("\n\n")[0])
    top.add_argument("--db", default=os.environ.get("GATEWAYD_INGEST_DB"),
                     help="libpq connection string (default: $GATEWAYD_INGEST_DB)")
    sub = top.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="consume batches from the broker and store them")
    run.add_argument("--broker", type=_broker, required=True, help="HOST:PORT of the MQTT v5 broker")
    run.add_argument("--client-id", default=f"gatewayd-ingest-{socket.gethostname()}",
                     help="fixed per worker: the broker keeps this worker's unacknowledged batches under it")
    run.add_argument("--group", default="gatewayd-ingest", help="shared subscription group of all workers")
    run.add_argument("--topic-prefix", default="gatewayd", help="the gateways' uplink.topic_prefix")
    run.add_argument("--session-expiry", type=int, default=7 * 86400, help="seconds the broker keeps the session")
    run.add_argument("--max-group", type=int, default=200, help="batches stored per transaction at most")
    run.add_argument("--late-after", type=float, default=60.0,
                     help="a gap filled after this many seconds is recorded as a late arrival")
    run.add_argument("--gap-alert-after", type=float, default=135.0,
                     help="a gap open this many seconds is recorded as a `gap` finding (uplink.md step 11)")
    run.add_argument("--lost-alert-after", type=float, default=10.0,
                     help="a gap a heartbeat said the gateway no longer holds is recorded as `lost` after this "
                          "many seconds")
    run.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    run.add_argument("--ca-file", type=Path)
    run.add_argument("--cert-file", type=Path)
    run.add_argument("--key-file", type=Path)
    run.add_argument("--insecure-plain", action="store_true", help="plain MQTT without TLS")

    sub.add_parser("init-db", help="create or migrate the schema")
    sub.add_parser("pending", help="list the schema migrations not applied yet")

    enrol_cmd = sub.add_parser("enrol", help="pin a gateway's public key")
    enrol_cmd.add_argument("gateway_id")
    enrol_cmd.add_argument("public_key", type=Path, help="the gateway's <key>.pub (PEM)")
    enrol_cmd.add_argument("--replace", action="store_true", help="replace a different key already pinned")

    gaps_cmd = sub.add_parser("gaps", help="list the open gaps")
    gaps_cmd.add_argument("gateway_id", nargs="?")

    chain_cmd = sub.add_parser("chain", help="show a gateway's chain state and latest findings (JSON)")
    chain_cmd.add_argument("gateway_id")
    chain_cmd.add_argument("--findings", type=int, default=20, help="how many of the latest findings")

    prune = sub.add_parser("prune", help="drop the day partitions of samples and events older than --keep-days")
    prune.add_argument("--keep-days", type=int, required=True)
    return top


def _run(args: argparse.Namespace) -> int:
    from ingest.worker import Worker, WorkerConfig  # paho is needed by this command only

    host, port = args.broker
    worker = Worker(WorkerConfig(
        database=args.db, broker_host=host, broker_port=port, client_id=args.client_id, group=args.group,
        topic_prefix=args.topic_prefix, session_expiry=args.session_expiry, max_group=args.max_group,
        late_after=args.late_after, gap_alert_after=args.gap_alert_after,
        lost_alert_after=args.lost_alert_after, ca_file=args.ca_file,
        cert_file=args.cert_file, key_file=args.key_file,
        insecure_plain=args.insecure_plain))
    if args.metrics_port:
        start_http_server(args.metrics_port, addr="127.0.0.1", registry=worker.metrics.registry)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    worker.run()
    return 0


def _command(args: argparse.Namespace, conn: psycopg.Connection) -> int:
    if args.command == "init-db":
        applied = migrate(conn)
        print(f"applied: {', '.join(applied)}" if applied else "schema up to date")
    elif args.command == "pending":
        print("\n".join(pending(conn)) or "none")
    elif args.command == "enrol":
        raw = raw_public_key(args.public_key)
        migrate(conn)
        print(f"{args.gateway_id}: {enrol(conn, args.gateway_id, raw, args.replace)}, key {fingerprint(raw)}")
    elif args.command == "gaps":
        gaps = open_gaps(conn, args.gateway_id)
        print("\n".join(gap.format() for gap in gaps) or "no open gaps")
    elif args.command == "chain":
        print(json.dumps(chain_state(conn, args.gateway_id, args.findings), indent=2))
    elif args.command == "prune":
        today = int(time.time() * 1000) // DAY_MS
        dropped = drop_partitions_before(conn, today - args.keep_days)
        print(f"dropped: {', '.join(dropped)}" if dropped else "nothing to drop")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.db:
        print("gatewayd-ingest: no database: pass --db or set GATEWAYD_INGEST_DB", file=sys.stderr)
        return 2
    try:
        if args.command == "run":
            return _run(args)
        with psycopg.connect(args.db, autocommit=True) as conn:
            return _command(args, conn)
    except (AdminError, psycopg.Error) as exc:
        print(f"gatewayd-ingest: {exc}", file=sys.stderr)
        return 2

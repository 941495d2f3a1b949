"""The `gatewayd` command: a thin shell over the library; errors become messages and exit codes here only."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from gatewayd import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def setup_logging(level: str) -> None:
    """journald adds its own timestamps; a terminal gets them from us."""
    under_journal = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s" if under_journal else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, level.upper()), format=fmt, stream=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from gatewayd.config import ConfigError, load_config_isolated
    from gatewayd.daemon import run_daemon
    from gatewayd.keys import KeyFileError

    setup_logging(args.log_level)
    try:
        config = load_config_isolated(args.config)
        return run_daemon(config)
    except ConfigError as exc:
        print(f"gatewayd: configuration invalid, not starting:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyFileError as exc:
        print(f"gatewayd: {exc}", file=sys.stderr)
        return EXIT_USAGE


def cmd_check_config(args: argparse.Namespace) -> int:
    from gatewayd.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        print(f"{len(exc.issues)} error{'s' if len(exc.issues) != 1 else ''} in {args.config}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.config}: OK: gateway {config.gateway.id}, {len(config.devices)} devices, "
          f"{len(config.tags)} tags, uplink {config.uplink.transport}://{config.uplink.host}:{config.uplink.port}")
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    from gatewayd.keys import KeyFileError, generate_key, load_public_key, public_key_fingerprint

    try:
        public_path = generate_key(Path(args.path))
    except (KeyFileError, FileExistsError) as exc:
        print(f"gatewayd keygen: {exc}", file=sys.stderr)
        return EXIT_FAILED
    fingerprint = public_key_fingerprint(load_public_key(public_path))
    print(f"private key: {args.path} (mode 0600)\npublic key:  {public_path}\nfingerprint: {fingerprint}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from gatewayd.uplink.capture import read_frames
    from gatewayd.uplink.verify import ChainVerifier

    from gatewayd.keys import load_public_key

    verifier = ChainVerifier(load_public_key(Path(args.public_key)), gateway_id=args.gateway)
    if args.capture:
        for path in args.capture:
            for frame in read_frames(Path(path)):
                verifier.feed(frame)
    else:
        for frame in receive_frames(args):
            verifier.feed(frame)
    report = verifier.report()
    print(report.format())
    return EXIT_OK if report.ok else EXIT_FAILED


def receive_frames(args: argparse.Namespace) -> list[bytes]:
    """Subscribe for `--seconds` and return what arrived (verify and watch share the broker options)."""
    import time

    from gatewayd.uplink.receiver import Receiver

    receiver = make_receiver(args, Receiver)
    receiver.start()
    try:
        time.sleep(args.seconds)
    finally:
        receiver.stop()
    return receiver.frames()


def make_receiver(args: argparse.Namespace, receiver_class):
    host, _, port = args.broker.partition(":")
    return receiver_class(host, int(port or (1883 if args.plain else 8883)), args.topic,
                          ca_file=args.ca_file, insecure_plain=args.plain, capture_path=args.save)


def cmd_watch(args: argparse.Namespace) -> int:
    from gatewayd.keys import load_public_key
    from gatewayd.uplink.receiver import Receiver
    from gatewayd.watch import watch

    receiver = make_receiver(args, Receiver)
    return watch(receiver, load_public_key(Path(args.public_key)), refresh=args.refresh)


def add_broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True, metavar="HOST[:PORT]")
    parser.add_argument("--topic", default="gatewayd/+/batch", help="default: %(default)s")
    parser.add_argument("--ca-file", help="CA of the broker's certificate (TLS is the default)")
    parser.add_argument("--plain", action="store_true", help="connect without TLS (test benches only)")
    parser.add_argument("--save", metavar="FILE", help="append every batch received to this capture file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatewayd", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gatewayd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", required=True, help="YAML configuration file")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration file and print every error")
    check.add_argument("config")
    check.set_defaults(func=cmd_check_config)

    keygen = sub.add_parser("keygen", help="create the Ed25519 batch signing key (PATH, 0600) and PATH.pub")
    keygen.add_argument("path")
    keygen.set_defaults(func=cmd_keygen)

    verify = sub.add_parser("verify", help="verify signatures, sequence and chain of captured or live batches")
    verify.add_argument("--public-key", required=True, help="the gateway's PATH.pub")
    verify.add_argument("--gateway", help="expected gateway id")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--capture", nargs="+", metavar="FILE", help="capture files of length-prefixed batches")
    source.add_argument("--broker", metavar="HOST[:PORT]", help="subscribe to a broker instead")
    verify.add_argument("--topic", default="gatewayd/+/batch", help="default: %(default)s")
    verify.add_argument("--seconds", type=float, default=10.0, help="how long to listen to the broker")
    verify.add_argument("--ca-file")
    verify.add_argument("--plain", action="store_true")
    verify.add_argument("--save", metavar="FILE")
    verify.set_defaults(func=cmd_verify)

    watch = sub.add_parser("watch", help="live view of what arrives upstream, verified as it comes")
    watch.add_argument("--public-key", required=True)
    watch.add_argument("--refresh", type=float, default=1.0)
    add_broker_options(watch)
    watch.set_defaults(func=cmd_watch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

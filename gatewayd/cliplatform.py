"""`gatewayd verify` and `gatewayd watch`: the platform tools (gatewayd.platform) on the command line, fed from
capture files or a broker."""

from __future__ import annotations

import argparse
from pathlib import Path

from gatewayd.exitcodes import EXIT_FAILED, EXIT_OK


def add_platform_commands(sub: argparse._SubParsersAction) -> None:
    verify = sub.add_parser("verify", help="verify signatures, sequence and chain of captured or live batches")
    verify.add_argument("--public-key", required=True, help="the gateway's PATH.pub")
    verify.add_argument("--gateway", help="expected gateway id")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--capture", nargs="+", metavar="FILE", help="capture files of length-prefixed batches")
    source.add_argument("--broker", metavar="HOST[:PORT]", help="subscribe to a broker instead")
    verify.add_argument("--topic", default="gatewayd/+/+", help="batches and heartbeats; default: %(default)s")
    verify.add_argument("--seconds", type=float, default=10.0, help="how long to listen to the broker")
    verify.add_argument("--ca-file")
    verify.add_argument("--plain", action="store_true")
    verify.add_argument("--save", metavar="FILE")
    verify.add_argument("--export", metavar="DB", help="write the accepted samples and events into this SQLite file")
    verify.set_defaults(func=cmd_verify)

    watch = sub.add_parser("watch", help="live view of what arrives upstream, verified as it comes")
    watch.add_argument("--public-key", required=True)
    watch.add_argument("--refresh", type=float, default=1.0)
    add_broker_options(watch)
    watch.set_defaults(func=cmd_watch)


def add_broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True, metavar="HOST[:PORT]")
    parser.add_argument("--topic", default="gatewayd/+/+", help="batches and heartbeats; default: %(default)s")
    parser.add_argument("--ca-file", help="CA of the broker's certificate (TLS is the default)")
    parser.add_argument("--plain", action="store_true", help="connect without TLS (test benches only)")
    parser.add_argument("--save", metavar="FILE", help="append every batch received to this capture file")


def cmd_verify(args: argparse.Namespace) -> int:
    from gatewayd.platform.capture import read_frames
    from gatewayd.platform.verify import ChainVerifier

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
    if args.export and report.batches:
        from gatewayd.platform.export import export

        samples, events = export(report.batches, verifier.gateway_id or "", Path(args.export))
        print(f"exported {samples} samples and {events} events of the accepted batches to {args.export}")
    return EXIT_OK if report.ok else EXIT_FAILED


def receive_frames(args: argparse.Namespace) -> list[bytes]:
    """Subscribe for `--seconds` and return what arrived (verify and watch share the broker options)."""
    import time

    from gatewayd.platform.receiver import Receiver

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
    from gatewayd.platform.receiver import Receiver
    from gatewayd.platform.watch import watch

    receiver = make_receiver(args, Receiver)
    return watch(receiver, load_public_key(Path(args.public_key)), refresh=args.refresh)

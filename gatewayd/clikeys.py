"""`gatewayd keygen`: the batch signing key, and its rotation in two runs (docs/uplink.md#key-rotation)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gatewayd.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_USAGE


def add_keygen_command(sub: argparse._SubParsersAction) -> None:
    keygen = sub.add_parser("keygen", help="create the Ed25519 batch signing key (PATH, 0600) and PATH.pub; "
                            "--rotate -c CONFIG replaces the configured key in two runs")
    keygen.add_argument("path", nargs="?")
    keygen.add_argument("--rotate", action="store_true", help="make the next key, or finish a rotation "
                        "the broker acknowledged")
    keygen.add_argument("-c", "--config", help="with --rotate: the daemon's configuration")
    keygen.add_argument("--key", help="with --rotate, when the config names a credential: the key file it is loaded "
                        "from")
    keygen.set_defaults(func=cmd_keygen)


def cmd_keygen(args: argparse.Namespace) -> int:
    from gatewayd.keys import KeyFileError, generate_key, load_public_key, public_key_fingerprint

    if args.rotate:
        return rotate_key(args)
    if args.path is None:
        print("gatewayd keygen: give the PATH of the new key (or --rotate -c CONFIG)", file=sys.stderr)
        return EXIT_USAGE
    try:
        public_path = generate_key(Path(args.path))
    except (KeyFileError, FileExistsError) as exc:
        print(f"gatewayd keygen: {exc}", file=sys.stderr)
        return EXIT_FAILED
    fingerprint = public_key_fingerprint(load_public_key(public_path))
    print(f"private key: {args.path} (mode 0600)\npublic key:  {public_path}\nfingerprint: {fingerprint}")
    return EXIT_OK


def rotate_key(args: argparse.Namespace) -> int:
    """`keygen --rotate -c CONFIG`: the first run makes the next key beside the configured one; the daemon
    announces it (docs/uplink.md#key-rotation); a run after the broker acknowledged the announcement puts the
    next key in the old one's place. Each run says what it did and what comes next."""
    from gatewayd.config import ConfigError, load_config
    from gatewayd.keys import KeyFileError, finish_rotation, generate_key, load_public_key, next_key_path, \
        public_key_fingerprint
    from gatewayd.uplink.rotation import read_acknowledged

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILED
    key = config.uplink.signing_key
    if not isinstance(key, Path):
        if args.key is None:
            print(f"gatewayd keygen: uplink.signing_key is {key}: name the file it is loaded from with --key "
                  f"(e.g. /etc/gatewayd/signing.key)", file=sys.stderr)
            return EXIT_USAGE
        credential, key = key, Path(args.key)
    upcoming = next_key_path(key)
    try:
        if not upcoming.exists():
            fingerprint = public_key_fingerprint(load_public_key(generate_key(upcoming)))
            print(f"next key: {upcoming} (mode 0600), fingerprint {fingerprint}")
            if not isinstance(config.uplink.signing_key, Path):
                print(f"pass it to the service too: a drop-in with LoadCredential={credential.name}.next:{upcoming}, "
                      f"then systemctl daemon-reload && systemctl restart gatewayd")
            else:
                print("reload gatewayd")
            print("it announces the next key, then signs with it once the broker acknowledged the announcement; "
                  "then run this command again to remove the old key")
            return EXIT_OK
        fingerprint = public_key_fingerprint(load_public_key(Path(f"{upcoming}.pub")))
        if read_acknowledged(config.store.path) != fingerprint:
            print(f"gatewayd keygen: the announcement of {fingerprint} is not acknowledged yet; the old key "
                  f"{key} stays (is gatewayd running, connected, and reloaded since the first run?)", file=sys.stderr)
            return EXIT_FAILED
        finish_rotation(key)
    except (KeyFileError, OSError) as exc:
        print(f"gatewayd keygen: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"rotation finished: {key} is now the key {fingerprint}; the old key is removed")
    if not isinstance(config.uplink.signing_key, Path):
        print(f"remove the drop-in's LoadCredential={credential.name}.next line now (its file is gone), then "
              f"systemctl daemon-reload")
    return EXIT_OK

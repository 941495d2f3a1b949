"""The `gatewayd` command: a thin shell over the library; errors become messages and exit codes here only."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gatewayd import __version__
from gatewayd.clikeys import add_keygen_command
from gatewayd.exitcodes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from gatewayd.cliplatform import add_platform_commands
from gatewayd.operator.render import (
    render_alarms,
    render_approval,
    render_bypass_list,
    render_events,
    render_interlocks,
    render_reload,
    render_request,
    render_requests,
    render_status,
    render_tail_line,
)

# Each command imports what it needs inside itself, for start-up cost: `gatewayd status` must not load
# the config loader, and nothing but `gatewayd run` may load numba (which the daemon does only when the rule
# kernels are not built ahead of time, rules.kernels.load).

ANSWER_TIMEOUT = 30.0  # seconds a command to the running daemon waits for its answer
RELOAD_TIMEOUT = 120.0  # a reload parses and builds a whole configuration first


def setup_logging(level: str) -> None:
    """journald adds its own timestamps; a terminal gets them from us."""
    under_journal = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s" if under_journal else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=getattr(logging, level.upper()), format=fmt, stream=sys.stderr)
    # protocol stacks log every failed connect; the drivers report outages once, in our words
    # (pymodbus logs a hex dump for every undecodable frame: a hostile device would flood the journal)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    # asyncua logs a lost server as an ERROR with a traceback (its publish loop "crashed"), which reads
    # as a crash of the gateway next to the driver's one warning: silent unless debugging the stack
    debugging = logging.getLogger().level <= logging.DEBUG
    logging.getLogger("asyncua").setLevel(logging.DEBUG if debugging else logging.CRITICAL)


def cmd_run(args: argparse.Namespace) -> int:
    from gatewayd.config import ConfigError, load_config_isolated
    from gatewayd.kernelcache import prepare_start
    from gatewayd.operator.control import ControlError
    from gatewayd.secretfiles import SecretFileError
    from gatewayd.systemd import CredentialError
    from gatewayd.trust import ForeignDirectoryError

    setup_logging(args.log_level)
    try:
        config = load_config_isolated(args.config)
        # the config's million-odd objects live as long as the daemon: out of the cyclic collector's
        # sight, which would otherwise rescan them all in every full collection (seconds at start)
        gc.freeze()
        for warning in config.warnings:
            logging.getLogger("gatewayd").warning("configuration: %s", warning)
        prepare_start(config)
        from gatewayd.daemon import run_daemon  # may import numba, which reads NUMBA_CACHE_DIR: only now

        return run_daemon(config)
    except ConfigError as exc:
        print(f"gatewayd: configuration invalid, not starting:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except (SecretFileError, CredentialError, ForeignDirectoryError) as exc:
        print(f"gatewayd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ControlError as exc:
        print(f"gatewayd: {exc}", file=sys.stderr)
        return EXIT_FAILED


def cmd_schema(args: argparse.Namespace) -> int:
    from gatewayd.config.jsonschema import config_schema

    text = json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n"
    if args.output:
        write_replacing(Path(args.output), text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_import_points(args: argparse.Namespace) -> int:
    from gatewayd.commissioning.points import MappingError, import_points, load_mapping, render
    from gatewayd.commissioning.sheets import SheetError

    try:
        imported = import_points(Path(args.table), load_mapping(args.mapping and Path(args.mapping)), args.device)
    except (MappingError, SheetError) as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILED
    for note in imported.notes:
        print(f"note: {note}", file=sys.stderr)
    if imported.problems:
        print("\n".join(imported.problems), file=sys.stderr)
        print(f"{len(imported.problems)} bad in {args.table}; nothing written", file=sys.stderr)
        return EXIT_FAILED
    text = render(imported.tags, args.table)
    if args.output:
        write_replacing(Path(args.output), text)
        print(f"{args.output}: {len(imported.tags)} tags from {args.table}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def write_replacing(path: Path, text: str) -> None:
    """Written aside, then renamed over: a reader sees the old file or the new one, never half of one."""
    aside = path.with_name(f".{path.name}.tmp")
    aside.write_text(text, encoding="utf-8")
    os.replace(aside, path)


def cmd_check_config(args: argparse.Namespace) -> int:
    from gatewayd.commissioning.historysize import history_size
    from gatewayd.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        print(f"{len(exc.issues)} error{'s' if len(exc.issues) != 1 else ''} in {args.config}", file=sys.stderr)
        return EXIT_FAILED
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if config.warnings:
        count = len(config.warnings)
        print(f"{count} warning{'s' if count != 1 else ''} in {args.config} (valid, but look at them twice)",
              file=sys.stderr)
    print(f"{args.config}: OK: gateway {config.gateway.id}, {len(config.devices)} devices, "
          f"{len(config.tags)} tags, uplink {config.uplink.transport}://{config.uplink.host}:{config.uplink.port}")
    print(history_size(config).summary())
    return EXIT_OK


def cmd_console(args: argparse.Namespace) -> int:
    from gatewayd.config import ConfigError, load_config
    from gatewayd.console.auth import UsersFileError
    from gatewayd.console.service import run
    from gatewayd.secretfiles import SecretFileError

    setup_logging(args.log_level)
    try:
        config = load_config(args.config)
        print(f"gatewayd console: {config.console.url()}", flush=True)
        return run(config)
    except ConfigError as exc:
        print(f"gatewayd console: configuration invalid, not starting:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except (SecretFileError, UsersFileError) as exc:
        print(f"gatewayd console: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # the address is taken, a certificate cannot be read
        print(f"gatewayd console: cannot serve on {config.console.url()}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def cmd_console_user(args: argparse.Namespace) -> int:
    import getpass

    from gatewayd.console.auth import UsersFileError, write_user
    from gatewayd.secretfiles import SecretFileError

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.user}: ")
        if getpass.getpass("again: ") != password:
            print("gatewayd console-user: the two passwords differ; nothing written", file=sys.stderr)
            return EXIT_FAILED
    try:
        new = write_user(Path(args.file), args.user, password)
    except (UsersFileError, SecretFileError, OSError) as exc:
        print(f"gatewayd console-user: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.file}: {'added' if new else 'changed the password of'} {args.user} (mode 0600)")
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    import sqlite3

    from gatewayd.operator.history import parse_time, write_samples
    from store import History, HistoryError

    try:
        start, end = parse_time(args.start), parse_time(args.end) if args.end else time_now()
    except ValueError as exc:
        print(f"gatewayd history: {exc}", file=sys.stderr)
        return EXIT_USAGE
    path = store_path(args)
    try:
        history = History.open(path)
        try:
            samples = history.samples(args.tag, start, end)
        finally:
            history.close()
    except HistoryError as exc:
        print(f"gatewayd history: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except sqlite3.Error as exc:
        hint = " (only the daemon's account and root may read it)" if "unable to open" in str(exc) else ""
        print(f"gatewayd history: cannot read the store {path}: {exc}{hint}", file=sys.stderr)
        return EXIT_FAILED
    write_samples(samples, sys.stdout, args.csv)
    print(f"{len(samples)} samples of {args.tag}", file=sys.stderr)
    return EXIT_OK


def time_now() -> float:
    import time

    return time.time()


def store_path(args: argparse.Namespace) -> Path:
    """--db, else the store of -c CONFIG, else the installed default (/var/lib/gatewayd/gatewayd.db)."""
    from gatewayd.config import load_config
    from gatewayd.config.tables import STORE_FIELDS, SYSTEMD_DIRECTORIES

    if args.db:
        return Path(args.db)
    if args.config:
        return load_config(args.config).store.path
    return SYSTEMD_DIRECTORIES["state_dir"][1] / STORE_FIELDS["path"].default


# ------------------------------------------------------------------ commissioning tools (read-only toward the plant)

def cmd_probe_modbus(args: argparse.Namespace) -> int:
    """Read a range once; show raw registers and every decoding side by side, --expect ranked."""
    from gatewayd.commissioning import probe

    try:
        target = probe.parse_target(args.url)
        start, count = probe.parse_range(args.range)
        expected = {address: value for value, address in map(probe.parse_expect, args.expect or [])}
        outside = [address for address in expected if not start <= address < start + count]
        if outside:
            raise probe.ProbeError(f"--expect at {outside[0]}: outside --range {args.range}")
        table = probe.TABLES[args.table]
        types = probe.parse_types(args.types)
        line = {"baud": args.baud, "parity": args.parity, "stop_bits": args.stop_bits}
        values = probe.run_probe(target, args.unit, table, start, count, args.timeout, line)
    except probe.ProbeError as exc:
        print(f"gatewayd probe: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if table in probe.BIT_TABLES:
        print("\n".join(probe.render_bits(table, start, values)))
        return EXIT_OK
    print("\n".join(probe.render_registers(table, start, values, types, expected, args.tolerance)))
    lines, all_found = probe.render_expectations(table, start, values, types, expected, args.tolerance)
    print("\n".join(lines), end="\n" if lines else "")
    return EXIT_OK if all_found else EXIT_FAILED


def add_probe_command(sub: argparse._SubParsersAction) -> None:
    probe = sub.add_parser("probe", help="read a device once and show how its registers decode (read-only)")
    kinds = probe.add_subparsers(dest="probe_kind", required=True)
    modbus = kinds.add_parser("modbus", help="raw registers and every type and byte/word order side by side",
                              description="Reads the range once with function codes 1-4 only.")
    modbus.add_argument("url", help="tcp://HOST[:PORT] (default port 502) or rtu:///dev/ttyX")
    modbus.add_argument("--unit", type=int, default=1, help="unit (slave) id, default %(default)s")
    modbus.add_argument("--table", choices=("co", "di", "hr", "ir"), default="hr",
                        help="co coils, di discrete inputs, hr holding (default), ir input registers")
    modbus.add_argument("--range", default="0-9",
                        help="START-END, both included, or one address (default %(default)s)")
    modbus.add_argument("--types", help="comma-separated subset of int16,uint16,int32,uint32,float32,float64 "
                        "(default: all)")
    modbus.add_argument("--expect", action="append", metavar="VALUE@ADDRESS",
                        help="a value known from the plant at an address: the matching type/order candidates "
                        "are marked and ranked; exit 1 if none matches (repeatable)")
    modbus.add_argument("--tolerance", type=float, default=1e-4,
                        help="relative match for --expect (default %(default)g)")
    modbus.add_argument("--timeout", type=float, default=1.0, help="seconds per request (default %(default)g)")
    modbus.add_argument("--baud", type=int, default=9600, help="rtu: baud rate (default %(default)s)")
    modbus.add_argument("--parity", choices=("N", "E", "O"), default="N", help="rtu: parity (default %(default)s)")
    modbus.add_argument("--stop-bits", type=int, choices=(1, 2), default=1, help="rtu: stop bits (default 1)")
    modbus.set_defaults(func=cmd_probe_modbus)


def cmd_browse(args: argparse.Namespace) -> int:
    """List the address space below --node, or with --yaml write a device block for the chosen nodes."""
    import asyncio

    from gatewayd.commissioning import browse

    setup_logging("warning")  # asyncua's own chatter stays out of the listing
    try:
        chosen = dict(choice.split("=", 1) for choice in args.yaml or [])
        if any(not tag or not node for tag, node in chosen.items()):
            raise browse.BrowseError("--yaml takes TAG=NODE, e.g. LT101=ns=2;s=LT101")
        settings = browse.browse_settings(args.url, args.security, args.security_mode, args.certificate,
                                          args.private_key, args.trust_store, args.user, args.password_file)
        if chosen:
            import yaml

            found = asyncio.run(browse.session(settings, args.timeout,
                                               lambda client: browse.chosen_variables(client, chosen)))
            text = yaml.safe_dump({"devices": [browse.device_block(args.device, settings, found)]},
                                  sort_keys=False, allow_unicode=True)
            if args.output:
                Path(args.output).write_text(text, encoding="utf-8")
            else:
                print(text, end="")
            return EXIT_OK
        start = browse.start_node(args.node)
        entries = asyncio.run(browse.session(settings, args.timeout,
                                             lambda client: browse.walk(client, start, args.depth, args.node is None)))
    except (browse.BrowseError, ValueError) as exc:
        print(f"gatewayd browse: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(browse.render(entries)))
    return EXIT_OK


def add_browse_command(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("browse", help="list an OPC UA server's address space with data types; write YAML "
                            "tags for chosen nodes (read-only)")
    parser.add_argument("url", help="opc.tcp://HOST:PORT")
    parser.add_argument("--node", help="start here instead of the Objects folder, e.g. 'ns=2;s=Plant' or "
                        "'nsu=urn:vendor;s=Plant'")
    parser.add_argument("--depth", type=int, default=3, help="levels below the start node (default %(default)s)")
    parser.add_argument("--yaml", action="append", metavar="TAG=NODE",
                        help="write a device block with a tag per chosen node instead of listing (repeatable)")
    parser.add_argument("--device", default="opcua1", help="device name in the YAML (default %(default)s)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the YAML here instead of stdout")
    parser.add_argument("--security", choices=("None", "Basic256Sha256"), default="None",
                        help="security policy, as the device's security_policy (default %(default)s)")
    parser.add_argument("--security-mode", choices=("Sign", "SignAndEncrypt"),
                        help="with Basic256Sha256 (default SignAndEncrypt)")
    parser.add_argument("--certificate", help="client certificate (PEM or DER)")
    parser.add_argument("--private-key", help="its private key (a file others cannot read)")
    parser.add_argument("--trust-store", help="directory of trusted server or CA certificates")
    parser.add_argument("--user", help="user name (with --password-file)")
    parser.add_argument("--password-file", help="file holding the password (a file others cannot read)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request (default %(default)g)")
    parser.set_defaults(func=cmd_browse)


# ------------------------------------------------------------------ operator commands over the control socket

def control_socket(args: argparse.Namespace) -> Path:
    """--socket, else the runtime_dir of -c CONFIG, else the default runtime_dir."""
    from gatewayd.config import load_config
    from gatewayd.config.tables import SYSTEMD_DIRECTORIES
    from gatewayd.operator.control import socket_path

    if args.socket:
        return Path(args.socket)
    if args.config:
        return socket_path(load_config(args.config).gateway.runtime_dir)
    return socket_path(SYSTEMD_DIRECTORIES["runtime_dir"][1])  # the unit's RuntimeDirectory=gatewayd


def over_control_socket(args: argparse.Namespace, exchange: Callable[[], None]) -> int:
    """Run one exchange with the running daemon (`exchange()` finds the socket, asks and prints): what
    goes wrong on the way becomes one message and an exit code, the same for every command."""
    from gatewayd.config import ConfigError
    from gatewayd.operator.control import CommandError, ControlError

    name = " ".join(filter(None, (args.command, getattr(args, "bypass_command", None))))
    try:
        exchange()
    except ConfigError as exc:
        print(f"gatewayd {name}: cannot find the control socket, the configuration is invalid:\n{exc}",
              file=sys.stderr)
        return EXIT_USAGE
    except ControlError as exc:
        print(f"gatewayd {name}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except CommandError as exc:
        print(f"gatewayd {name}: refused: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_control(args: argparse.Namespace) -> int:
    """One request, one answer, printed as text (`args.show`) or JSON."""
    from gatewayd.operator.control import call

    def exchange() -> None:
        result = call(args.find_socket(args), args.build(args), timeout=args.answer_timeout)
        print(json.dumps(result, indent=2) if args.json else args.show(result))

    return over_control_socket(args, exchange)


def duration_argument(value: str) -> float:
    from core.schema import Invalid, duration

    try:
        seconds = duration(value)
    except Invalid as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be longer than zero")
    return seconds


ALARM_ACTIONS = {
    "ack": "acknowledge an alarm",
    "shelve": "shelve an alarm for a while (never longer than rules.shelving.max_duration)",
    "unshelve": "unshelve an alarm",
    "out-of-service": "take an alarm out of service",
    "return-to-service": "return an alarm to service",
    "reset": "reset a latched alarm whose condition has cleared",
}


def alarm_action_request(args: argparse.Namespace) -> dict[str, Any]:
    request = {"cmd": args.command.replace("-", "_"), "alarm": args.alarm, "reason": args.reason}
    if args.command == "shelve":
        request.update(duration=args.duration, one_shot=args.one_shot)
    if args.command in ("shelve", "out-of-service"):
        request.update(permit=args.permit)
        if args.command == "out-of-service" and args.duration is not None:
            request["duration"] = args.duration
    return request


def add_control_commands(sub: argparse._SubParsersAction) -> None:
    """alarms, ack, shelve, ..., interlocks, bypass request|approve|list|revoke, requests, approve: requests to
    the running daemon."""

    def command(target: argparse._SubParsersAction, name: str, help_text: str, build, show) -> argparse.ArgumentParser:
        parser = target.add_parser(name, help=help_text, description=help_text)
        where = parser.add_mutually_exclusive_group()
        where.add_argument("-c", "--config", help="the daemon's configuration (the socket is in its runtime_dir)")
        where.add_argument("--socket", help="the control socket (default: /run/gatewayd/control.sock)")
        parser.add_argument("--json", action="store_true", help="print the daemon's answer as JSON")
        parser.set_defaults(func=cmd_control, build=build, show=show, find_socket=control_socket,
                            answer_timeout=ANSWER_TIMEOUT)
        return parser

    alarms = command(sub, "alarms", "list alarms outside NORM with state, priority, value and since",
                     lambda a: {"cmd": "alarms", "all": a.all}, render_alarms)
    alarms.add_argument("--all", action="store_true", help="list alarms in NORM too")

    for name, help_text in ALARM_ACTIONS.items():
        parser = command(sub, name, help_text, alarm_action_request, render_request)
        parser.add_argument("alarm", metavar="ALARM_ID", help="e.g. PT101.HH (see `gatewayd alarms --all`)")
        parser.add_argument("--reason", required=name in ("shelve", "out-of-service"), help="why (audited)")
        if name == "shelve":
            parser.add_argument("--for", dest="duration", required=True, type=duration_argument,
                                metavar="DURATION", help="e.g. 30m or 2h")
            parser.add_argument("--one-shot", action="store_true", help="the shelf also ends when the alarm clears")
        if name == "out-of-service":
            parser.add_argument("--for", dest="duration", type=duration_argument, metavar="DURATION",
                                help="how long (needed for a highly managed alarm: it returns when it runs out)")
        if name in ("shelve", "out-of-service"):
            parser.add_argument("--permit", help="permit or work order: a highly managed alarm's action is then a "
                                "request that another account approves (`gatewayd approve ID`)")

    command(sub, "interlocks", "list interlocks with their in-service state and bypass flags",
            lambda a: {"cmd": "interlocks"}, render_interlocks)

    bypass = sub.add_parser("bypass", help="interlock bypass authorizations: request, approve, list, revoke")
    verbs = bypass.add_subparsers(dest="bypass_command", required=True)
    asking = command(verbs, "request", "ask for a bypass authorization; another account approves it",
                     lambda a: {"cmd": "bypass_request", "interlock": a.interlock, "reason": a.reason,
                                "permit": a.permit, "duration": a.duration, "measures": a.measures,
                                "tags": a.tags or []},
                     render_request)
    asking.add_argument("interlock", metavar="INTERLOCK")
    asking.add_argument("--reason", required=True, help="why the interlock is bypassed")
    asking.add_argument("--permit", required=True, help="permit or work order number")
    asking.add_argument("--for", dest="duration", required=True, type=duration_argument, metavar="DURATION",
                        help="at most the interlock's max_bypass, e.g. 4h; counted from the approval")
    asking.add_argument("--measures", required=True, help="compensating measures while bypassed")
    asking.add_argument("--tags", nargs="+", metavar="TAG", help="affected tags")
    approving = command(verbs, "approve", "approve another account's bypass request: the authorization comes "
                        "into force", lambda a: {"cmd": "approve", "id": a.id, "kind": "bypass"}, render_approval)
    approving.add_argument("id", type=int, metavar="ID", help="the request number from `gatewayd requests`")
    listing = command(verbs, "list", "list bypass authorizations in force",
                      lambda a: {"cmd": "bypass_list", "all": a.all}, render_bypass_list)
    listing.add_argument("--all", action="store_true", help="include expired, revoked and superseded ones")
    revoke = command(verbs, "revoke", "end a bypass authorization",
                     lambda a: {"cmd": "bypass_revoke", "id": a.id, "reason": a.reason},
                     render_events)
    revoke.add_argument("id", type=int, metavar="ID", help="the authorization number from `bypass list`")
    revoke.add_argument("--reason", required=True, help="why it ends (audited)")

    approve = command(sub, "approve", "approve another account's request (a bypass, or a highly managed alarm's "
                      "shelve or out of service)", lambda a: {"cmd": "approve", "id": a.id}, render_approval)
    approve.add_argument("id", type=int, metavar="ID", help="the request number from `gatewayd requests`")
    requests = command(sub, "requests", "list requests waiting for approval",
                       lambda a: {"cmd": "requests", "all": a.all}, render_requests)
    requests.add_argument("--all", action="store_true", help="include approved and expired ones")

    add_operate_commands(command, sub)


def cmd_tail(args: argparse.Namespace) -> int:
    """Follow the daemon's stream until Ctrl-C or until the daemon stops."""
    from gatewayd.operator.control import stream

    def exchange() -> None:
        for line in stream(control_socket(args), args.build(args)):
            text = json.dumps(line) if args.json else render_tail_line(line)
            if text is not None:
                print(text, flush=True)

    return over_control_socket(args, exchange)


def reload_socket(args: argparse.Namespace) -> Path:
    """The control socket even when the edited file does not validate: the daemon must judge it (and
    record the refusal), so gateway.runtime_dir is read from the raw YAML, or the default is used.

    A file that is no YAML mapping (a syntax error, an empty file) or names no usable runtime_dir does
    not say where its daemon listens: the reload is refused here with the file's errors (file:line, as
    the daemon would refuse it) rather than asking whichever daemon the default socket leads to.
    """
    import yaml

    from gatewayd.config import ConfigError
    from gatewayd.config.tables import SYSTEMD_DIRECTORIES
    from gatewayd.operator.control import CommandError, socket_path

    try:
        return control_socket(args)
    except ConfigError as exc:
        invalid = CommandError(f"configuration invalid, the running one stays:\n{exc}\n(the daemon was not asked: "
                               "this file does not say where its control socket is; --socket asks it)")
    try:
        document = yaml.safe_load(Path(args.config).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise invalid from None
    if not isinstance(document, dict):
        raise invalid
    gateway = document.get("gateway")
    if not isinstance(gateway, dict) or gateway.get("runtime_dir") is None:
        variable, default = SYSTEMD_DIRECTORIES["runtime_dir"]
        return socket_path(Path(os.environ.get(variable) or default))
    if not isinstance(gateway["runtime_dir"], str):
        raise invalid
    return socket_path(Path(args.config).resolve().parent / gateway["runtime_dir"])


def add_operate_commands(command, sub: argparse._SubParsersAction) -> None:
    """status, tail, reload: the running daemon's health, its live values, and a config reload."""
    command(sub, "status", "one screen of the running daemon: devices, tags, alarms, interlocks, store, uplink",
            lambda a: {"cmd": "status"}, render_status)
    tail = command(sub, "tail", "follow live samples and events as the daemon commits them",
                   lambda a: {"cmd": "tail", "tag": a.tag, "device": a.device, "events_only": a.events_only},
                   None)
    tail.add_argument("--tag", metavar="PATTERN", help="tags matching a glob, e.g. 'LT*' or 'PT101'")
    tail.add_argument("--device", metavar="NAME", help="tags and events of one device")
    tail.add_argument("--events-only", action="store_true", help="events only, no samples")
    tail.set_defaults(func=cmd_tail)
    reload = command(sub, "reload", "re-read the daemon's config file and apply it; an invalid file is refused "
                     "(same as SIGHUP)",
                     lambda a: {"cmd": "reload", "config": a.config and str(Path(a.config).resolve())}, render_reload)
    reload.set_defaults(find_socket=reload_socket, answer_timeout=RELOAD_TIMEOUT)


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

    schema = sub.add_parser("schema", help="print the JSON Schema of the configuration, for editors "
                            "(YAML language server)")
    schema.add_argument("-o", "--output", metavar="FILE", help="write it to FILE instead of standard output")
    schema.set_defaults(func=cmd_schema)

    points = sub.add_parser("import-points", help="turn the plant's point table (.xlsx or .csv) into tags of "
                            "the YAML config; nothing is written when any row is bad")
    points.add_argument("table", metavar="FILE.xlsx|FILE.csv")
    points.add_argument("--mapping", metavar="MAP.yaml", help="the table's headings for each column, when they "
                        "are not the usual ones (docs/commissioning.md)")
    points.add_argument("--device", metavar="NAME", help="only the rows of this device (column 采集设备)")
    points.add_argument("-o", "--output", metavar="OUT", help="write the tags to OUT instead of standard output")
    points.set_defaults(func=cmd_import_points)

    console = sub.add_parser("console", help="serve the read-only web console of the running daemon (console: "
                             "section; 127.0.0.1:8780 by default)")
    console.add_argument("-c", "--config", required=True, help="the daemon's YAML configuration file")
    console.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    console.set_defaults(func=cmd_console)

    console_user = sub.add_parser("console-user", help="add a console user, or change a password, in the users "
                                  "file (scrypt hashes, mode 0600)")
    console_user.add_argument("--file", required=True, metavar="USERS", help="the file console.users_file names")
    console_user.add_argument("user")
    console_user.add_argument("--password-stdin", action="store_true",
                              help="read the password from the first line of standard input (scripts)")
    console_user.set_defaults(func=cmd_console_user)

    history = sub.add_parser("history", help="print or export a tag's samples from the local history and the "
                             "store (read-only)")
    history.add_argument("tag")
    history.add_argument("--from", dest="start", required=True, metavar="TIME",
                         help="ISO 8601 (2026-12-01T08:00, with +08:00 or Z; without, local time) or Unix seconds")
    history.add_argument("--to", dest="end", metavar="TIME", help="as --from (exclusive); default now")
    history.add_argument("--csv", action="store_true", help="CSV: time,epoch,value,quality,quality_name")
    where = history.add_mutually_exclusive_group()
    where.add_argument("-c", "--config", help="read the store this configuration names")
    where.add_argument("--db", metavar="FILE", help="the store's SQLite file (default /var/lib/gatewayd/gatewayd.db)")
    history.set_defaults(func=cmd_history)

    add_keygen_command(sub)
    add_platform_commands(sub)
    add_probe_command(sub)
    add_browse_command(sub)
    add_control_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

"""A simulated OPC UA server: the tank T-101 plus N generic variables, with a few awkward nodes.

    python -m hil_tests.sim.opcua_server --port PORT [--vars N] [--period 0.5] [--seed S]
                                         [--security-dir DIR]

Prints "READY <port>" on stdout once listening (with --port 0 the system picks the port) and exits
with status 0 on SIGTERM or SIGINT. It runs as its own process so that tests can kill (SIGKILL),
freeze (SIGSTOP) and restart it like a real server.

Nodes, all in namespace 2 with string ids: the tank's tags (`ns=2;s=LT101`, ... from plc.Tank),
`GEN00000` .. (random walks, all changed every period), and fixed nodes for the quality mapping:
`BAD_SENSOR` (BadSensorFailure), `OUT_OF_SERVICE` (BadOutOfService), `UNCERTAIN`
(UncertainLastUsableValue), `TEXT` (a string), `HUGE_TEXT` (a 1 MB string), `NOT_A_NUMBER` (NaN).
Every value carries a source timestamp.

With --min-publishing-interval the server revises every subscription's publishing interval up to
that minimum, as many plant servers do (asyncua's own server grants whatever is asked).

With --operation-limit N the server refuses a Read of more than N nodes and a CreateMonitoredItems
of more than N items with BadTooManyOperations, and advertises N as MaxNodesPerRead and
MaxMonitoredItemsPerCall, or --advertised-limit instead (0: no limit advertised, a server that
enforces a limit it does not name).

With --decoy-namespaces K the server registers K other namespaces before its own, each holding the
same GEN node ids with the value DECOY: the simulator's namespace then has index 2 + K, so a
restart with another K renumbers it, and a client reading by a stale index reads DECOY values.

With --user NAME:PASSWORD only that user may open a session; any other credential is refused with
BadUserAccessDenied.

With --security-dir the server offers only Basic256Sha256 (Sign and SignAndEncrypt) with a self-signed
certificate `server.der` / `server.key.pem` in that directory, made with `cryptography` when missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import asyncio
import datetime as dt
import ipaddress
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from hil_tests.sim.plc import Tank
from hil_tests.sim.serving import cannot_listen, run, serve_until_stopped

NAMESPACE = "urn:gatewayd:sim"
SERVER_URI = "urn:gatewayd:sim:opcua"
FIXED = {
    "BAD_SENSOR": (12.5, ua.StatusCodes.BadSensorFailure),
    "OUT_OF_SERVICE": (3.0, ua.StatusCodes.BadOutOfService),
    "UNCERTAIN": (7.0, ua.StatusCodes.UncertainLastUsableValue),
    "TEXT": ("not a number", ua.StatusCodes.Good),
    "HUGE_TEXT": ("x" * 1_000_000, ua.StatusCodes.Good),
    "NOT_A_NUMBER": (float("nan"), ua.StatusCodes.Good),
}


DECOY = 1e9  # the value of every node of a decoy namespace


def generic_name(index: int) -> str:
    return f"GEN{index:05d}"


def make_certificate(directory: Path, name: str, uri: str, days: int = 30) -> tuple[Path, Path]:
    """A self-signed RSA-2048 application certificate (DER) and its key (PEM) for OPC UA, if missing."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.der", directory / f"{name}.key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"gatewayd {name}")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([
            x509.UniformResourceIdentifier(uri), x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=True,
                                     data_encipherment=True, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                              x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
    key_path.touch(mode=0o600)  # the gateway refuses a private key others can read
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class SimulatedServer:
    def __init__(self, server: Server, namespace: int, generic: int, seed: int | None) -> None:
        self.server, self.ns = server, namespace
        self.rng = np.random.default_rng(seed)
        self.tank = Tank(self.rng)
        self.generic = self.rng.uniform(0.0, 100.0, generic)
        self.tank_ids = {name: ua.NodeId(name, namespace) for name in Tank.TAGS}
        self.generic_ids = [ua.NodeId(generic_name(i), namespace) for i in range(generic)]

    async def build(self) -> None:
        folder = await self.server.nodes.objects.add_folder(self.ns, "Plant")
        for name, node_id in self.tank_ids.items():
            await folder.add_variable(node_id, name, 0.0)
        for node_id in self.generic_ids:
            await folder.add_variable(node_id, node_id.Identifier, 0.0)
        for name, (value, status) in FIXED.items():
            node_id = ua.NodeId(name, self.ns)
            await folder.add_variable(node_id, name, value)
            await self.write(node_id, value, status)

    async def write(self, node_id: ua.NodeId, value: object, status: int = ua.StatusCodes.Good) -> None:
        variant = ua.Variant(value, ua.VariantType.String if isinstance(value, str) else ua.VariantType.Double)
        now = dt.datetime.now(dt.UTC)
        await self.server.write_attribute_value(
            node_id, ua.DataValue(variant, ua.StatusCode(status), SourceTimestamp=now, ServerTimestamp=now))

    async def step(self, period: float) -> None:
        for name, value in self.tank.step(period).items():
            await self.write(self.tank_ids[name], float(value))
        self.generic += self.rng.normal(0.0, 1.0, self.generic.size)
        for node_id, value in zip(self.generic_ids, self.generic.tolist()):
            await self.write(node_id, value)

    async def run_model(self, period: float) -> None:
        """Step on a fixed clock, so a slow step (10,000 writes) shortens the pause instead of the rate."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += period
            await asyncio.sleep(max(0.0, due - loop.time()))
            await self.step(period)


def revise_publishing(server: Server, minimum: float) -> None:
    """Grant no publishing interval below `minimum` seconds: the subscription then runs, keep-alives
    included, at the revised interval, which CreateSubscription returns to the client."""
    service = server.iserver.subscription_service
    create = service.create_subscription

    async def create_revised(params: ua.CreateSubscriptionParameters, *args, **kwargs) -> ua.CreateSubscriptionResult:
        revised = dataclasses.replace(params, RequestedPublishingInterval=max(params.RequestedPublishingInterval,
                                                                              minimum * 1000))
        return await create(revised, *args, **kwargs)

    service.create_subscription = create_revised


async def limit_operations(server: Server, limit: int, advertised: int) -> None:
    """Refuse requests of more than `limit` operations as real servers do (asyncua's own server takes
    any number), and advertise `advertised` in the OperationLimits nodes."""
    for node in (ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
                 ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall):
        await server.write_attribute_value(ua.NodeId(node), ua.DataValue(ua.Variant(advertised, ua.VariantType.UInt32)))
    attributes, subscriptions = server.iserver.attribute_service, server.iserver.subscription_service
    read, create = attributes.read, subscriptions.create_monitored_items

    def read_limited(params: ua.ReadParameters) -> list[ua.DataValue]:
        if len(params.NodesToRead) > limit:
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)
        return read(params)

    async def create_limited(params: ua.CreateMonitoredItemsParameters) -> list[ua.MonitoredItemCreateResult]:
        if len(params.ItemsToCreate) > limit:
            raise ServiceError(ua.StatusCodes.BadTooManyOperations)
        return await create(params)

    attributes.read, subscriptions.create_monitored_items = read_limited, create_limited


async def add_decoys(server: Server, namespace: int, generic: int) -> None:
    """The generic node ids once more, in another namespace, all holding DECOY."""
    folder = await server.nodes.objects.add_folder(namespace, f"Decoy{namespace}")
    for index in range(generic):
        await folder.add_variable(ua.NodeId(generic_name(index), namespace), generic_name(index), DECOY)


class OneUser(UserManager):
    """Admits one user name and password, refuses every other identity."""

    def __init__(self, name: str, password: str) -> None:
        self.name, self.password = name, password

    def get_user(self, iserver, username=None, password=None, certificate=None) -> User | None:
        return User(role=UserRole.User, name=username) if (username, password) == (self.name, self.password) else None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hil_tests.sim.opcua_server", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port; 0 lets the system choose")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--vars", type=int, default=10, help="number of generic variables GEN00000..")
    parser.add_argument("--period", type=float, default=0.5, help="seconds between model steps")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable runs")
    parser.add_argument("--min-publishing-interval", type=float, default=0.0,
                        help="seconds: publishing intervals asked below this are revised up to it")
    parser.add_argument("--operation-limit", type=int, default=0,
                        help="refuse Reads and CreateMonitoredItems of more operations (0: no limit)")
    parser.add_argument("--advertised-limit", type=int, default=None,
                        help="the limit advertised in OperationLimits; default --operation-limit")
    parser.add_argument("--decoy-namespaces", type=int, default=0,
                        help="namespaces registered before the simulator's own, holding decoy GEN nodes")
    parser.add_argument("--user", default=None, help="NAME:PASSWORD, the only identity the server admits")
    parser.add_argument("--security-dir", type=Path, default=None,
                        help="offer only Basic256Sha256 with the certificate in (or made into) this directory")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.ERROR)
    server = Server(user_manager=OneUser(*args.user.split(":", 1)) if args.user else None)
    await server.init()
    server.set_endpoint(f"opc.tcp://{args.host}:{args.port}")
    server.set_server_name("gatewayd simulated OPC UA server")
    await server.set_application_uri(SERVER_URI)
    if args.security_dir is not None:
        cert_path, key_path = make_certificate(args.security_dir, "server", SERVER_URI)
        await server.load_certificate(str(cert_path))
        await server.load_private_key(str(key_path))
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                                    ua.SecurityPolicyType.Basic256Sha256_Sign])
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    if args.min_publishing_interval:
        revise_publishing(server, args.min_publishing_interval)
    if args.operation_limit:
        advertised = args.operation_limit if args.advertised_limit is None else args.advertised_limit
        await limit_operations(server, args.operation_limit, advertised)
    for decoy in range(args.decoy_namespaces):
        await add_decoys(server, await server.register_namespace(f"urn:gatewayd:decoy:{decoy}"), args.vars)
    namespace = await server.register_namespace(NAMESPACE)
    simulation = SimulatedServer(server, namespace, args.vars, args.seed)
    await simulation.build()
    await simulation.step(args.period)
    try:
        await server.start()
    except OSError as exc:
        return cannot_listen(args.host, args.port, exc)
    return await serve_until_stopped(server.bserver.port, server.stop, simulation.run_model(args.period))


def main(argv: Sequence[str] | None = None) -> int:
    return run(serve(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

"""`gatewayd browse`: list an OPC UA server's address space and write YAML tags for chosen nodes.

Instead of copying node ids from another tool, the integrator browses the server the gateway will
read, with the gateway's own session security (`drivers.opcua.client.secure_session`: the server
certificate checked against the trust store before any credential is sent, a password only from a
file that others cannot read). Only Browse and Read are used: nothing is written to the server.

Node ids are shown and written in the `nsu=URI;...` form, so they survive a server that numbers its
namespaces differently after a restart; the namespace-0 ids of the standard (`i=2258`) stay as they are.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from asyncua import Client, ua

SERVER_OBJECT = ua.NodeId(ua.ObjectIds.Server)  # the server's own diagnostics: hundreds of nodes, skipped by default
# the variables a tag can read: the gateway's values are numbers (a boolean reads as 0 or 1)
NUMERIC_TYPES = frozenset({"Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64",
                           "Float", "Double"})
ACCESS_BITS = ((ua.AccessLevel.CurrentRead, "read"), (ua.AccessLevel.CurrentWrite, "write"),
               (ua.AccessLevel.HistoryRead, "history"))


class BrowseError(Exception):
    """The server could not be reached or browsed, or a chosen node is not a variable: one message."""


@dataclass(frozen=True)
class Entry:
    """One node of the address space as listed: where it sits, what it is, and how the gateway reads it."""

    depth: int
    name: str
    node_id: str  # nsu= form outside namespace 0
    node_class: str
    data_type: str = ""
    access: str = ""


def portable_id(node_id: ua.NodeId, namespaces: list[str]) -> str:
    """`nsu=URI;s=...` for a node outside namespace 0, the plain string for the standard's own nodes."""
    text = node_id.to_string()
    if node_id.NamespaceIndex == 0 or node_id.NamespaceIndex >= len(namespaces):
        return text
    return f"nsu={namespaces[node_id.NamespaceIndex]};{text.split(';', 1)[1]}"


def resolve(node_id: ua.NodeId, namespaces: list[str]) -> ua.NodeId:
    """A node id written with nsu=URI as this server numbers that namespace now."""
    uri = getattr(node_id, "NamespaceUri", None)
    if not uri:
        return node_id
    if uri not in namespaces:
        raise BrowseError(f"the server has no namespace {uri} (it has {', '.join(namespaces)})")
    return ua.NodeId(node_id.Identifier, namespaces.index(uri), node_id.NodeIdType)


def access_text(level: int) -> str:
    return "/".join(name for bit, name in ACCESS_BITS if level & (1 << bit)) or "none"


async def type_name(client: Client, data_type: ua.NodeId, names: dict[ua.NodeId, str]) -> str:
    """Double, Float, Int32, ... for the standard's types; the browse name of a server-defined one."""
    if data_type not in names:
        if data_type.NamespaceIndex == 0 and data_type.Identifier in ua.ObjectIdNames:
            names[data_type] = ua.ObjectIdNames[data_type.Identifier]
        else:
            names[data_type] = (await client.get_node(data_type).read_browse_name()).Name
    return names[data_type]


async def variable_details(client: Client, node_id: ua.NodeId, names: dict[ua.NodeId, str]) -> tuple[str, str]:
    """(data type, access level) of a variable."""
    data_type, level = await client.get_node(node_id).read_attributes(
        [ua.AttributeIds.DataType, ua.AttributeIds.AccessLevel])
    data_type.StatusCode.check()
    return await type_name(client, data_type.Value.Value, names), access_text(level.Value.Value or 0)


async def walk(client: Client, start: ua.NodeId, depth: int, skip_server: bool) -> list[Entry]:
    """Every node below `start` (hierarchical references, forward), `depth` levels deep, in browse order."""
    namespaces = await client.get_namespace_array()
    names: dict[ua.NodeId, str] = {}
    entries: list[Entry] = []

    async def visit(node_id: ua.NodeId, level: int) -> None:
        for reference in await client.get_node(node_id).get_children_descriptions():
            child = ua.NodeId(reference.NodeId.Identifier, reference.NodeId.NamespaceIndex, reference.NodeId.NodeIdType)
            if skip_server and child == SERVER_OBJECT:
                continue
            details = ("", "")
            if reference.NodeClass == ua.NodeClass.Variable:
                details = await variable_details(client, child, names)
            entries.append(Entry(level, reference.BrowseName.Name, portable_id(child, namespaces),
                                 reference.NodeClass.name, *details))
            if level + 1 < depth:
                await visit(child, level + 1)

    await visit(resolve(start, namespaces), 0)
    return entries


async def chosen_variables(client: Client, chosen: dict[str, str]) -> dict[str, tuple[str, str, str]]:
    """TAG -> (nsu= node id, display name, data type) for each chosen node; BrowseError names every node
    that is unknown or not a variable."""
    namespaces = await client.get_namespace_array()
    names: dict[ua.NodeId, str] = {}
    found, problems = {}, []
    for tag, text in chosen.items():
        try:
            node_id = resolve(ua.NodeId.from_string(text), namespaces)
            node = client.get_node(node_id)
            node_class = await node.read_node_class()
            if node_class != ua.NodeClass.Variable:
                problems.append(f"{tag}={text}: a {node_class.name}, not a variable")
                continue
            display = (await node.read_display_name()).Text or ""
            data_type, _ = await variable_details(client, node_id, names)
            if data_type not in NUMERIC_TYPES:
                problems.append(f"{tag}={text}: a {data_type}; a tag reads a number or a boolean")
                continue
        except (ValueError, ua.UaError, BrowseError) as exc:
            problems.append(f"{tag}={text}: {exc}")
            continue
        found[tag] = (portable_id(node_id, namespaces), display, data_type)
    if problems:
        raise BrowseError("\n".join(problems))
    return found


def device_block(name: str, settings: Any, tags: dict[str, tuple[str, str, str]]) -> dict[str, Any]:
    """The config's device entry for the chosen nodes, security stated explicitly as check-config requires."""
    device: dict[str, Any] = {"name": name, "driver": "opcua", "endpoint": settings.endpoint,
                              "security_policy": settings.security_policy}
    for key in ("security_mode", "certificate", "private_key", "trust_store", "username", "password_file"):
        value = getattr(settings, key)
        if value is not None and settings.security_policy != "None":
            device[key] = str(value)
    device["tags"] = [{"name": tag, "description": display or tag, "node": node_id}
                      for tag, (node_id, display, _) in tags.items()]
    return device


async def session(settings: Any, timeout: float, work) -> Any:
    """Open a session with the gateway's security, run `work(client)`, close; errors become BrowseError."""
    from drivers.opcua.client import secure_session
    from drivers.opcua.trust import TrustStoreError, UntrustedServer

    client = Client(settings.endpoint, timeout=timeout)
    try:
        await secure_session(client, settings, timeout, "browse")
        async with asyncio.timeout(3 * timeout):
            await client.connect()
    except (UntrustedServer, TrustStoreError) as exc:
        raise BrowseError(str(exc)) from None
    except (OSError, TimeoutError, ua.UaError) as exc:
        raise BrowseError(f"cannot open a session with {settings.endpoint}: {exc or 'no answer in time'}") from None
    try:
        return await work(client)
    except (ua.UaError, TimeoutError) as exc:
        raise BrowseError(f"{settings.endpoint}: {exc or 'no answer in time'}") from None
    finally:
        try:
            await client.disconnect()
        except (OSError, ua.UaError, TimeoutError):
            pass


def render(entries: list[Entry]) -> list[str]:
    """An indented tree: browse name, node id, and for variables the data type and access level."""
    lines = []
    for entry in entries:
        head = f"{'  ' * entry.depth}{entry.name}"
        tail = f"  {entry.data_type}  {entry.access}" if entry.node_class == "Variable" else f"  ({entry.node_class})"
        lines.append(f"{head:<40} {entry.node_id}{tail}")
    return lines


def browse_settings(endpoint: str, security_policy: str, security_mode: str | None, certificate: str | None,
                    private_key: str | None, trust_store: str | None, username: str | None,
                    password_file: str | None) -> Any:
    """The session settings, checked as check-config checks a device's: an endpoint URL, a secured link
    with its certificate, key and trust store, a password only from a file others cannot read and only
    over a secured link. BrowseError names what is wrong."""
    from pathlib import Path

    from core.schema import Invalid
    from drivers.opcua.config import SECRET_FILES, OpcUaSettings, endpoint_url
    from gatewayd.secretfiles import SecretFileError, refuse_loose

    try:
        endpoint = endpoint_url(endpoint)
    except Invalid as exc:
        raise BrowseError(str(exc)) from None
    paths = {key: Path(value) if value else None for key, value in
             (("certificate", certificate), ("private_key", private_key), ("trust_store", trust_store),
              ("password_file", password_file))}
    if security_policy == "None":
        named = [f"--{key.replace('_', '-')}" for key in ("certificate", "private_key", "trust_store", "password_file")
                 if paths[key]] + (["--security-mode"] if security_mode else [])
        if named:
            raise BrowseError(f"{', '.join(named)} need --security Basic256Sha256 (a password is never sent "
                              "over an endpoint without security)")
    else:
        missing = [f"--{key.replace('_', '-')}" for key in ("certificate", "private_key", "trust_store")
                   if paths[key] is None]
        if missing:
            raise BrowseError(f"--security Basic256Sha256 needs {', '.join(missing)}")
    if (username is None) != (paths["password_file"] is None):
        raise BrowseError("--user and --password-file go together")
    try:
        refuse_loose((SECRET_FILES[key], paths[key]) for key in SECRET_FILES)
    except SecretFileError as exc:
        raise BrowseError(str(exc)) from None
    return OpcUaSettings(endpoint, security_policy,
                         security_mode or ("SignAndEncrypt" if security_policy != "None" else None),
                         paths["certificate"], paths["private_key"], paths["trust_store"], None, username,
                         paths["password_file"])


def start_node(text: str | None) -> ua.NodeId:
    """--node as a node id (an nsu= form is resolved by the server's namespace array in `walk`), or Objects."""
    if text is None:
        return ua.NodeId(ua.ObjectIds.ObjectsFolder)
    try:
        return ua.NodeId.from_string(text)
    except ValueError as exc:
        raise BrowseError(f"--node {text!r} is not a node id ({exc}); write e.g. ns=2;s=Plant") from None

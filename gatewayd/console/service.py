"""Running the console: the configuration's `console:` section, TLS, the users file, the poller, the server.

    gatewayd console --config /etc/gatewayd/gatewayd.yaml

Start-up refuses what check-config refuses (an address off loopback without TLS and a login), and a key
or users file that others may read (gatewayd.secretfiles), before anything listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from pathlib import Path

from gatewayd.config.model import Config, ConsoleConfig
from gatewayd.console.app import ConsoleApp
from gatewayd.console.auth import read_users
from gatewayd.console.http import ConsoleServer
from gatewayd.console.source import DaemonLink, Poller
from gatewayd.console.trend import Trends
from gatewayd.operator.control import socket_path
from gatewayd.secretfiles import refuse_loose

log = logging.getLogger("gatewayd.console")


def tls_context(config: ConsoleConfig) -> ssl.SSLContext | None:
    """A server context of TLS 1.2 and later with the configured certificate; None without one."""
    if config.cert_file is None:
        return None
    refuse_loose([("console TLS key", config.key_file)])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.cert_file, config.key_file)
    return context


async def serve(config: Config, control: Path | None = None, ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled. `control` overrides the control socket's path (runtime_dir/control.sock)."""
    console = config.console
    users = read_users(console.users_file) if console.users_file is not None else None
    link = DaemonLink(control or socket_path(config.gateway.runtime_dir))
    poller = Poller(link, console.poll_interval)
    trends = Trends(config.store.path)
    server = ConsoleServer(console, ConsoleApp(console, poller, trends, users), tls_context(console))
    await server.start()
    polling = asyncio.create_task(poller.run(), name="console-poller")
    log.info("console of gateway %s on %s (%s), reading %s", config.gateway.id, console.url(),
             "login required" if users is not None else "no login: loopback only", link.path)
    if ready is not None:
        ready.set()
    try:
        await polling
    finally:
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await server.stop()
        trends.close()
        link.close()


def run(config: Config) -> int:
    """The console's process: serve until SIGTERM or Ctrl-C."""
    async def main() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(config)

    asyncio.run(main())
    return 0

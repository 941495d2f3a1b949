"""An ACME TankBus level concentrator (the private protocol of docs/drivers.md's worked example).

Answers `READ <channel>` with `OK <channel> <value>` for the levels given with `--level CH=VALUE`,
`ERR <channel> fault` for the channels given with `--fault CH`, and `ERR <channel> unknown` for any
other. `python -m hil_tests.sim.tankbus --port 0 --level 1=12.5 --fault 3` prints `READY <port>`.
"""

from __future__ import annotations

import argparse
import asyncio

from hil_tests.sim import serving


def answer(request: bytes, levels: dict[int, str], faults: set[int]) -> bytes:
    words = request.decode("ascii", "replace").split()
    if len(words) != 2 or words[0] != "READ" or not words[1].isdigit():
        return b"ERR 0 request\n"
    channel = int(words[1])
    if channel in faults:
        return f"ERR {channel} fault\n".encode()
    if channel in levels:
        return f"OK {channel} {levels[channel]}\n".encode()
    return f"ERR {channel} unknown\n".encode()


async def main(args: argparse.Namespace) -> int:
    levels = dict((int(channel), value) for channel, value in (item.split("=") for item in args.level))
    faults = set(args.fault)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while request := await reader.readline():
                writer.write(answer(request, levels, faults))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    try:
        server = await asyncio.start_server(serve, args.host, args.port)
    except OSError as exc:
        return serving.cannot_listen(args.host, args.port, exc)
    port = server.sockets[0].getsockname()[1]

    async def shutdown() -> None:
        server.close()

    return await serving.serve_until_stopped(port, shutdown)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4196)
    parser.add_argument("--level", action="append", default=[], help="CH=VALUE, a channel's level")
    parser.add_argument("--fault", action="append", type=int, default=[], help="a channel in fault")
    raise SystemExit(serving.run(main(parser.parse_args())))

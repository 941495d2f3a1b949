"""Simulated Modbus RTU slaves on one serial line, and the plant over Modbus UDP or RTU-over-TCP.

    python -m hil_tests.sim.rtu_bus serial --device PATH --units 1,2,3 [--baud B] [--slow-delay S]
    python -m hil_tests.sim.rtu_bus udp|rtu-over-tcp --port PORT [--tags N] [--device-id 1]

`serial` answers as every listed unit on the pseudo-terminal PATH (one end of a socat
`pty,raw,echo=0` pair; the gateway opens the other end). Each unit answers read requests
(functions 1-4) from a fixed map: register A of unit U holds (1000 U + A) mod 65536, bit A is
(A + U) mod 2. A unit's behaviour can be changed while it runs by a line `UNIT MODE` on stdin:

- `ok`: answers at once (or paced, below);
- `silent`: never answers, a slave with a broken transceiver;
- `slow`: answers after `--slow-delay` seconds, later than any sensible timeout;
- `faulty`: answers requests below address 100 with exception 0x02 (illegal data address) and
  requests from 100 on with garbage (a frame with a wrong CRC), a slave with a damaged map or a
  noisy line;
- `garbage`: answers every request with a frame whose CRC does not match;
- `exception`: answers every request with exception 0x02;
- `impostor VICTIM` (the line `UNIT impostor VICTIM`): answers as itself normally, and whenever unit
  VICTIM is asked, answers first with VICTIM's unit id, a valid CRC and wrong values (register A
  holds (1000 UNIT + A) mod 65536, bits inverted), 0.1-0.5 ms before VICTIM's own reply: the
  head of VICTIM's reply follows the false frame at once and the rest 0.1-0.5 ms later, so the two
  share one window of the line however late either process is scheduled.

With `--baud B` the replies are paced as the wire would: a reply leaves only after the request and
the reply would have crossed the line, (request bytes + reply bytes) x 11 bits / B, plus the
silence that ends the request (3.5 characters, 1.75 ms above 19200 baud), counted from the moment
the request arrived. A pseudo-terminal itself ignores the baud rate.

`udp` and `rtu-over-tcp` serve the plant of `layout.py` (the same model as `plc.py`) with pymodbus'
UDP server or its TCP server with RTU framing.

Prints "READY" (serial) or "READY <port>" once serving, and exits with status 0 on SIGTERM or SIGINT.
`SerialPair` starts socat and the serial simulator for tests and benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import termios
import time
import tty
from collections.abc import Sequence
from pathlib import Path

from pymodbus import FramerType
from pymodbus.server import ModbusTcpServer, ModbusUdpServer

from drivers.modbus.rtu_config import FIXED_SILENCE, FIXED_SILENCE_ABOVE
from drivers.modbus.rtu_frame import FUNCTION_CODES, REQUEST_LENGTH, crc_ok
from hil_tests.sim.layout import plant_tags
from hil_tests.sim.plc import SimulatedPlc
from hil_tests.sim.rtu_replies import encode_exception, encode_registers
from hil_tests.sim.serving import run, serve_until_stopped, start_modbus, stop_on_signals

MODES = ("ok", "silent", "slow", "faulty", "garbage", "exception", "impostor")
BITS_PER_CHAR = 11
SILENCE_CHARS = 3.5
FAULTY_EXCEPTION_BELOW = 100
ILLEGAL_DATA_ADDRESS = 0x02
ROOT = Path(__file__).resolve().parents[2]
TABLES = {code: table for table, code in FUNCTION_CODES.items()}


def garbage_body(unit: int, function: int) -> bytes:
    return bytes((unit, function, 4, 0xDE, 0xAD, 0xBE, 0xEF))


def frame_silence(baud: int) -> float:
    """The silence after which a slave takes a request as complete, as on a real line at `baud`."""
    return FIXED_SILENCE if baud > FIXED_SILENCE_ABOVE else SILENCE_CHARS * BITS_PER_CHAR / baud


def register_value(unit: int, address: int) -> int:
    return (1000 * unit + address) % 65536


def bit_value(unit: int, address: int) -> bool:
    return (address + unit) % 2 == 1


def honest_reply(unit: int, table: str, start: int, count: int) -> bytes:
    if FUNCTION_CODES[table] <= 2:
        return encode_registers(unit, table, [bit_value(unit, start + i) for i in range(count)])
    return encode_registers(unit, table, [register_value(unit, start + i) for i in range(count)])


def impostor_reply(impostor: int, victim: int, table: str, start: int, count: int) -> bytes:
    """A reply as `victim` with a valid CRC whose every value differs from the victim's own."""
    if FUNCTION_CODES[table] <= 2:
        return encode_registers(victim, table, [not bit_value(victim, start + i) for i in range(count)])
    return encode_registers(victim, table, [register_value(impostor, start + i) for i in range(count)])


class Bus:
    """The slaves' side of the line: splits requests out of the byte stream and answers them."""

    def __init__(self, fd: int, units: Sequence[int], baud: int | None, slow_delay: float) -> None:
        self.fd, self.baud, self.slow_delay = fd, baud, slow_delay
        self.modes = dict.fromkeys(units, "ok")
        self.impostors: dict[int, int] = {}  # victim unit -> the unit that answers first in its name
        self.buffer = bytearray()
        self.loop = asyncio.get_running_loop()
        self.requests = 0

    def on_readable(self) -> None:
        try:
            self.buffer += os.read(self.fd, 4096)
        except BlockingIOError:
            return
        arrived = time.monotonic()
        while len(self.buffer) >= REQUEST_LENGTH:
            frame = bytes(self.buffer[:REQUEST_LENGTH])
            if not crc_ok(frame):
                del self.buffer[:1]  # resynchronise on the next byte
                continue
            del self.buffer[:REQUEST_LENGTH]
            self.answer(frame, arrived)

    def answer(self, request: bytes, arrived: float) -> None:
        unit, function = request[0], request[1]
        mode = self.modes.get(unit)
        if mode is None or mode == "silent":
            return
        self.requests += 1
        start, count = int.from_bytes(request[2:4], "big"), int.from_bytes(request[4:6], "big")
        table = TABLES.get(function)
        if table is None:
            reply = encode_exception(unit, function, 0x01)
        elif mode == "exception" or (mode == "faulty" and start < FAULTY_EXCEPTION_BELOW):
            reply = encode_exception(unit, function, ILLEGAL_DATA_ADDRESS)
        elif mode in ("faulty", "garbage"):
            reply = garbage_body(unit, function) + b"\x00\x00"  # a CRC that does not match
        else:
            reply = honest_reply(unit, table, start, count)
        due = arrived
        if self.baud:
            due += (len(request) + len(reply)) * BITS_PER_CHAR / self.baud + frame_silence(self.baud)
        if mode == "slow":
            due += self.slow_delay
        impostor = self.impostors.get(unit)
        if impostor is not None and table is not None:
            self.at(due, self.collide, impostor_reply(impostor, unit, table, start, count), reply)
        else:
            self.at(due, self.send, reply)

    def at(self, due: float, callback, *args) -> None:
        delay = due - time.monotonic()
        if delay > 0:
            self.loop.call_at(self.loop.time() + delay, callback, *args)
        else:
            callback(*args)

    def collide(self, false_frame: bytes, reply: bytes) -> None:
        """The impostor's frame, the head of the true reply right behind it, the rest 0.1-0.5 ms later."""
        self.send(false_frame + reply[:2])
        self.loop.call_later(random.uniform(0.0001, 0.0005), self.send, reply[2:])

    def send(self, frame: bytes) -> None:
        os.write(self.fd, frame)

    def command(self, line: str) -> None:
        """`UNIT MODE`, or `UNIT impostor VICTIM`, from stdin."""
        unit, mode, *victim = line.split()
        if int(unit) not in self.modes or mode not in MODES or len(victim) != (mode == "impostor"):
            print(f"ERROR {line.strip()}", flush=True)
            return
        self.impostors = {target: source for target, source in self.impostors.items() if source != int(unit)}
        if victim:
            self.impostors[int(victim[0])] = int(unit)
            mode = "ok"
        self.modes[int(unit)] = mode
        print(f"OK {line.strip()}", flush=True)


class SerialPair:
    """socat's two linked pseudo-terminals, and the slave simulator on one of them."""

    def __init__(self, workdir: Path, units: tuple[int, ...], baud: int | None = None) -> None:
        self.master, self.slave_end = workdir / "ttyGW", workdir / "ttySIM"
        self.units, self.baud = units, baud
        self.socat: subprocess.Popen | None = None
        self.sim: subprocess.Popen | None = None

    def start(self) -> SerialPair:
        socat = shutil.which("socat")
        assert socat, "socat is not installed: run `make deps`"
        for link in (self.master, self.slave_end):
            link.unlink(missing_ok=True)
        self.socat = subprocess.Popen([socat, f"pty,raw,echo=0,link={self.master}",
                                       f"pty,raw,echo=0,link={self.slave_end}"])
        deadline = time.monotonic() + 10
        while not (self.master.exists() and self.slave_end.exists()):
            assert time.monotonic() < deadline, "socat did not create the pseudo-terminals"
            time.sleep(0.02)
        argv = [sys.executable, "-m", "hil_tests.sim.rtu_bus", "serial", "--device", str(self.slave_end),
                "--units", ",".join(map(str, self.units))]
        if self.baud:
            argv += ["--baud", str(self.baud)]
        self.sim = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.sim.stdout.readline().strip() == "READY"
        return self

    def mode(self, unit: int, mode: str, victim: int | None = None) -> None:
        command = f"{unit} {mode}" if victim is None else f"{unit} {mode} {victim}"
        self.sim.stdin.write(command + "\n")
        self.sim.stdin.flush()
        assert self.sim.stdout.readline().strip() == f"OK {command}"

    def pull(self) -> None:
        """The cable is pulled: both ends of the line disappear."""
        for process in (self.sim, self.socat):
            if process and process.poll() is None:
                process.kill()
                process.wait(timeout=5)

    close = pull


async def read_commands(bus: Bus, stop: asyncio.Event) -> None:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip():
            bus.command(line.decode())
    stop.set()  # stdin closed: the test that owns us is gone


async def serve_serial(args: argparse.Namespace) -> int:
    fd = os.open(args.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd, termios.TCSANOW)
    bus = Bus(fd, [int(unit) for unit in args.units.split(",")], args.baud, args.slow_delay)
    loop = asyncio.get_running_loop()
    loop.add_reader(fd, bus.on_readable)

    async def shutdown() -> None:
        loop.remove_reader(fd)
        os.close(fd)

    stop = stop_on_signals()
    return await serve_until_stopped("", shutdown, read_commands(bus, stop), stop=stop)


async def serve_ip(args: argparse.Namespace) -> int:
    plc = SimulatedPlc(plant_tags(args.tags), args.seed)
    if args.transport == "udp":
        server = ModbusUdpServer(plc.device(args.device_id), address=(args.host, args.port))
    else:
        server = ModbusTcpServer(plc.device(args.device_id), framer=FramerType.RTU, address=(args.host, args.port))
    if not await start_modbus(server, args.host, args.port):
        return 1
    transport = server.transport
    sockname = transport.get_extra_info("sockname") if args.transport == "udp" else transport.sockets[0].getsockname()
    return await serve_until_stopped(sockname[1], server.shutdown, plc.run_model(args.period))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hil_tests.sim.rtu_bus", description=__doc__.split("\n")[0])
    modes = parser.add_subparsers(dest="transport", required=True)
    line = modes.add_parser("serial", help="RTU slaves on a pseudo-terminal")
    line.add_argument("--device", required=True, help="the simulator's end of the pty pair")
    line.add_argument("--units", required=True, help="comma-separated unit ids to answer as")
    line.add_argument("--baud", type=int, default=None, help="pace replies at this baud rate")
    line.add_argument("--slow-delay", type=float, default=0.5, help="seconds a slow unit takes to answer")
    for name in ("udp", "rtu-over-tcp"):
        ip = modes.add_parser(name, help=f"the plant over Modbus {name}")
        ip.add_argument("--port", type=int, required=True, help="port; 0 lets the system choose")
        ip.add_argument("--host", default="127.0.0.1")
        ip.add_argument("--tags", type=int, default=9, help="number of tags of layout.plant_tags")
        ip.add_argument("--device-id", type=int, default=1)
        ip.add_argument("--period", type=float, default=0.1, help="seconds between model steps")
        ip.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run((serve_serial if args.transport == "serial" else serve_ip)(args))


if __name__ == "__main__":
    sys.exit(main())

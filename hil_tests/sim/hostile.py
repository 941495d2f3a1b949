"""A hostile Modbus TCP peer: every request gets an answer drawn from a seeded random mix of bad ones.

    python -m hil_tests.sim.hostile --port PORT [--host 127.0.0.1] [--seed S]
                                    [--mix KIND=WEIGHT,...] [--stats FILE]
                                    [--ramp STEP] [--stall EVERY:SECONDS]

Prints "READY <port>" on stdout once listening (with --port 0 the system picks the port) and exits with
status 0 on SIGTERM or SIGINT. It stands for a broken PLC, a misconfigured gateway or a device under
attack, so the driver's defences are tested against real bytes on a real socket rather than mocks.

It is a plain asyncio server and not built on pymodbus on purpose: pymodbus' framer and PDU classes
would refuse to produce most of these frames, and the point is to feed the client what a correct
server never sends. Requests are parsed only as far as their MBAP header, function code, address
and count; every request is then answered according to one kind drawn from the mix:

  valid              a correct answer with random values (so the client also sees recoveries)
  wrong_length       a well-formed answer carrying fewer or more registers (or bit bytes) than asked
  bad_byte_count     the PDU's byte count disagrees with the frame's length
  wrong_tid          a correct answer under another transaction id
  wrong_unit         a correct answer from another unit id
  wrong_function     a well-formed answer with another function code (another read, a write, an unknown one)
  exception          an exception response with a device code (0x01-0x08 or an unassigned one)
  gateway_exception  an exception response 0x0A or 0x0B (the device behind a gateway is unreachable)
  truncated          a correct answer cut short, then nothing
  random_bytes       1 to 300 random bytes
  bad_protocol_id    a correct answer whose MBAP protocol id is not 0
  silence            no answer at all
  flood              5 to 100 unsolicited frames (other transaction ids, exceptions, junk), then the answer

`--ramp STEP` makes the registers of `valid` answers a known function of time, so a test can tell how
old a value was when the gateway stamped it: every register holds floor((t - epoch) / STEP) mod 65536
at wall-clock time t, i.e. the value v was replaced at epoch + (v + 1) * STEP (the stats carry `epoch`
and `step`; the value is taken when the answer is sent). Bit answers stay random.

`--stall EVERY:SECONDS` holds back every EVERY-th request's answer for SECONDS (a device busy or a
link stuck mid-poll); each stall's wall-clock start and end go into the stats' `stalls`.

`--stats FILE` is rewritten (atomically) twice a second with the counts so far:
{"requests": ..., "frames": ..., "kinds": {kind: requests}, "stalls": [[start, end], ...]} (plus
`epoch` and `step` with --ramp). `frames` counts every hostile frame: one per request answered with
a kind other than `valid` (silence included: the missing frame is the fault) plus each unsolicited
frame of a flood.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import struct
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from hil_tests.sim.serving import cannot_listen, run, serve_until_stopped

KINDS = ("valid", "wrong_length", "bad_byte_count", "wrong_tid", "wrong_unit", "wrong_function", "exception",
         "gateway_exception", "truncated", "random_bytes", "bad_protocol_id", "silence", "flood")
DEFAULT_MIX = {"valid": 2, "wrong_length": 2, "bad_byte_count": 1, "wrong_tid": 1, "wrong_unit": 1,
               "wrong_function": 2, "exception": 2, "gateway_exception": 1, "truncated": 1, "random_bytes": 2,
               "bad_protocol_id": 1, "silence": 1, "flood": 2}
BIT_FUNCTIONS = (1, 2)
REGISTER_FUNCTIONS = (3, 4)
DEVICE_EXCEPTIONS = (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x08, 0x0C, 0x7F)
GATEWAY_EXCEPTIONS = (0x0A, 0x0B)
OTHER_FUNCTIONS = (1, 2, 3, 4, 5, 6, 15, 16, 0x2B, 0x41, 0x64, 0x80)
MAX_PDU = 253


def parse_mix(text: str) -> dict[str, float]:
    """'exception=2,silence=1' -> {'exception': 2.0, 'silence': 1.0}; a bare kind weighs 1."""
    mix = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, _, weight = item.partition("=")
        if kind not in KINDS:
            raise argparse.ArgumentTypeError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
        try:
            mix[kind] = float(weight) if weight else 1.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"weight of {kind} is not a number: {weight!r}") from None
    if not mix or sum(mix.values()) <= 0:
        raise argparse.ArgumentTypeError("the mix needs at least one kind with a positive weight")
    return mix


def mbap(tid: int, unit: int, pdu: bytes, protocol: int = 0) -> bytes:
    return struct.pack(">HHHB", tid, protocol, len(pdu) + 1, unit) + pdu


class Answers:
    """Builds the frames for one request; all randomness comes from one seeded generator.

    With `ramp` (seconds per step), the registers of a valid answer hold the ramp's value at send time.
    """

    def __init__(self, rng: random.Random, ramp: float | None = None) -> None:
        self.rng, self.ramp = rng, ramp
        self.epoch = time.time()

    def ramp_value(self) -> int:
        return int((time.time() - self.epoch) / self.ramp) % 65536

    def data(self, function: int, count: int, delta: int = 0) -> bytes:
        """The byte-count-prefixed payload of a read answer for `count` registers or bits (+ delta units)."""
        rng = self.rng
        if function in BIT_FUNCTIONS:
            size = max(0, min(250, -(-count // 8) + delta))
        else:
            size = 2 * max(0, min(125, count + delta))
        return bytes([size]) + rng.randbytes(size)

    def valid_pdu(self, function: int, count: int) -> bytes:
        if function not in BIT_FUNCTIONS + REGISTER_FUNCTIONS:
            return bytes([function | 0x80, 0x01])
        if self.ramp is not None and function in REGISTER_FUNCTIONS:
            count = max(0, min(125, count))
            return bytes([function, 2 * count]) + self.ramp_value().to_bytes(2, "big") * count
        return bytes([function]) + self.data(function, count)

    def unsolicited(self, tid: int, unit: int) -> bytes:
        rng = self.rng
        other = (tid + rng.randint(1, 65534)) % 65536 or 1
        choice = rng.randrange(3)
        if choice == 0:
            function = rng.choice(REGISTER_FUNCTIONS)
            return mbap(other, unit, bytes([function]) + self.data(function, rng.randint(1, 10)))
        if choice == 1:
            return mbap(other, unit, bytes([rng.choice(REGISTER_FUNCTIONS) | 0x80, rng.choice(DEVICE_EXCEPTIONS)]))
        return rng.randbytes(rng.randint(1, 20))

    def frames(self, kind: str, tid: int, unit: int, function: int, count: int) -> list[bytes]:
        """What to send for `kind`; an empty list is silence."""
        rng = self.rng
        valid = mbap(tid, unit, self.valid_pdu(function, count))
        if kind == "valid":
            return [valid]
        if kind == "wrong_length":
            delta = rng.choice([d for d in (-3, -2, -1, 1, 2, 3) if count + d >= 0 or d > 0])
            return [mbap(tid, unit, bytes([function]) + self.data(function, count, delta))]
        if kind == "bad_byte_count":
            payload = self.data(function, count)
            claimed = (payload[0] + rng.choice([-2, -1, 1, 2, 100])) % 256
            return [mbap(tid, unit, bytes([function, claimed]) + payload[1:])]
        if kind == "wrong_tid":
            return [mbap((tid + rng.randint(1, 65534)) % 65536, unit, self.valid_pdu(function, count))]
        if kind == "wrong_unit":
            return [mbap(tid, (unit + rng.randint(1, 255)) % 256, self.valid_pdu(function, count))]
        if kind == "wrong_function":
            other = rng.choice([f for f in OTHER_FUNCTIONS if f != function])
            if other in BIT_FUNCTIONS + REGISTER_FUNCTIONS:
                pdu = bytes([other]) + self.data(other, count)
            else:
                pdu = bytes([other]) + rng.randbytes(rng.choice((0, 1, 4)))
            return [mbap(tid, unit, pdu)]
        if kind in ("exception", "gateway_exception"):
            codes = DEVICE_EXCEPTIONS if kind == "exception" else GATEWAY_EXCEPTIONS
            return [mbap(tid, unit, bytes([function | 0x80, rng.choice(codes)]))]
        if kind == "truncated":
            return [valid[:rng.randint(1, len(valid) - 1)]]
        if kind == "random_bytes":
            return [rng.randbytes(rng.randint(1, 300))]
        if kind == "bad_protocol_id":
            return [mbap(tid, unit, self.valid_pdu(function, count), protocol=rng.randint(1, 65535))]
        if kind == "silence":
            return []
        if kind == "flood":
            return [self.unsolicited(tid, unit) for _ in range(rng.randint(5, 100))] + [valid]
        raise ValueError(f"unknown kind {kind}")


class HostilePeer:
    """Serves every connection; counts what it sent, and when it stalled."""

    def __init__(self, mix: dict[str, float], seed: int | None, ramp: float | None = None,
                 stall: tuple[int, float] | None = None) -> None:
        self.rng = random.Random(seed)
        self.kinds, self.weights = list(mix), list(mix.values())
        self.answers = Answers(self.rng, ramp)
        self.stall = stall
        self.stalls: list[list[float]] = []
        self.counts: Counter[str] = Counter()
        self.requests = self.frames = 0

    def stats(self) -> dict:
        figures = {"requests": self.requests, "frames": self.frames, "kinds": dict(self.counts),
                   "stalls": self.stalls}
        if self.answers.ramp is not None:
            figures.update(epoch=self.answers.epoch, step=self.answers.ramp)
        return figures

    async def _stall_if_due(self) -> None:
        if self.stall is not None and self.requests % self.stall[0] == 0:
            started = time.time()
            await asyncio.sleep(self.stall[1])
            self.stalls.append([started, time.time()])

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(7)
                tid, _, length, unit = struct.unpack(">HHHB", header)
                if not 2 <= length <= MAX_PDU + 1:
                    return  # not Modbus: hang up, as a real device would
                pdu = await reader.readexactly(length - 1)
                function = pdu[0]
                count = struct.unpack(">H", pdu[3:5])[0] if len(pdu) >= 5 else 0
                kind = self.rng.choices(self.kinds, self.weights)[0]
                self.requests += 1
                await self._stall_if_due()
                frames = self.answers.frames(kind, tid, unit, function, count)
                self.counts[kind] += 1
                if kind != "valid":
                    self.frames += 1 + (len(frames) - 1 if kind == "flood" else 0)
                for frame in frames:
                    writer.write(frame)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


def write_stats(path: Path, stats: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(stats))
    os.replace(temporary, path)


async def report(peer: HostilePeer, path: Path) -> None:
    while True:
        write_stats(path, peer.stats())
        await asyncio.sleep(0.5)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hil_tests.sim.hostile", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port; 0 lets the system choose")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable runs")
    parser.add_argument("--mix", type=parse_mix, default=DEFAULT_MIX,
                        help="kinds of answer and their weights, e.g. exception=2,silence=1 (default: all)")
    parser.add_argument("--stats", type=Path, default=None, help="JSON file of counts, rewritten twice a second")
    parser.add_argument("--ramp", type=float, default=None, metavar="STEP",
                        help="registers of valid answers count up one every STEP seconds (a known function of time)")
    parser.add_argument("--stall", type=parse_stall, default=None, metavar="EVERY:SECONDS",
                        help="hold back every EVERY-th answer for SECONDS")
    return parser.parse_args(argv)


def parse_stall(text: str) -> tuple[int, float]:
    """'40:1.5' -> (40, 1.5): every 40th request waits 1.5 s for its answer."""
    every, _, seconds = text.partition(":")
    try:
        parsed = int(every), float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected EVERY:SECONDS, e.g. 40:1.5, not {text!r}") from None
    if parsed[0] < 1 or parsed[1] <= 0:
        raise argparse.ArgumentTypeError(f"EVERY must be at least 1 and SECONDS above 0: {text!r}")
    return parsed


async def main_async(args: argparse.Namespace) -> int:
    peer = HostilePeer(args.mix, args.seed, args.ramp, args.stall)
    try:
        server = await asyncio.start_server(peer.serve, args.host, args.port)
    except OSError as exc:
        return cannot_listen(args.host, args.port, exc)

    async def shutdown() -> None:
        server.close()
        if args.stats:
            write_stats(args.stats, peer.stats())

    work = [report(peer, args.stats)] if args.stats else []
    status = await serve_until_stopped(server.sockets[0].getsockname()[1], shutdown, *work)
    print(json.dumps(peer.stats()), flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    return run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

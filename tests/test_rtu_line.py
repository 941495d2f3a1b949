"""SerialLine.receive on a pseudo-terminal: a frame is complete only when the line falls silent after it.

The slave's side is the pty's master end, written by the test with explicit pauses; the line's
silence is set far longer (200 ms) than any pause inside a window (50 ms), so no scheduling delay
of a loaded machine can move a byte across a silence.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from drivers.modbus.rtu import SerialLine
from drivers.modbus.rtu_config import SerialSettings
from drivers.modbus.rtu_frame import Collision
from hil_tests.sim.rtu_replies import encode_registers

SILENCE = 0.2
INSIDE = 0.05  # a pause within one window
REPLY = encode_registers(2, "holding", [1, 2])
IMPOSTOR = encode_registers(2, "holding", [666, 666])  # another slave posing as unit 2, valid CRC
LATE = encode_registers(3, "holding", [5])  # unit 3 answering after its timeout


async def receive_after_writes(chunks: list[tuple[float, bytes]], timeout: float = 2.0) -> bytes:
    """Open the line on a fresh pty, write each chunk after its pause, and return what receive() took."""
    master, slave = os.openpty()
    try:
        line = SerialLine(SerialSettings(port=os.ttyname(slave), baud=19200, silence=SILENCE))
        try:
            async def slave_side() -> None:
                for pause, chunk in chunks:
                    await asyncio.sleep(pause)
                    os.write(master, chunk)

            writer = asyncio.create_task(slave_side())
            try:
                return await line.receive(2, timeout)
            finally:
                writer.cancel()
        finally:
            line.close()
    finally:
        os.close(master)
        os.close(slave)


def test_a_reply_alone_in_its_window_is_taken():
    assert asyncio.run(receive_after_writes([(0.0, REPLY)])) == REPLY


def test_a_reply_trickling_in_within_one_window_is_taken_whole():
    assert asyncio.run(receive_after_writes([(0.0, REPLY[:3]), (INSIDE, REPLY[3:])])) == REPLY


def test_a_valid_frame_followed_by_another_before_the_silence_is_a_collision():
    """The issue's faulty slave: the first frame alone would pass every check of the reply."""
    with pytest.raises(Collision, match="frame of unit 2 .* and a 9-byte frame of unit 2"):
        asyncio.run(receive_after_writes([(0.0, IMPOSTOR), (INSIDE, REPLY)]))


def test_trailing_bytes_after_a_reply_are_a_collision():
    with pytest.raises(Collision, match="3 trailing bytes"):
        asyncio.run(receive_after_writes([(0.0, REPLY), (INSIDE, b"\x00\x01\x02")]))


def test_a_late_frame_of_another_unit_alone_in_its_window_is_dropped():
    assert asyncio.run(receive_after_writes([(0.0, LATE), (2 * SILENCE, REPLY)])) == REPLY

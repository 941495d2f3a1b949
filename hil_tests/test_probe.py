"""`gatewayd probe modbus` as a real command against the simulated PLC (Modbus TCP) and the RTU slaves on
a socat pseudo-terminal: the right decoding shows in the right order among the candidates, and a device
that refuses or does not answer is named as such."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest
from pymodbus.client import ModbusTcpClient

from hil_tests.sim.rtu_bus import register_value
from hil_tests.simprocess import ROOT, SimProcess

FLOAT_CDAB = 123.456  # what the PLC holds at 2..3, its words swapped
INT32_ABCD = -1_234_567  # at 6..7, most significant word first


def probe(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gatewayd", "probe", "modbus", *arguments], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def order_line(output: str, address: int, dtype: str) -> str:
    """The line of one type under one address in the side-by-side table."""
    lines = output.splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"holding {address} ")))
    return next(line for line in lines[start + 1:] if line.split()[0] == dtype)


@pytest.fixture
def plc(sim_processes) -> SimProcess:
    """The simulated PLC with two values forced in as an engineer would: a CDAB float and an ABCD int32."""
    plc = sim_processes(SimProcess(["hil_tests.sim.plc"], ["--tags", "20", "--overrides", "--period", "0.1"],
                                   "simulator"))
    high, low = struct.unpack(">HH", struct.pack(">f", FLOAT_CDAB))
    client = ModbusTcpClient("127.0.0.1", port=plc.port)
    assert client.connect()
    try:
        assert not client.write_registers(2, [low, high], device_id=1).isError()
        assert not client.write_registers(6, list(struct.unpack(">HH", struct.pack(">i", INT32_ABCD))),
                                          device_id=1).isError()
    finally:
        client.close()
    return plc


def test_tcp_shows_the_cdab_float_and_the_abcd_int32_in_their_orders(plc):
    result = probe(f"tcp://127.0.0.1:{plc.port}", "--range", "0-15", "--expect", f"{FLOAT_CDAB}@2",
                   f"--expect={INT32_ABCD}@6")
    assert result.returncode == 0, result.stderr
    assert "CDAB 123.456 <" in order_line(result.stdout, 2, "float32")
    assert "ABCD 123.456" not in order_line(result.stdout, 2, "float32")
    assert f"ABCD {INT32_ABCD} <" in order_line(result.stdout, 6, "int32")
    assert f"expect {FLOAT_CDAB} at holding 2: float32 CDAB = 123.456\n" in result.stdout
    assert f"expect {INT32_ABCD} at holding 6: int32 ABCD = {INT32_ABCD}\n" in result.stdout


def test_tcp_a_value_in_no_order_fails_and_says_so(plc):
    result = probe(f"tcp://127.0.0.1:{plc.port}", "--range", "2-3", "--expect", "99.5@2")
    assert result.returncode == 1
    assert "expect 99.5 at holding 2: no type or order decodes to it" in result.stdout


def test_tcp_reads_past_the_request_limit_in_several_requests_and_names_the_refused_one(plc):
    result = probe(f"tcp://127.0.0.1:{plc.port}", "--range", "0-300", "--types", "uint16")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == (f"gatewayd probe: tcp://127.0.0.1:{plc.port} unit 1: holding 0..124: "
                                     "exception 0x02 (illegal data address)")


def test_tcp_a_closed_port_and_a_bad_url_are_clear_errors():
    closed = probe("tcp://127.0.0.1:1", "--range", "0-1")
    assert closed.returncode == 1 and "cannot connect to 127.0.0.1:1" in closed.stderr
    bad = probe("udp://127.0.0.1:502")
    assert bad.returncode == 1
    assert "'udp://127.0.0.1:502' is not a Modbus device; write tcp://HOST:PORT or rtu:///dev/ttyX" in bad.stderr


def test_rtu_shows_the_abcd_int32_of_the_slave_map(serial_pair):
    pair = serial_pair((1, 2, 3))
    expected = register_value(2, 10) << 16 | register_value(2, 11)  # unit 2's registers 10, 11 as one uint32
    result = probe(f"rtu://{pair.master}", "--unit", "2", "--baud", "19200", "--parity", "E",
                   "--range", "10-11", "--types", "uint32", "--expect", f"{expected}@10")
    assert result.returncode == 0, result.stderr
    assert f"expect {expected} at holding 10: uint32 ABCD = {expected}\n" in result.stdout


def test_rtu_an_exception_is_named_and_a_silent_unit_times_out(serial_pair):
    pair = serial_pair((1, 2))
    pair.mode(1, "exception")
    pair.mode(2, "silent")
    refused = probe(f"rtu://{pair.master}", "--unit", "1", "--range", "0-3")
    assert refused.returncode == 1
    assert f"rtu://{pair.master} unit 1: holding 0..3: exception 0x02 (illegal data address)" in refused.stderr
    silent = probe(f"rtu://{pair.master}", "--unit", "2", "--range", "0-3", "--timeout", "0.2")
    assert silent.returncode == 1
    assert f"rtu://{pair.master} unit 2: holding 0..3: no response within 0.2 s" in silent.stderr

"""`make demo 2>&1 | tee demo.log` stopped with Ctrl-C: the same Ctrl-C kills tee, so every write of the demo
meets a pipe nobody reads (EPIPE). The demo must stop every process it started all the same: the broker,
the daemon and the simulators run in sessions of their own, so the terminal's Ctrl-C does not reach them.

The demo runs config.example.yaml with its ports swapped for free ones, in a directory of the test's own.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from hil_tests.harness import ROOT, free_port

EXAMPLE_PORTS = (11883, 15020, 15021, 15022, 15023, 15024, 14840, 17766, 18780)  # broker, simulators, console


def demo_config(tmp_path: Path) -> Path:
    text = (ROOT / "config.example.yaml").read_text(encoding="utf-8")
    for port in EXAMPLE_PORTS:
        assert len(re.findall(rf"\b{port}\b", text)) == 1, f"port {port} of the example moved"
        text = re.sub(rf"\b{port}\b", str(free_port()), text)
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def children_of() -> dict[int, list[int]]:
    """Every live process's children, by parent pid, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone in between
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    return children


def descendants(pid: int) -> set[int]:
    tree, found, todo = children_of(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_until(fd: int, text: str, timeout: float) -> str:
    seen, deadline = b"", time.monotonic() + timeout
    while text.encode() not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {text!r} from the demo after {timeout} s:\n{seen.decode(errors='replace')}"
        if select.select([fd], [], [], remaining)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"the demo closed its output:\n{seen.decode(errors='replace')}"
            seen += chunk
    return seen.decode(errors="replace")


def test_ctrl_c_after_the_output_pipe_died_stops_every_child(tmp_path: Path):
    read_end, write_end = os.pipe()
    demo = subprocess.Popen([sys.executable, "-m", "hil_tests.demo", str(demo_config(tmp_path))], cwd=ROOT,
                            stdout=write_end, stderr=write_end, start_new_session=True)  # its own group, as
    os.close(write_end)                                                                  # make's under a shell
    started: set[int] = set()
    try:
        read_until(read_end, "demo: broker on", timeout=180)
        started = descendants(demo.pid)
        os.close(read_end)  # tee is gone: every later write of the demo fails with EPIPE
        read_end = -1
        os.killpg(demo.pid, signal.SIGINT)  # the Ctrl-C, to the demo's foreground group
        status = demo.wait(60)
        survivors = {pid for pid in started if alive(pid)}
        assert len(started) >= 7, f"the demo started fewer processes than the example has devices: {started}"
        assert not survivors, f"still running after the demo ended: {survivors}"
        assert status == 0, "a Ctrl-C is how the demo is meant to end"
    finally:
        if read_end >= 0:
            os.close(read_end)
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        for pid in started:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):  # it may end between the look and the kill
                    os.kill(pid, signal.SIGKILL)

"""Open TCP connections of a process, read from /proc: what a connection leak shows as.

A connection counts while the process holds its socket (an fd whose inode appears in
/proc/net/tcp or tcp6), in whatever TCP state: a socket the peer closed but the process never
did (CLOSE_WAIT) is as much a leak as an established one.
"""

from __future__ import annotations

import os
from pathlib import Path


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets among the process's open file descriptors."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed in between
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def open_connections(pid: int, remote_port: int) -> int:
    """TCP connections the process holds to `remote_port` on any address."""
    owned = socket_inodes(pid)
    count = 0
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            port = int(fields[2].rsplit(":", 1)[1], 16)
            if port == remote_port and int(fields[9]) in owned:
                count += 1
    return count

"""A throw-away PostgreSQL cluster for tests and benchmarks: initdb in a temporary directory, listening only
on a unix socket in that directory, stopped and removed at the end.

initdb and postgres refuse to run as root, so as root the cluster belongs to `nobody` and its directory
is handed to that user; the test process still connects (over the socket, trust authentication, as the
cluster's superuser `postgres`). Nothing here knows about pytest.

    with Postgres() as pg:
        conninfo = pg.conninfo   # "host=/tmp/gatewayd-pg-... port=5432 user=postgres dbname=postgres"
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

CLUSTER_USER_WHEN_ROOT = "nobody"
SUPERUSER = "postgres"
PORT = 5432  # only names the socket file: the cluster listens on no TCP port


def postgres_bin() -> Path:
    """The newest Debian PostgreSQL server's bin directory."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise RuntimeError("PostgreSQL is not installed: run `make deps` (apt-get install postgresql)")
    return versions[-1].parent


class Postgres:
    """One cluster: `start` creates it on first use, `stop` keeps its data, `restart` is stop plus start,
    `close` stops it and deletes the directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gatewayd-pg-"))
        self.data = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self._bin = postgres_bin()
        self._user = CLUSTER_USER_WHEN_ROOT if os.geteuid() == 0 else None
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._initialised = False

    @property
    def conninfo(self) -> str:
        return f"host={self.dir} port={PORT} user={SUPERUSER} dbname=postgres"

    def _run(self, *argv: str, timeout: float = 60.0) -> None:
        command = [str(self._bin / argv[0]), *argv[1:]]
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
                               f"{self.log_text()[-2000:]}")

    def start(self) -> Postgres:
        if not self._initialised:
            self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                      "--locale=C.UTF-8", "--no-sync")  # a throw-away cluster: its creation need not be durable
            self._initialised = True
        options = f"-k {self.dir} -p {PORT} -c listen_addresses='' -c max_connections=50"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", options, "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """A fast shutdown: open transactions are rolled back, clients are disconnected, and a checkpoint
        is written; "immediate" skips the checkpoint (as a crash would: the next start replays the WAL)."""
        if self._initialised and (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        try:
            self.stop("immediate")  # the data is deleted next
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

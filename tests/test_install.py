"""`make install` into a DESTDIR: the tree it makes, an upgrade over it, and `make uninstall`.

The upgrade is the case that matters on a plant: the config, the signing key and the store with its
unsent rows must come through untouched, and the old program must be replaced as a whole.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "/opt/gatewayd-test"  # not the default, so that the path rewriting shows


def make(target: str, destdir: Path, umask: int = 0o022) -> None:
    result = subprocess.run(["make", "-C", str(ROOT), "--no-print-directory", target, f"DESTDIR={destdir}",
                             f"PREFIX={PREFIX}"], capture_output=True, text=True, timeout=600,
                            preexec_fn=lambda: os.umask(umask))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def check_modes(dest: Path, prefix: Path) -> None:
    """What `make install` writes has the modes it sets, whatever the umask it ran under."""
    expected = {
        dest / "lib/systemd/system/gatewayd.service": 0o644,
        dest / "usr/lib/tmpfiles.d/gatewayd.conf": 0o644,
        dest / "usr/lib/sysusers.d/gatewayd.conf": 0o644,
        dest / "etc/gatewayd": 0o750,
        dest / "etc/gatewayd/config.example.yaml": 0o644,
        prefix: 0o755,
        prefix / "bin/gatewayd": 0o755,
        prefix / "share/doc/gatewayd": 0o755,
        prefix / "share/doc/gatewayd/operations.md": 0o644,
        prefix / "pyvenv.cfg": 0o644,
    }
    assert {path: f"{mode(path):04o}" for path in expected} == {path: f"{want:04o}" for path, want in expected.items()}
    tree = [prefix, *prefix.rglob("*")]
    writable = [path for path in tree if not path.is_symlink() and mode(path) & 0o022]
    unreadable = [path for path in tree if not path.is_symlink() and mode(path) & 0o044 != 0o044]
    assert not writable and not unreadable, (writable[:5], unreadable[:5])


def installed_python(prefix: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The installed environment's interpreter (its scripts point at PREFIX, which is not there in a DESTDIR)."""
    return subprocess.run([str(prefix / "bin/python"), *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"})


def fingerprint(path: Path) -> tuple[bytes, int, int]:
    info = path.stat()
    return path.read_bytes(), info.st_mode, info.st_mtime_ns


def test_install_upgrade_and_uninstall(tmp_path: Path):
    dest = tmp_path / "dest"
    prefix = dest / PREFIX.lstrip("/")
    make("install", dest, umask=0o002)  # a shared-group umask: nothing may come out group-writable
    check_modes(dest, prefix)

    unit = (dest / "lib/systemd/system/gatewayd.service").read_text()
    assert f"ExecStart={PREFIX}/bin/gatewayd run -c /etc/gatewayd/config.yaml" in unit
    assert "/opt/gatewayd/" not in unit and str(dest) not in unit
    assert (dest / "usr/lib/sysusers.d/gatewayd.conf").read_text().startswith("#")
    assert "d /etc/gatewayd 0750 root gatewayd" in (dest / "usr/lib/tmpfiles.d/gatewayd.conf").read_text()
    assert (prefix / "share/doc/gatewayd/operations.md").exists()
    assert (prefix / "bin/gatewayd").read_text().startswith(f"#!{PREFIX}/bin/python\n"), "runs from PREFIX"
    assert str(dest) not in (prefix / "pyvenv.cfg").read_text()
    assert not (prefix.parent / f"{prefix.name}.new").exists()
    example = dest / "etc/gatewayd/config.example.yaml"
    checked = installed_python(prefix, tmp_path, "-m", "gatewayd", "check-config", str(example))
    assert checked.returncode == 0 and ": OK: gateway" in checked.stdout, checked.stderr
    where = installed_python(prefix, tmp_path, "-c", "import gatewayd.metrics; print(gatewayd.metrics.__file__)")
    assert where.stdout.startswith(str(prefix)), "the environment holds its own copy, not the source tree"
    kernels = installed_python(prefix, tmp_path, "-c", "import sys; from rules.kernels.load import load; "
                               "print(load().origin, 'numba' in sys.modules)")
    assert kernels.stdout.startswith(f"ahead-of-time build {prefix}/lib/") and kernels.stdout.endswith(" False\n"), \
        kernels.stdout + kernels.stderr

    # what an installed gateway holds: its config, its key, and a store with rows not yet sent
    config = dest / "etc/gatewayd/config.yaml"
    config.write_text(example.read_text().replace("GW-SITE-001", "GW-KEEP-001"))
    key = dest / "etc/gatewayd/signing.key"
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nkept\n-----END PRIVATE KEY-----\n")
    key.chmod(0o600)
    state = dest / "var/lib/gatewayd"
    state.mkdir(parents=True)
    (state / "gatewayd.db").write_bytes(b"SQLite format 3\0unsent rows")
    kept = {path: fingerprint(path) for path in (config, key, state / "gatewayd.db")}
    leftover = prefix / "lib/python3.11/site-packages/old_module_of_a_previous_version.py"
    leftover.write_text("")

    make("install", dest, umask=0o077)  # a strict umask: the service account must still read the program
    check_modes(dest, prefix)
    assert {path: fingerprint(path) for path in kept} == kept, "an upgrade never touches config, key or data"
    assert not leftover.exists(), "the program is replaced as a whole"
    assert (prefix / "bin/gatewayd").exists() and not (prefix.parent / f"{prefix.name}.old").exists()

    make("uninstall", dest)
    assert not prefix.exists() and not (dest / "lib/systemd/system/gatewayd.service").exists()
    assert not example.exists()
    assert {path: fingerprint(path) for path in kept} == kept, "uninstall leaves config, key and data"

"""The daemon imports only what a config uses: a protocol stack with its driver kind, prometheus-client
with a metrics endpoint (or a status request). Each costs resident memory on a small gateway
(bench/bench_footprint.py measures them: asyncua 39 MiB, prometheus-client 12 MiB, pymodbus 11 MiB)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = ("prometheus_client", "asyncua", "pymodbus", "websockets", "openpyxl", "serial", "Pyro5")


def loaded_after(statement: str) -> set[str]:
    """Which OPTIONAL packages a fresh interpreter holds after running `statement`."""
    script = f"import json, sys\n{statement}\nprint(json.dumps([m for m in {OPTIONAL!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(json.loads(out.stdout))


def test_the_daemon_module_loads_no_protocol_stack_and_no_metrics_client() -> None:
    assert loaded_after("import gatewayd.daemon") == set()


def test_the_metrics_server_brings_prometheus_client_with_it() -> None:
    assert "prometheus_client" in loaded_after("import gatewayd.daemon\nfrom gatewayd.metrics import MetricsServer")

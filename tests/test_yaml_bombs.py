"""A billion-laughs config (aliases nested ten deep: 9^10 references) is refused with a named error, never
expanded: the loader shares aliased nodes, and validation never walks into a part it does not expect."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from gatewayd.config import ConfigError, parse_config

LAUGHS = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'] + [
    f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]" for level in range(1, 10)]
HEAD = "gateway: {id: GW-1}\nuplink: {host: broker, signing_key: k}\n"
BOMB = "bomb:\n" + "".join(f"  {line}\n" for line in LAUGHS)
DEVICE = "  - {name: plc, driver: modbus_tcp, host: 10.0.0.5, tags: [{name: T1, address: 0, type: int16%s}]}\n"


@pytest.mark.parametrize("document, where", [
    (HEAD + BOMB + "devices: []\n", "bomb: unknown key"),
    (HEAD + BOMB.replace("bomb:", "x-anchors:") + "devices: *a9\n", "devices[8]"),
    (HEAD + BOMB.replace("bomb:", "x-anchors:") + "devices:\n" + DEVICE % ", alarms: *a9", "alarms"),
    (HEAD + BOMB.replace("bomb:", "x-anchors:") + "devices:\n" + DEVICE % ", range: *a9", "range"),
    (HEAD + BOMB.replace("bomb:", "x-anchors:") + "devices:\n" + DEVICE % "" + "rules: {alarms: *a9}\n", "rules"),
])
def test_a_billion_laughs_is_refused_without_expanding_it(document: str, where: str, tmp_path: Path):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ConfigError) as refused:
        parse_config(document, tmp_path / "laughs.yaml")
    assert all(issue.line > 0 for issue in refused.value.issues), str(refused.value)
    assert where.split(":")[0] in str(refused.value), str(refused.value)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 50_000, f"resident memory grew {grown_kib} KiB: the aliases were expanded"

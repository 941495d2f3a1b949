"""The compiled-config cache: a hit returns the stored Config; any edit, another version or a damaged
entry means the YAML is parsed again, and the entry is private to the daemon's user."""

from __future__ import annotations

import dataclasses
import logging
import pickle
import stat
from pathlib import Path

import pytest

import gatewayd
from gatewayd.config import ConfigError, load_config, load_config_isolated
from gatewayd.config.cache import ConfigCache

CONFIGS = Path(__file__).parent / "configs"


@pytest.fixture
def config_file(tmp_path, monkeypatch) -> Path:
    """A good config, and $CACHE_DIRECTORY as systemd sets it for the unit."""
    (tmp_path / "cache").mkdir()
    monkeypatch.setenv("CACHE_DIRECTORY", str(tmp_path / "cache"))
    path = tmp_path / "gatewayd.yaml"
    path.write_bytes((CONFIGS / "good" / "minimal.yaml").read_bytes())
    return path


def entry(path: Path) -> ConfigCache:
    return ConfigCache(path, path.read_bytes())


def plant_marked_entry(path: Path) -> None:
    """Store, under the file's current key, a Config that parsing the file could never give."""
    config = load_config(path)
    marked = dataclasses.replace(config, gateway=dataclasses.replace(config.gateway, name="FROM THE CACHE"))
    entry(path).write(pickle.dumps(marked))


def test_first_load_writes_a_private_entry_and_a_restart_reads_it(config_file):
    config = load_config_isolated(config_file)
    assert config == load_config(config_file)
    cached = entry(config_file).path
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600, "readable and writable by the daemon's user only"
    assert entry(config_file).read() is not None
    plant_marked_entry(config_file)
    assert load_config_isolated(config_file).gateway.name == "FROM THE CACHE", "the restart did not parse"


def test_an_edit_of_the_file_is_parsed_again(config_file):
    plant_marked_entry(config_file)
    config_file.write_text(config_file.read_text().replace("id: GW-MIN-01", "id: GW-MIN-02"))
    config = load_config_isolated(config_file)
    assert config.gateway.id == "GW-MIN-02" and config.gateway.name == ""
    plant_marked_entry(config_file)
    config_file.write_text(config_file.read_text() + "# a comment changes the bytes, not the meaning\n")
    assert load_config_isolated(config_file).gateway.name == "", "any change of the bytes is a miss"


def test_another_version_does_not_trust_the_entry(config_file, monkeypatch):
    plant_marked_entry(config_file)
    monkeypatch.setattr(gatewayd, "__version__", gatewayd.__version__ + ".post1")
    assert load_config_isolated(config_file).gateway.name == ""


def test_another_systemd_directory_is_a_miss(config_file, monkeypatch):
    plant_marked_entry(config_file)
    monkeypatch.setenv("STATE_DIRECTORY", str(config_file.parent / "elsewhere"))
    config = load_config_isolated(config_file)
    assert config.gateway.name == "" and config.gateway.state_dir == config_file.parent / "elsewhere"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped"])
def test_a_damaged_entry_is_parsed_again_with_a_warning(config_file, caplog, damage):
    load_config_isolated(config_file)
    cached = entry(config_file).path
    data = cached.read_bytes()
    cached.write_bytes({"garbage": b"not a cache entry",
                        "truncated": data[:len(data) // 2],
                        "flipped": data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:]}[damage])
    with caplog.at_level(logging.WARNING, logger="gatewayd.config"):
        config = load_config_isolated(config_file)
    assert config == load_config(config_file)
    assert any("damaged" in record.getMessage() and str(cached) in record.getMessage() for record in caplog.records)
    assert entry(config_file).read() is not None, "the entry is rewritten from the parse"


def test_an_entry_others_may_write_is_not_trusted(config_file, caplog):
    plant_marked_entry(config_file)
    entry(config_file).path.chmod(0o620)
    with caplog.at_level(logging.WARNING, logger="gatewayd.config"):
        assert load_config_isolated(config_file).gateway.name == ""
    assert any("writable by nobody else" in record.getMessage() for record in caplog.records)


def test_a_refused_config_is_never_stored(config_file):
    broken = config_file.with_name("broken.yaml")
    broken.write_bytes((CONFIGS / "bad" / "duplicate_tag.yaml").read_bytes())
    with pytest.raises(ConfigError):
        load_config_isolated(broken)
    assert not entry(broken).path.exists()


def test_without_a_cache_directory_nothing_is_written(config_file, monkeypatch):
    missing = config_file.parent / "no-such-cache"
    monkeypatch.setenv("CACHE_DIRECTORY", str(missing))
    assert load_config_isolated(config_file) == load_config(config_file)
    assert not missing.exists(), "the cache root is systemd's to create"

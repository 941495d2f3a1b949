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
    entry(path).write(pickle.dumps(marked), marked.sources)


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


GDS_CONFIG = """gateway: {id: GW-GDS}
uplink: {host: broker, signing_key: k}
devices:
  - name: gds1
    driver: gds
    transport: tcp
    host: 10.0.0.9
    profile_file: panels/mine.yaml
    channels:
      - {channel: 1, name: GT101, gas: methane, unit: "%LEL"}
"""


@pytest.fixture
def gds_config(config_file) -> Path:
    """A config whose panel reads a profile of the integrator's (first_address 100), beside the cache."""
    from drivers.gds.profile import PROFILE_DIR

    (config_file.parent / "panels").mkdir()
    (config_file.parent / "panels" / "mine.yaml").write_bytes((PROFILE_DIR / "generic.yaml").read_bytes())
    path = config_file.with_name("gds.yaml")
    path.write_text(GDS_CONFIG)
    return path


def edit_profile(config: Path, first_address: int) -> Path:
    profile = config.parent / "panels" / "mine.yaml"
    text = profile.read_text()
    start = text.index("first_address:")
    end = text.index("\n", start)
    profile.write_text(text[:start] + f"first_address: {first_address}" + text[end:])
    return profile


def first_address(config) -> int:
    return config.devices[0].settings.profile.first_address


def test_an_edited_profile_file_is_parsed_again_with_a_new_config_sha256(gds_config):
    """The finding: the key covered the main file only, so a start after a profile edit kept the old map."""
    before = load_config_isolated(gds_config)
    assert first_address(before) == 100
    plant_marked_entry(gds_config)
    assert load_config_isolated(gds_config).gateway.name == "FROM THE CACHE", "unchanged files: a hit"
    edit_profile(gds_config, 200)
    after = load_config_isolated(gds_config)
    assert first_address(after) == 200 and after.gateway.name == ""
    assert after.config_sha256 != before.config_sha256
    assert entry(gds_config).read() is not None, "the entry is rewritten for the new profile"


def test_a_profile_that_went_away_is_a_miss_and_then_an_error(gds_config):
    load_config_isolated(gds_config)
    (gds_config.parent / "panels" / "mine.yaml").unlink()
    with pytest.raises(ConfigError, match="cannot read the profile"):
        load_config_isolated(gds_config)


def test_config_sha256_covers_every_file_read_as_documented(gds_config, config_file):
    """docs/uplink.md: the main file's own digest alone, else the digest of the files' hex digests with a
    newline each, main file first (`sha256sum main profile | cut -c1-64 | sha256sum`)."""
    import hashlib

    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    plain = load_config(config_file)
    assert plain.config_sha256 == digest(config_file.read_bytes()), "a single file: unchanged meaning"
    config = load_config(gds_config)
    profile = gds_config.parent / "panels" / "mine.yaml"
    assert config.source_list() == [{"path": str(gds_config.resolve()), "sha256": digest(gds_config.read_bytes())},
                                    {"path": str(profile.resolve()), "sha256": digest(profile.read_bytes())}]
    lines = f"{digest(gds_config.read_bytes())}\n{digest(profile.read_bytes())}\n"
    assert config.config_sha256 == digest(lines.encode())
    edit_profile(gds_config, 108)
    assert load_config(gds_config).config_sha256 != config.config_sha256, "load_config in one process re-reads"

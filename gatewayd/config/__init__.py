"""Configuration: `load_config(path)` returns a validated, frozen `Config` or raises `ConfigError`."""

from gatewayd.config.load import load_config, load_config_isolated, parse_config
from gatewayd.config.model import Config, DeviceConfig, TagConfig
from core.schema import ConfigError, ConfigIssue

__all__ = [
    "Config", "ConfigError", "ConfigIssue", "DeviceConfig", "TagConfig",
    "load_config", "load_config_isolated", "parse_config",
]

"""Uplink: the signed, hash-chained batch format and the publisher that sends it (its readers: gatewayd.platform)."""

"""Uplink: the signed, hash-chained batch format, its verifier, and the tools that receive it."""

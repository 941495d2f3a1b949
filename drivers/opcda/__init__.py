"""OPC DA through an OpenOPC gateway service: Pyro5 group reads, DA quality mapped to quality codes.

OPC DA is COM and lives on Windows; the gateway service there exposes it over Pyro5. `config` is the
schema, `readings` the pure mapping of a read's (item, value, quality, timestamp) tuples, and
`gateway` the runtime that owns one Pyro5 proxy in one thread per device. The protocol is spoken
here with Pyro5 (MIT); the GPL OpenOPC code is neither imported nor copied. A DA-to-UA wrapper needs
no driver of its own: it is an OPC UA server (docs/drivers.md).
"""

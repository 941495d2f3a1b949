"""gatewayd driver kind `tankbus`: ACME TankBus level concentrators, a line-based protocol over TCP.

The gateway asks `READ <channel>` and the concentrator answers `OK <channel> <value>` or
`ERR <channel> <reason>` (`fault` for a gauge in fault). Schema in `config`, runtime in `driver`.
"""

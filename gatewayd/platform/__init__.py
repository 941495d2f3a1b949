"""The platform side of the uplink: receive, verify, capture, export and watch signed batches.

The daemon never imports these; they depend only on the batch format (core.batchformat) and the
ground floor, so a platform can run them without the gateway's drivers, rules or store. The CLI
(gatewayd.cliplatform) imports them inside the commands that use them (verify, watch).
"""

"""OPC UA driver (asyncua): subscriptions with monitored items, polling where a server refuses them.

`config` is the schema (cheap to import: no asyncua), `status` and `values` are the pure mappings
from status codes and variants to quality codes and floats, `trust` decides whether a server
certificate is trusted, and `client` is the runtime that owns the session. Read-only: the driver
never calls Write, Call or any other service that changes the server.
"""

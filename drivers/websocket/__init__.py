"""The `websocket` device kind: a client of a device or vendor gateway that pushes JSON readings."""

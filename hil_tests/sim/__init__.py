"""The plant in a box: simulated PLCs with a small process model, for hardware-in-the-loop tests.

`layout` says which tags exist and where their registers are; `plc` serves them over Modbus TCP as a
separate process, so tests can kill, stop and restart a "PLC" like a real one. `serving` is the life
every simulator process shares (listen, READY, serve until SIGTERM, shut down).
"""

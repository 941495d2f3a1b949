"""Commissioning tools: what an integrator runs before the daemon, to turn a plant's devices and point
table into configuration. Each tool is read-only toward the plant and writes nothing when its input is bad.
"""

"""gatewayd: an edge daemon that reads plant values, watches alarms and forwards signed batches upstream."""

__version__ = "0.1.0"

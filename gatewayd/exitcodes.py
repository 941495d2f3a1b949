"""Exit codes of the `gatewayd` commands: 0 done, 1 failed (the message says why), 2 a usage error."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

"""`python -m ingest` is `gatewayd-ingest`."""

import sys

from ingest.cli import main

sys.exit(main())

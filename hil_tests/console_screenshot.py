"""The README's picture of the console: `python -m hil_tests.console_screenshot URL OUT.png [PAGE]`.

Run against `make demo` (its console is on http://127.0.0.1:18780/) when a leak is on, for a page with
something to show: docs/console.png was made so, of the alarms page... or the overview by default.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hil_tests.browser import chromium, severe_messages

SETTLE = 3.0  # seconds for the page to take its first snapshot and draw


def main(url: str, out: str, page: str = "overview") -> int:
    with chromium() as browser:
        browser.get(f"{url.rstrip('/')}/#{page}")
        time.sleep(SETTLE)
        browser.save_screenshot(str(Path(out)))
        errors = severe_messages(browser)
    for error in errors:
        print(f"console error: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))

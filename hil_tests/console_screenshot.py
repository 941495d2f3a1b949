"""The README's pictures of the console: `python -m hil_tests.console_screenshot URL OUT.png [PAGE]`.

PAGE is overview (the default), points, alarms, interlocks, or `trends=TAG,TAG` for those tags' last
10 minutes. docs/console-overview.png (overview) and docs/console-trend.png (`trends=GT101`) were made
so against `make demo` (its console is on http://127.0.0.1:18780/) during and after its first methane
leak, a minute or two after the start.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hil_tests.browser import chromium, severe_messages

SETTLE = 3.0  # seconds for the page to take its first snapshot and draw


def main(url: str, out: str, page: str = "overview") -> int:
    with chromium() as browser:
        browser.get(f"{url.rstrip('/')}/#{page.partition('=')[0]}")
        time.sleep(SETTLE)
        if page.startswith("trends="):
            browser.execute_script("openTrend(arguments[0])", page.partition("=")[2].split(","))
            time.sleep(SETTLE)
        browser.save_screenshot(str(Path(out)))
        errors = severe_messages(browser)
    for error in errors:
        print(f"console error: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))

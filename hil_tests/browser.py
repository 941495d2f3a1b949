"""A headless Chromium driven by Selenium: Debian's `chromium` and `chromium-driver` (the Makefile's
APT_PACKAGES), named by path so that nothing is looked up or downloaded at run time. As root, Chromium
needs --no-sandbox.

    with chromium() as browser:
        browser.get(url)
        browser.save_screenshot(path)
        severe_messages(browser)      # the console's errors and failed loads since the last call
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1400, 900)


@contextlib.contextmanager
def chromium(width: int = WINDOW[0], height: int = WINDOW[1]) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-extensions", "--disable-background-networking", f"--window-size={width},{height}"):
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield browser
    finally:
        browser.quit()


def severe_messages(browser: webdriver.Chrome) -> list[str]:
    """The page's console errors (script errors, failed loads) since the last call."""
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]

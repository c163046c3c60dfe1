"""The operator console in a real browser: Debian's Chromium driven by Selenium through
Debian's chromedriver (never a browser or driver that Selenium would download).

`chromium()` starts a headless Chromium; `ConsolePage` drives the page of an engine:
sign in through the form, wait for the page's state (`window.pledgewatch`), click, and
keep screenshots in `tests/artifacts/`. The browser test and the console's frame-time
benchmark share it.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "tests" / "artifacts"
WINDOW = (1440, 1000)


def chromium_missing() -> str | None:
    """What this machine lacks to run the browser tests; None when it has it all."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.is_file():
            return (
                f"{path} is missing: install Debian's {package} "
                "(`bash scripts/services.sh chromium` does)"
            )
    return None


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """A headless Chromium with a throwaway profile, its console log kept; quit at the end."""
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    with tempfile.TemporaryDirectory(prefix="pw-chromium-") as profile:
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            f"--user-data-dir={profile}",
        ):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        try:
            yield driver
        finally:
            driver.quit()


class ConsolePage:
    """The console of the engine at `base_url`, in `driver`."""

    def __init__(self, driver: webdriver.Chrome, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url.rstrip("/")
        self.console_log: list[dict[str, Any]] = []

    def open(self) -> None:
        """Load the page from the engine and wait until it shows the form or the console."""
        self.driver.get(f"{self.base_url}/console/")
        self.wait_for(
            lambda: self.find_all("#signin") or self.find_all("#side"), 20, "the page to load"
        )

    def sign_in(self, name: str, password: str) -> None:
        """Fill in the sign-in form and wait for the console."""
        self.find("#signin-name").send_keys(name)
        self.find("#signin-password").send_keys(password)
        self.click("#signin-submit")
        self.wait_for(lambda: self.session_name() == name, 20, f"{name} to be signed in")

    def session_name(self) -> str | None:
        """Who the page says is signed in (None on the sign-in form)."""
        name = self.js("return window.pledgewatch ? window.pledgewatch.session.name : null")
        return None if name is None else str(name)

    def sign_out(self) -> None:
        """Press Sign out and wait for the form."""
        self.click("#sign-out")
        self.wait_for(lambda: self.find_all("#signin"), 10, "the sign-in form")

    def js(self, script: str, *args: object) -> Any:  # whatever the page answers
        """Run `script` in the page and return its value."""
        return self.driver.execute_script(script, *args)

    def js_async(self, script: str, *args: object) -> Any:
        """Run an async `script` in the page; it answers by calling its last argument."""
        return self.driver.execute_async_script(script, *args)

    def text(self, css: str) -> str | None:
        """The text of the element `css` selects, read in the page (None if there is none):
        never stale, however often the page redraws it."""
        found = self.js(
            "const e = document.querySelector(arguments[0]); return e && e.innerText", css
        )
        return None if found is None else str(found)

    def find(self, css: str) -> WebElement:
        """The element `css` selects (NoSuchElementException if none)."""
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        """The elements `css` selects."""
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def click(self, css: str) -> None:
        """Click the element `css` selects, once it is there and enabled."""
        element = self.wait_for(
            lambda: next((e for e in self.find_all(css) if e.is_enabled()), None), 10, css
        )
        element.click()

    def wait_for(
        self, probe: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.1
    ) -> Any:
        """Poll `probe` until it returns something truthy, and return that; AssertionError
        naming `what` (and the page's console log) after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = probe()
            if got:
                return got
            if time.monotonic() > deadline:
                log = "\n".join(str(e.get("message")) for e in self.browser_log()[-20:])
                msg = f"waited {timeout_s} s for {what}; the page's console said:\n{log}"
                raise AssertionError(msg)
            time.sleep(poll_s)

    def browser_log(self) -> list[dict[str, Any]]:
        """Every console message of the page so far (read from the driver and kept)."""
        entries: list[dict[str, Any]] = self.driver.get_log("browser")  # type: ignore[no-untyped-call]  # selenium leaves it untyped
        self.console_log += entries
        return self.console_log

    def screenshot(self, name: str) -> Path:
        """Save a PNG of the window in `tests/artifacts/`; its path."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

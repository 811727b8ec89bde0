"""Headless Chromium for browser tests: a session-wide ``browser`` and a per-test ``page`` that leaves a screenshot.

Chromium is the system's (Debian's ``chromium`` package, or ``TWEETSHOP_TEST_CHROMIUM``), driven by Python
Playwright through ``executable_path``: never ``playwright install``, which downloads a browser of its own.
The tests skip, saying why, only when Playwright or Chromium is not installed.

Playwright's sync API runs its own event loop in a greenlet and marks that loop as this thread's running loop
between calls; pytest-asyncio then refuses to run any later async test ("another loop is running"). So the
mark is set only while a test that uses the browser runs, and cleared after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tweetshop_devstack.pytest_plugin import KafkaServer, scratch_processes

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ENV_CHROMIUM = "TWEETSHOP_TEST_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Sandboxing needs user namespaces (absent in containers, and as root); the rest keeps a test browser off the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
# A common phone (iPhone 12-15 class): pages are checked where buyers use them.
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 1,
    "is_mobile": True,
    "has_touch": True,
}


@dataclass(frozen=True)
class Shop:
    """Where the services of a module's shop answer."""

    webapp: str
    catalog: str
    feed: str
    checkout: str
    tracking: str
    stripe: str


StartShop = Callable[[str, dict[str, str]], contextlib.AbstractContextManager[Shop]]


@pytest.fixture(scope="module")
def start_shop(
    request: pytest.FixtureRequest,
    postgres_admin_dsn: str,
    kafka_server: KafkaServer,
    stripe_base_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> StartShop:
    """Starts the whole system for a module: catalog, feed, checkout, tracking and the web app as processes of
    their own, on localstripe (stopped, and their database dropped, at the end). Called with the name of the log
    folder and the module's own variables."""

    @contextlib.contextmanager
    def start(log_name: str, variables: dict[str, str]) -> Iterator[Shop]:
        log_dir = tmp_path_factory.mktemp(log_name)
        with scratch_processes(request, postgres_admin_dsn, kafka_server, log_dir) as processes:
            env = {
                "TWEETSHOP_STRIPE_URL": stripe_base_url,
                "TWEETSHOP_STRIPE_PUBLISHABLE_KEY": "pk_test_browser_tests",
                **variables,
            }
            started = processes.start_many(["catalog", "feed", "checkout", "tracking", "webapp"], env=env)
            yield Shop(stripe=stripe_base_url, **{s.name: s.base_url for s in started})

    return start


def chromium_executable() -> str | None:
    """The Chromium to drive: ``TWEETSHOP_TEST_CHROMIUM`` if set, else the first one on PATH."""
    explicit = os.environ.get(ENV_CHROMIUM, "").strip()
    if explicit:
        return explicit
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot_path(root: Path, test_name: str) -> Path:
    """``test-output/screenshots/<test name>.png`` under the repository (parametrised names made file-safe)."""
    return root / "test-output" / "screenshots" / (re.sub(r"[^\w.-]+", "_", test_name).strip("_") + ".png")


class _PlaywrightSession:
    """The session's browser and the event loop Playwright's sync API drives it with."""

    def __init__(self, browser: Browser, loop: asyncio.AbstractEventLoop) -> None:
        self.browser = browser
        self.loop = loop

    def enter(self) -> None:
        """Mark Playwright's loop as running again, as its sync API expects between calls."""
        asyncio._set_running_loop(self.loop)

    def leave(self) -> None:
        """Clear the mark, so pytest-asyncio can run the next async test in this thread."""
        asyncio._set_running_loop(None)


@pytest.fixture(scope="session")
def playwright_session() -> Iterator[_PlaywrightSession]:
    """Playwright and one headless Chromium for the whole session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Python playwright is not installed (pip install playwright; never `playwright install`)")
    executable = chromium_executable()
    if executable is None:
        pytest.skip(f"Chromium is not installed (apt-get install -y chromium, or set {ENV_CHROMIUM})")
    with sync_playwright() as playwright:
        session = _PlaywrightSession(
            playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True),
            asyncio.get_running_loop(),  # Playwright's own: marked running right after each sync call
        )
        session.leave()
        try:
            yield session
        finally:
            session.enter()
            session.browser.close()


@pytest.fixture(autouse=True)
def _playwright_owns_the_loop_during_browser_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """Around a test that uses the browser (set up first, torn down last): Playwright's loop is the running one."""
    if "browser" not in request.fixturenames:
        yield
        return
    session: _PlaywrightSession = request.getfixturevalue("playwright_session")
    session.enter()
    try:
        yield
    finally:
        session.leave()


@pytest.fixture(scope="session")
def browser(playwright_session: _PlaywrightSession) -> Browser:
    """One headless Chromium for the whole session (each test gets its own context through ``page``)."""
    return playwright_session.browser


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh phone-sized page; its final state is saved to ``test-output/screenshots/<test name>.png``."""
    context = browser.new_context(**PHONE)
    context.set_default_timeout(15_000)
    opened = context.new_page()
    try:
        yield opened
    finally:
        target = screenshot_path(request.config.rootpath, request.node.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            opened.screenshot(path=str(target), full_page=True)
        except Exception as exc:  # a crashed page must not hide the test's own outcome
            warnings.warn(f"no screenshot for {request.node.name}: {exc}", stacklevel=1)
        finally:
            context.close()

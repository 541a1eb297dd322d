"""Fixtures for the browser tests: one JupyterLab server and one headless Chromium per session.

Skipped, with the reason printed at the end of the run, when Debian's `chromium` is not on PATH. Whatever
happens (a failure, a timeout, Ctrl-C), kernels, server and browser are shut down and no process is left.
Screenshots: test-output/browser/ (one per widget on success; the page and every widget on failure).
`jupyter_lab` gives each test its own browser context; `module_lab` one shared by a module's tests (the widget
gallery opens one page for all its tests).
"""

from __future__ import annotations

import itertools

import lab
import pytest

OUTPUT_DIR = lab.OUTPUT_DIR
VIEWPORT = {"width": 1400, "height": 1000}


def _skip_reason() -> str | None:
    if lab.chromium_executable() is None:
        return "browser tests skipped: Chromium not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "browser tests skipped: the playwright package is not installed (make setup)"
    return None


SKIP_REASON = _skip_reason()
_SKIPPED = pytest.StashKey[int]()


def pytest_collection_modifyitems(config, items):
    # The website's tests go last and its build starts now, beside the JupyterLab tests (test_site.SiteBuild).
    site = [item for item in items if item.path.name == "test_site.py"]
    if site and len(site) < len(items):
        items[:] = [item for item in items if item not in site] + site
        from test_site import SITE_BUILD, SiteBuild

        config.stash[SITE_BUILD] = SiteBuild()
    if SKIP_REASON is None:
        return
    browser_items = [item for item in items if item.get_closest_marker("browser")]
    for item in browser_items:
        item.add_marker(pytest.mark.skip(reason=SKIP_REASON))
    config.stash[_SKIPPED] = len(browser_items)


def pytest_unconfigure(config):
    from test_site import SITE_BUILD

    build = config.stash.get(SITE_BUILD, None)
    if build is not None:   # a run that ended before the website's tests: no build left running
        build.stop()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    # pytest -q does not list skip reasons; say it plainly so `make test` cannot hide it.
    skipped = config.stash.get(_SKIPPED, 0)
    if skipped:
        terminalreporter.write_line(f"{SKIP_REASON} ({skipped} tests)", yellow=True, bold=True)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)  # lets the fixtures below know a test failed
    return report


@pytest.fixture(scope="session")
def lab_server():
    server = lab.LabServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
    leftover = server.leftover_processes()
    assert not leftover, f"processes left behind by the jupyter server: {leftover}"


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        # The system Chromium, never a downloaded one. Playwright gives it a fresh temporary profile
        # (--user-data-dir) and deletes it on close.
        chromium = playwright.chromium.launch(executable_path=lab.chromium_executable(), headless=True,
                                              args=lab.CHROMIUM_FLAGS, timeout=lab.SERVER_START_S * 1000)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


class JupyterLab:
    """What a test gets: `open(path)` opens a notebook in a new page (its own JupyterLab workspace)."""

    _workspaces = itertools.count()

    def __init__(self, server: lab.LabServer, context, test_name: str):
        self.server = server
        self.context = context
        self.test_name = lab.safe_name(test_name)
        self.drivers: list[lab.NotebookDriver] = []

    def open(self, rel_path: str, **kwargs) -> lab.NotebookDriver:
        page = self.context.new_page()
        # A workspace of its own: JupyterLab restores no notebook (nor starts a kernel) of an earlier test.
        workspace = f"t{next(self._workspaces)}-{self.test_name}"[:60]
        driver = lab.NotebookDriver(page, self.server, rel_path, workspace=workspace, **kwargs)
        self.drivers.append(driver)
        driver.open()
        return driver

    def screenshot_widgets(self, driver: lab.NotebookDriver, stem: str, indices=None) -> list[str]:
        """One PNG per widget cell (all, or those in `indices`) in test-output/browser/; returns the names."""
        names = []
        if indices is None:
            indices = range(driver.page.evaluate("window.__labTest ? window.__labTest.areas().length : 0"))
        for index in indices:
            path = OUTPUT_DIR / f"{stem}-widget{index}.png"
            driver.screenshot(path, index)
            names.append(path.name)
        return names


@pytest.fixture
def jupyter_lab(request, lab_server, browser):
    context = browser.new_context(viewport=VIEWPORT)
    session = JupyterLab(lab_server, context, request.node.name)
    try:
        yield session
    finally:
        try:
            failed = any(getattr(request.node, f"report_{when}", None) is not None
                         and getattr(request.node, f"report_{when}").failed for when in ("setup", "call"))
            if failed:
                for n, driver in enumerate(session.drivers):
                    stem = f"FAILED-{session.test_name}-{n}"
                    driver.screenshot(OUTPUT_DIR / f"{stem}-page.png")
                    session.screenshot_widgets(driver, stem)
        finally:
            context.close()
            lab_server.shutdown_kernels()


@pytest.fixture(scope="module")
def module_lab(request, lab_server, browser):
    """Like `jupyter_lab`, but one for all the tests of a module (one page can serve several tests); its kernels
    are shut down at the end of the module. Failure screenshots are the module's job."""
    context = browser.new_context(viewport=VIEWPORT)
    session = JupyterLab(lab_server, context, request.module.__name__)
    try:
        yield session
    finally:
        try:
            context.close()
        finally:
            lab_server.shutdown_kernels()

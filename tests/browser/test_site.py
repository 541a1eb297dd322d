"""The course's static website (`make site`) as a reader sees it.

The module builds the site itself (tools/site.py: strict, nothing executed; in the background while the
JupyterLab tests run, when they run in the same session), serves it from a local HTTP server
on 127.0.0.1, and then
- follows every internal link and image of every page over HTTP (no browser needed): each answers 200, and each
  link to a section (#anchor) lands on an element with that id;
- opens the landing page and one notebook page in headless Chromium (Debian's, as the widget tests do): the
  notebook map and the two tracks are there, every figure has loaded (naturalWidth > 0), every table of the
  notebook is on the page, each widget shows its static copy (chart, table, "live in JupyterLab"), every
  internal link resolves; a click on the map reaches the notebook.
Screenshots and timings: test-output/site/.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import lab
import pytest

REPO = lab.REPO
OUTPUT_DIR = REPO / "test-output" / "site"
NOTEBOOK = "05_dualpipe"          # the notebook page the browser test reads
NOTEBOOKS = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TIMINGS: dict[str, float] = {}


# -- build and serve --------------------------------------------------------------------------------------------

class SiteBuild:
    """`make site`'s build (tools/site.py) in a process of its own. The browser conftest starts it as soon as the
    session knows it will need it and runs this module last, so the build (one core, a dozen seconds) overlaps
    the JupyterLab tests, which leave the other core mostly idle."""

    def __init__(self):
        self.start = time.monotonic()
        OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
        self.log = OUTPUT_DIR / "build.log"     # a file, not a pipe: nobody reads the output until the end
        with self.log.open("w") as log:
            self.proc = subprocess.Popen([lab.venv_python(), "-m", "tools.site"], cwd=REPO, stdout=log,
                                         stderr=subprocess.STDOUT, text=True)

    def wait(self) -> Path:
        """The built site's HTML folder, once the build has finished (AssertionError with its output if it failed)."""
        self.proc.wait(timeout=600)
        output = self.log.read_text()
        TIMINGS["waited_s"] = round(time.monotonic() - self.start, 1)   # since the build started
        assert self.proc.returncode == 0, f"make site failed:\n{output}"
        from_line = re.search(r"Site built in ([\d.]+) s: (\S+)index\.html", output)
        assert from_line, output
        TIMINGS["build_s"] = float(from_line.group(1))
        return Path(from_line.group(2))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


SITE_BUILD = pytest.StashKey[SiteBuild]()


@pytest.fixture(scope="module")
def site_dir(request) -> Path:
    """Build the site the way `make site` does, into the ignored _site/, and return its HTML folder."""
    build = request.config.stash.get(SITE_BUILD, None) or SiteBuild()
    try:
        return build.wait()
    finally:
        build.stop()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output readable
        pass


@pytest.fixture(scope="module")
def site_url(site_dir):
    """The built site served over HTTP on 127.0.0.1 (a free port), so a missing page is a real 404."""
    handler = functools.partial(_QuietHandler, directory=str(site_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
        (OUTPUT_DIR / "timings.json").write_text(json.dumps(TIMINGS, indent=2))


# -- reading pages without a browser ------------------------------------------------------------------------

class _Page(HTMLParser):
    """The ids, links (a href) and resources (img src, link href, script src) of one HTML page."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.resources: list[str] = []
        self.redirect: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        elif tag == "img" and attrs.get("src"):
            self.resources.append(attrs["src"])
        elif tag == "script" and attrs.get("src"):
            self.resources.append(attrs["src"])
        elif tag == "link" and attrs.get("href") and attrs.get("rel") != ["preconnect"]:
            self.resources.append(attrs["href"])
        elif tag == "meta" and (attrs.get("http-equiv") or "").lower() == "refresh":
            self.redirect = (attrs.get("content") or "").split("url=", 1)[-1]


@functools.cache
def fetch(url: str) -> tuple[int, str]:
    """HTTP status and (for HTML) text of a same-site URL, without its fragment."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            kind = response.headers.get("Content-Type", "")
            body = response.read()
            return response.status, body.decode("utf-8", "replace") if "html" in kind else ""
    except urllib.error.HTTPError as exc:
        return exc.code, ""


@functools.cache
def parse(url: str) -> _Page:
    page = _Page()
    page.feed(fetch(url)[1])
    return page


def internal(base: str, page_url: str, href: str) -> str | None:
    """The absolute URL of `href` if it points inside the site, else None (external, mailto, javascript)."""
    absolute = urllib.parse.urljoin(page_url, href)
    return absolute if absolute.startswith(base) else None


def broken_targets(base: str, page_url: str, hrefs: list[str], anchors: bool = True) -> list[str]:
    """Every internal href of a page that does not answer 200, or whose #anchor is not an id of its target."""
    broken = []
    for href in hrefs:
        target = internal(base, page_url, href)
        if target is None:
            continue
        url, _, fragment = target.partition("#")
        status = fetch(url)[0]
        if status != 200:
            broken.append(f"{href} -> HTTP {status}")
        elif anchors and fragment and urllib.parse.unquote(fragment) not in parse(url).ids:
            broken.append(f"{href} -> no element with id {urllib.parse.unquote(fragment)!r} on {url}")
    return broken


def site_pages(site_dir: Path) -> list[str]:
    skip = {"genindex.html", "search.html"}
    return sorted(p.relative_to(site_dir).as_posix() for p in site_dir.rglob("*.html")
                  if p.name not in skip and "_static" not in p.parts and "_sources" not in p.parts)


# -- the whole site over HTTP -----------------------------------------------------------------------------------

def test_site_has_the_landing_page_every_notebook_every_lesson_plan_and_the_claims_map(site_dir):
    pages = set(site_pages(site_dir))
    expected = {"index.html", "book/index.html", "lessons/README.html", "lessons/claims.html"}
    expected |= {f"notebooks/{stem}.html" for stem in NOTEBOOKS}
    expected |= {f"lessons/{stem}.html" for stem in NOTEBOOKS}   # one plan per notebook
    assert expected <= pages, sorted(expected - pages)


def test_every_internal_link_and_resource_of_every_page_resolves(site_dir, site_url):
    start = time.monotonic()
    problems, checked = [], 0
    for rel in site_pages(site_dir):
        url = site_url + rel
        assert fetch(url)[0] == 200, url
        page = parse(url)
        problems += [f"{rel}: {p}" for p in broken_targets(site_url, url, page.links)]
        problems += [f"{rel}: {p}" for p in broken_targets(site_url, url, page.resources, anchors=False)]
        checked += len(page.links) + len(page.resources)
    TIMINGS["crawl_s"] = round(time.monotonic() - start, 1)
    assert checked > 500, f"only {checked} links and resources found: is the site empty?"
    assert not problems, "broken links on the site:\n" + "\n".join(problems[:40])


def test_the_link_checker_sees_a_broken_link_and_a_missing_anchor(site_url):
    page = site_url + "book/index.html"
    assert broken_targets(site_url, page, ["../notebooks/05_dualpipe.html"]) == []
    assert broken_targets(site_url, page, ["../notebooks/99_missing.html"]) == [
        "../notebooks/99_missing.html -> HTTP 404"]
    assert broken_targets(site_url, page, ["../notebooks/05_dualpipe.html#no-such-section"])
    assert broken_targets(site_url, page, ["https://example.org/not-checked"]) == []


# -- two pages in Chromium ----------------------------------------------------------------------------------

@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def figures_loaded(page) -> dict:
    """Scroll through the page (so nothing waits for a viewport), then count images and broken ones."""
    page.evaluate("""async () => {
        for (let y = 0; y < document.body.scrollHeight; y += 600) { window.scrollTo(0, y);
            await new Promise(r => requestAnimationFrame(r)); }
        window.scrollTo(0, 0);
    }""")
    page.wait_for_function("() => Array.from(document.images).every(img => img.complete)", timeout=30000)
    return page.evaluate("""() => {
        const imgs = Array.from(document.querySelectorAll('article img'));
        return {count: imgs.length,
                broken: imgs.filter(img => !(img.naturalWidth > 0)).map(img => img.getAttribute('src')),
                in_outputs: document.querySelectorAll('article .cell_output img').length,
                tables: document.querySelectorAll('article .cell_output table').length};
    }""")


def page_links(page) -> list[str]:
    return page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))")


def notebook_outputs(stem: str) -> dict:
    """What the committed notebook stores: PNG figures and HTML tables among its outputs."""
    nb = json.loads((REPO / "notebooks" / f"{stem}.ipynb").read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    data = [o.get("data", {}) for o in outputs]
    return {"png": sum("image/png" in d for d in data),
            "tables": sum("<table" in "".join(d.get("text/html", "")) for d in data),
            "widgets": sum("course-widget-static" in "".join(d.get("text/html", "")) for d in data)}


@pytest.mark.browser
def test_landing_page_shows_the_map_and_the_tracks_and_leads_to_a_notebook(page, site_url):
    start = time.monotonic()
    response = page.goto(site_url, wait_until="load")
    assert response.ok
    page.wait_for_url("**/book/index.html")            # the site's root redirects to the landing page
    assert "How DeepSeek-V3 trains so cheaply" in page.title()
    headings = page.locator("article h2").all_inner_texts()
    assert any("Course map" in h for h in headings) and any("Two tracks" in h for h in headings), headings
    map_links = page.locator("#course-map table a").evaluate_all("els => els.map(a => a.getAttribute('href'))")
    for stem in NOTEBOOKS:
        assert f"../notebooks/{stem}.html" in map_links, (stem, map_links)
        assert f"../lessons/{stem}.html" in map_links, (stem, map_links)
    assert page.get_by_text("Classroom: four 90-minute sessions").count() == 1
    assert page.get_by_text("Self-study: one notebook per sitting").count() == 1
    figures = figures_loaded(page)
    assert not figures["broken"], figures
    broken = broken_targets(site_url, page.url, page_links(page))
    assert not broken, broken
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT_DIR / "landing.png"), full_page=True)
    page.locator("#course-map table a", has_text="DualPipe").first.click()
    page.wait_for_url(f"**/notebooks/{NOTEBOOK}.html")
    assert "DualPipe" in page.locator("article h1").first.inner_text()
    TIMINGS["landing_s"] = round(time.monotonic() - start, 1)


@pytest.mark.browser
def test_notebook_page_shows_every_figure_and_table_and_its_links_resolve(page, site_url):
    start = time.monotonic()
    response = page.goto(f"{site_url}notebooks/{NOTEBOOK}.html", wait_until="load")
    assert response.ok
    stored = notebook_outputs(NOTEBOOK)
    assert stored["png"] >= 3, stored
    figures = figures_loaded(page)
    assert not figures["broken"], f"figures that did not load: {figures['broken']}"
    assert figures["in_outputs"] >= stored["png"], (figures, stored)
    assert figures["tables"] >= stored["tables"], (figures, stored)
    # Each widget of the notebook appears as its static copy: chart and table, saying it is live in JupyterLab.
    copies = page.locator("article .course-widget-static")
    assert copies.count() == stored["widgets"] >= 1, (copies.count(), stored)
    for n in range(copies.count()):
        copy = copies.nth(n)
        assert "run this notebook in JupyterLab" in copy.inner_text()
        assert copy.locator("img").evaluate("img => img.naturalWidth") > 0
        assert copy.locator("table").count() >= 1
    links = page_links(page)
    assert any("lessons/" in href for href in links) or any("notebooks/" in href for href in links), links
    broken = broken_targets(site_url, page.url, links)
    assert not broken, broken
    # The previous/next buttons chain the course in order.
    assert page.locator("a.right-next").get_attribute("href").endswith(".html")
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT_DIR / f"{NOTEBOOK}.png"), full_page=True)
    TIMINGS["notebook_page_s"] = round(time.monotonic() - start, 1)


"""Drive the course's widgets the way a learner does: JupyterLab in headless Chromium (Playwright).

Two halves:
- `LabServer`: a real `jupyter lab` from the project's .venv on 127.0.0.1 (free port, token), isolated from
  the user's Jupyter config/settings/workspaces, with autosave off (the real notebooks are never written)
  and notebook windowing off (every cell stays in the DOM). `stop()` leaves no process behind: kernels
  are shut down through the REST API, then the server, then any descendant it left (by pid).
- `NotebookDriver`: open a notebook, run chosen cells one after another through `window.jupyterapp.commands`
  (as Shift+Enter does), wait for a cell's widget itself (not the kernel-idle indicator), read a widget's
  chart bytes and table text, move a slider with the keyboard, change a dropdown, and watch for tracebacks.

The tests are in test_widgets_in_lab.py (the widget gallery, the harness's self-checks) and
test_slides_in_lab.py; fixtures in conftest.py.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUTPUT_DIR = REPO / "test-output" / "browser"   # screenshots and timings (gitignored)

# The flags seen working here (Debian chromium 156, playwright 1.65, JupyterLab 4.6). Playwright adds
# --headless itself and a fresh temporary --user-data-dir for every launch (deleted on close).
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]

# Generous: two busy CPU cores shared with other work; each wait is on a condition, never a fixed sleep.
SERVER_START_S = 90
RUN_CELLS_S = 240        # cells run in < 60 s; x4 for a loaded machine
WIDGET_RENDER_S = 60
REDRAW_S = 45

# JupyterLab user settings written into a throw-away settings dir.
LAB_SETTINGS = {
    # Never write the course's notebooks: the tests clear and re-run them in the browser only.
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    # Keep every cell attached to the DOM so widgets below the fold are found.
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    # No network, no news toast over the notebook.
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}


class LabError(AssertionError):
    """A failed expectation about the notebook in the browser (a test failure, with the reason)."""


def chromium_executable() -> str | None:
    """The system Chromium (Debian's `chromium` package) on PATH, or None."""
    return shutil.which("chromium")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv_python() -> str:
    """The project's .venv interpreter (the one learners' `make lab` uses), else the running one."""
    candidate = REPO / ".venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def _descendants(pid: int) -> list[int]:
    try:
        import psutil
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except Exception:  # process already gone, or psutil missing
        return []


def _kill_pids(pids: list[int], grace_s: float = 5.0) -> None:
    """SIGTERM the given pids (only processes this harness started), then SIGKILL what is still alive."""
    alive = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            alive.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _pid_alive(pid)]
        if alive:
            time.sleep(0.1)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        import psutil
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE
    except Exception:
        return False


class LabServer:
    """A JupyterLab server on 127.0.0.1 rooted at the repository, token-protected, fully isolated."""

    def __init__(self, root_dir: Path = REPO):
        self.root_dir = Path(root_dir)
        self.port = free_port()
        self.token = os.urandom(16).hex()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="lab-browser-tests-"))
        self.log_path = self.tmp / "jupyter-lab.log"
        self.proc: subprocess.Popen | None = None
        self._known_children: set[int] = set()

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> LabServer:
        settings = self.tmp / "settings"
        for rel, value in LAB_SETTINGS.items():
            path = settings / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
        env = dict(os.environ)
        env.update({
            "JUPYTER_RUNTIME_DIR": str(self.tmp / "runtime"),
            "JUPYTER_CONFIG_DIR": str(self.tmp / "config"),          # ignore the user's jupyter config
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(self.tmp / "workspaces"),
            "IPYTHONDIR": str(self.tmp / "ipython"),
            "PYTHONUNBUFFERED": "1",
        })
        env.pop("MPLBACKEND", None)  # the inline backend, as in class
        cmd = [
            venv_python(), "-m", "jupyterlab", "--no-browser",
            "--ip=127.0.0.1", f"--port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            "--LabApp.expose_app_in_browser=True",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.terminals_enabled=False",
            # Opening a notebook writes a checkpoint copy; keep it in the throw-away dir, not beside the
            # course's notebooks (where a later test would read it as part of the course).
            f"--FileCheckpoints.checkpoint_dir={self.tmp / 'checkpoints'}",
        ]
        if os.geteuid() == 0:
            cmd.append("--allow-root")  # as root, jupyter lab exits at once without it
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.root_dir, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        try:
            self._wait_until_up()
        except BaseException:
            log = self.log_tail()
            self.stop()
            raise RuntimeError(f"jupyter lab did not start:\n{log}") from None
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}")
            try:
                self.api("GET", "/api/status")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no answer in {SERVER_START_S} s")
            time.sleep(0.2)

    def stop(self) -> None:
        """Shut down kernels (REST), then the server; then kill by pid anything it started that survived."""
        if self.proc is None:
            return
        self.remember_children()
        if self.proc.poll() is None:
            try:
                self.shutdown_kernels()
            except Exception:
                pass
            self.remember_children()
            try:
                self.api("POST", "/api/shutdown")
            except Exception:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _kill_pids([self.proc.pid])
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        _kill_pids([pid for pid in self._known_children if _pid_alive(pid)])
        self._log.close()
        self.proc = None
        self.final_log = self.log_tail(200)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def remember_children(self) -> None:
        """Record the server's descendants (kernels run in their own session) so stop() can reap them."""
        if self.proc is not None and self.proc.poll() is None:
            self._known_children.update(_descendants(self.proc.pid))

    def leftover_processes(self) -> list[int]:
        return [pid for pid in self._known_children if _pid_alive(pid)]

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # -- REST --------------------------------------------------------------------------------------------
    def api(self, method: str, path: str, timeout: float = 10.0):
        req = urllib.request.Request(self.base_url + path, method=method,
                                     headers={"Authorization": f"token {self.token}"},
                                     data=b"" if method in ("POST", "PUT") else None)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self, timeout: float = 20.0) -> None:
        """Close every session and kernel on the server (kernels persist between tests otherwise). The requests
        go out side by side: each waits for its kernel to exit, and a module leaves two or three."""
        self.remember_children()

        def delete(path: str) -> None:
            with contextlib.suppress(urllib.error.HTTPError):
                self.api("DELETE", path, timeout=timeout)

        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(delete, [f"/api/sessions/{s['id']}" for s in self.api("GET", "/api/sessions")]))
            list(pool.map(delete, [f"/api/kernels/{k['id']}" for k in self.api("GET", "/api/kernels")]))
        deadline = time.monotonic() + timeout
        while self.api("GET", "/api/kernels") and time.monotonic() < deadline:
            time.sleep(0.2)

    def notebook_url(self, rel_path: str, workspace: str | None = None) -> str:
        prefix = f"/lab/workspaces/{workspace}" if workspace else "/lab"
        return f"{self.base_url}{prefix}/tree/{rel_path}?token={self.token}"



# ---------------------------------------------------------------------------------------------------------
# In-page JavaScript. A "widget area" is the output area of a code cell that displays a widget: its controls
# and its chart/table (nested Output widgets, Image/HTML widgets, or a second `display(out)`) are all in it.
# The kernel tracker counts the comm messages the page sends (a control changed) and clears each one when the
# kernel reports idle for it: then the widget's callback has run and its new output is on its way. It also
# keeps the tracebacks the kernel printed while handling them: a callback that raises outside an Output
# widget shows the learner nothing at all, so the test has to read them here.
# ---------------------------------------------------------------------------------------------------------
JS_HELPERS = r"""
(() => {
  if (window.__labTest) return;
  const TOP = '.jp-CodeCell .jp-Cell-outputArea';
  const STDERR = '[data-mime-type="application/vnd.jupyter.stderr"]';
  const isTraceback = (t) => /Traceback \(most recent call last\)|^\s*\w*(Error|Exception)\b.*:/m.test(t);
  const shown = (el) => el.checkVisibility ? el.checkVisibility() : el.offsetParent !== null;
  const fnv = (bytes) => {            // FNV-1a: enough to tell two images apart
    let h = 0x811c9dc5;
    for (let i = 0; i < bytes.length; i++) { h ^= bytes[i]; h = Math.imul(h, 0x01000193) >>> 0; }
    return h.toString(16) + ':' + bytes.length;
  };
  const notebook = () => document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const comms = {sent: 0, pending: new Set(), errors: []};
  kernel.anyMessage.connect((_, {msg, direction}) => {
    const type = msg.header.msg_type;
    if (direction === 'send' && type === 'comm_msg') {
      comms.sent += 1; comms.pending.add(msg.header.msg_id);
    } else if (direction === 'recv' && msg.parent_header && msg.parent_header.msg_type === 'comm_msg') {
      if (type === 'status' && msg.content.execution_state === 'idle') {
        comms.pending.delete(msg.parent_header.msg_id);
      } else if (type === 'stream' && msg.content.name === 'stderr' && isTraceback(msg.content.text)) {
        comms.errors.push(msg.content.text);
      } else if (type === 'error') {
        comms.errors.push((msg.content.traceback || []).join('\n').replace(/\x1b\[[0-9;]*m/g, ''));
      }
    }
  });
  window.__labTest = {
    comms() { return {sent: comms.sent, pending: comms.pending.size, errors: comms.errors.length}; },
    commErrors() { return comms.errors.slice(); },
    areas() {
      const nb = notebook();
      return nb ? [...nb.querySelectorAll(TOP)].filter(el => el.querySelector('.jupyter-widgets')) : [];
    },
    errors() {
      const nb = notebook();
      return nb ? this.errorsIn(nb) : [];
    },
    errorsIn(node) {
      return [...node.querySelectorAll(STDERR)].map(e => e.innerText).filter(isTraceback);
    },
    async signature(i) {
      const area = this.areas()[i];
      if (!area) return null;
      const images = [];
      for (const img of area.querySelectorAll('img')) {
        if (!img.src || !shown(img)) continue;   // a hidden chart (an invalid setting) is no chart
        try {
          images.push(fnv(new Uint8Array(await (await fetch(img.src)).arrayBuffer())));
        } catch (e) { images.push('unreadable:' + img.src.slice(0, 64)); }
      }
      for (const svg of [...area.querySelectorAll('.jp-RenderedSVG svg')].filter(shown)) {
        images.push(fnv(new TextEncoder().encode(svg.outerHTML)));
      }
      const label = (el) => (el.querySelector('.widget-label') || {}).innerText || '';
      return {
        images,
        tables: [...area.querySelectorAll('table')].filter(shown).map(t => t.innerText.trim()).filter(t => t),
        sliders: [...area.querySelectorAll('.widget-slider')].map(s => ({
          label: label(s), value: (s.querySelector('.widget-readout') || {}).innerText || ''})),
        dropdowns: [...area.querySelectorAll('.widget-dropdown')].map(d => {
          const select = d.querySelector('select');
          return {label: label(d), value: select ? select.value : '',
                  options: select ? [...select.options].map(o => o.value) : []};
        }),
        // What the widget shows besides its controls: HTML widgets (messages, tables), Output widgets.
        shows: [...area.querySelectorAll('.widget-html-content, .widget-output')].filter(shown)
                 .map(e => e.innerText.trim()).join('\n'),
        text: area.innerText.slice(0, 4000),
        errors: [...area.querySelectorAll(STDERR)].map(e => e.innerText).filter(isTraceback),
      };
    },
  };
})()
"""

# Run in the notebook's kernel by the sabotage check: every user callback observing a widget trait (what
# `interact`, `interactive_output` and `.observe` register) is replaced by one that raises. traitlets' own
# handlers (EventHandler: ipywidgets' internal syncing) are kept, so the controls still move.
SABOTAGE_CODE = r"""
import ipywidgets as _ipw, traitlets as _tl
def _broken_widget_callback(change):
    raise RuntimeError("widget callback deliberately broken by the browser test (sabotage check)")
_broken_count = 0
for _widget in list(_ipw.widgets.widget._instances.values()):
    for _by_kind in _widget._trait_notifiers.values():
        for _callbacks in _by_kind.values():
            for _i, _cb in enumerate(_callbacks):
                if not isinstance(_cb, _tl.traitlets.EventHandler):
                    _callbacks[_i] = _broken_widget_callback
                    _broken_count += 1
"""


@dataclass
class Signature:
    """What a widget area shows: chart image hashes, metrics table text, control values, tracebacks."""

    images: list[str]
    tables: list[str]
    sliders: list[dict]
    dropdowns: list[dict]
    shows: str
    text: str
    errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """A chart image and a table are on screen."""
        return bool(self.images) and bool(self.tables)

    @property
    def display(self) -> tuple:
        """Everything but the controls' own readouts."""
        return tuple(self.images), tuple(self.tables), self.shows


@dataclass
class Interaction:
    control: str          # "slider" or "dropdown"
    label: str
    before: str
    after: str


class NotebookDriver:
    """One notebook open in one browser page."""

    def __init__(self, page, server: LabServer, rel_path: str, workspace: str | None = None,
                 redraw_s: float = REDRAW_S):
        self.page = page
        self.server = server
        self.rel_path = rel_path
        self.workspace = workspace
        self.redraw_s = redraw_s
        self._log_offset = server.log_size()
        self._comm_errors_seen = 0

    # -- open and run ------------------------------------------------------------------------------------
    def open(self) -> None:
        self.page.goto(self.server.notebook_url(self.rel_path, self.workspace), wait_until="domcontentloaded",
                       timeout=SERVER_START_S * 1000)
        # The notebook is the current widget and its kernel session is ready. (Readiness of the session is
        # what run-all needs; the kernel-idle indicator says nothing about widgets.)
        self.page.wait_for_function(
            """(path) => {
                 const app = window.jupyterapp; if (!app || !app.shell) return false;
                 const w = app.shell.currentWidget;
                 if (!w || !w.context || w.context.path !== path || !w.sessionContext) return false;
                 return !!(w.context.isReady && w.sessionContext.isReady && w.sessionContext.session
                           && w.sessionContext.session.kernel);
               }""",
            arg=self.rel_path, timeout=SERVER_START_S * 1000, polling=250)
        self.page.evaluate(JS_HELPERS)

    def run_cells(self, indices: list[int], timeout_s: float = RUN_CELLS_S) -> None:
        """Run the cells at `indices` (notebook positions, markdown included), one after another, as a learner
        does with Shift+Enter; the other cells keep what they show. Each cell's run is sent once the one before
        has finished, so a cell that raised does not cancel the next. Fails on a traceback in one of them."""
        self.page.evaluate("""(indices) => {
            const app = window.jupyterapp, nb = app.shell.currentWidget.content;
            const run = window.__labRun = {done: 0, ok: true, error: null};
            (async () => {
                try {
                    for (const i of indices) {
                        nb.activeCellIndex = i;
                        nb.deselectAll();
                        run.ok = (await app.commands.execute('notebook:run-cell')) !== false && run.ok;
                        run.done += 1;
                    }
                } catch (e) { run.error = String(e); }
            })();
        }""", indices)
        try:
            state = self.page.wait_for_function(
                """(n) => { const r = window.__labRun; return (r.done === n || r.error) ? r : false; }""",
                arg=len(indices), timeout=timeout_s * 1000, polling=100).json_value()
        except Exception as exc:
            done = self.page.evaluate("window.__labRun.done")
            raise LabError(f"{self.rel_path}: cells {indices} did not finish in {timeout_s:.0f} s "
                           f"({done} done)" + self.new_log()) from exc
        if state["error"]:
            raise LabError(f"{self.rel_path}: could not run cells {indices}: {state['error']}")
        errors = self.page.evaluate("""(indices) => {
            const nb = window.jupyterapp.shell.currentWidget.content;
            return indices.flatMap(i => window.__labTest.errorsIn(nb.widgets[i].node));
        }""", indices)
        if errors or not state["ok"]:
            raise LabError(f"{self.rel_path}: a cell raised while running cells {indices}:\n"
                           + ("\n---\n".join(e[-3000:] for e in errors) or "(no traceback shown)"))

    def area_of_cell(self, cell: int) -> int | None:
        """The index of the widget area (see `areas()`) that cell `cell` shows, or None if it shows no widget."""
        index = self.page.evaluate("""(i) => {
            const node = window.jupyterapp.shell.currentWidget.content.widgets[i].node;
            return window.__labTest.areas().findIndex(a => node.contains(a));
        }""", cell)
        return None if index < 0 else index

    def wait_for_widget_in(self, cell: int, timeout_s: float = WIDGET_RENDER_S) -> int:
        """Wait until cell `cell` shows a rendered widget; return its widget area's index."""
        try:
            self.page.wait_for_function("""(i) => {
                const node = window.jupyterapp.shell.currentWidget.content.widgets[i].node;
                return window.__labTest.areas().some(a => node.contains(a));
            }""", arg=cell, timeout=timeout_s * 1000, polling=250)
        except Exception as exc:
            raise LabError(f"{self.rel_path}: cell {cell} shows no rendered widget after {timeout_s:.0f} s"
                           + self.new_log()) from exc
        return self.area_of_cell(cell)

    def interactive_areas(self) -> list[int]:
        """Indices of widget areas that have a slider or a dropdown."""
        return self.page.evaluate("""() => window.__labTest.areas().map((a, i) =>
            a.querySelector('.widget-slider, .widget-dropdown') ? i : -1).filter(i => i >= 0)""")

    # -- observe -----------------------------------------------------------------------------------------
    def signature(self, index: int) -> Signature:
        raw = self.page.evaluate("(i) => window.__labTest.signature(i)", index)
        if raw is None:
            raise LabError(f"{self.rel_path}: widget area {index} disappeared")
        return Signature(**raw)

    def settled(self, index: int, quiet_s: float = 1.5, timeout_s: float = WIDGET_RENDER_S) -> Signature:
        """What widget area `index` shows once complete (chart and table), or unchanged for `quiet_s`.

        Run-all has finished, so a widget's first draw is in flight or done; a widget without a chart
        (a control panel, a quiz) is recognised by staying incomplete and unchanged.
        """
        return self._watch(index, lambda s: s.complete, timeout_s, quiet_s, "its first draw")[1]

    def wait_complete(self, index: int) -> Signature:
        """Wait until widget area `index` shows a chart image and a table."""
        sig = self.settled(index)
        if not sig.complete:
            raise LabError(f"{self.rel_path}: widget area {index} shows no chart image and table; it shows:\n"
                           f"{sig.text[:1500]}")
        return sig

    def check_no_errors(self, cell: int | None = None) -> None:
        """Fail on a traceback shown anywhere in the notebook (or in cell `cell` only)."""
        errors = self.page.evaluate("""(i) => i == null ? window.__labTest.errors() : window.__labTest.errorsIn(
            window.jupyterapp.shell.currentWidget.content.widgets[i].node)""", cell)
        if errors:
            where = "the notebook" if cell is None else f"cell {cell}"
            raise LabError(f"{self.rel_path}: traceback in {where}:\n"
                           + "\n---\n".join(e[-3000:] for e in errors))

    def new_log(self, lines: int = 30) -> str:
        """The server log (kernel stderr included) written since this notebook was opened, last lines."""
        tail = "\n".join(self.server.log_since(self._log_offset).splitlines()[-lines:])
        return (f"\n--- jupyter server log since the notebook was opened (last {lines} lines) ---\n{tail}"
                if tail.strip() else "")

    def _raise_on_traceback(self, index: int, sig: Signature, when: str) -> None:
        if sig.errors:
            raise LabError(f"{self.rel_path}: widget area {index} shows a traceback {when}:\n"
                           + "\n---\n".join(e[-3000:] for e in sig.errors))

    def _watch(self, index, done, timeout_s, quiet_s, when) -> tuple[bool, Signature]:
        """Poll widget area `index` until `done(sig)` -> (True, sig), or until what it shows has not changed
        for `quiet_s` -> (False, sig), or `timeout_s` -> (False, sig). Raises on a traceback."""
        deadline = time.monotonic() + timeout_s
        last, since = None, time.monotonic()
        while True:
            sig = self.signature(index)
            self._raise_on_traceback(index, sig, when)
            if done(sig):
                return True, sig
            now = time.monotonic()
            if last is None or sig.display != last.display:
                last, since = sig, now
            elif now - since >= quiet_s or now > deadline:
                return False, sig
            self.page.wait_for_timeout(150)  # poll interval of the conditions above

    def _wait(self, index, predicate, timeout_s, what) -> Signature:
        found, sig = self._watch(index, predicate, timeout_s, float("inf"), f"while waiting for {what}")
        if not found:
            raise LabError(f"{self.rel_path}: widget area {index} did not show {what} within "
                           f"{timeout_s:.0f} s; it shows:\n{sig.text[:1500]}" + self.new_log())
        return sig

    def _kernel_handled(self, sent_before: int, what: str) -> None:
        """Wait until the page sent the control's change to the kernel and the kernel finished handling it
        (the widget's callback has run)."""
        try:
            self.page.wait_for_function("(n) => window.__labTest.comms().sent > n", arg=sent_before,
                                        timeout=self.redraw_s * 1000, polling=50)
        except Exception as exc:
            raise LabError(f"{self.rel_path}: {what} sent nothing to the kernel") from exc
        try:
            self.page.wait_for_function("() => window.__labTest.comms().pending === 0",
                                        timeout=self.redraw_s * 1000, polling=50)
        except Exception as exc:
            raise LabError(f"{self.rel_path}: the kernel did not finish handling {what} within "
                           f"{self.redraw_s:.0f} s" + self.new_log()) from exc
        # Only the tracebacks not reported yet: a later widget in the same page is not blamed for an earlier one.
        errors = self.page.evaluate("window.__labTest.commErrors()")[self._comm_errors_seen:]
        self._comm_errors_seen += len(errors)
        if errors:
            raise LabError(f"{self.rel_path}: a widget callback raised after {what}; the notebook shows "
                           "nothing (the traceback went to the kernel's stderr):\n"
                           + "\n---\n".join(e[-3000:] for e in errors))

    def _outcome(self, index: int, before: Signature, what: str,
                 quiet_s: float = 1.0) -> tuple[str, Signature]:
        """After a control changed and the kernel handled it: ("changed", sig) once chart bytes and table
        text are both present and both differ from `before`; otherwise, once nothing has moved for
        `quiet_s`, ("rejected", sig) when the chart or table is gone (the widget's teaching message for an
        invalid setting) or ("unchanged", sig). Raises on a traceback."""
        changed, sig = self._watch(
            index, lambda s: s.complete and s.images != before.images and s.tables != before.tables,
            self.redraw_s, quiet_s, f"after {what}")
        if changed:
            return "changed", sig
        return ("unchanged" if sig.complete else "rejected"), sig

    @staticmethod
    def _describe(outcome: str, sig: Signature, before: Signature) -> str:
        if outcome == "rejected":
            return f"rejected: {sig.shows[:300]!r}"
        same = [part for part, a, b in (("chart image", sig.images, before.images),
                                        ("table", sig.tables, before.tables)) if a == b]
        return f"no new {' and no new '.join(same)}"

    # -- interact ----------------------------------------------------------------------------------------
    def _area(self, index: int):
        return self.page.locator(
            ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-Cell-outputArea:has(.jupyter-widgets)"
        ).nth(index)

    def _press(self, index: int, slider: int, handle, key: str, last: Signature) -> Signature:
        """One key press on a slider handle; returns once the kernel has handled the new value."""
        label, value = last.sliders[slider]["label"], last.sliders[slider]["value"]
        sent = self.page.evaluate("window.__labTest.comms().sent")
        handle.focus()
        handle.press(key)
        sig = self._wait(index, lambda s: s.sliders[slider]["value"] != value, self.redraw_s,
                         f"a new value on slider {label!r} after {key}")
        self._kernel_handled(sent, f"slider {label!r} ({value} -> {sig.sliders[slider]['value']})")
        return sig

    def move_slider(self, index: int, steps: int = 2) -> Interaction:
        """Press arrow keys on a slider handle (as a keyboard user would) until the chart and the table are
        both new.

        Takes the widget's sliders in order: one step right (left at the maximum); a step the widget
        rejects (its teaching message instead of a chart) is followed by another, up to `steps`. A slider
        that changes nothing now (e.g. a setting that only matters in another mode) or only rejects is
        stepped back and the next slider is tried. Fails when no slider gives a new chart and table.
        """
        before = self.wait_complete(index)
        if not before.sliders:
            raise LabError(f"{self.rel_path}: widget area {index} has no slider")
        tried = []
        for slider, info in enumerate(before.sliders):
            handle = self._area(index).locator(".widget-slider").nth(slider).locator(".noUi-handle").first
            handle.scroll_into_view_if_needed()
            at_max = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
            key, back = ("ArrowLeft", "ArrowRight") if at_max else ("ArrowRight", "ArrowLeft")
            last, pressed = before, 0
            for _ in range(steps):
                last = self._press(index, slider, handle, key, last)
                pressed += 1
                what = f"moving slider {info['label']!r} {info['value']} -> {last.sliders[slider]['value']}"
                outcome, last = self._outcome(index, before, what)
                if outcome == "changed":
                    return Interaction("slider", info["label"], info["value"], last.sliders[slider]["value"])
                tried.append(f"{what}: {self._describe(outcome, last, before)}")
                if outcome == "unchanged":
                    break
            for _ in range(pressed):  # back to where it was
                last = self._press(index, slider, handle, back, last)
            self._wait(index, lambda s: s.display == before.display, self.redraw_s,
                       f"its first chart again after moving slider {info['label']!r} back")
        raise LabError(f"{self.rel_path}: widget area {index}: no slider step gave a new chart and table:\n  "
                       + "\n  ".join(tried) + self.new_log())

    def change_dropdown(self, index: int, dropdown: int = 0, tries: int = 4) -> Interaction:
        """Choose the other options of a dropdown in turn until one gives a new chart and a new table."""
        before = self.wait_complete(index)
        if dropdown >= len(before.dropdowns):
            raise LabError(f"{self.rel_path}: widget area {index} has no dropdown #{dropdown}")
        info = before.dropdowns[dropdown]
        select = self._area(index).locator(".widget-dropdown").nth(dropdown).locator("select")
        select.scroll_into_view_if_needed()
        others = [o for o in info["options"] if o != info["value"]][:tries]
        if not others:
            raise LabError(f"{self.rel_path}: dropdown {info['label']!r} has a single option")
        tried = []
        for option in others:
            sent = self.page.evaluate("window.__labTest.comms().sent")
            select.select_option(value=option)
            what = f"choosing {option!r} in dropdown {info['label']!r} (was {info['value']!r})"
            self._kernel_handled(sent, what)
            outcome, last = self._outcome(index, before, what)
            if outcome == "changed":
                return Interaction("dropdown", info["label"], info["value"], option)
            tried.append(f"{what}: {self._describe(outcome, last, before)}")
        raise LabError(f"{self.rel_path}: widget area {index}: no option gave a new chart and table:\n  "
                       + "\n  ".join(tried) + self.new_log())

    def break_callbacks(self) -> int:
        """Sabotage check: re-wire every widget callback in the kernel to one that raises; return how many."""
        reply = self.page.evaluate("""async (code) => {
            const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
            const future = kernel.requestExecute({code, silent: false, store_history: false,
                                                  user_expressions: {n: '_broken_count'}});
            const msg = await future.done;
            const n = msg.content.user_expressions && msg.content.user_expressions.n;
            return {status: msg.content.status, n: n && n.data ? n.data['text/plain'] : null,
                    error: msg.content.evalue || null};
        }""", SABOTAGE_CODE)
        if reply["status"] != "ok" or reply["n"] is None:
            raise RuntimeError(f"could not break the widget callbacks: {reply}")
        return int(reply["n"])

    def screenshot(self, path: Path, index: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if index is None:
                self.page.screenshot(path=str(path))
            else:
                area = self._area(index)
                # The notebook scrolls inside JupyterLab, so a widget taller than the window would be cut:
                # grow the window to fit it for the picture.
                viewport = self.page.viewport_size
                box = area.bounding_box(timeout=5000)
                if box and viewport and box["height"] + 250 > viewport["height"]:
                    self.page.set_viewport_size({"width": viewport["width"],
                                                 "height": min(int(box["height"]) + 250, 6000)})
                try:
                    area.scroll_into_view_if_needed(timeout=5000)
                    area.screenshot(path=str(path), timeout=10000)
                finally:
                    if viewport:
                        self.page.set_viewport_size(viewport)
        except Exception:
            pass  # a screenshot must never hide the real failure


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")

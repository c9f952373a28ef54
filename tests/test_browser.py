"""The diffusion notebooks' slider widgets in a real browser: JupyterLab + headless Chromium (driven by playwright).

For each notebook: start from a scratch copy of `nbs/` and `data_samples/` (same relative layout; JupyterLab autosaves, so
the tracked notebooks are never opened), serve it with JupyterLab on 127.0.0.1 (a free port, a random token, the kernel
is this venv's Python with OMP_NUM_THREADS=1), open the notebook in Debian's Chromium, run its cells from the browser,
press an arrow key on the explorer's slider, and check that the slider's readout and the displayed image change (the new
picture is rendered by the kernel, so this is the whole round trip). Screenshots before and after go to the test's
`tmp_path` (the failure message names them).

What runs, and why:
* `06_diffusion.ipynb` and its `noising_explorer` slider, `08_lfdm.ipynb` and its `denoising_explorer` slider. Running a whole
  notebook in the browser would take 1-3 minutes before it reaches the explorer (08's demo cells sample dozens of videos), so
  each copy keeps only the cells the explorer's cell needs: the `#| export` cells and the cells that define a name that a kept
  later cell uses (found with `ast`), up to and including the explorer's cell. Every cell runs in tests/test_notebooks.py.
In both copies, cells marked `#| slow`, `#| eval: false` or `#| notest` are dropped (as tests/test_notebooks.py skips
them), outputs are cleared (what the test sees comes from this run), and the notebook's metadata names the `python3`
kernel (the tracked notebooks name none, and JupyterLab would ask).

Skipped only when Chromium is not installed: `.ci/run` installs Debian's `chromium` when it runs as root; on a
developer machine run `sudo apt-get install chromium` (or set LFDM_CHROMIUM to a Chromium binary).
"""
import ast
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP_FLAGS = ("slow", "eval: false", "notest")
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
RUN_TIMEOUT_S = 300            # running the cells of a notebook copy (06's and 08's slices take ~10-20 s on 2 cores)
WIDGET_TIMEOUT_S = 60          # the kernel renders one new picture (~1 s)


# ---------------------------------------------------------------- the notebook copies

def _has_flag(src: str, flag: str) -> bool:
    return re.search(rf"^\s*#\|\s*{re.escape(flag)}\s*$", src, re.M) is not None


def _names(src: str):
    "The names a cell defines and the names it reads from earlier cells (None, None if it does not parse)."
    try: tree = ast.parse(src)
    except SyntaxError: return None, None
    defined, used = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name): (used if isinstance(node.ctx, ast.Load) else defined).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {a.asname or a.name.split(".")[0] for a in node.names}
    return defined, used - defined      # approximate: names a cell binds itself (loop, comprehension, with ... as) are its own


def _slice_to(cells: list, target: int) -> list:
    "The cells up to `target` that it needs: every `#| export` cell, and every cell defining a name that a kept cell reads."
    src = lambda c: "".join(c["source"])
    keep, (_, needed) = {target}, _names(src(cells[target]))
    needed = set(needed or ())
    for i in range(target - 1, -1, -1):
        c = cells[i]
        if c["cell_type"] != "code": continue
        if _has_flag(src(c), "export"): keep.add(i); continue      # the module's code: what it reads is its own business
        defined, used = _names(src(c))
        if defined is None or defined & needed: keep.add(i); needed |= used or set()
    return [c for i, c in enumerate(cells) if i in keep or (i < target and c["cell_type"] == "markdown")]


def prepare_notebook(src: Path, dst: Path, widget_call: str, slice_to_widget: bool) -> int:
    "Write the copy of `src` the browser runs (see the module docstring); return its number of code cells."
    nb = json.loads(src.read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if not (c["cell_type"] == "code" and any(_has_flag("".join(c["source"]), f) for f in SKIP_FLAGS))]
    shows = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and widget_call in "".join(c["source"])
             and not _has_flag("".join(c["source"]), "export")]
    assert shows, f"{src.name}: no cell calls {widget_call} (the cell that displays the explorer)"
    if slice_to_widget: cells = _slice_to(cells, shows[0])
    for c in cells:
        if c["cell_type"] == "code": c["outputs"], c["execution_count"] = [], None
    nb["cells"] = cells
    nb["metadata"].pop("widgets", None)
    nb["metadata"]["kernelspec"] = KERNELSPEC
    dst.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    return sum(c["cell_type"] == "code" for c in cells)


# ---------------------------------------------------------------- fixtures: Chromium, JupyterLab, a page

def _chromium():
    for exe in (os.environ.get("LFDM_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if exe and Path(exe).is_file() and os.access(exe, os.X_OK): return exe
    return None


@pytest.fixture(scope="session")
def chromium():
    "The Chromium binary; the one reason to skip (before JupyterLab starts) is that there is none."
    exe = _chromium()
    if exe is None:
        pytest.skip("Chromium is not installed, so the notebooks cannot be checked in a browser: install Debian's package "
                    "(`sudo apt-get install chromium`; .ci/run does it when it runs as root) or set LFDM_CHROMIUM to a Chromium binary")
    return exe


@pytest.fixture(scope="session")
def browser(chromium):
    try: from playwright.sync_api import sync_playwright
    except ImportError as e:
        raise AssertionError(f"playwright is missing ({e}): it is a dev requirement, install with `pip install -e '.[dev]'`") from None
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True,
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try: yield b
        finally: b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r: return json.loads(r.read() or b"null")


def _log_tail(log: Path, n: int = 3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no log)"


@pytest.fixture(scope="session")
def lab(tmp_path_factory, chromium):
    "JupyterLab serving a scratch copy of nbs/ and data_samples/; yields (base url, token, nbs folder of the copy, its log)."
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    shutil.copytree(ROOT / "nbs", root / "nbs", ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    shutil.copytree(ROOT / "data_samples", root / "data_samples")
    jdirs = {k: base / k.lower() for k in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR")}
    settings = base / "user-settings"
    for d in [*jdirs.values(), settings / "@jupyterlab" / "notebook-extension", settings / "@jupyterlab" / "apputils-extension"]:
        d.mkdir(parents=True, exist_ok=True)
    # Every cell in the DOM (no virtual scrolling), no news or update checks.
    (settings / "@jupyterlab/notebook-extension/tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    (settings / "@jupyterlab/apputils-extension/notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "JUPYTER_PATH", "JUPYTER_TOKEN")}
    env.update({k: str(v) for k, v in jdirs.items()}, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    token, log = secrets.token_hex(16), base / "jupyterlab.log"
    for attempt in range(3):                      # the free port could be taken between _free_port and the bind
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
               "--allow-root", f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}",
               f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={base / 'workspaces'}",
               "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=", "--ServerApp.terminals_enabled=False"]
        with open(log, "w") as f:
            proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            try: _get(f"{url}/api/status?token={token}"); break
            except OSError: time.sleep(0.5)
        if proc.poll() is None and time.monotonic() < deadline: break
        _stop(proc, url, token)
        if attempt == 2 or "already in use" not in _log_tail(log):
            raise AssertionError(f"JupyterLab did not start on {url} (exit code {proc.returncode}); its log {log} ends:\n{_log_tail(log)}")
    try: yield url, token, root / "nbs", log
    finally: _stop(proc, url, token)


def _stop(proc, url, token):
    "Shut the server down (its kernels with it); kill its process group if it does not go."
    if proc.poll() is None:
        try: urllib.request.urlopen(urllib.request.Request(f"{url}/api/shutdown?token={token}", method="POST"), timeout=5)
        except OSError: pass
        try: proc.wait(15)
        except subprocess.TimeoutExpired: proc.terminate()
        try: proc.wait(10)
        except subprocess.TimeoutExpired: pass
    try: os.killpg(proc.pid, signal.SIGKILL)     # kernels left behind, if any (the group is ours: start_new_session)
    except (ProcessLookupError, PermissionError): pass
    if proc.poll() is None: proc.wait(10)


def _shutdown_kernels(url, token):
    try:
        for k in _get(f"{url}/api/kernels?token={token}"):
            urllib.request.urlopen(urllib.request.Request(f"{url}/api/kernels/{k['id']}?token={token}", method="DELETE"), timeout=15)
    except OSError: pass


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        yield pg
    finally: context.close()


# ---------------------------------------------------------------- helpers in the page

_NOTEBOOK_STATE = """() => {
  const panel = window.jupyterapp.shell.currentWidget, cells = panel.content.model.cells;
  let code = 0, done = 0, errors = [];
  for (let i = 0; i < cells.length; i++) {
    const c = cells.get(i);
    if (c.type !== 'code') continue;
    code++; if (c.executionCount !== null) done++;
    for (let j = 0; j < c.outputs.length; j++) {
      const o = c.outputs.get(j).toJSON();
      if (o.output_type === 'error')
        errors.push(`cell ${i} of the copy (${c.sharedModel.getSource().split('\\n')[0]}): ${o.ename}: ${o.evalue}\\n` +
                    (o.traceback || []).join('\\n').replace(/\\x1b\\[[0-9;]*m/g, ''));
    }
  }
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return {code, done, errors, status: kernel ? kernel.status : 'no kernel'};
}"""

_KERNEL_PRINT = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, silent: false, store_history: false});
  let out = '';
  future.onIOPub = msg => { if (msg.header.msg_type === 'stream') out += msg.content.text; };
  await future.done;
  return out;
}"""

_IMAGE_DIGEST = """async (img) => {
  const data = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
  const hash = Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', data)), b => b.toString(16).padStart(2, '0')).join('');
  return {src: img.src, bytes: data.length, sha256: hash, width: img.naturalWidth, height: img.naturalHeight};
}"""


def open_and_run(page, url, token, name, n_code, log):
    "Open nbs/`name` in JupyterLab, run all its cells, wait until every code cell has run; fail with the traceback of an error."
    page.goto(f"{url}/lab/tree/nbs/{name}?reset&token={token}")
    page.wait_for_function(f"""() => window.jupyterapp && window.jupyterapp.shell.currentWidget
        && window.jupyterapp.shell.currentWidget.context && window.jupyterapp.shell.currentWidget.context.path === 'nbs/{name}'""",
                           timeout=90_000)
    page.evaluate("""async () => {
        const panel = window.jupyterapp.shell.currentWidget;
        await panel.context.ready; await panel.sessionContext.ready;
        if (!panel.sessionContext.session || !panel.sessionContext.session.kernel) throw new Error('no kernel started');
        await panel.sessionContext.session.kernel.info;
    }""")
    t0, state = time.monotonic(), None
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")   # not awaited: we poll, with a timeout
    while time.monotonic() - t0 < RUN_TIMEOUT_S:
        state = page.evaluate(_NOTEBOOK_STATE)
        assert not state["errors"], f"{name} failed in JupyterLab:\n" + "\n".join(state["errors"])
        assert state["code"] == n_code, f"{name}: JupyterLab shows {state['code']} code cells, the copy has {n_code}"
        if state["done"] == n_code and state["status"] == "idle": return time.monotonic() - t0
        time.sleep(0.5)
    raise AssertionError(f"{name}: only {state['done']} of {n_code} code cells ran in {RUN_TIMEOUT_S} s (kernel {state['status']}); "
                         f"JupyterLab's log {log} ends:\n{_log_tail(log)}")


# ---------------------------------------------------------------- the tests

CASES = {  # notebook: (the call that builds the explorer, run only the cells it needs)
    "06_diffusion.ipynb": ("noising_explorer(", True),
    "08_lfdm.ipynb": ("denoising_explorer(", True),
}


@pytest.mark.parametrize("name", list(CASES), ids=[n.split(".")[0] for n in CASES])
def test_slider_changes_the_image(name, lab, page, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    url, token, nbs, log = lab
    widget_call, slice_to_widget = CASES[name]
    n_code = prepare_notebook(ROOT / "nbs" / name, nbs / name, widget_call, slice_to_widget)
    stem = name.split(".")[0]

    def shot(tag):
        path = tmp_path / f"{stem}-{tag}.png"
        page.screenshot(path=path)
        return path
    try:
        seconds = open_and_run(page, url, token, name, n_code, log)
        kernel = page.evaluate(_KERNEL_PRINT, "import sys, os; print(sys.prefix); print(os.environ.get('OMP_NUM_THREADS'))").splitlines()
        assert kernel == [sys.prefix, "1"], f"the notebook's kernel has sys.prefix, OMP_NUM_THREADS = {kernel}, expected this venv ({sys.prefix}) and 1"

        boxes = page.locator(".jp-OutputArea-output .widget-vbox", has=page.locator(".widget-slider"))
        assert boxes.count() == 1, f"{name}: expected one explorer (a VBox with a slider) in the outputs, found {boxes.count()}"
        box = boxes.first
        box.scroll_into_view_if_needed()
        handle, readout, img = box.locator(".noUi-handle"), box.locator(".widget-readout"), box.locator("img.widget-image")
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
        before_value, before = readout.inner_text().strip(), img.evaluate(_IMAGE_DIGEST)
        value, top = int(handle.get_attribute("aria-valuenow").split(".")[0]), int(handle.get_attribute("aria-valuemax").split(".")[0])
        key, expected = ("ArrowRight", value + 1) if value < top else ("ArrowLeft", value - 1)    # 08's slider starts at its last step
        before_png = shot("before")

        handle.press(key)
        try: page.wait_for_function("([img, src]) => img.src !== src && img.complete && img.naturalWidth > 0",
                                    arg=[img.element_handle(), before["src"]], timeout=WIDGET_TIMEOUT_S * 1000)
        except PlaywrightTimeout:
            raise AssertionError(f"{key} on the slider: its readout went from {before_value} to {readout.inner_text().strip()} "
                                 f"(expected {expected}), but the displayed image did not change within {WIDGET_TIMEOUT_S} s") from None
        after_value, after = readout.inner_text().strip(), img.evaluate(_IMAGE_DIGEST)
        after_png = shot("after")
    except Exception as e:                        # a timeout, an error in a cell, ...: say where to look
        try: path = shot("failure")
        except Exception: path = "(no screenshot)"
        raise AssertionError(f"{name}: {type(e).__name__}: {e}\nscreenshot: {path}\nJupyterLab log: {log}") from e
    finally: _shutdown_kernels(url, token)        # the next notebook gets the CPU (the server stops at the end in any case)
    print(f"\n{name}: {n_code} code cells ran in {seconds:.0f} s; {key}: step {before_value} -> {after_value}; "
          f"image {before['width']}x{before['height']} {before['bytes']} B -> {after['width']}x{after['height']} {after['bytes']} B; "
          f"screenshots {before_png}, {after_png}")
    assert before_value == str(value) and after_value == str(expected), (
        f"{name}: {key} on the slider should move its readout from {value} to {expected}, it shows {before_value} -> "
        f"{after_value} (screenshots {before_png}, {after_png})")
    assert after["sha256"] != before["sha256"], (
        f"{name}: the slider moved to {after_value} but the displayed image is byte-for-byte the same "
        f"(screenshots {before_png}, {after_png})")
    assert Path(before_png).stat().st_size > 10_000 and Path(after_png).stat().st_size > 10_000

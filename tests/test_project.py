"""Project-level checks: notebooks are the source (clean and in sync with lfdm/), README is current, the CLI works."""
import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import readme  # noqa: E402


def _tool(name):
    exe = BIN / name
    return str(exe) if exe.exists() else shutil.which(name)


def test_notebooks_clean_and_in_sync_with_lfdm(tmp_path):
    "`nbdev_clean` and `nbdev_export` change nothing: run them on a scratch copy and compare."
    for name in ("nbs", "lfdm"): shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "settings.ini", tmp_path)
    for tool in ("nbdev_clean", "nbdev_export"):
        r = subprocess.run([_tool(tool)], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, f"{tool} failed:\n{r.stdout}\n{r.stderr}"
    changed = []
    for name in ("nbs", "lfdm"):
        cmp = filecmp.dircmp(ROOT / name, tmp_path / name, ignore=["__pycache__", ".ipynb_checkpoints"])
        stack = [cmp]
        while stack:
            c = stack.pop()
            changed += [f"{name}/{f}" for f in c.diff_files + c.left_only + c.right_only]
            stack += c.subdirs.values()
    assert not changed, (f"nbdev_clean/nbdev_export would change {changed}: the notebooks are the source; "
                         "run `nbdev_clean && nbdev_export` and commit nbs/ and lfdm/ together.")


def test_readme_generated_from_index():
    assert (ROOT / "README.md").read_text(encoding="utf-8") == readme.render(), "README.md is stale: run `make readme`."


def test_readme_links_exist():
    import re
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#]+)\)", text) + re.findall(r'src="([^"]+)"', text)
    missing = [l for l in links if not l.startswith("http") and not (ROOT / l).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_console_script(tmp_path):
    lfdm = _tool("lfdm")
    assert lfdm, "the `lfdm` console script is not installed (pip install -e .)"
    out = tmp_path / "demo.gif"
    r = subprocess.run([lfdm, "demo", "--out", str(out), "--steps", "3"], capture_output=True, text=True)
    assert r.returncode == 0 and out.stat().st_size > 0, r.stderr
    r = subprocess.run([lfdm, "demo", "--out", str(out), "--action", "moonwalk"], capture_output=True, text=True)
    assert r.returncode == 2 and "moonwalk" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([lfdm, "demo", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--action" in r.stdout
    r = subprocess.run([lfdm, "sample", "--image", str(ROOT / "data_samples" / "stills" / "wave.png"), "--class", "jump",
                        "--out", str(tmp_path / "s.mp4"), "--steps", "2"], capture_output=True, text=True)
    assert r.returncode == 0 and (tmp_path / "s.mp4").stat().st_size > 0, r.stderr
    r = subprocess.run([lfdm, "sample", "--image", str(ROOT / "README.md"), "--class", "jump", "--out", str(tmp_path / "t.gif")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "README.md" in r.stderr and "Traceback" not in r.stderr


def test_package_has_no_undefined_names():
    """pyflakes on lfdm/: an exported function that uses a name imported only in a notebook's non-exported cell works in the
    notebook but fails for users of the package; this catches it (and unused imports)."""
    r = subprocess.run([sys.executable, "-m", "pyflakes", str(ROOT / "lfdm")], capture_output=True, text=True)
    assert r.returncode == 0, f"pyflakes found problems in lfdm/ (fix them in the notebooks):\n{r.stdout}{r.stderr}"


_IMPORT_EACH = """
import importlib, pkgutil, sys
import lfdm
failed = []
for m in pkgutil.iter_modules(lfdm.__path__):
    for k in [k for k in sys.modules if k == "lfdm" or k.startswith("lfdm.")]: del sys.modules[k]   # no lfdm module is loaded
    try: importlib.import_module("lfdm." + m.name)
    except Exception as e: failed.append(f"import lfdm.{m.name} failed: {type(e).__name__}: {e}")
print(len(list(pkgutil.iter_modules(lfdm.__path__))))
sys.exit("\\n".join(failed) or None)
"""


def test_package_imports_without_notebooks():
    """Every module imports on its own: in one fresh interpreter (torch is imported once), each `lfdm.X` is imported after
    every lfdm module has been dropped from `sys.modules`, so it must import what it needs itself."""
    r = subprocess.run([sys.executable, "-c", _IMPORT_EACH], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) >= 10, r.stdout          # the package's modules were found
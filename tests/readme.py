"""README.md is generated from nbs/index.ipynb (nbdev's `readme_nb`).

`nbdev_readme` needs Quarto, which these machines lack, so we render the notebook ourselves: markdown cells as they are,
code cells as fenced Python blocks, and links relative to `nbs/` rewritten to be relative to the repository root.

    python tests/readme.py --write   # regenerate README.md
    python tests/readme.py           # exit 1 if README.md is out of date
"""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = "<!-- Generated from nbs/index.ipynb by `make readme`: edit the notebook, not this file. -->\n\n"


def render(nb_path: Path = ROOT / "nbs" / "index.ipynb") -> str:
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    parts = []
    for cell in nb["cells"]:
        src = "".join(cell["source"]).strip("\n")
        shown = re.search(r"^# README shows: (\S+)", src, re.M)          # a hidden cell that writes a figure for README readers
        if shown: parts.append(f'<img src="{shown.group(1)}" width="100%" alt="the output of the code above">')
        if not src or src.startswith("#| hide"): continue
        parts.append(src if cell["cell_type"] == "markdown" else f"```python\n{src}\n```")
    text = "\n\n".join(parts) + "\n"
    # links written for nbs/ (../data_samples/x, 01_data.ipynb) -> links from the repository root
    text = re.sub(r"\]\(\.\./", "](", text)
    text = re.sub(r'src="\.\./', 'src="', text)
    text = re.sub(r"\]\((?!https?://|/|#|nbs/)([\w.-]+\.ipynb)\)", r"](nbs/\1)", text)
    return HEADER + text


if __name__ == "__main__":
    readme = ROOT / "README.md"
    if "--write" in sys.argv:
        readme.write_text(render(), encoding="utf-8"); print(f"wrote {readme}")
    elif not readme.exists() or readme.read_text(encoding="utf-8") != render():
        print("README.md is out of date: run `make readme` (python tests/readme.py --write)"); sys.exit(1)

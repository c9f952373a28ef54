"""Run every notebook in nbs/ as one pytest test each, with nbdev's own runner.

Cells marked `#| slow` or `#| notest` are skipped (settings.ini `tst_flags`); set LFDM_SLOW=1 to run the slow ones too.
"""
import os
from pathlib import Path

import pytest
import nbdev.test as nbdev_test   # not `from ... import test_nb`: pytest would collect it as a test

NBS = Path(__file__).resolve().parent.parent / "nbs"
NOTEBOOKS = sorted(p for p in NBS.glob("*.ipynb") if not p.name.startswith("_"))
SKIP = ["notest"] + ([] if os.environ.get("LFDM_SLOW") else ["slow"])


def test_notebooks_found():
    assert len(NOTEBOOKS) >= 3, f"expected the project's notebooks in {NBS}, found {NOTEBOOKS}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook(nb):
    import torch
    grad, threads = torch.is_grad_enabled(), torch.get_num_threads()
    try: ok, seconds = nbdev_test.test_nb(nb, skip_flags=SKIP, do_print=False)
    finally:                                        # notebooks share this process: never let one's torch settings leak into the next
        torch.set_grad_enabled(grad); torch.set_num_threads(threads)
    assert ok, f"{nb.name} failed (its traceback is printed above, in the captured stderr)"

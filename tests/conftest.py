import os

os.environ.setdefault("MPLBACKEND", "Agg")      # notebooks plot; tests have no display

# `make test` runs the suite in two pytest-xdist workers (the notebooks are long single tests: two at a time halve the wall time
# on a 2-core machine). Each worker then computes with one thread, as do the processes it starts: two workers with two threads
# each would only fight over the cores. Set before torch is imported (the test modules import it).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch
        torch.set_num_threads(1)


# The longest tests first, so that the two workers share the load evenly: `make test` runs `--dist load --maxschedchunk 2`, which
# hands each worker the next two tests of this order whenever it runs short. The four longest are interleaved (10 and 06 to one
# worker, 08 and 11 to the other: about 250 s each), then the rest follow longest first (greedy longest-first scheduling). Seconds
# measured on 2 cores, one thread per worker; only the order depends on them, and a test missing here keeps its place after these.
EXPECTED_SECONDS = {
    "test_notebook[10_eval]": 160, "test_notebook[08_lfdm]": 155, "test_notebook[11_cli]": 87, "test_notebook[06_diffusion]": 68,
    "test_notebook[13_claims]": 58, "test_notebook[09_train]": 46, "test_notebook[05_lfae]": 43, "test_notebook[12_convert]": 34,
    "test_slider_changes_the_image[08_lfdm]": 30, "test_ddp_two_processes_match_one": 19, "test_console_script": 20,
    "test_notebook[01_data]": 20, "test_sigkill_then_resume_is_exact": 27, "test_dm_sigkill_then_resume_is_exact": 29,
    "test_slider_changes_the_image[06_diffusion]": 20, "test_notebook[07_unet3d]": 15,
}
FIRST = ("test_notebook[10_eval]", "test_notebook[06_diffusion]", "test_notebook[08_lfdm]", "test_notebook[11_cli]")


def pytest_collection_modifyitems(config, items):
    rank = lambda item: (FIRST.index(item.name) if item.name in FIRST else len(FIRST), -EXPECTED_SECONDS.get(item.name, 0))
    items.sort(key=rank)                                                  # a stable sort: the rest keep their order

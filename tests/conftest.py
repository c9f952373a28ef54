import os

os.environ.setdefault("MPLBACKEND", "Agg")      # notebooks plot; tests have no display

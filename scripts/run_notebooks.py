"""Execute the notebooks top to bottom, store their outputs, and report how long each took.

    python scripts/run_notebooks.py                      # every notebook in notebooks/
    python scripts/run_notebooks.py notebooks/losses.ipynb --threads 2
    python scripts/run_notebooks.py --check              # run, report, leave the files as they are

Stored outputs (figures, audio players, tables) are what a reader sees on GitHub without
running anything, so after editing a notebook run this to refresh them. The wall time of each
run is printed as a table; issue 23's budget is 3 minutes per notebook in CI, where
``tests/test_notebooks.py`` runs each in a pytest-xdist worker with one thread (the other
worker has the second core). Threads are pinned (``OMP_NUM_THREADS``, ``NUMBA_NUM_THREADS``;
one by default, as in CI) so that a timing means the same thing from one run to the next; run
nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 180.0


def execute(path: Path, timeout_s: int) -> tuple[object, float]:
    """Run one notebook in a fresh kernel started in its folder; returns (notebook, seconds)."""
    import nbclient
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=timeout_s, kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )  # fmt: skip
    start = time.perf_counter()
    client.execute()
    return notebook, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to run (default: every notebook in notebooks/)")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP_NUM_THREADS / NUMBA_NUM_THREADS of the kernels (default 1, "
                             "as the tests run them)")
    parser.add_argument("--check", action="store_true",
                        help="run and report only; do not write the outputs into the files")
    parser.add_argument("--cell-timeout", type=int, default=600,
                        help="seconds one cell may run before the run is abandoned")
    args = parser.parse_args(argv)

    import nbformat
    from tqdm import tqdm

    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    # The kernel is a child process: it inherits these.
    os.environ["OMP_NUM_THREADS"] = os.environ["NUMBA_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")

    rows = []
    for path in tqdm(paths, desc="notebooks", unit="nb"):
        notebook, seconds = execute(path.resolve(), args.cell_timeout)
        if not args.check:
            nbformat.write(notebook, path)
        size_kib = path.stat().st_size / 1024
        rows.append((path.name, seconds, size_kib))

    print(f"\n{args.threads} threads; budget {BUDGET_S:.0f} s per notebook")
    print("| notebook | wall (s) | within budget | file (KiB) |\n|---|---|---|---|")
    for name, seconds, size_kib in rows:
        print(f"| {name} | {seconds:.1f} | {'yes' if seconds <= BUDGET_S else 'NO'} "
              f"| {size_kib:.0f} |")
    return 0 if all(seconds <= BUDGET_S for _, seconds, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Run the property suite (``tests/property``) as a fuzz: thousands of generated inputs per
property, signals up to 2**20 samples, and write the totals into ``benchmarks/RESULTS.md``.

Usage::

    python scripts/fuzz.py [--examples 2000] [--select EXPR] [--out benchmarks/RESULTS.md]

The CI run of the same suite is bounded (100 derandomized examples per property, signals up to
2**13 samples); this one sets ``DIFFX_FUZZ=1`` (the wide strategies and the ``fuzz``
hypothesis profile, fresh random examples every run) and ``DIFFX_FUZZ_EXAMPLES``. Counts come
from hypothesis's own statistics (``--hypothesis-show-statistics``): examples that passed,
failed, and were invalid (rejected by the strategy, e.g. a delay beyond the signal). A
failing property prints its smallest failing example and the blob that reproduces it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import report  # noqa: E402

SECTION = "fuzz"
STAT_HEADER = re.compile(r"^(tests/property/\S+::\S+):\s*$")
# hypothesis 6.1xx: "5 passing, 0 failing, and 0 invalid test cases" (older: "... examples")
STAT_COUNTS = re.compile(r"(\d+) passing\D+?(\d+) failing\D+?(\d+) invalid")


def parse_statistics(output: str) -> dict[str, list[int]]:
    """``{test id: [passing, failing, invalid]}`` summed over the phases hypothesis reports."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    current = None
    for line in output.splitlines():
        header = STAT_HEADER.match(line.strip())
        if header:
            current = header.group(1)
            continue
        found = STAT_COUNTS.search(line)
        if found and current is not None:
            for i, value in enumerate(found.groups()):
                counts[current][i] += int(value)
    return dict(counts)


def table(counts: dict[str, list[int]], failed: set[str]) -> str:
    """One row per property (test function), its parametrizations summed."""
    rows: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for test_id, (passing, failing, invalid) in counts.items():
        module, _, name = test_id.partition("::")
        key = f"{Path(module).stem}::{name.split('[')[0]}"
        row = rows[key]
        row[0] += 1
        row[1] += passing
        row[2] += failing
        row[3] += invalid
        row[4] += test_id in failed
    lines = [
        "| property | cases (op/effect/loss x variant) | passing examples | failing examples "
        "| invalid examples | cases failed |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    total = [0, 0, 0, 0, 0]
    for key in sorted(rows):
        row = rows[key]
        total = [a + b for a, b in zip(total, row)]
        lines.append(f"| `{key}` | " + " | ".join(str(v) for v in row) + " |")
    lines.append("| **total** | " + " | ".join(f"**{v}**" for v in total) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=2000, help="examples per property case")
    ap.add_argument("--select", default=None, help="pytest -k expression (default: all)")
    ap.add_argument("--out", default=None, help="write the totals into this RESULTS.md")
    ap.add_argument("--workers", type=int, default=2, help="pytest-xdist processes")
    args = ap.parse_args()
    if args.examples < 1:
        ap.error(f"--examples must be at least 1, got {args.examples}")

    env = dict(os.environ, DIFFX_FUZZ="1", DIFFX_FUZZ_EXAMPLES=str(args.examples))
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("NUMBA_NUM_THREADS", "1")
    command = [sys.executable, "-m", "pytest", "tests/property", "-p", "no:cacheprovider",
               "--hypothesis-show-statistics", "-rf", "-q", "-n", str(args.workers)]  # fmt: skip
    if args.select:
        command += ["-k", args.select]
    print("running:", " ".join(command[2:]), f"(DIFFX_FUZZ_EXAMPLES={args.examples})", flush=True)
    start = time.perf_counter()
    # Streamed to the terminal (pytest's progress) and kept for the statistics.
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
    output = []
    for line in process.stdout:
        output.append(line)
        if not line.startswith(("  - ", "    - ")):
            print(line, end="", flush=True)
    code = process.wait()
    seconds = time.perf_counter() - start
    text = "".join(output)
    counts = parse_statistics(text)
    failed = set(re.findall(r"^FAILED (\S+)", text, re.M))
    if not counts:
        print("no hypothesis statistics found in pytest's output", file=sys.stderr)
        return code or 1
    body = table(counts, failed)
    print(body)
    if args.out:
        shown = report.shown_command("scripts/fuzz.py", sys.argv[1:])
        failures = "\n".join(f"- `{f}`" for f in sorted(failed)) or "- none"
        report.write_section(args.out, SECTION, "\n".join([
            "# Property fuzz (issue 20)",
            "",
            "Generated by `scripts/fuzz.py` (method in its docstring): the property suite of "
            "`tests/property` with fresh random inputs, signals up to 2^20 samples.",
            "",
            f"- Command: `{shown}`",
            f"- Date: {datetime.datetime.now().isoformat(timespec='seconds')}; "
            f"{platform.machine()}, {os.cpu_count()} logical CPUs; {args.workers} workers; "
            f"{seconds / 60:.0f} min; pytest exit status {code}",
            "",
            body,
            "",
            "Failed cases:",
            "",
            failures,
        ]))  # fmt: skip
    return code


if __name__ == "__main__":
    sys.exit(main())

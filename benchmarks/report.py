"""Shared writer for ``benchmarks/RESULTS.md``: each benchmark script owns one section."""

from __future__ import annotations

import json
import os
import re
import subprocess


def write_section(path: str, name: str, markdown: str) -> None:
    """Replace the section ``name`` of the results file (or append it), keeping the others.

    Sections are delimited by ``<!-- begin NAME -->`` and ``<!-- end NAME -->`` lines so each
    script can regenerate its own tables without touching the rest.
    """
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{markdown.rstrip()}\n{end}\n"
    text = open(path).read() if os.path.exists(path) else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block
    with open(path, "w") as f:
        f.write(text)


def fmt_ms(value) -> str:
    """A time in ms with one decimal, or the placeholder string given instead."""
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def ratio(peer_ms, diffx_ms) -> str:
    """``peer / diffx`` as ``"1.23x"`` (> 1: diffx is faster), ``"-"`` when either is missing."""
    if isinstance(peer_ms, float) and isinstance(diffx_ms, float) and diffx_ms > 0:
        return f"{peer_ms / diffx_ms:.2f}x"
    return "-"


def child_peak_mib(cmd: list[str]) -> float | str:
    """Run a benchmark's ``--memory-child`` command line and read the peak MiB it prints as
    JSON on its last line; a short reason string instead when it fails or times out."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
        return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"])
    except subprocess.CalledProcessError as err:
        return "failed: " + (err.stderr.strip().splitlines() or ["?"])[-1][:80]
    except subprocess.TimeoutExpired:
        return "timeout"


def rss_kib(field: str) -> int:
    """A field of ``/proc/self/status`` in KiB (``VmRSS``: now, ``VmHWM``: peak)."""
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def training_running() -> bool:
    """Whether a ``diffx fit`` process is running (it competes for the same cores)."""
    try:
        out = subprocess.run(["pgrep", "-f", "diffx fit"], capture_output=True, text=True)
    except OSError:
        return False
    return any(int(pid) != os.getpid() for pid in out.stdout.split())


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds of the whole machine, of this process and its finished children)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait
    t = os.times()
    return busy / ticks, t.user + t.system + t.children_user + t.children_system


def shown_command(script: str, argv: list[str]) -> str:
    """``python <script> <argv>`` without the machine-specific ``--peer-repo``."""
    shown, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--peer-repo"):
            skip = arg == "--peer-repo"
            continue
        shown.append(arg)
    return " ".join(["python", script, *shown])

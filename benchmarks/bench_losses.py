"""Benchmark diffx's NMR loss against the paper's reference code and auraloss's MR-STFT.

Usage::

    python benchmarks/bench_losses.py [--repeats N] [--out benchmarks/RESULTS.md]

Method:

- Inputs: batch 8 x 1 s at 44.1 kHz. The references are one-second excerpts of eight demo clips
  (three guitars, voice, violin, flute, trumpet, bass; resampled to 44.1 kHz); the signals under
  test are the same excerpts through ``tanh(4 x) / 4`` plus white noise at -60 dBFS.
- Reference implementation: ``nmr.py`` of Carson, Wright and Bilbao's DAFx 2025 code
  (github.com/a-carson/dafx25_antialiasing_neural), read at run time from a local git mirror or
  checkout (``--reference-repo``, or ``$DIFFX_AA_REPO``) and never stored in diffx. Its
  arithmetic is float64 whatever the input dtype.
- Values: the linear NMR per item from each implementation on the same inputs; the relative
  difference max |ours - ref| / ref over the batch.
- Times: ``torch.set_num_threads(2)``, median of N calls after one warm-up. ``fwd`` under
  ``torch.no_grad()``; ``fwd+bwd`` = forward + ``backward()`` of the mean with the signal
  under test requiring grad.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import auraloss
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

from diffx.io.audio import load_demo  # noqa: E402
from diffx.losses.nmr import NMRLoss  # noqa: E402

THREADS = 2
SAMPLE_RATE = 44100
CLIPS = (
    "guitar_em9",
    "guitar_e_slide",
    "guitar_clean",
    "voice",
    "violin",
    "flute",
    "trumpet",
    "bass",
)
DEFAULT_REPO = "/work/.mirror/a-carson+dafx25_antialiasing_neural/repo"


def load_reference_nmr(repo: str):
    """Import the reference ``nmr.py`` from a git mirror/checkout into a temporary module."""
    if os.path.isfile(os.path.join(repo, "nmr.py")):
        source = open(os.path.join(repo, "nmr.py")).read()
    else:
        source = subprocess.run(
            ["git", "-C", repo, "show", "HEAD:nmr.py"], check=True, capture_output=True, text=True
        ).stdout
    folder = tempfile.mkdtemp(prefix="aa_ref_")
    path = os.path.join(folder, "aa_reference_nmr.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("aa_reference_nmr", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, target) float32 ``(8, 1, 44100)`` from the demo audio."""
    targets = []
    for name in CLIPS:
        audio, _ = load_demo(name, sample_rate=SAMPLE_RATE)
        start = min(SAMPLE_RATE // 2, audio.shape[-1] - SAMPLE_RATE)  # every clip is > 1 s
        targets.append(audio[0, start : start + SAMPLE_RATE])
    target = torch.stack(targets)[:, None].float()
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(0)) * 1e-3
    pred = torch.tanh(4 * target) / 4 + noise
    return pred, target


def time_call(fn, pred, target, backward: bool, repeats: int) -> float:
    def once():
        p = pred.detach().clone().requires_grad_(backward)
        if backward:
            fn(p, target).mean().backward()
        else:
            with torch.no_grad():
                fn(p, target)

    once()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "RESULTS.md"))
    ap.add_argument("--reference-repo", default=os.environ.get("DIFFX_AA_REPO", DEFAULT_REPO))
    args = ap.parse_args()
    torch.set_num_threads(THREADS)

    pred, target = make_inputs()
    ours32 = NMRLoss(SAMPLE_RATE, reduction="none")
    impls = {
        "diffx NMRLoss (float32)": lambda p, t: ours32(p, t),
        "diffx NMRLoss (float64)": lambda p, t: ours32(p.double(), t.double()),
    }
    values = {}
    with torch.no_grad():
        values["diffx NMRLoss (float32)"] = ours32(pred, target)[:, 0].double()
        values["diffx NMRLoss (float64)"] = ours32(pred.double(), target.double())[:, 0]
    notes = {
        "diffx NMRLoss (float32)": "float32 arithmetic",
        "diffx NMRLoss (float64)": "float64 arithmetic",
    }
    reference_note = ""
    try:
        ref_module = load_reference_nmr(args.reference_repo)
        ref = ref_module.NMR(SAMPLE_RATE)
        impls["reference nmr.py (Carson et al.)"] = lambda p, t: ref(p[:, 0], t[:, 0])[0]
        notes["reference nmr.py (Carson et al.)"] = "float64 arithmetic, Python loop over bands"
        with torch.no_grad():
            values["reference nmr.py (Carson et al.)"] = ref(pred[:, 0], target[:, 0])[0].double()
    except (OSError, subprocess.CalledProcessError, AttributeError, ImportError) as err:
        reference_note = f"reference code unavailable ({err}); clone it and pass --reference-repo"
        print(reference_note)
    mrstft = auraloss.freq.MultiResolutionSTFTLoss()
    impls["auraloss MultiResolutionSTFTLoss"] = lambda p, t: mrstft(p, t)
    notes["auraloss MultiResolutionSTFTLoss"] = "default FFT sizes 1024/2048/512, float32"

    rows = {}
    for name, fn in impls.items():
        fwd = time_call(fn, pred, target, False, args.repeats)
        bwd = time_call(fn, pred, target, True, args.repeats)
        rows[name] = (fwd, bwd)
        print(f"{name:36s} fwd {fwd:8.1f} ms  fwd+bwd {bwd:8.1f} ms", flush=True)

    # The reference code's location is machine-specific; leave it out of the recorded command.
    shown_args, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg.startswith("--reference-repo"):
            skip = arg == "--reference-repo"
            continue
        shown_args.append(arg)
    command = " ".join(["python benchmarks/bench_losses.py", *shown_args])
    base = rows["diffx NMRLoss (float32)"]
    ref_values = values.get("reference nmr.py (Carson et al.)")
    lines = [
        "# Loss benchmark",
        "",
        "Generated by `benchmarks/bench_losses.py`; do not edit by hand.",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.datetime.now().isoformat(timespec='seconds')}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs; "
        f"torch.set_num_threads({THREADS}); load average at the end "
        f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"- Versions: torch {torch.__version__}, auraloss "
        f"{importlib.metadata.version('auraloss')}, numpy {np.__version__}",
        "- Inputs: batch 8 x 44100 samples (1 s at 44.1 kHz) of demo audio as the reference, "
        "`tanh(4x)/4` + noise at -60 dBFS as the signal under test, float32. Median of "
        f"{args.repeats} calls after a warm-up; ratio = its time / diffx float32 time.",
        "",
        "| implementation | fwd ms | vs diffx | fwd+bwd ms | vs diffx | NMR rel. diff vs "
        "reference | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, (fwd, bwd) in rows.items():
        if ref_values is not None and name in values:
            diff = ((values[name] - ref_values).abs() / ref_values).max().item()
            diff_text = f"{diff:.1e}"
        else:
            diff_text = "-"
        lines.append(
            f"| {name} | {fwd:.1f} | {fwd / base[0]:.2f}x | {bwd:.1f} | {bwd / base[1]:.2f}x | "
            f"{diff_text} | {notes[name]} |"
        )
    if ref_values is not None:
        per_item = ", ".join(f"{10 * np.log10(v):.2f}" for v in ref_values.tolist())
        lines += ["", f"Reference NMR per item (dB): {per_item}."]
    if reference_note:
        lines += ["", reference_note]
    report.write_section(args.out, "losses", "\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

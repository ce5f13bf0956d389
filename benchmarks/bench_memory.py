"""Peak memory of every loss in :mod:`diffx.losses` and of the heavy functional ops on long input.

Usage::

    python benchmarks/bench_memory.py [--shape 7,2,1048576] [--dtype float64]
                                      [--cases NAME,NAME] [--goal 8] [--out benchmarks/RESULTS.md]

Method:

- Each case runs in a fresh subprocess (``--child NAME``), one at a time. The child builds the
  loss or op, warms it up with one forward+backward on a short signal (imports, numba
  compilation, cached buffers), creates the inputs, resets the kernel's peak resident-set
  counter (``echo 5 > /proc/self/clear_refs``) and reads the current RSS; after one forward +
  ``backward()`` the peak (``VmHWM``) minus that RSS is the reported figure: everything the call
  allocated at its peak (outputs, autograd graph, ``pred.grad``, workspaces), the inputs
  themselves excluded. ``tracemalloc`` would not see torch's allocations.
- Losses: ``pred`` requires grad, ``target`` does not; ``loss.backward()``. Ops: the audio input
  (and the op's parameters, where it has any) require grad; ``y.backward(g)`` with ``g`` an
  upstream gradient shaped like ``y`` created with the inputs (so it is not counted either).
- Inputs: ``pred`` is white noise at 0.1 RMS, ``target`` is ``pred`` plus noise; the content
  does not change memory. Shape and dtype from ``--shape`` / ``--dtype``.
- The ratio is the peak over the size of one input tensor (``pred``, shape x dtype); the goal
  (``--goal``, default 8) is met when the peak is at most that many times ``pred``'s size. The
  pair ``pred`` + ``target`` is twice that, so ``x pair`` is half the ratio.
- ``torch.set_num_threads(--threads)`` (default 1) in every child.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

SAMPLE_RATE = 44100
WARMUP_SAMPLES = 32768  # one 400 ms loudness block at 44.1 kHz needs 17640
SECTION = "memory"


# --------------------------------------------------------------------------------------------
# Cases: name -> (kind, builder). A builder takes (channels, dtype) and returns a callable
# run(pred, target) doing one forward + backward; for ops, ``target`` is the upstream gradient.


def _loss(make):
    def build(channels, dtype):
        module = make().to(dtype)

        def run(pred, target):
            module(pred, target).backward()

        return run

    return build


def _esr(name):
    from diffx.losses import ESRLoss, make_pre_emphasis

    return _loss(lambda: ESRLoss(make_pre_emphasis(name, SAMPLE_RATE)))


def _response_loss(make):
    # PhaseResponseLoss / GroupDelayLoss take responses (..., n_freqs), not audio; measured on
    # responses of the same shape.
    return _loss(make)


def _op(fn, params=lambda batch, dtype: {}):
    def build(channels, dtype):
        def run(x, g):
            p = params(x.shape[0], x.dtype)
            fn(x, **p).backward(g)

        return run

    return build


def _module_op(make):
    def build(channels, dtype):
        module = make().to(dtype)

        def run(x, g):
            module(x).backward(g)

        return run

    return build


def _leaf(value, batch, dtype, cols=None):
    shape = (batch,) if cols is None else (batch, cols)
    return torch.full(shape, float(value), dtype=dtype, requires_grad=True)


def _sosfilt(x, **p):
    from diffx.functional import biquad, sosfilt

    b = x.shape[0]
    sos = torch.stack(
        [
            biquad("peaking", _leaf(f, b, torch.float64), _leaf(1.0, b, torch.float64),
                   SAMPLE_RATE, gain_db=_leaf(6.0, b, torch.float64))  # fmt: skip
            for f in (100.0, 1000.0, 5000.0, 12000.0)
        ],
        dim=1,
    )
    return sosfilt(x, sos)


def _allpass(x, **p):
    from diffx.functional import allpass_cascade

    b = x.shape[0]
    radius = torch.linspace(0.5, 0.98, 8, dtype=torch.float64).repeat(b, 1).requires_grad_()
    freq = torch.linspace(100.0, 15000.0, 8, dtype=torch.float64).repeat(b, 1).requires_grad_()
    return allpass_cascade(x, SAMPLE_RATE, "second_order", pole_radius=radius, freq_hz=freq)


def _compressor(x, **p):
    from diffx.functional import compressor

    b, dt = x.shape[0], x.dtype
    return compressor(
        x, SAMPLE_RATE, _leaf(-20.0, b, dt), _leaf(4.0, b, dt), _leaf(5.0, b, dt),
        _leaf(50.0, b, dt), knee_db=_leaf(6.0, b, dt),
    )  # fmt: skip


def _ir(x, seconds=1.0):
    g = torch.Generator().manual_seed(1)
    taps = round(seconds * SAMPLE_RATE)
    decay = torch.exp(-torch.arange(taps, dtype=x.dtype) / (0.2 * SAMPLE_RATE))
    ir = torch.randn(1, x.shape[1], taps, generator=g, dtype=x.dtype) * decay
    return ir.requires_grad_()


def _fft_convolve(x, **p):
    from diffx.functional import fft_convolve

    return fft_convolve(x, _ir(x))


def _convolution_reverb(x, **p):
    from diffx.functional import convolution_reverb

    return convolution_reverb(x, _ir(x), mix=_leaf(0.5, x.shape[0], x.dtype))


def _noise_reverb(x, **p):
    from diffx.functional import noise_reverb

    b, dt = x.shape[0], x.dtype
    return noise_reverb(x, SAMPLE_RATE, _leaf(1.0, b, dt), mix=_leaf(0.5, b, dt), length_s=1.0)


def _fractional_delay(x, **p):
    from diffx.functional import fractional_delay

    return fractional_delay(x, _leaf(1.2345, x.shape[0], x.dtype), SAMPLE_RATE)


def _tanh_adaa(x, **p):
    from diffx.functional import tanh_distortion

    return tanh_distortion(x, _leaf(12.0, x.shape[0], x.dtype), antialiasing="adaa1")


def cases() -> dict[str, tuple[str, object]]:
    from diffx import losses as L

    sr = SAMPLE_RATE
    return {
        # losses: every loss class diffx.losses exports (ESR with each pre-emphasis)
        "DCLoss": ("loss", _loss(L.DCLoss)),
        "ESRLoss": ("loss", _loss(L.ESRLoss)),
        "ESRLoss(hp)": ("loss", _esr("hp")),
        "ESRLoss(aw)": ("loss", _esr("aw")),
        "ESRLoss(lp)": ("loss", _esr("lp")),
        "NCCLoss": ("loss", _loss(L.NCCLoss)),
        "LoudnessLoss": ("loss", _loss(lambda: L.LoudnessLoss(sr))),
        "MultiResolutionSTFTLoss": ("loss", _loss(L.MultiResolutionSTFTLoss)),
        "MelSTFTLoss": ("loss", _loss(lambda: L.MelSTFTLoss(sr))),
        "MultiScaleSpectralLoss": ("loss", _loss(L.MultiScaleSpectralLoss)),
        "ComplexSTFTLoss": ("loss", _loss(L.ComplexSTFTLoss)),
        "ParallelMixLoss": ("loss", _loss(lambda: L.ParallelMixLoss(sr))),
        "NMRLoss": ("loss", _loss(lambda: L.NMRLoss(sr))),
        "PhaseResponseLoss": ("loss", _response_loss(L.PhaseResponseLoss)),
        "GroupDelayLoss": ("loss", _response_loss(L.GroupDelayLoss)),
        # pre-emphasis filters and functional ops
        "FirstOrderHighpass": ("op", _module_op(L.FirstOrderHighpass)),
        "AWeighting": ("op", _module_op(lambda: L.AWeighting(sr))),
        "AntialiasLowpass": ("op", _module_op(lambda: L.AntialiasLowpass(sr))),
        "sosfilt (4 biquads)": ("op", _op(_sosfilt)),
        "allpass_cascade (8 sections)": ("op", _op(_allpass)),
        "compressor": ("op", _op(_compressor)),
        "fft_convolve (1 s IR)": ("op", _op(_fft_convolve)),
        "convolution_reverb (1 s IR)": ("op", _op(_convolution_reverb)),
        "noise_reverb (1 s)": ("op", _op(_noise_reverb)),
        "fractional_delay": ("op", _op(_fractional_delay)),
        "tanh_distortion (adaa1)": ("op", _op(_tanh_adaa)),
    }


# --------------------------------------------------------------------------------------------
# Child: one case in this process


def make_inputs(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = 0.1 * torch.randn(*shape, generator=g, dtype=dtype)
    target = pred + 0.05 * torch.randn(*shape, generator=g, dtype=dtype)
    return pred.requires_grad_(), target


def child(name: str, shape: tuple[int, ...], dtype: torch.dtype, threads: int) -> None:
    torch.set_num_threads(threads)
    _, build = cases()[name]
    run = build(shape[1], dtype)
    run(*make_inputs((1, shape[1], WARMUP_SAMPLES), dtype, seed=1))
    pred, target = make_inputs(shape, dtype)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    base = report.rss_kib("VmRSS")
    start = time.perf_counter()
    run(pred, target)
    seconds = time.perf_counter() - start
    peak = report.rss_kib("VmHWM")
    print(json.dumps({"peak_mib": (peak - base) / 1024, "seconds": seconds}))


def measure(name: str, args) -> dict:
    cmd = [
        sys.executable, os.path.abspath(__file__), "--child", name, "--shape", args.shape,
        "--dtype", args.dtype, "--threads", str(args.threads),
    ]  # fmt: skip
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout ({args.timeout} s)"}
    if out.returncode != 0:
        # A child killed for memory (SIGKILL from the OOM killer) has no traceback to show.
        last = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
        return {"error": f"failed: {last[:80]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Parent: table


def parse_shape(text: str) -> tuple[int, ...]:
    shape = tuple(int(v) for v in text.split(","))
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"--shape must be batch,channels,samples, got {text!r}")
    return shape


def table(results: dict[str, dict], kinds: dict[str, str], input_mib: float, goal: float) -> str:
    lines = [
        f"| case | kind | peak MiB | x pred | x pair | fwd+bwd s | <= {goal:g}x pred |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | {kinds[name]} | {r['error']} | - | - | - | no |")
            continue
        ratio = r["peak_mib"] / input_mib
        verdict = "yes" if ratio <= goal else "**no**"
        lines.append(
            f"| {name} | {kinds[name]} | {r['peak_mib']:.0f} | {ratio:.2f} | {ratio / 2:.2f} | "
            f"{r['seconds']:.2f} | {verdict} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="7,2,1048576", help="batch,channels,samples")
    ap.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    ap.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    ap.add_argument("--goal", type=float, default=8.0, help="goal: peak <= GOAL x pred's size")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per case")
    ap.add_argument("--out", default=None, help="write the table into this RESULTS.md")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    shape = parse_shape(args.shape)
    dtype = getattr(torch, args.dtype)
    if args.child is not None:
        child(args.child, shape, dtype, args.threads)
        return

    from tqdm import tqdm

    all_cases = cases()
    names = list(all_cases) if args.cases is None else args.cases.split(",")
    unknown = [n for n in names if n not in all_cases]
    if unknown:
        ap.error(f"unknown cases {unknown}; known: {list(all_cases)}")
    input_mib = shape[0] * shape[1] * shape[2] * torch.finfo(dtype).bits / 8 / 2**20
    results = {}
    for name in (bar := tqdm(names, desc="memory", unit="case")):
        bar.set_postfix_str(name)
        results[name] = measure(name, args)
        r = results[name]
        tqdm.write(
            f"{name}: " + (r["error"] if "error" in r else f"{r['peak_mib']:.0f} MiB "
                           f"({r['peak_mib'] / input_mib:.2f}x pred)")  # fmt: skip
        )
    kinds = {n: all_cases[n][0] for n in names}
    body = table(results, kinds, input_mib, args.goal)
    print(body)
    if args.out:
        write(args, shape, input_mib, body)


def write(args, shape, input_mib: float, body: str) -> None:
    command = report.shown_command("benchmarks/bench_memory.py", sys.argv[1:])
    text = "\n".join(
        [
            "# Memory on long signals",
            "",
            "Generated by `benchmarks/bench_memory.py`; see its docstring for the method.",
            "",
            f"- Command: `{command}`",
            f"- Date: {datetime.datetime.now().isoformat(timespec='seconds')}; "
            f"{platform.machine()}, {os.cpu_count()} logical CPUs; "
            f"torch.set_num_threads({args.threads}); torch {torch.__version__}",
            f"- Input: `pred` and `target` each {shape} {args.dtype} = {input_mib:.0f} MiB "
            f"(the pair {2 * input_mib:.0f} MiB).",
            "- Peak MiB: peak RSS during one forward + backward minus the RSS before it (inputs "
            "excluded; `pred.grad` and every intermediate included). `x pred` = peak / size of "
            "`pred`; `x pair` = peak / size of `pred` + `target`. "
            f"Goal: peak <= {args.goal:g}x `pred`'s size.",
            "",
            body,
        ]
    )
    report.write_section(args.out, SECTION, text)


if __name__ == "__main__":
    main()

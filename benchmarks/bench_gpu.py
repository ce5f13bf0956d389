"""diffx's core ops and a style-transfer training step on a CUDA GPU, against GPU peers.

Usage::

    python benchmarks/bench_gpu.py [--out benchmarks/RESULTS.md] [--ops peq,compressor,...]
    python benchmarks/bench_gpu.py --device cpu --small      # smoke test without a GPU

Without a CUDA device (and without ``--device cpu --small``) it prints one line saying so and
exits with status 1. No GPU numbers are written anywhere unless it ran on one.

Method:

- The ops of ``benchmarks/peers.py`` (``peq``, ``compressor``, ``biquad``, ``allpass``), float32
  audio ``(64, 1, 220500)``: batch 64 x 5 s at 44.1 kHz, every parameter different per item,
  inputs made on the CPU from a fixed seed and moved to the GPU before timing.
- Implementations: diffx with ``backend="auto"``, which on CUDA is the exact parallel ``scan``
  for the IIR filters (``diffx.kernels.iir``) and the numba.cuda ballistics kernel for the
  compressor (``diffx.kernels.cuda_kernels``); diffx's CPU path (numba) on the same data for
  reference; and the peers that run on CUDA where installed (torchlpc, philtorch, torchcomp;
  each import is guarded and a missing one says ``skipped``).
- Correctness before timing: each output on the first ``CHECK_ITEMS`` items against a float64
  oracle (scipy's ``sosfilt`` for the filters; for the compressors that library's own algorithm
  re-implemented in float64, and for diffx its numba CPU path in float64), labelled as in
  ``bench_core.py`` (``ok`` <= 1e-3 relative, ``approx`` <= 1e-2, else ``WRONG``).
- Times: ``torch.cuda.synchronize()`` before and after each call, the median of N calls after
  one warm-up call (compilation, cuFFT plans, the caching allocator's first blocks); N shrinks
  with the call's duration. ``fwd``: forward without autograd; ``fwd+bwd``: forward and
  backward of ``mean(y^2)`` with audio and every parameter requiring grad.
- Peak memory: ``torch.cuda.max_memory_allocated()`` during one forward+backward, after
  ``reset_peak_memory_stats()``, minus the memory allocated before it (the inputs).
- The style-transfer step: ``benchmarks/bench_style.py``'s autodiff step (SpectralEncoder,
  controller, diffx EQ + compressor, MR-STFT + L1 loss, backward, Adam) at the full config's
  size (``configs/style_transfer/full.yaml``: batch 8 x 131072 samples at 24 kHz).
- A time budget (``--budget-s``, 240 s) leaves the rest ``skipped (time budget)`` so the
  command ends within 5 minutes.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402
import report  # noqa: E402
from bench_core import TOL_APPROX, TOL_OK, label, make_case  # noqa: E402
from report import fmt_ms, ratio  # noqa: E402

FULL = {"batch": 64, "samples": 5 * 44100, "style": (8, 131072), "check_items": 4}
SMALL = {"batch": 2, "samples": 4096, "style": (2, 12000), "check_items": 2}
GPU_PEERS = ("torchlpc", "philtorch", "torchcomp")
"""Peers of peers.OPS timed here: the ones with CUDA kernels (the others are CPU libraries or
FFT approximations that bench_core.py already covers)."""
MAX_WARMUP_S = 20.0  # an implementation whose warm-up call takes longer is not repeated
PEER_MODULES = {"torchlpc": "torchlpc", "philtorch": "philtorch", "torchcomp": "torchcomp"}


class Clock:
    """Wall time of calls on ``device``, synchronizing CUDA before and after each."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fn) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start

    def median_ms(self, fn, max_repeats: int) -> tuple[float, int]:
        """Median ms of N calls after one warm-up; N from the warm-up (3 .. max_repeats)."""
        warm = self.time(fn)
        if warm > MAX_WARMUP_S:
            return 1e3 * warm, 1
        n = int(np.clip(3.0 / max(warm, 1e-4), 3, max_repeats))
        return 1e3 * statistics.median(self.time(fn) for _ in range(n)), n


def peak_mib(device: torch.device, fn) -> float | str:
    """Peak CUDA memory one call allocates beyond what was allocated before it, MiB."""
    if device.type != "cuda":
        return "n/a (CPU)"
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def _call(impl: peers.Impl, x, params, backward: bool):
    """One call as bench_core.run_once, on whatever device ``x`` and ``params`` are."""

    def run():
        if not backward:
            with torch.no_grad():
                impl.fn(x, {k: v.float() for k, v in params.items()})
            return
        xg = x.clone().requires_grad_(True)
        pg = {k: v.float().requires_grad_(True) for k, v in params.items()}
        impl.fn(xg, pg).square().mean().backward()

    return run


def _reference(op: peers.Op, impl: peers.Impl, lib: str, x64: np.ndarray, p64: dict):
    if lib.startswith("diffx") and op.name == "compressor":
        # diffx's numba CPU path in float64: the same algorithm as the GPU kernel, and fast
        # (its own reference loop would take minutes at this length).
        from diffx.functional.dynamics import compressor

        params = {k: torch.from_numpy(np.asarray(p64[k])) for k in peers.COMP}
        y = compressor(torch.from_numpy(x64), peers.SAMPLE_RATE, **params, backend="numba")
        return y.numpy()
    return (impl.reference or op.reference)(x64, p64)


def _error(op, impl, lib, x, params, items: int) -> float:
    """Relative max error of the first ``items`` outputs against the float64 oracle."""
    xs, ps = x[:items], {k: v[:items] for k, v in params.items()}
    with torch.no_grad():
        y = impl.fn(xs, {k: v.float() for k, v in ps.items()})
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    x64 = xs.detach().cpu().double().numpy()
    p64 = {k: v.detach().cpu().numpy() for k, v in ps.items()}
    ref = _reference(op, impl, lib, x64, p64)
    return float(np.abs(y - ref).max() / max(np.abs(ref).max(), 1e-30))


def _peer_missing(lib: str, impl: peers.Impl) -> str | None:
    check = getattr(peers, "peer_missing", None)
    if check is not None and getattr(impl, "requires", None):
        return check(impl)
    try:
        importlib.import_module(PEER_MODULES[lib])
    except (ImportError, OSError) as err:  # OSError: an extension built for another torch
        return f"{lib} not installed ({type(err).__name__})"
    return None


def cuda_ballistics_status(device: torch.device) -> str | None:
    """``None`` when diffx's numba.cuda ballistics kernel runs here, else why not (diffx falls
    back to its reference loop with a warning, far too slow to time at this size)."""
    if device.type != "cuda":
        return None
    from diffx.kernels.ballistics import attack_release

    g = torch.zeros(2, 16, device=device)
    alpha = torch.full((2,), 0.5, device=device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        try:
            attack_release(g, alpha, alpha)
        except Exception as err:  # a kernel that fails to compile or launch: report, go on
            return f"{type(err).__name__}: {str(err).splitlines()[0][:100] if str(err) else ''}"
    fallback = [w for w in caught if "numba.cuda is unavailable" in str(w.message)]
    return str(fallback[0].message).split(";")[0] if fallback else None


def implementations(op: peers.Op, device: torch.device) -> dict[str, tuple[peers.Impl, str]]:
    """``{row name: (impl, device type)}``: diffx on ``device``, diffx on the CPU, GPU peers."""
    diffx = next(impl for impl in op.impls.values() if impl.is_diffx)
    rows = {"diffx": (diffx, device.type)}
    if device.type == "cuda":
        rows["diffx (CPU, numba)"] = (diffx, "cpu")
    for lib in GPU_PEERS:
        if lib in op.impls:
            rows[lib] = (op.impls[lib], device.type)
    return rows


def bench_ops(ops, device, cfg, deadline: float, log) -> dict:
    clock = Clock(device)
    max_repeats = 3 if cfg is SMALL else 10
    ballistics = cuda_ballistics_status(device)
    results: dict = {}
    for op_name in ops:
        op = peers.OPS[op_name]
        x_cpu, p_cpu = make_case(op, cfg["batch"], cfg["samples"])
        rows = results.setdefault(op_name, {})
        for name, (impl, where) in implementations(op, device).items():
            row = rows.setdefault(name, {"note": impl.note, "device": where})
            why = None
            if name.startswith("diffx"):
                why = peers.diffx_available("diffx", op_name)
                if not why and op_name == "compressor" and where == "cuda" and ballistics:
                    why = f"numba.cuda kernel unavailable ({ballistics})"
            else:
                why = _peer_missing(name, impl)
            if not why and time.perf_counter() > deadline:
                why = "skipped (time budget)"
            if why:
                row.update(fwd="skipped", bwd="skipped", mem="-", note=why)
                log(f"{op_name:10s} {name:20s} {why}")
                continue
            target = torch.device(where)
            x = x_cpu.to(target)
            params = {k: v.to(target) for k, v in p_cpu.items()}
            try:
                err = _error(op, impl, name, x, params, cfg["check_items"])
                row.update(err=err, label=label(err))
                row["fwd"], row["n_fwd"] = clock.median_ms(_call(impl, x, params, False),
                                                           max_repeats)  # fmt: skip
                if impl.differentiable:
                    row["bwd"], row["n_bwd"] = clock.median_ms(_call(impl, x, params, True),
                                                               max_repeats)  # fmt: skip
                    row["mem"] = peak_mib(target, _call(impl, x, params, True))
                else:
                    row.update(bwd="n/a", mem="-")
            except Exception as err:  # a peer failing must not stop the benchmark
                row.update(fwd=f"error: {type(err).__name__}", bwd="-", mem="-",
                           note=str(err).splitlines()[0][:100] if str(err) else "")  # fmt: skip
            mem = row.get("mem")
            log(f"{op_name:10s} {name:20s} fwd {fmt_ms(row.get('fwd')):>9s} ms  fwd+bwd "
                f"{fmt_ms(row.get('bwd')):>9s} ms  peak "
                f"{f'{mem:.0f} MiB' if isinstance(mem, float) else mem}  "
                f"err {row.get('err', float('nan')):.1e} {row.get('label', '')}")  # fmt: skip
            del x, params
            if device.type == "cuda":  # hand the freed blocks back before the next library
                gc.collect()
                torch.cuda.empty_cache()
    return results


def bench_style_step(device, cfg, deadline: float, log) -> dict:
    """Median ms and peak memory of style-transfer training steps on ``device``."""
    if time.perf_counter() > deadline:
        return {"note": "skipped (time budget)"}
    from bench_style import SR, make_task

    from diffx.data import StyleTransferDataModule

    batch_size, samples = cfg["style"]
    torch.manual_seed(0)
    dm = StyleTransferDataModule(sample_rate=SR, sources=["guitar_em9", "violin", "bass"],
                                 crop_samples=samples, val_examples=2 * batch_size,
                                 test_examples=batch_size, batch_size=batch_size)  # fmt: skip
    dm.setup("fit")
    batches = [{k: v.to(device) for k, v in b.items()} for b in dm.fixed["val"]]
    task = make_task("autodiff").to(device)
    optimizer = torch.optim.Adam([p for p in task.parameters() if p.requires_grad], lr=1e-4)
    step_index = [0]

    def step():
        batch = batches[step_index[0] % len(batches)]
        step_index[0] += 1
        pred, _ = task(batch["input"], batch["reference"])
        loss = task.loss(pred, batch["target"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    clock = Clock(device)
    clock.time(step)  # a second warm-up: Adam's state and the allocator's blocks
    ms, n = clock.median_ms(step, 3 if cfg is SMALL else 10)
    mem = peak_mib(device, step)
    log(f"style transfer step: {ms:.1f} ms (median of {n}), peak "
        f"{f'{mem:.0f} MiB' if isinstance(mem, float) else mem}")  # fmt: skip
    return {"ms": ms, "n": n, "mem": mem, "batch": batch_size, "samples": samples}


def versions() -> str:
    out = [f"torch {torch.__version__}"]
    if torch.version.cuda:
        out.append(f"CUDA {torch.version.cuda}")
    for dist in ("numba", "torchlpc", "philtorch", "torchcomp"):
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist} not installed")
    return ", ".join(out)


def device_name(device: torch.device) -> str:
    if device.type != "cuda":
        return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs)"
    props = torch.cuda.get_device_properties(device)
    return f"{torch.cuda.get_device_name(device)} ({props.total_memory / 2**30:.0f} GiB)"


def write_results(path, results, style, device, cfg, command, elapsed) -> None:
    smoke = device.type != "cuda"
    title = ("# GPU benchmark: CPU smoke run (--small; not GPU numbers)" if smoke
             else "# GPU benchmark")  # fmt: skip
    lines = [
        title, "",
        "Generated by `benchmarks/bench_gpu.py`; do not edit by hand.", "",
        f"- Command: `{command}`",
        f"- Date: {datetime.datetime.now().isoformat(timespec='seconds')}; total run time "
        f"{elapsed:.0f} s",
        f"- Device: {device_name(device)}",
        f"- Versions: {versions()}",
        f"- Audio float32 `(batch, 1, samples)` = ({cfg['batch']}, 1, {cfg['samples']}) at "
        "44.1 kHz; times are medians in ms of N calls after one warm-up (on CUDA with "
        "`torch.cuda.synchronize()` before and after each call). `fwd` = forward without "
        "autograd; `fwd+bwd` = forward + backward of `mean(y^2)` with audio and all parameters "
        "requiring grad. Peak = `torch.cuda.max_memory_allocated()` during one forward+backward "
        "minus what was allocated before it (inputs excluded).",
        f"- Correctness on the first {cfg['check_items']} items against a float64 oracle: "
        f"`ok` <= {TOL_OK:g}, `approx` <= {TOL_APPROX:g}, else `WRONG`. Ratio = time / diffx's "
        "time on the GPU (> 1: slower than diffx).",
        "",
    ]  # fmt: skip
    for op_name, rows in results.items():
        lines += [f"## {op_name}: {peers.OPS[op_name].description}", "",
                  "| implementation | device | fwd ms | fwd+bwd ms | fwd+bwd vs diffx | peak MiB "
                  "| rel. error | output | notes |",
                  "|---|---|---:|---:|---:|---:|---:|---|---|"]  # fmt: skip
        base = rows.get("diffx", {}).get("bwd")
        for name, r in rows.items():
            err = r.get("err")
            mem = r.get("mem", "-")
            lines.append(
                f"| {name} | {r.get('device', '-')} | {fmt_ms(r.get('fwd', '-'))} "
                f"| {fmt_ms(r.get('bwd', '-'))} | {ratio(r.get('bwd'), base)} "
                f"| {f'{mem:.0f}' if isinstance(mem, float) else mem} "
                f"| {f'{err:.1e}' if isinstance(err, float) else '-'} | {r.get('label', '-')} "
                f"| {r.get('note', '')} |"
            )
        lines.append("")
    lines += ["## Style transfer training step (autodiff, diffx EQ + compressor)", ""]
    if "ms" in style:
        mem = style["mem"]
        lines += [
            f"batch {style['batch']} x {style['samples']} samples at 24 kHz "
            "(`benchmarks/bench_style.py`'s autodiff step: encoder, controller, chain, MR-STFT "
            "+ L1 loss, backward, Adam).", "",
            "| ms per step | steps/s | peak MiB |", "|---:|---:|---:|",
            f"| {style['ms']:.1f} | {1e3 / style['ms']:.2f} "
            f"| {f'{mem:.0f}' if isinstance(mem, float) else mem} |", "",
        ]  # fmt: skip
    else:
        lines += [style.get("note", "not run"), ""]
    report.write_section(path, "gpu-smoke" if smoke else "gpu", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                    help="cpu only with --small: a smoke test of the script itself")  # fmt: skip
    ap.add_argument("--small", action="store_true",
                    help="tiny sizes (batch 2 x 4096 samples), 3 repeats: a smoke test")
    ap.add_argument("--ops", default="peq,compressor,biquad,allpass")
    ap.add_argument("--out", help="write the section 'gpu' (or 'gpu-smoke') of this file")
    ap.add_argument("--budget-s", type=float, default=240.0,
                    help="stop starting new measurements after this many seconds")  # fmt: skip
    args = ap.parse_args(argv)
    if args.device == "cpu" and not args.small:
        ap.error("--device cpu is only the smoke test: add --small (CPU timings: bench_core.py)")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu.py: no CUDA device visible to torch "
              f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); "
              "run it on a GPU machine, or smoke-test with --device cpu --small",
              file=sys.stderr)  # fmt: skip
        return 1
    ops = [o for o in args.ops.split(",") if o]
    for o in ops:
        if o not in peers.OPS:
            ap.error(f"unknown op {o!r}; choose from {sorted(peers.OPS)}")
    device = torch.device(args.device)
    cfg = SMALL if args.small else FULL
    start = time.perf_counter()
    deadline = start + args.budget_s

    def log(line: str) -> None:
        print(line, flush=True)

    log(f"device: {device_name(device)}; {versions()}")
    results = bench_ops(ops, device, cfg, deadline, log)
    style = bench_style_step(device, cfg, deadline, log)
    if args.out:
        command = "python " + " ".join(["benchmarks/bench_gpu.py", *(argv or sys.argv[1:])])
        write_results(args.out, results, style, device, cfg, command,
                      time.perf_counter() - start)  # fmt: skip
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

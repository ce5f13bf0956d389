"""diffx's speed on a loaded CPU: idle, beside busy processes, and under 2-process CPU DDP.

Usage::

    python benchmarks/bench_load.py [--threads 2] [--repeats 15] [--steps 8]
        [--compare-checkout DIR] [--out benchmarks/RESULTS.md] [--section NAME]

Method:

- Workloads, each timed in a fresh Python process (so thread pools start clean) with
  ``torch.set_num_threads(--threads)`` and no ``NUMBA_NUM_THREADS`` (numba's default, all
  cores, as users run it): the 6-band parametric EQ and the compressor, forward + backward on
  8 x 131072 samples at 44.1 kHz (median of ``--repeats`` calls after two warm-ups), and one
  style-transfer training step of the quickstart model (batch 8 x 1 s at 24 kHz, encoder,
  controller, EQ + compressor, MR-STFT + L1 loss, backward, Adam; median of ``--steps`` steps
  after two warm-ups).
- Load: ``k`` = 0, 1, 2 competing processes, each one thread spinning in pure Python (a
  single-threaded job sharing the machine), started before the workload and killed after it.
- DDP: the style-transfer step in two processes (``torch.distributed`` with gloo, the model in
  ``DistributedDataParallel``, gradients all-reduced every step), each with the thread count
  Lightning gives a DDP process, ``max(1, cores // processes)``; the time is the slower rank's
  median.
- Goal (issue 22): with ``k`` competing single-thread processes on ``n`` cores, a workload
  using ``T`` threads should take at most 1.3x its idle time scaled by its fair share of the
  machine. With ``k + T`` runnable threads on ``n`` cores each gets ``n / (k + T)`` of a core
  when ``k + T > n``, so the scale is ``max(n, k + T) / n`` (1.5x for k = 1 and 2x for k = 2
  when T = n = 2). For DDP each process is one of two on two cores, so its bound is 1.3x the
  idle one-thread step.
- ``--compare-checkout DIR`` runs every workload a second time with ``DIR`` first on
  ``PYTHONPATH`` (a ``git worktree`` of an older commit), in the same run, so the before/after
  columns come from one machine state.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SPIN = "while True:\n    pass\n"
WORKLOADS = ("peq", "compressor", "style_step")
STYLE_SR = 24000


# --------------------------------------------------------------------------------------------
# workers (run in a child process)
# --------------------------------------------------------------------------------------------


def _time_calls(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after two warm-ups."""
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        fn()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _core_op(name: str):
    """The op of ``bench_core``'s diffx row (``peers``), forward + backward, as a call."""
    import numpy as np
    import torch

    sys.path.insert(0, HERE)
    from peers import COMP, _diffx_compressor, _diffx_peq, _peq_params

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((8, 1, 131072)).astype(np.float32) * 0.3)
    if name == "peq":
        op = _diffx_peq
        params = {k: v.float().requires_grad_() for k, v in _peq_params(8, rng).items()}
    else:
        op = _diffx_compressor
        params = {k: torch.full((8,), v, requires_grad=True) for k, v in COMP.items()}

    def call():
        op(x.requires_grad_(), params).square().mean().backward()

    return call


def _style_setup():
    import torch

    from diffx.data import StyleTransferDataModule
    from diffx.effects import Compressor, EffectChain, ParametricEQ
    from diffx.nn import SpectralEncoder
    from diffx.tasks import StyleTransfer

    torch.manual_seed(0)
    dm = StyleTransferDataModule(sample_rate=STYLE_SR, sources=["guitar_em9", "violin", "bass"],
                                 val_examples=16, test_examples=8, batch_size=8)  # fmt: skip
    dm.setup("fit")
    chain = EffectChain([ParametricEQ(STYLE_SR), Compressor(STYLE_SR)])
    encoder = SpectralEncoder(STYLE_SR, compression="log", level_bands=24)
    task = StyleTransfer(chain=chain, encoder=encoder, sample_rate=STYLE_SR, loudness_match=True)
    return task, dm.fixed["val"]


def _style_step_fn(task, batches, model=None):
    import torch

    model = model or task
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    state = {"i": 0}

    def step():
        batch = batches[state["i"] % len(batches)]
        state["i"] += 1
        pred, _ = model(batch["input"], batch["reference"])
        loss = task.loss(pred, batch["target"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def _ddp_rank(rank: int, world: int, port: int, steps: int, out_path: str) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # What Lightning's DDP strategy does when OMP_NUM_THREADS is unset.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    task, batches = _style_setup()
    model = torch.nn.parallel.DistributedDataParallel(task)
    seconds = _time_calls(_style_step_fn(task, batches, model), steps)
    with open(f"{out_path}.{rank}", "w") as f:
        json.dump({"seconds": seconds}, f)
    dist.destroy_process_group()


def worker(workload: str, threads: int, repeats: int, steps: int) -> float:
    """Median seconds of one call of ``workload`` in this process."""
    import torch

    if workload == "ddp_style_step":
        import socket

        import torch.multiprocessing as mp

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench_load_{os.getpid()}")
        mp.spawn(_ddp_rank, args=(2, port, steps, out), nprocs=2, join=True)
        times = []
        for rank in range(2):
            with open(f"{out}.{rank}") as f:
                times.append(json.load(f)["seconds"])
            os.remove(f"{out}.{rank}")
        return max(times)
    torch.set_num_threads(threads)
    if workload == "style_step":
        task, batches = _style_setup()
        return _time_calls(_style_step_fn(task, batches), steps)
    return _time_calls(_core_op(workload), repeats)


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------


def measure(workload, threads, competitors, args, pythonpath=None) -> float:
    """Run ``workload`` in a child process beside ``competitors`` spinning processes."""
    env = dict(os.environ)
    env.pop("NUMBA_NUM_THREADS", None)
    env.pop("OMP_NUM_THREADS", None)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(competitors)]
    try:
        time.sleep(0.5 if spinners else 0.0)
        done = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--worker", workload,
             "--threads", str(threads), "--repeats", str(args.repeats),
             "--steps", str(args.steps)],
            env=env, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    if done.returncode != 0:
        raise RuntimeError(f"{workload} failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--compare-checkout", default=None, help="older checkout for 'before' rows")
    ap.add_argument("--out", default=None)
    ap.add_argument("--section", default=None, help="RESULTS.md section (default load-tT)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(worker(args.worker, args.threads, args.repeats, args.steps))
        return

    n_cores = os.cpu_count() or 1
    begin = time.time()
    versions = [("diffx", None)]
    if args.compare_checkout:
        label = subprocess.run(["git", "-C", args.compare_checkout, "rev-parse", "--short",
                                "HEAD"], capture_output=True, text=True).stdout.strip()  # fmt: skip
        versions.append((f"before ({label})", os.path.abspath(args.compare_checkout)))
    rows = []
    for workload in WORKLOADS:
        for name, path in versions:
            idle = measure(workload, args.threads, 0, args, path)
            cells = [f"{idle * 1e3:.1f}"]
            verdicts = []
            for k in (1, 2):
                loaded = measure(workload, args.threads, k, args, path)
                bound = 1.3 * idle * max(n_cores, k + args.threads) / n_cores
                cells.append(f"{loaded * 1e3:.1f} ({loaded / idle:.2f}x)")
                verdicts.append("yes" if loaded <= bound else "**no**")
            rows.append(f"| {workload} | {name} | " + " | ".join(cells)
                        + " | " + " / ".join(verdicts) + " |")  # fmt: skip
            print(rows[-1], flush=True)
    ddp_rows = []
    for name, path in versions:
        single = measure("style_step", 1, 0, args, path)
        ddp = measure("ddp_style_step", 1, 0, args, path)
        verdict = "yes" if ddp <= 1.3 * single else "**no**"
        ddp_rows.append(f"| {name} | {single * 1e3:.1f} | {ddp * 1e3:.1f} | "
                        f"{ddp / single:.2f}x | {verdict} |")  # fmt: skip
        print(ddp_rows[-1], flush=True)

    command = "python benchmarks/bench_load.py " + " ".join(sys.argv[1:])
    text = "\n".join([
        f"# Speed under load (CPU), {args.threads} thread(s)",
        "",
        "Generated by `benchmarks/bench_load.py`; do not edit by hand (method in its docstring).",
        "",
        f"- Command: `{command.strip()}`",
        f"- Date: {datetime.datetime.now().isoformat(timespec='seconds')}; total run time "
        f"{time.time() - begin:.0f} s",
        f"- Machine: {platform.processor() or platform.machine()}; {n_cores} logical CPUs; "
        f"workloads with torch.set_num_threads({args.threads}), NUMBA_NUM_THREADS unset",
        "- Times: median ms per call (ops: fwd+bwd on 8 x 131072 at 44.1 kHz, "
        f"{args.repeats} calls) or per step (style transfer, quickstart model, {args.steps} "
        "steps); in brackets the ratio to the idle time. Goal met: loaded time <= 1.3 x idle x "
        f"max(n, k + T) / n, with n = {n_cores} cores, T = {args.threads} threads, k competing "
        "single-thread processes.",
        "",
        "| workload | code | idle ms | k = 1 | k = 2 | goal met (k = 1 / 2) |",
        "|---|---|---:|---:|---:|---|",
        *rows,
        "",
        "Two-process CPU DDP (gloo; each process `max(1, cores // 2)` threads, as Lightning "
        "sets them): the slower rank's median step against one idle process with one thread.",
        "",
        "| code | one process, 1 thread, ms | DDP, 2 processes, ms | ratio | <= 1.3x |",
        "|---|---:|---:|---:|---|",
        *ddp_rows,
    ])  # fmt: skip
    print(text)
    if args.out:
        sys.path.insert(0, HERE)
        from report import write_section

        write_section(args.out, args.section or f"load-t{args.threads}", text)


if __name__ == "__main__":
    main()

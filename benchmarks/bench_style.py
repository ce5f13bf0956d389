"""Training speed of style transfer (DeepAFx-ST) per gradient method, on CPU.

Usage::

    python benchmarks/bench_style.py [--steps N] [--threads T] [--out benchmarks/RESULTS.md]

Method:

- One training step = encoder on input and reference, controller, the effect chain (or its
  stand-in), the loss (auraloss MR-STFT + 100 x L1, DeepAFx-ST's), backward and an Adam
  step; batch 8 x 1 s at 24 kHz (the quickstart's setting), a ``SpectralEncoder`` and the
  256-wide controller. Examples are made once beforehand (data making is not timed).
- Methods: autodiff through diffx's EQ + compressor; the same with the quickstart's model
  (log front end with level features, the reference-loudness stage); the same step with
  dasp-pytorch's parametric EQ and compressor in the chain's place (a peer's differentiable
  effects, same parameter count and ranges, mapped from the same normalized outputs; encoder,
  controller, loss and optimizer are the same code in both); SPSA (1 perturbation) around
  diffx's chain and around pedalboard's EQ + compressor; neural proxies (two TCNs, 4 blocks, 32
  channels) in ``proxy`` and ``straight_through`` mode.
- Options (``StyleTransfer``'s flags, which change numerics by float rounding): ``compile``
  (``torch.compile`` of the encoder's network) and ``fast loss backward``
  (``fast_loss_backward``: the MR-STFT's STFT differentiated by an inverse real FFT), each alone
  and together, and the dasp-pytorch step with both (the options act on the parts the two steps
  share, so each pair is compared with the same options). A dasp-pytorch row's note gives its
  time over the diffx row with the same options.
- Times: median of N steps, ``torch.set_num_threads(T)``. The methods take turns, so that a
  change in machine load reaches every method alike: each turn runs an untimed step and then
  the timed one, so that no timed step follows another method's. The first turn's two steps
  (which include ``compile``'s compilation) are not timed.
- SPSA cost: the black-box chain evaluations per step (``B (1 + 2K)``) and the time the
  backward spends on them.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from report import write_section  # noqa: E402

from diffx.data import StyleTransferDataModule  # noqa: E402
from diffx.effects import EffectChain, NeuralProxy, ProxyChain  # noqa: E402
from diffx.nn import SpectralEncoder  # noqa: E402
from diffx.tasks import StyleTransfer  # noqa: E402

SR = 24000


class DaspChain(torch.nn.Module):
    """dasp-pytorch's parametric EQ + compressor driven by diffx's normalized parameters."""

    def __init__(self, chain: EffectChain):
        super().__init__()
        import dasp_pytorch.functional as dasp

        self.dasp, self.chain = dasp, chain

    def forward(self, x, params):
        p = self.chain.denormalize(params)

        def eq(name):
            return p[f"parametriceq.{name}"][:, None]

        y = self.dasp.parametric_eq(
            x, SR,
            eq("low_shelf_gain_db"), eq("low_shelf_freq_hz"), eq("low_shelf_q"),
            eq("band1_gain_db"), eq("band1_freq_hz"), eq("band1_q"),
            eq("band2_gain_db"), eq("band2_freq_hz"), eq("band2_q"),
            eq("band3_gain_db"), eq("band3_freq_hz"), eq("band3_q"),
            eq("band4_gain_db"), eq("band4_freq_hz"), eq("band4_q"),
            eq("high_shelf_gain_db"), eq("high_shelf_freq_hz"), eq("high_shelf_q"),
        )  # fmt: skip

        def comp(name):
            return p[f"compressor.{name}"][:, None]

        return self.dasp.compressor(
            y, SR, comp("threshold_db"), comp("ratio"), comp("attack_ms"), comp("release_ms"),
            comp("knee_db"), comp("makeup_gain_db"),
        )  # fmt: skip


#: The rows' options: ``StyleTransfer`` flags by the suffix after the method's comma.
OPTIONS = {
    "": {},
    "compile": {"compile": True},
    "fast loss backward": {"fast_loss_backward": True},
    "compile + fast loss backward": {"compile": True, "fast_loss_backward": True},
}


def make_task(method: str) -> StyleTransfer:
    from diffx.effects import Compressor, ParametricEQ

    chain = EffectChain([ParametricEQ(SR), Compressor(SR)])
    base, _, option = method.partition(", ")
    if base in ("autodiff", "dasp-pytorch autodiff") and option in OPTIONS:
        task = StyleTransfer(chain=chain, sample_rate=SR, **OPTIONS[option])
        if method.startswith("dasp"):
            task.processor = DaspChain(chain)
        return task
    if method == "autodiff, quickstart model":
        # configs/style_transfer/quickstart.yaml's additions: level features in the encoder and
        # the reference-loudness stage (same chain, loss and batch as the other rows).
        encoder = SpectralEncoder(SR, compression="log", level_bands=24)
        return StyleTransfer(chain=chain, encoder=encoder, sample_rate=SR, loudness_match=True)
    if method == "spsa (diffx chain)":
        return StyleTransfer(chain=chain, sample_rate=SR, gradient="spsa")
    if method == "spsa (pedalboard chain)":
        from diffx.effects import PedalboardCompressor, PedalboardParametricEQ

        board = EffectChain([PedalboardParametricEQ(SR), PedalboardCompressor(SR)])
        return StyleTransfer(chain=board, sample_rate=SR, gradient="spsa")
    mode = "proxy" if method == "proxy" else "straight_through"
    proxies = [NeuralProxy.for_effect(e, channels=32) for e in chain.effects]
    task = StyleTransfer(chain=chain, sample_rate=SR, gradient="autodiff")
    task.processor = ProxyChain(chain, proxies, mode=mode)
    task.gradient = "proxy"
    return task


def time_step(task: StyleTransfer, optimizer: torch.optim.Optimizer, batch) -> float:
    """Seconds of one training step."""
    start = time.perf_counter()
    pred, _ = task(batch["input"], batch["reference"])
    loss = task.loss(pred, batch["target"])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def time_steps(tasks: dict[str, StyleTransfer], batches, steps: int) -> dict[str, list[float]]:
    """``steps`` step times per method, the methods taking turns (see the module docs)."""
    optimizers = {
        method: torch.optim.Adam([p for p in task.parameters() if p.requires_grad], lr=1e-4)
        for method, task in tasks.items()
    }
    times = {method: [] for method in tasks}
    for i in range(steps + 1):
        for method, task in tasks.items():
            # An untimed step first: the timed one then follows a step of its own method, not
            # another method's (whose memory use would otherwise be part of its time).
            time_step(task, optimizers[method], batches[2 * i % len(batches)])
            seconds = time_step(task, optimizers[method], batches[(2 * i + 1) % len(batches)])
            if i >= 1:  # the first turn warms up (and compiles)
                times[method].append(seconds)
    return times


def spsa_cost(task: StyleTransfer, batch) -> tuple[int, float]:
    """Black-box evaluations per step and the ms the SPSA backward spends on them."""
    params = task.predict_parameters(batch["input"], batch["reference"]).detach()
    params.requires_grad_(True)
    out = task.processor(batch["input"], params)
    start = time.perf_counter()
    out.backward(torch.ones_like(out))
    return task.processor.evaluations_per_step(params.shape[0]), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "RESULTS.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    begin = time.time()
    dm = StyleTransferDataModule(sample_rate=SR, sources=["guitar_em9", "violin", "bass"],
                                 val_examples=32, test_examples=8, batch_size=8)  # fmt: skip
    dm.setup("fit")
    batches = dm.fixed["val"]
    methods = ["autodiff", "autodiff, quickstart model", "dasp-pytorch autodiff",
               "autodiff, compile", "autodiff, fast loss backward",
               "autodiff, compile + fast loss backward",
               "dasp-pytorch autodiff, compile + fast loss backward",
               "spsa (diffx chain)", "spsa (pedalboard chain)", "proxy",
               "proxy straight-through"]  # fmt: skip
    tasks, missing = {}, {}
    for method in methods:
        try:
            tasks[method] = make_task(method)
        except ImportError as error:
            missing[method] = error
    times = time_steps(tasks, batches, args.steps)
    medians = {method: statistics.median(t) for method, t in times.items()}
    base = medians["autodiff"]
    rows = []
    for method in methods:
        if method in missing:
            rows.append(f"| {method} | n/a | n/a | - | {missing[method]} |")
            continue
        median = medians[method]
        extra = ""
        if method.startswith("spsa"):
            evaluations, seconds = spsa_cost(tasks[method], batches[0])
            extra = f"SPSA backward: {evaluations} chain evaluations, {seconds * 1e3:.0f} ms"
        if method.startswith("dasp"):
            peer = method.replace("dasp-pytorch autodiff", "autodiff")
            extra = f"{median / medians[peer]:.2f}x the time of `{peer}`"
        rows.append(
            f"| {method} | {median * 1e3:.0f} | {1 / median:.2f} | {median / base:.2f}x | {extra} |"
        )
        print(rows[-1], flush=True)
    command = "python benchmarks/bench_style.py " + " ".join(sys.argv[1:])
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    text = "\n".join([
        "# Style transfer training speed (CPU)",
        "",
        "Generated by `benchmarks/bench_style.py`; do not edit by hand.",
        "",
        f"- Command: `{command.strip()}`",
        f"- Date: {datetime.datetime.now().isoformat(timespec='seconds')}; total run time "
        f"{time.time() - begin:.0f} s; load average at the end {load}",
        f"- Machine: {platform.processor() or platform.machine()}; {os.cpu_count()} logical "
        f"CPUs; torch.set_num_threads({args.threads}); torch {torch.__version__}",
        f"- One step: batch 8 x 1 s at 24 kHz, SpectralEncoder + controller, MR-STFT + 100 x "
        f"L1, backward, Adam; median of {args.steps} steps, the methods taking turns (an untimed "
        "and a timed step each) after a turn of 2 warm-up steps. Ratio = time / autodiff time.",
        "",
        "| method | ms per step | steps/s | vs autodiff | notes |",
        "|---|---:|---:|---:|---|",
        *rows,
    ])  # fmt: skip
    write_section(args.out, "style", text)
    print(text)


if __name__ == "__main__":
    main()

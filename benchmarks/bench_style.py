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
  effects, same parameter count and ranges, mapped from the same normalized outputs); SPSA (1
  perturbation) around diffx's chain and around pedalboard's EQ + compressor; neural proxies
  (two TCNs, 4 blocks, 32 channels) in ``proxy`` and ``straight_through`` mode.
- Times: median of N steps after two warm-up steps, ``torch.set_num_threads(T)``.
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


def make_task(method: str) -> StyleTransfer:
    from diffx.effects import Compressor, ParametricEQ

    chain = EffectChain([ParametricEQ(SR), Compressor(SR)])
    if method in ("autodiff", "dasp-pytorch autodiff"):
        task = StyleTransfer(chain=chain, sample_rate=SR)
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


def time_steps(task: StyleTransfer, batches, steps: int) -> list[float]:
    optimizer = torch.optim.Adam([p for p in task.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for i in range(steps + 2):
        batch = batches[i % len(batches)]
        start = time.perf_counter()
        pred, _ = task(batch["input"], batch["reference"])
        loss = task.loss(pred, batch["target"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
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
               "spsa (diffx chain)", "spsa (pedalboard chain)", "proxy",
               "proxy straight-through"]  # fmt: skip
    rows, base = [], None
    for method in methods:
        try:
            task = make_task(method)
        except ImportError as error:
            rows.append(f"| {method} | n/a | n/a | - | {error} |")
            continue
        times = time_steps(task, batches, args.steps)
        median = statistics.median(times)
        base = base or median
        extra = ""
        if method.startswith("spsa"):
            evaluations, seconds = spsa_cost(task, batches[0])
            extra = f"SPSA backward: {evaluations} chain evaluations, {seconds * 1e3:.0f} ms"
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
        f"L1, backward, Adam; median of {args.steps} steps after 2 warm-up steps. Ratio = "
        "time / autodiff time.",
        "",
        "| method | ms per step | steps/s | vs autodiff | notes |",
        "|---|---:|---:|---:|---|",
        *rows,
    ])  # fmt: skip
    write_section(args.out, "style", text)
    print(text)


if __name__ == "__main__":
    main()

"""Benchmark diffx's DDSP synthesis and loss against acids-ircam/ddsp_pytorch, on CPU.

Usage::

    python benchmarks/bench_ddsp.py [--repeats N] [--train-repeats M] [--threads T]
                                    [--batch B] [--seconds S] [--no-memory]
                                    [--out benchmarks/RESULTS.md]

Method:

- Settings: DDSP's (Engel et al., ICLR 2020): 16 kHz, 250 Hz control frames (hop 64), 100
  harmonics, 65 noise bands; batch ``B`` (16) of ``S``-second (4) clips, float32.
- Peer: ``ddsp/core.py`` and ``ddsp/model.py`` of github.com/acids-ircam/ddsp_pytorch, the most
  used PyTorch DDSP, read at run time from a local git mirror or checkout (``--peer-repo``, or
  ``$DIFFX_DDSP_PYTORCH_REPO``) into a temporary package and never stored in diffx. Its
  ``core.py`` imports ``crepe`` (only for its pitch extraction, not used here); when it is
  not installed an empty stand-in module is registered for the import. Without the mirror the
  peer is skipped with a message.
- Synthesis: harmonic bank + filtered noise from fixed random controls (f0 with vibrato,
  amplitude envelope, harmonic distribution, noise magnitudes). diffx as ``TimbreTransfer``
  calls it (``harmonic_synth`` with one repeated frame appended and ``upsample="window"``,
  ``filtered_noise``); the peer as its ``DDSP.forward`` does (``remove_above_nyquist``,
  normalization, ``upsample``, ``harmonic_synth``, ``amp_to_impulse_response`` and
  ``fft_convolve`` on uniform noise). ``fwd`` under ``torch.no_grad()``; ``fwd+bwd`` =
  forward + backward of ``mean(y^2)`` with every control requiring grad.
- Loss: diffx ``MultiScaleSpectralLoss`` (FFT 2048..64) against the loss of the peer's
  ``train.py`` (its ``multiscale_fft`` + L1 of linear and log magnitudes) with the FFT sizes
  of its ``config.yaml`` (4096..128) and with diffx's; forward + backward w.r.t. the
  prediction.
- Training step: decoder + synthesizers + reverb + loss + backward + Adam step of diffx's
  ``TimbreTransfer`` and of the peer's ``DDSP`` model with its training loop's loss, at the
  closest settings (the differences are listed in the report).
- Correctness before timing, against analytic oracles: a constant-f0 single harmonic must be a
  sine; 100 equal harmonics at 1 kHz must be the band-limited sum of the 7 below Nyquist; flat
  noise magnitudes must pass the noise unchanged; each loss against a float64 NumPy
  re-implementation of its own definition.
- Times: ``torch.set_num_threads(T)`` (2), median of N (10) calls after one warm-up; a
  training step takes seconds (the 1000-step GRU dominates), so it is the median of M (5)
  steps after one warm-up step, to keep the default run near five minutes on two cores.
  Ratio = peer time / diffx time from the same run.
- Peak memory (unless ``--no-memory``): a fresh subprocess per case; after imports, input
  creation and a warm-up call on batch 1 x 1 s (for training: one step, which also creates
  Adam's state), the kernel's peak resident-set counter is reset (``echo 5 >
  /proc/self/clear_refs``) and the current RSS read; the peak (``VmHWM``) during one call at
  the benchmark's size minus that RSS is reported (outputs, graph, gradients, workspaces;
  inputs excluded). ``tracemalloc`` would miss torch's allocations.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402
from report import fmt_ms, ratio  # noqa: E402

from diffx.functional import filtered_noise, harmonic_synth  # noqa: E402
from diffx.losses import MultiScaleSpectralLoss  # noqa: E402
from diffx.tasks import TimbreTransfer  # noqa: E402

SR = 16000
HOP = 64  # 250 Hz frames
N_HARMONICS = 100
N_BANDS = 65
HIDDEN = 512
OVERLAP = 0.75
DIFFX_SCALES = (2048, 1024, 512, 256, 128, 64)
PEER_SCALES = (4096, 2048, 1024, 512, 256, 128)  # its config.yaml
PEER_BLOCK_SIZE = 160  # its config.yaml (100 Hz frames)
PEER_REVERB_SECONDS = 1.0  # DDSP(...) builds Reverb(sampling_rate, sampling_rate)
DEFAULT_REPO = "/work/.mirror/acids-ircam+ddsp_pytorch/repo"
PEER = "ddsp_pytorch"
PEER_FILES = ("__init__.py", "core.py", "model.py")


# --------------------------------------------------------------------------------------------
# The peer, imported from the mirror


def load_peer(repo: str) -> types.SimpleNamespace:
    """Import the peer's ``ddsp/core.py`` and ``ddsp/model.py`` as a temporary package."""
    folder = tempfile.mkdtemp(prefix="ddsp_pytorch_")
    package = os.path.join(folder, "ddsp_pytorch_peer")
    os.makedirs(package)
    for name in PEER_FILES:
        local = os.path.join(repo, "ddsp", name)
        if os.path.isfile(local):
            source = open(local).read()
        else:
            source = subprocess.run(
                ["git", "--git-dir", repo, "show", f"HEAD:ddsp/{name}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        with open(os.path.join(package, name), "w") as f:
            f.write(source)
    # core.py imports crepe (TensorFlow) for its f0 extraction, which nothing here calls.
    stubbed = []
    for missing in ("crepe", "librosa"):
        if importlib.util.find_spec(missing) is None:
            sys.modules[missing] = types.ModuleType(missing)
            stubbed.append(missing)
    sys.path.insert(0, folder)
    try:
        core = importlib.import_module("ddsp_pytorch_peer.core")
        model = importlib.import_module("ddsp_pytorch_peer.model")
    finally:
        sys.path.remove(folder)
    commit = subprocess.run(
        ["git", "--git-dir", repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    if not commit:  # a checkout rather than a bare mirror
        commit = subprocess.run(
            ["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    return types.SimpleNamespace(core=core, model=model, commit=commit or "?", stubbed=stubbed)


# --------------------------------------------------------------------------------------------
# Inputs


def make_controls(batch: int, frames: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Fixed random frame-rate controls: f0 with vibrato, amplitude, distribution, noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(frames, dtype=torch.float64) / (SR / HOP)
    base = 110.0 * 8.0 ** torch.rand(batch, 1, generator=g, dtype=torch.float64)  # 110..880 Hz
    rate = 4.0 + 3.0 * torch.rand(batch, 1, generator=g, dtype=torch.float64)
    phase = 2 * math.pi * torch.rand(batch, 1, generator=g, dtype=torch.float64)
    f0 = base * 2.0 ** (0.5 * torch.sin(2 * math.pi * rate * t + phase) / 12)
    offset = 0.1 * torch.rand(batch, 1, generator=g, dtype=torch.float64)
    envelope = 0.05 + 0.4 * torch.sin(math.pi * (t / t[-1] + offset)) ** 2
    k = torch.arange(1, N_HARMONICS + 1, dtype=torch.float32)
    dist = torch.rand(batch, frames, N_HARMONICS, generator=g) / k
    mags = 0.02 * torch.rand(batch, frames, N_BANDS, generator=g)
    loudness_db = -70.0 + 60.0 * envelope / envelope.max()
    return {
        "f0": f0.float(),
        "amp": envelope.float(),
        "dist": dist,
        "mags": mags,
        "loudness_db": loudness_db.float(),
    }


# --------------------------------------------------------------------------------------------
# Synthesizers as each library's model calls them


def extend(x: torch.Tensor) -> torch.Tensor:
    """Append one repeated frame (as ``TimbreTransfer.forward`` does for the window upsampling)."""
    return torch.cat([x, x[:, -1:]], dim=1)


def diffx_synth(f0, amp, dist, mags, noise=None, harmonic=True):
    """diffx: ``(batch, 1, samples)`` harmonic + filtered noise, as ``TimbreTransfer``."""
    n_samples = f0.shape[1] * HOP
    out = filtered_noise(mags, n_samples, noise=noise) if mags is not None else 0.0
    if harmonic:
        out = out + harmonic_synth(
            extend(f0), extend(amp), extend(dist), SR, n_samples=n_samples, upsample="window"
        )
    return out


def peer_synth(core, f0, amp, dist, mags, noise=None, harmonic=True, block_size=HOP):
    """The peer: ``(batch, samples, 1)``, the synthesis half of its ``DDSP.forward``."""
    out = 0.0
    if mags is not None:
        impulse = core.amp_to_impulse_response(mags, block_size)
        if noise is None:
            noise = torch.rand(impulse.shape[0], impulse.shape[1], block_size) * 2 - 1
        filtered = core.fft_convolve(noise, impulse).contiguous()
        out = filtered.reshape(filtered.shape[0], -1, 1)
    if harmonic:
        pitch = f0[..., None]
        amplitudes = core.remove_above_nyquist(dist, pitch, SR)
        amplitudes = amplitudes / amplitudes.sum(-1, keepdim=True) * amp[..., None]
        amplitudes = core.upsample(amplitudes, block_size)
        pitch = core.upsample(pitch, block_size)
        out = out + core.harmonic_synth(pitch, amplitudes, SR)
    return out


# --------------------------------------------------------------------------------------------
# Losses


def peer_loss(core, pred: torch.Tensor, target: torch.Tensor, scales) -> torch.Tensor:
    """The loss of the peer's ``train.py`` on ``(batch, samples)`` audio."""
    ori_stft = core.multiscale_fft(target, list(scales), OVERLAP)
    rec_stft = core.multiscale_fft(pred, list(scales), OVERLAP)
    loss = 0
    for s_x, s_y in zip(ori_stft, rec_stft):
        lin_loss = (s_x - s_y).abs().mean()
        log_loss = (core.safe_log(s_x) - core.safe_log(s_y)).abs().mean()
        loss = loss + lin_loss + log_loss
    return loss


def oracle_loss(pred, target, scales, normalized: bool, pad_mode: str) -> float:
    """Float64 NumPy multi-scale spectral loss: sum over scales of the mean L1 of linear and
    log(mag + 1e-7) magnitudes; Hann (periodic) frames of n, hop n / 4, centred with
    ``pad_mode`` padding, optionally divided by sqrt(n) (torch's ``normalized=True``)."""
    total = 0.0
    for n in scales:
        hop = int(n * (1 - OVERLAP))
        window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
        mags = []
        for x in (pred, target):
            x = np.pad(np.asarray(x, dtype=np.float64), ((0, 0), (n // 2, n // 2)), pad_mode)
            frames = np.lib.stride_tricks.sliding_window_view(x, n, axis=-1)[:, ::hop]
            mag = np.abs(np.fft.rfft(frames * window, axis=-1))
            mags.append(mag / math.sqrt(n) if normalized else mag)
        p, t = mags
        total += np.abs(p - t).mean() + np.abs(np.log(p + 1e-7) - np.log(t + 1e-7)).mean()
    return total


# --------------------------------------------------------------------------------------------
# Models


def make_diffx_model(reverb_seconds: float) -> TimbreTransfer:
    torch.manual_seed(0)
    return TimbreTransfer(
        hidden_size=HIDDEN,
        gru_size=HIDDEN,
        n_harmonics=N_HARMONICS,
        n_noise_bands=N_BANDS,
        reverb_seconds=reverb_seconds,
        crepe_model="tiny",
        f0_metric=False,
    )


def make_peer_model(peer):
    torch.manual_seed(0)
    return peer.model.DDSP(
        hidden_size=HIDDEN, n_harmonic=N_HARMONICS, n_bands=N_BANDS, sampling_rate=SR,
        block_size=HOP,
    )  # fmt: skip


def train_steppers(peer, reverb_seconds):
    """``{name: (step(ctrl, target) -> loss, model)}``: one full training step of each model."""
    model = make_diffx_model(reverb_seconds)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def diffx_step(ctrl, target):
        audio = model(ctrl["f0"], ctrl["loudness_db"])["audio"]
        loss = model.spectral_loss(audio, target).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    steppers = {"diffx": (diffx_step, model)}
    if peer is not None:
        peer_model = make_peer_model(peer)
        peer_opt = torch.optim.Adam(peer_model.parameters(), lr=1e-3)

        def peer_step(ctrl, target):
            # train.py: pitch in Hz, loudness standardized by the data set's mean and std.
            loud = ctrl["loudness_db"]
            p = ctrl["f0"][..., None]
            l_ = ((loud - loud.mean()) / loud.std())[..., None]
            y = peer_model(p, l_).squeeze(-1)
            loss = peer_loss(peer.core, y, target[:, 0], PEER_SCALES)
            peer_opt.zero_grad()
            loss.backward()
            peer_opt.step()
            return loss.item()

        steppers[PEER] = (peer_step, peer_model)
    return steppers


# --------------------------------------------------------------------------------------------
# Timed calls


def synth_case(lib, peer, ctrl):
    names = ("f0", "amp", "dist", "mags")

    def call(backward: bool):
        inputs = [ctrl[n].detach().clone().requires_grad_(backward) for n in names]
        with torch.set_grad_enabled(backward):
            if lib == "diffx":
                y = diffx_synth(*inputs)
            else:
                y = peer_synth(peer.core, *inputs)
            if backward:
                y.square().mean().backward()

    return call


def loss_case(lib, peer, pred, target):
    msl = MultiScaleSpectralLoss(DIFFX_SCALES, overlap=OVERLAP, reduction="none")

    def call(backward: bool):
        p = pred.detach().clone().requires_grad_(backward)
        with torch.set_grad_enabled(backward):
            if lib == "diffx":
                loss = msl(p, target).mean()
            elif lib == PEER:
                loss = peer_loss(peer.core, p[:, 0], target[:, 0], PEER_SCALES)
            else:  # the peer's loss at diffx's FFT sizes
                loss = peer_loss(peer.core, p[:, 0], target[:, 0], DIFFX_SCALES)
            if backward:
                loss.backward()

    return call


def time_fn(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


# --------------------------------------------------------------------------------------------
# Correctness


def check_synthesis(peer, seconds: float) -> list[dict]:
    """Analytic oracles for both synthesizers (batch 1, the benchmark's clip length)."""
    frames = round(seconds * SR / HOP)
    n = torch.arange(frames * HOP, dtype=torch.float64)
    rows = []

    def add(check, lib, y, ref, note=""):
        y = y.detach().double().reshape(-1)
        rows.append({"check": check, "lib": lib, "err": (y - ref).abs().max().item(), "note": note})

    # 1. One harmonic at a constant 440 Hz, amplitude 0.5: y[n] = 0.5 sin(2 pi f n / sr).
    f0 = torch.full((1, frames), 440.0)
    amp = torch.full((1, frames), 0.5)
    one = torch.ones(1, frames, 1)
    sine = 0.5 * torch.sin(2 * math.pi * 440.0 * n / SR)
    check = "sine: 1 harmonic, 440 Hz, amplitude 0.5"
    add(check, "diffx", diffx_synth(f0, amp, one, None), sine, "phase 0 at sample 0")
    if peer is not None:
        y = peer_synth(peer.core, f0, amp, one, None)
        shifted = 0.5 * torch.sin(2 * math.pi * 440.0 * (n + 1) / SR)
        own = (y.detach().double().reshape(-1) - shifted).abs().max().item()
        add(check, PEER, y, sine, f"phase starts one sample in (cumsum); vs that sine {own:.1e}")

    # 2. 100 equal harmonic weights at 1 kHz: only k = 1..7 are below Nyquist (8 kHz).
    f0 = torch.full((1, frames), 1000.0)
    flat = torch.ones(1, frames, N_HARMONICS)
    phi = 2 * math.pi * 1000.0 * n / SR
    band = sum(0.5 / 7 * torch.sin(k * phi) for k in range(1, 8))
    check = "100 equal harmonics at 1 kHz = 7 below Nyquist"
    add(check, "diffx", diffx_synth(f0, amp, flat, None), band, "k * f0 >= sr / 2 zeroed")
    if peer is not None:
        y = peer_synth(peer.core, f0, amp, flat, None).detach().double().reshape(-1)
        phi1 = 2 * math.pi * 1000.0 * (n + 1) / SR
        own = sum(0.5 / 7 * torch.sin(k * phi1) for k in range(1, 8))
        own_err = (y - own).abs().max().item()
        add(
            check, PEER, y, band,
            f"above-Nyquist harmonics kept at 1e-4 weight (aliased); vs its phase {own_err:.1e}",
        )  # fmt: skip

    # 3. Flat noise magnitudes (1): the filter is the identity, the output the input noise.
    noise = torch.rand(1, frames * HOP, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mags = torch.ones(1, frames, N_BANDS)
    check = "filtered noise, flat magnitude 1 = the noise"
    delay = (2 * (N_BANDS - 1) - 1 - 1) // 2  # diffx's default FIR: linear phase, 127 taps
    y = diffx_synth(f0, amp, None, mags, noise=noise[:, None], harmonic=False).reshape(-1)
    ref = torch.nn.functional.pad(noise[0], (delay, 0))[: noise.shape[-1]].double()
    add(check, "diffx", y, ref, f"delayed {delay} samples (linear phase)")
    if peer is not None:
        for block in (HOP, PEER_BLOCK_SIZE):
            f = noise.shape[-1] // block
            blocks = noise[:, : f * block].reshape(1, f, block)
            y = peer_synth(
                peer.core, None, None, None, torch.ones(1, f, N_BANDS), blocks, False, block
            )
            y = y.reshape(-1)
            rms = y.detach().double().square().mean().sqrt().item()
            note = f"block_size {block}: output RMS {rms:.3f} (expected 0.577)"
            if block == HOP:
                note += "; 128-tap impulse cut to 64 taps without its centre tap"
            lib = PEER if block == HOP else f"{PEER} (block {block})"
            add(check, lib, y, noise[0, : f * block].double(), note)
    return rows


def check_losses(peer, pred, target) -> list[dict]:
    rows = []
    p, t = pred[:, 0].numpy(), target[:, 0].numpy()
    msl = MultiScaleSpectralLoss(DIFFX_SCALES, overlap=OVERLAP, reduction="none")
    with torch.no_grad():
        value = msl(pred, target).mean().item()
    ref = oracle_loss(p, t, DIFFX_SCALES, normalized=False, pad_mode="constant")
    definition = "unnormalized STFT, zero padding, FFT 2048..64"
    rows.append({"lib": "diffx", "value": value, "ref": ref, "definition": definition})
    if peer is not None:
        for name, scales in ((PEER, PEER_SCALES), (f"{PEER}, diffx's FFT sizes", DIFFX_SCALES)):
            with torch.no_grad():
                value = peer_loss(peer.core, pred[:, 0], target[:, 0], scales).item()
            ref = oracle_loss(p, t, scales, normalized=True, pad_mode="reflect")
            definition = f"STFT / sqrt(n), reflect padding, FFT {scales[0]}..{scales[-1]}"
            rows.append({"lib": name, "value": value, "ref": ref, "definition": definition})
    return rows


# --------------------------------------------------------------------------------------------
# Peak memory in a fresh subprocess




def build_calls(peer, ctrl, pred, target, libs):
    """``{(section, lib): fn()}`` for timing and memory."""
    calls = {}
    for lib in libs:
        synth = synth_case(lib, peer, ctrl)
        calls[("synth fwd", lib)] = lambda s=synth: s(False)
        calls[("synth fwd+bwd", lib)] = lambda s=synth: s(True)
    for lib in (*libs, *([f"{PEER}, diffx's FFT sizes"] if PEER in libs else [])):
        loss = loss_case(lib, peer, pred, target)
        calls[("loss fwd", lib)] = lambda f=loss: f(False)
        calls[("loss fwd+bwd", lib)] = lambda f=loss: f(True)
    return calls


def memory_child(spec: str, args) -> None:
    section, lib = spec.split("|")
    torch.set_num_threads(args.threads)
    peer = load_peer(args.peer_repo) if lib != "diffx" else None
    small = make_all_inputs(1, 1.0)  # warm-up: imports, Adam state, without big buffers
    ctrl, pred, target = make_all_inputs(args.batch, args.seconds)
    if section == "train step":
        step = train_steppers(peer, PEER_REVERB_SECONDS)[lib][0]
        step(small[0], small[2])
        fn = lambda: step(ctrl, target)  # noqa: E731
    else:
        build_calls(peer, *small, [lib])[(section, lib)]()
        fn = build_calls(peer, ctrl, pred, target, [lib])[(section, lib)]
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    base = report.rss_kib("VmRSS")
    fn()
    print(json.dumps({"peak_mib": (report.rss_kib("VmHWM") - base) / 1024}))


def measure_memory(section: str, lib: str, args) -> float | str:
    cmd = [
        sys.executable, os.path.abspath(__file__), "--memory-child", f"{section}|{lib}",
        "--threads", str(args.threads), "--batch", str(args.batch), "--seconds",
        str(args.seconds), "--peer-repo", args.peer_repo,
    ]  # fmt: skip
    return report.child_peak_mib(cmd)


# --------------------------------------------------------------------------------------------
# Main






def make_all_inputs(batch: int, seconds: float):
    frames = round(seconds * SR / HOP)
    torch.manual_seed(0)  # the filtered noise of the audio
    ctrl = make_controls(batch, frames, seed=0)
    with torch.no_grad():
        target = diffx_synth(ctrl["f0"], ctrl["amp"], ctrl["dist"], ctrl["mags"])
        other = make_controls(batch, frames, seed=1)  # a different sound at the same pitch
        pred = diffx_synth(ctrl["f0"], 0.8 * ctrl["amp"], other["dist"], other["mags"])
    return ctrl, pred, target




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--train-repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "RESULTS.md"))
    ap.add_argument("--peer-repo", default=os.environ.get("DIFFX_DDSP_PYTORCH_REPO", DEFAULT_REPO))
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args)
        return
    start_all = time.perf_counter()
    cpu_start = report.cpu_seconds()
    torch.set_num_threads(args.threads)

    peer, peer_note = None, ""
    try:
        peer = load_peer(args.peer_repo)
    except (OSError, subprocess.CalledProcessError, ImportError, AttributeError) as err:
        peer_note = (
            f"{PEER} unavailable ({type(err).__name__}: {str(err).strip()[:120]}); mirror "
            "github.com/acids-ircam/ddsp_pytorch and pass --peer-repo"
        )
        print(peer_note)
    libs = ["diffx"] + ([PEER] if peer is not None else [])

    # Correctness first.
    synth_checks = check_synthesis(peer, args.seconds)
    for r in synth_checks:
        print(f"{r['check']:48s} {r['lib']:28s} max abs err {r['err']:.2e}  {r['note']}")
    ctrl, pred, target = make_all_inputs(args.batch, args.seconds)
    loss_checks = check_losses(peer, pred, target)
    for r in loss_checks:
        print(f"loss {r['lib']:32s} {r['value']:.6f} oracle {r['ref']:.6f}")

    # Times.
    busy = report.training_running()
    times = {}
    for key, fn in build_calls(peer, ctrl, pred, target, libs).items():
        busy |= report.training_running()
        times[key] = time_fn(fn, args.repeats)
        print(f"{key[0]:14s} {key[1]:32s} {times[key]:9.1f} ms", flush=True)
        gc.collect()
    steppers = train_steppers(peer, PEER_REVERB_SECONDS)
    params = {}
    reverb_mode = getattr(steppers["diffx"][1], "reverb", None)  # diffx's default reverb
    for lib, (step, model) in steppers.items():
        params[lib] = sum(p.numel() for p in model.parameters())
        busy |= report.training_running()
        times[("train step", lib)] = time_fn(lambda s=step: s(ctrl, target), args.train_repeats)
        print(f"train step     {lib:32s} {times[('train step', lib)]:9.1f} ms", flush=True)
    del steppers
    gc.collect()

    memory = {}
    if not args.no_memory:
        for section in ("synth fwd+bwd", "loss fwd+bwd", "train step"):
            for lib in libs:
                memory[(section, lib)] = measure_memory(section, lib, args)
                print(f"memory {section:14s} {lib:20s} {fmt_ms(memory[(section, lib)])} MiB")

    busy |= report.training_running()
    if busy:
        print("warning: a `diffx fit` process ran during the benchmark; timings are skewed")
    elapsed = time.perf_counter() - start_all
    cpu_end = report.cpu_seconds()
    others = max(0.0, (cpu_end[0] - cpu_start[0]) - (cpu_end[1] - cpu_start[1])) / elapsed
    print(f"other processes used {others:.2f} cores on average during the run")
    write_report(
        args, peer, peer_note, synth_checks, loss_checks, times, params, memory, elapsed,
        (busy, others), reverb_mode,
    )  # fmt: skip
    print(f"total {elapsed:.0f} s; wrote {args.out}")


def write_report(
    args,
    peer,
    peer_note,
    synth_checks,
    loss_checks,
    times,
    params,
    memory,
    elapsed,
    load,
    reverb_mode,
):
    busy, others = load
    frames = round(args.seconds * SR / HOP)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = re.search(r"model name\s*:\s*(.+)", f.read()).group(1)
    except (OSError, AttributeError):
        pass
    lines = [
        "# DDSP benchmark: diffx vs ddsp_pytorch (CPU)",
        "",
        "Generated by `benchmarks/bench_ddsp.py`; do not edit by hand.",
        "",
        f"- Command: `{report.shown_command('benchmarks/bench_ddsp.py', sys.argv[1:])}`",
        f"- Date: {datetime.datetime.now().isoformat(timespec='seconds')}; total run time "
        f"{elapsed:.0f} s",
        f"- Machine: {cpu}; {os.cpu_count()} logical CPUs; {platform.platform()}",
        f"- Threads: torch.set_num_threads({args.threads}); load average at the end "
        f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}; other processes used "
        f"{others:.2f} cores on average during the run (from `/proc/stat`; they skew timings"
        + (", and a `diffx fit` training ran during the timings)" if busy else ")"),
        f"- Versions: torch {torch.__version__}, python {platform.python_version()}, numpy "
        f"{np.__version__}; peer: github.com/acids-ircam/ddsp_pytorch at "
        f"{peer.commit if peer else 'n/a'} (`ddsp/core.py`, `ddsp/model.py`, imported from a "
        "local mirror at run time"
        + (f"; stand-in module for `{'`, `'.join(peer.stubbed)}`" if peer and peer.stubbed else "")
        + ")",
        f"- Settings: {SR // 1000} kHz, {SR // HOP} Hz frames (hop {HOP}), {N_HARMONICS} "
        f"harmonics, {N_BANDS} noise bands; batch {args.batch} x {args.seconds:g} s "
        f"({frames} frames, {frames * HOP} samples), float32. Times are medians in ms of "
        f"{args.repeats} calls after one warm-up (training step: {args.train_repeats} steps "
        f"after one warm-up step); ratio = "
        f"{PEER} time / diffx time from the same run (> 1: diffx is faster).",
        "- `fwd` = forward under `torch.no_grad()`; `fwd+bwd` = forward + backward (synthesis: "
        "of `mean(y^2)` w.r.t. f0, amplitude, harmonic distribution and noise magnitudes; loss: "
        "w.r.t. the prediction).",
    ]
    if memory:
        lines.append(
            "- Peak memory: a fresh subprocess per case; peak RSS (VmHWM after `clear_refs`) "
            "minus RSS before one call at the size above (after a warm-up at batch 1 x 1 s), "
            "inputs excluded; fwd+bwd for synthesis and loss, the whole step for training."
        )
    lines.append("")
    if peer_note:
        lines += [peer_note, ""]

    def section_rows(name, fwd_key, bwd_key, libs, notes):
        out = [
            f"## {name}",
            "",
            "| implementation | fwd ms | vs diffx | fwd+bwd ms | vs diffx | peak MiB (fwd+bwd) "
            "| notes |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        d_f, d_b = times.get((fwd_key, "diffx")), times.get((bwd_key, "diffx"))
        for lib in libs:
            f, b = times.get((fwd_key, lib), "-"), times.get((bwd_key, lib), "-")
            mem = memory.get((bwd_key, lib), "-")
            out.append(
                f"| {lib} | {fmt_ms(f)} | {ratio(f, d_f)} | {fmt_ms(b)} | {ratio(b, d_b)} | "
                f"{fmt_ms(mem)} | {notes.get(lib, '')} |"
            )
        return out + [""]

    libs = ["diffx"] + ([PEER] if peer else [])
    lines += section_rows(
        "1. Synthesis: harmonic bank + filtered noise", "synth fwd", "synth fwd+bwd", libs,
        {
            "diffx": "`harmonic_synth(upsample=\"window\")` + `filtered_noise`",
            PEER: "its `DDSP.forward` synthesis: nearest upsampling, per-block noise filter",
        },
    )  # fmt: skip
    loss_libs = libs + ([f"{PEER}, diffx's FFT sizes"] if peer else [])
    lines += section_rows(
        "2. Multi-scale spectral loss", "loss fwd", "loss fwd+bwd", loss_libs,
        {
            "diffx": "`MultiScaleSpectralLoss()`, FFT 2048..64",
            PEER: "`train.py` loss, FFT 4096..128 (its config.yaml)",
            f"{PEER}, diffx's FFT sizes": "same code, FFT 2048..64",
        },
    )  # fmt: skip
    lines += [
        "## 3. Training step (decoder + synthesis + reverb + loss + backward + Adam)",
        "",
        "| model | ms per step | steps/s | vs diffx | peak MiB | parameters | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    step_notes = {
        "diffx": f"`TimbreTransfer(reverb_seconds={PEER_REVERB_SECONDS:g})` (default "
        f"`reverb={reverb_mode!r}`), `spectral_loss(...).mean()`".replace("'", '"'),
        PEER: f"`DDSP(512, 100, 65, 16000, block_size={HOP})`, `train.py` loss (FFT 4096..128)",
    }
    d = times.get(("train step", "diffx"))
    for lib in libs:
        t = times.get(("train step", lib))
        lines.append(
            f"| {lib} | {fmt_ms(t)} | {1e3 / t:.2f} | {ratio(t, d)} | "
            f"{fmt_ms(memory.get(('train step', lib), '-'))} | {params.get(lib, '-'):,} | "
            f"{step_notes[lib]} |"
        )
    lines += [
        "",
        "## Correctness (before timing)",
        "",
        f"Synthesis, batch 1 x {args.seconds:g} s, max abs error against the analytic signal:",
        "",
        "| check | implementation | max abs error | notes |",
        "|---|---|---:|---|",
    ]
    for r in synth_checks:
        lines.append(f"| {r['check']} | {r['lib']} | {r['err']:.1e} | {r['note']} |")
    lines += [
        "",
        "Loss value on the benchmark's batch against a float64 NumPy re-implementation of the "
        "implementation's own definition (the two definitions differ, so their values do too):",
        "",
        "| implementation | value | float64 oracle | rel. diff | definition |",
        "|---|---:|---:|---:|---|",
    ]
    for r in loss_checks:
        rel = abs(r["value"] - r["ref"]) / abs(r["ref"])
        lines.append(
            f"| {r['lib']} | {r['value']:.5f} | {r['ref']:.5f} | {rel:.1e} | {r['definition']} |"
        )
    lines += ["", "## Differences between the implementations", ""]
    lines += [f"- {d}" for d in differences(reverb_mode)]
    report.write_section(args.out, "ddsp", "\n".join(lines))


def differences(reverb_mode: str | None) -> list[str]:
    """The list for the report; the reverb item follows diffx's default reverb."""
    diffx_reverb = {
        "noise": 'diffx\'s default (`reverb="noise"`) is a fixed Gaussian noise draw in 8 '
        "bands, each with a learnt gain and exponential decay (`noise_reverb_ir`); "
        '`reverb="free"` learns every tap instead',
        "free": "diffx's is a free learnable impulse response (every tap learnt)",
    }.get(reverb_mode, f"diffx's is its `reverb={reverb_mode!r}` response")
    reverb = (
        f"Reverb: the peer's is {PEER_REVERB_SECONDS:g} s (`Reverb(sampling_rate, ...)`): "
        "learnable noise taps times a learnable exponential decay and a learnable wet gain "
        "(one band), tap 0 fixed to 1, convolved by an FFT of twice the clip length; "
        f"{diffx_reverb}; {PEER_REVERB_SECONDS:g} s here to match (diffx's default is 3 s), "
        "added to the dry path."
    )
    return [*DIFFERENCES[:5], reverb, *DIFFERENCES[5:]]


DIFFERENCES = [
    "Frame rate: the peer's `config.yaml` uses `block_size: 160` (100 Hz frames); here both run "
    "at DDSP's 250 Hz (hop 64). At hop 64 the peer's `amp_to_impulse_response` pads its "
    "128-tap noise impulse response (65 bands) to the block size with a negative pad, i.e. "
    "cuts it to 64 taps that miss the centre tap, so its noise branch is almost silent (see "
    "the flat-noise check); at block 160 the same filter is the identity.",
    "Upsampling: the peer repeats each frame's f0 and harmonic amplitudes for the whole block "
    "(`interpolate`, nearest; its Hann-window `resample` is defined but unused); diffx "
    "interpolates f0 and the distribution linearly and cross-fades the amplitude with "
    "DDSP's overlapping Hann windows.",
    "Harmonic phase: the peer's phase is a float32 `cumsum` of f0 that starts one sample in "
    "(the first sample is already sin(2 pi f0 / sr)); diffx accumulates it in float64 blocks "
    "wrapped to one turn, starting at 0.",
    "Nyquist: the peer multiplies harmonics at or above Nyquist by 1e-4 instead of 0 (they "
    "alias) and tests each frame's own f0; diffx zeroes them, and any harmonic that crosses "
    "Nyquist within a neighbouring frame.",
    "Filtered noise: the peer filters each block by itself and drops the filter's tail "
    "(no overlap-add) with a zero-phase impulse response; diffx overlap-adds linear-phase "
    "127-tap FIR outputs (63 samples of delay).",
    "Loss: the peer's STFT is normalized (`normalized=True`, magnitudes / sqrt(n_fft)) with "
    "reflect padding and FFT sizes 4096..128 in its config; diffx's is unnormalized with zero "
    "padding and DDSP's 2048..64. Both: Hann window of n_fft, 75 % overlap, L1 of linear and "
    "log(mag + 1e-7), summed over scales.",
    "Decoder: the peer shares one MLP between f0 and loudness (`ModuleList([mlp(...)] * 2)`), "
    "feeds f0 in Hz unscaled, and its output MLP sees the GRU output plus the raw f0 and "
    "loudness; diffx has separate MLPs on MIDI pitch / 127 and loudness / 120 dB + 1, and "
    "its output MLP sees the GRU output and both MLP outputs (as DDSP), with one head for "
    "amplitude, harmonics and noise.",
]


if __name__ == "__main__":
    main()

"""``diffx demo``: the core effects on the shipped demo audio, written as audio and plots.

Each step processes a real recording from ``diffx/assets/demo`` and writes the result next to
a picture of what the effect did (filter responses, gain curves, spectra, decay curves).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from diffx import functional as F
from diffx.commands._frontend import CommandParser, report
from diffx.io import load_demo, save_audio

SAMPLE_RATE = 44100

MIN_SECONDS = 0.5
"""The shortest demo clip: every step's plot and metric has material (10 ms level frames,
the NMR's 2048-sample frames, a few synth notes), and the clips are still long enough to hear."""


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _clip(name: str, seconds: float) -> torch.Tensor:
    audio, _ = load_demo(name, sample_rate=SAMPLE_RATE, mono=True)
    return audio[:, : int(seconds * SAMPLE_RATE)].unsqueeze(0)  # (1, 1, samples)


def _peak_normalize(y: torch.Tensor, peak: float = 0.89) -> torch.Tensor:
    """Scale to -1 dBFS peak so written files never clip (a demo should be listenable)."""
    return y * (peak / y.abs().max().clamp_min(1e-9))


def _spectrum_db(y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    y = y.flatten().double().numpy()
    window = np.blackman(len(y))
    mag = np.abs(np.fft.rfft(y * window)) / window.sum() * 2
    freqs = np.fft.rfftfreq(len(y), 1 / SAMPLE_RATE)
    return freqs, 20 * np.log10(mag + 1e-12)


def demo_eq(out: Path, seconds: float) -> list[Path]:
    plt = _figure()
    x = _clip("guitar_em9", seconds)
    settings = dict(
        low_shelf_freq_hz=120.0, low_shelf_gain_db=4.0,
        band_freqs_hz=torch.tensor([[350.0, 1200.0, 3500.0, 8000.0]]),
        band_gains_db=torch.tensor([[-5.0, 2.0, 6.0, -3.0]]),
        band_qs=torch.tensor([[1.0, 2.0, 1.5, 0.7]]),
        high_shelf_freq_hz=10000.0, high_shelf_gain_db=-6.0,
    )  # fmt: skip
    y = F.parametric_eq(x, SAMPLE_RATE, **settings)
    sos = F.parametric_eq_sos(SAMPLE_RATE, **settings)[0]
    freqs = torch.logspace(math.log10(20), math.log10(20000), 512)
    fig, ax = plt.subplots(figsize=(8, 4))
    for k, section in enumerate(sos):
        h = F.sos_frequency_response(section[None], freqs, SAMPLE_RATE)
        ax.semilogx(freqs, 20 * torch.log10(h.abs()), lw=0.8, alpha=0.6, label=f"section {k}")
    total = F.sos_frequency_response(sos, freqs, SAMPLE_RATE)
    ax.semilogx(freqs, 20 * torch.log10(total.abs()), "k", lw=2, label="total")
    ax.set(xlabel="frequency (Hz)", ylabel="gain (dB)", title="6-band parametric EQ")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _write(out, "eq", x, y, fig, plt)


def demo_allpass(out: Path, seconds: float) -> list[Path]:
    plt = _figure()
    x = _clip("guitar_e_slide", seconds)
    settings = {
        "second_order": dict(pole_radius=torch.tensor([[0.95, 0.9, 0.8]]),
                             freq_hz=torch.tensor([[150.0, 900.0, 4000.0]])),
        "warped": dict(pole_radius=torch.tensor([[0.95, 0.9, 0.8]]),
                       freq_hz=torch.tensor([[150.0, 900.0, 4000.0]]), warp=0.5),
        "warped_stretched": dict(first_order_coeff=torch.tensor([[0.5, -0.3]]), warp=0.4),
    }  # fmt: skip
    y = F.allpass_cascade(x, SAMPLE_RATE, "second_order", **settings["second_order"])
    freqs = torch.logspace(math.log10(20), math.log10(20000), 600)
    fig, (ax_phase, ax_delay) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for kind, kwargs in settings.items():
        stretch = 4 if kind == "warped_stretched" else 1
        if kind == "warped_stretched":
            # Unfactored rows: the stretched section is (k + z^-M) / (1 + k z^-M).
            sos = F.stretched_allpass_sos(kwargs["first_order_coeff"], kwargs["warp"], stretch=1)
        else:
            sos = F.allpass_sos(SAMPLE_RATE, kind, **kwargs)
        phase = F.phase_response(sos[0], freqs, SAMPLE_RATE, stretch=stretch)
        delay_ms = F.group_delay(sos[0], freqs, SAMPLE_RATE, stretch=stretch) / SAMPLE_RATE * 1e3
        ax_phase.semilogx(freqs, phase, label=kind)
        ax_delay.semilogx(freqs, delay_ms, label=kind)
    ax_phase.set(ylabel="phase (rad)", title="allpass cascades: phase and group delay")
    ax_delay.set(xlabel="frequency (Hz)", ylabel="group delay (ms)")
    for ax in (ax_phase, ax_delay):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return _write(out, "allpass", x, y, fig, plt)


def demo_compressor(out: Path, seconds: float) -> list[Path]:
    plt = _figure()
    x = _clip("guitar_em9", seconds)
    settings = dict(threshold_db=-30.0, ratio=6.0, attack_ms=5.0, release_ms=120.0,
                    knee_db=6.0, makeup_gain_db=12.0)  # fmt: skip
    y = F.compressor(x, SAMPLE_RATE, **settings)
    fig, (ax_curve, ax_env) = plt.subplots(1, 2, figsize=(10, 4), width_ratios=(1, 2))
    level = torch.linspace(-60, 0, 241)[None]
    one = torch.ones(1)
    gain = F.compressor_gain_db(level, settings["threshold_db"] * one, settings["ratio"] * one,
                                settings["knee_db"] * one)  # fmt: skip
    ax_curve.plot(level[0], level[0] + gain[0], label="output level")
    ax_curve.plot(level[0], level[0], "k:", lw=0.8, label="unity")
    ax_curve.set(xlabel="input level (dB)", ylabel="output level (dB)",
                 title="static curve (before make-up)")  # fmt: skip
    ax_curve.legend(fontsize=8)
    ax_curve.grid(alpha=0.3)
    # Short-term levels (10 ms RMS) show the gain reduction following the playing.
    hop = int(0.01 * SAMPLE_RATE)

    def envelope_db(signal):
        frames = signal.flatten()[: signal.shape[-1] // hop * hop].reshape(-1, hop)
        return 10 * torch.log10(frames.square().mean(1) + 1e-10)

    t = np.arange(x.shape[-1] // hop) * hop / SAMPLE_RATE
    ax_env.plot(t, envelope_db(x), lw=0.8, label="input")
    ax_env.plot(t, envelope_db(y), lw=0.8, label="output (with make-up)")
    ax_env.set(xlabel="time (s)", ylabel="level (dB, 10 ms RMS)", ylim=(-70, 0),
               title="compressor on a real guitar")  # fmt: skip
    ax_env.legend(fontsize=8)
    ax_env.grid(alpha=0.3)
    return _write(out, "compressor", x, y, fig, plt)


def demo_distortion(out: Path, seconds: float) -> list[Path]:
    plt = _figure()
    x = _clip("guitar_e_fifths", seconds)
    y = F.tanh_distortion(x * 0.5, drive_db=24.0, antialiasing="adaa1")
    # A 5 kHz tone shows the aliasing that ADAA removes: every non-harmonic peak is aliased.
    t = torch.arange(int(0.5 * SAMPLE_RATE)) / SAMPLE_RATE
    tone = (0.9 * torch.sin(2 * math.pi * 5000.0 * t)).double().view(1, 1, -1)
    fig, ax = plt.subplots(figsize=(8, 4))
    for aa, color in ((None, "tab:red"), ("adaa1", "tab:blue")):
        f, s = _spectrum_db(F.tanh_distortion(tone, drive_db=18.0, antialiasing=aa))
        ax.plot(f, s, color=color, lw=0.7, label=f"tanh, antialiasing={aa}")
    ax.set(xlabel="frequency (Hz)", ylabel="level (dB)", ylim=(-160, 5),
           title="tanh distortion of a 5 kHz tone: harmonics vs aliases")  # fmt: skip
    ax.legend()
    ax.grid(alpha=0.3)
    return _write(out, "distortion", x, y, fig, plt)


def demo_reverb(out: Path, seconds: float) -> list[Path]:
    plt = _figure()
    x = _clip("voice", seconds)
    rt60 = torch.tensor([[1.6, 1.4, 1.2, 0.9, 0.6, 0.4]])
    gains = torch.tensor([[0.0, 0.0, -2.0, -4.0, -8.0, -12.0]])
    x = torch.nn.functional.pad(x, (0, int(1.5 * SAMPLE_RATE)))  # room for the tail
    y = F.noise_reverb(x, SAMPLE_RATE, rt60, gains, mix=0.35, length_s=2.0)
    ir = F.noise_reverb_ir(rt60, gains, SAMPLE_RATE, int(2.0 * SAMPLE_RATE))[0, 0]
    energy = torch.flip(torch.cumsum(torch.flip(ir.double() ** 2, [0]), 0), [0])
    fig, ax = plt.subplots(figsize=(8, 4))
    t = np.arange(len(ir)) / SAMPLE_RATE
    ax.plot(t, 10 * np.log10((energy / energy[0]).numpy()))
    ax.set(xlabel="time (s)", ylabel="energy (dB)", ylim=(-90, 3),
           title="noise reverb: Schroeder energy decay of the impulse response")  # fmt: skip
    ax.grid(alpha=0.3)
    return _write(out, "reverb", x, y, fig, plt)


def demo_synth(out: Path, seconds: float) -> list[Path]:
    plt = _figure()
    hop = 196  # samples per control frame: 225 frames/s at 44.1 kHz (DDSP uses 250 at 16 kHz)
    frame_rate = SAMPLE_RATE / hop
    n_frames = int(seconds * frame_rate)
    t = torch.arange(n_frames) / frame_rate
    f0 = 220.0 * 2 ** (torch.floor(t * 2) % 5 / 12) * (1 + 0.005 * torch.sin(2 * math.pi * 5 * t))
    amplitude = 0.4 * (0.6 + 0.4 * torch.sin(math.pi * (t * 2 % 1)))
    n_harmonics = 40
    k = torch.arange(1, n_harmonics + 1)
    distribution = (1.0 / k**1.5).expand(n_frames, -1)
    n_samples = n_frames * hop
    harmonic = F.harmonic_synth(f0[None], amplitude[None], distribution[None], SAMPLE_RATE,
                                n_samples=n_samples)  # fmt: skip
    noise_mags = 0.01 * torch.linspace(1, 0.05, 65).expand(1, n_frames, -1)
    noise = F.filtered_noise(noise_mags, n_samples=n_samples,
                             generator=torch.Generator().manual_seed(0))  # fmt: skip
    y = harmonic + noise
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.specgram(y.flatten().numpy(), NFFT=2048, Fs=SAMPLE_RATE, noverlap=1536, cmap="magma")
    ax.set(xlabel="time (s)", ylabel="frequency (Hz)", ylim=(0, 8000),
           title="harmonic synth + filtered noise (DDSP)")  # fmt: skip
    return _write(out, "synth", None, y, fig, plt)


class _TanhDrive(torch.nn.Module):
    """tanh distortion with 24 dB of drive, the aliasing-prone model of the aliasing step."""

    def __init__(self, antialiasing: str | None = None):
        super().__init__()
        self.antialiasing = antialiasing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.tanh_distortion(x, drive_db=24.0, antialiasing=self.antialiasing)


def demo_aliasing(out: Path, seconds: float) -> list[Path]:
    """Aliasing of a distortion measured as Carson et al. do: NMR-S over the chromatic set."""
    from diffx.analysis import (
        AUDIBILITY_NMR_DB,
        aliasing_metrics,
        chromatic_test_set,
    )
    from diffx.losses import noise_to_mask_ratio
    from diffx.nn import Oversampled

    plt = _figure()
    tones = chromatic_test_set(SAMPLE_RATE, levels_dbfs=(-6.0,))
    models = {
        "tanh, no antialiasing": _TanhDrive(),
        "tanh, ADAA1": _TanhDrive("adaa1"),
        "tanh, 8x FFT oversampling": Oversampled(_TanhDrive(), 8),
    }
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, model in models.items():
        report = aliasing_metrics(model, SAMPLE_RATE, tones=tones, progress=False)
        mean_db = report.means_db()["nmr_s"]
        ax.semilogx(report.column("f0_hz"), 10 * np.log10(report.column("nmr_s")), lw=1,
                    label=f"{label} (mean {mean_db:.1f} dB)")  # fmt: skip
    ax.axhline(AUDIBILITY_NMR_DB, color="k", ls="--", lw=0.8, label="audibility, -10 dB")
    # On real audio: the guitar through the bare model against the 8x-oversampled one.
    x = _clip("guitar_e_fifths", seconds).double() * 0.5
    y = models["tanh, 8x FFT oversampling"](x)
    nmr_db = 10 * math.log10(noise_to_mask_ratio(models["tanh, no antialiasing"](x), y,
                                                 SAMPLE_RATE).item())  # fmt: skip
    ax.set(xlabel="f0 (Hz)", ylabel="NMR-S (dB)",
           title=f"aliasing of tanh distortion, -6 dBFS tones (guitar: bare vs 8x, NMR "
                 f"{nmr_db:.1f} dB)")  # fmt: skip
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _write(out, "aliasing", x, y, fig, plt)


def _write(out: Path, name: str, x, y, fig, plt) -> list[Path]:
    if not torch.isfinite(y).all():
        raise RuntimeError(f"demo step {name!r} produced non-finite audio")
    paths = []
    if x is not None:
        paths.append(save_audio(out / f"{name}_input.wav", x[0].float(), SAMPLE_RATE))
    paths.append(save_audio(out / f"{name}_output.wav", _peak_normalize(y[0].float()),
                            SAMPLE_RATE))  # fmt: skip
    fig.tight_layout()
    png = out / f"{name}.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    paths.append(png)
    return paths


STEPS: dict[str, Callable[[Path, float], list[Path]]] = {
    "eq": demo_eq,
    "allpass": demo_allpass,
    "compressor": demo_compressor,
    "distortion": demo_distortion,
    "reverb": demo_reverb,
    "synth": demo_synth,
    "aliasing": demo_aliasing,
}


def run_demo(out: str | Path = "outputs/demo", seconds: float = 6.0) -> list[Path]:
    """Run every demo step; returns the files written (WAV audio and PNG plots)."""
    if not MIN_SECONDS <= seconds < math.inf:
        raise ValueError(f"seconds must be a number >= {MIN_SECONDS:g}, got {seconds}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for _name, step in tqdm(STEPS.items(), desc="diffx demo", unit="effect"):
        written += step(out, seconds)
    print(f"wrote {len(written)} files to {out}/")
    for path in written:
        print(f"  {path}")
    return written


def main(argv: list[str] | None = None) -> int:
    """``diffx demo [--out DIR] [--seconds S]``; returns the exit status."""
    parser = CommandParser(
        prog="diffx demo", description="run the core effects on the shipped demo audio"
    )
    parser.add_argument(
        "--out", default="outputs/demo", help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=6.0,
        help=f"length of each demo clip in seconds (at least {MIN_SECONDS:g})",
    )
    args = parser.parse_args(argv)
    # Checked here, before the output folder is made.
    if not MIN_SECONDS <= args.seconds < float("inf"):
        return report("demo", f"--seconds must be a number >= {MIN_SECONDS:g}, got {args.seconds}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        return report("demo", f"--out {args.out} is a file, not a folder")
    run_demo(args.out, seconds=args.seconds)
    return 0

"""Figures of aliasing analysis: a tone's spectrum and the metrics against f0.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot state, no global
backend switch), so they work headless, in notebooks and in loggers such as TensorBoard's
``add_figure``. Each function returns the figure and, given ``path``, also writes it as PNG.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from matplotlib.figure import Figure

from diffx.analysis.harmonic import (
    WINDOW_ATTENUATION_DB,
    chebyshev_window,
    harmonic_analysis,
    synthesise_harmonics,
)
from diffx.analysis.metrics import AUDIBILITY_NMR_DB, AliasingReport

#: Magnitudes are floored at this level (dB re full scale) before plotting, so exact zeros
#: (e.g. the aliases of a perfectly bandlimited signal) stay drawable.
FLOOR_DB = -240.0

_METRIC_TITLES = {
    "nmr_s": "NMR-S (aliases vs harmonics)",
    "esr_s": "ESR-S (aliasing-to-signal ratio)",
    "hesr_t": "HESR-T (harmonics vs teacher)",
    "hesr_r": "HESR-R (harmonics vs reference)",
    "nmr_t": "NMR-T",
    "nmr_r": "NMR-R",
    "esr_t": "ESR-T",
    "esr_r": "ESR-R",
}


def _save(fig: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        fig.savefig(path, format="png", dpi=fig.dpi)
    return fig


def _spectrum_dbfs(x: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Chebyshev spectrum in dB re a full-scale sine (an amplitude-1 sine on a bin reads 0)."""
    spectrum = np.abs(np.fft.rfft(x * window)) / (window.sum() / 2)
    return 20 * np.log10(np.maximum(spectrum, 10 ** (FLOOR_DB / 20)))


def plot_tone_spectrum(
    x: torch.Tensor,
    f0_hz: float,
    sample_rate: float,
    path: str | os.PathLike | None = None,
    window_attenuation_db: float = WINDOW_ATTENUATION_DB,
    title: str | None = None,
) -> Figure:
    """Spectrum of one steady-state tone response with its harmonics marked and its aliases.

    Args:
        x: ``(samples,)``, ``(1, samples)`` or ``(1, 1, samples)``, samples even: the analysed
            segment of a model's response to a sine of ``f0_hz``.
        f0_hz: fundamental of the driving sine, Hz.
        sample_rate: Hz.
        path: where to write a PNG, or ``None``.
        window_attenuation_db: side-lobe attenuation of the Chebyshev window, dB.
        title: axes title (default: the f0).

    Returns:
        The figure: one axes with the lines "output" (the Chebyshev spectrum of ``x``) and
        "aliases" (the spectrum of what is left after removing the harmonics), and the
        harmonics m f0 as markers ("harmonics") at their analysed levels 20 log10(2 |a_m|).
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.numel() != x.shape[-1] or x.dim() > 3:
        raise ValueError(
            f"x must hold one tone, shaped (samples,), (1, samples) or (1, 1, samples), got "
            f"{tuple(x.shape)}"
        )
    signal = x.detach().to(device="cpu", dtype=torch.float64).reshape(1, -1)
    analysis = harmonic_analysis(signal, float(f0_hz), sample_rate, window_attenuation_db)
    aliases = signal - synthesise_harmonics(analysis)
    n = signal.shape[-1]
    window = chebyshev_window(n, window_attenuation_db).numpy()
    freqs = np.fft.rfftfreq(n, d=1.0 / sample_rate)
    mask = analysis.mask[0].numpy()
    harmonic_hz = analysis.harmonic_hz[0].numpy()[mask]
    harmonic_db = 20 * np.log10(
        np.maximum(2 * analysis.amplitudes[0].abs().numpy()[mask], 10 ** (FLOOR_DB / 20))
    )

    fig = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(freqs, _spectrum_dbfs(signal[0].numpy(), window), lw=0.8, label="output")
    ax.plot(freqs, _spectrum_dbfs(aliases[0].numpy(), window), lw=0.8, alpha=0.8, label="aliases")
    ax.plot(harmonic_hz, harmonic_db, "x", ms=5, color="black", label="harmonics")
    top = max(float(np.max(harmonic_db)) if harmonic_db.size else 0.0, 0.0)
    ax.set_ylim(max(top - 160.0, FLOOR_DB), top + 10.0)
    ax.set_xlim(0, sample_rate / 2)
    ax.set_xlabel("Frequency (Hz)")
    ax.set_ylabel("Level (dB re full-scale sine)")
    ax.set_title(title if title is not None else f"Tone response, f0 = {float(f0_hz):.6g} Hz")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    return _save(fig, path)


def plot_aliasing_metrics(
    report: AliasingReport,
    path: str | os.PathLike | None = None,
    metrics: tuple[str, ...] | None = None,
) -> Figure:
    """Aliasing metrics in dB against f0 (log axis), one line per tone level.

    Args:
        report: from :func:`diffx.analysis.metrics.aliasing_metrics`.
        path: where to write a PNG, or ``None``.
        metrics: which metrics to draw, one axes each (default: NMR-S, ESR-S and the HESR-T /
            HESR-R present in the report).

    Returns:
        The figure. Each axes is titled by its metric, has one line labelled "<level> dBFS" per
        level, and the NMR axes also carry the audibility line (label "audibility threshold",
        at :data:`~diffx.analysis.metrics.AUDIBILITY_NMR_DB`).
    """
    if not isinstance(report, AliasingReport):
        raise ValueError(f"report must be an AliasingReport, got {type(report).__name__}")
    if len(report) == 0:
        raise ValueError("report has no rows to plot")
    if metrics is None:
        metrics = ("nmr_s", "esr_s") + tuple(m for m in ("hesr_t", "hesr_r") if m in report.metrics)
    missing = [m for m in metrics if m not in report.metrics]
    if missing:
        raise ValueError(f"metrics {missing} are not in the report (it has {report.metrics})")

    f0 = report.column("f0_hz")
    level = report.column("level_dbfs")
    levels = report.levels_dbfs()
    fig = Figure(figsize=(7, 3.0 * len(metrics)), dpi=100, layout="constrained")
    axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, metrics):
        values = report.column(name)
        for lv in levels:
            sel = np.abs(level - lv) < 1e-6
            order = np.argsort(f0[sel])
            with np.errstate(divide="ignore"):
                db = 10 * np.log10(values[sel][order])
            ax.semilogx(f0[sel][order], np.maximum(db, FLOOR_DB), marker=".", label=f"{lv:g} dBFS")
        if name.startswith("nmr"):
            ax.axhline(AUDIBILITY_NMR_DB, color="red", ls="--", lw=1, label="audibility threshold")
        ax.set_title(_METRIC_TITLES.get(name, name))
        ax.set_ylabel(f"{name.upper().replace('_', '-')} (dB)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("f0 (Hz)")
    if math.isfinite(float(f0.min())):
        axes[-1].set_xlim(float(f0.min()) / 1.1, float(f0.max()) * 1.1)
    return _save(fig, path)


def plot_spectra(
    signals: dict[str, torch.Tensor],
    sample_rate: float,
    path: str | os.PathLike | None = None,
    n_fft: int = 4096,
    title: str | None = None,
) -> Figure:
    """Long-term average spectra (Welch, Hann window, 50 % overlap) of named signals.

    Args:
        signals: name -> ``(samples,)`` audio (any shape; flattened), e.g. ``{"target": y,
            "output": y_hat}``; each at least ``n_fft`` samples long.
        sample_rate: Hz.
        path: where to write a PNG, or ``None``.
        n_fft: segment length of the average; the frequency resolution is ``sample_rate / n_fft``.
        title: axes title.

    Returns:
        The figure: one axes, one line per signal labelled by its name, power spectral density
        in dB re a full-scale sine's total power per bin, against frequency on a log axis.
    """
    from scipy.signal import welch

    if not signals:
        raise ValueError("signals is empty: give at least one name -> audio entry")
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    for name, audio in signals.items():
        x = audio.detach().cpu().double().reshape(-1).numpy()
        if x.size < n_fft:
            raise ValueError(f"signal {name!r} has {x.size} samples, fewer than n_fft={n_fft}")
        freqs, psd = welch(x, fs=sample_rate, window="hann", nperseg=n_fft, scaling="spectrum")
        # "spectrum" scaling reads a sine's power (A^2 / 2) in its bin; x2 makes a full-scale
        # sine read 0 dB.
        level_db = 10 * np.log10(np.maximum(2 * psd, 10 ** (FLOOR_DB / 10)))
        ax.semilogx(freqs[1:], level_db[1:], label=name, linewidth=0.8)
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("level (dB re full-scale sine)")
    ax.set_xlim(20, sample_rate / 2)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_phase_alignment(
    freqs_hz: np.ndarray,
    measured_phase_rad: np.ndarray,
    fitted_phase_rad: np.ndarray,
    measured_delay_samples: np.ndarray,
    fitted_delay_samples: np.ndarray,
    coherence: np.ndarray,
    sample_rate: float | None = None,
    path: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """The phase response and group delay of a fitted alignment against the measured ones.

    Args:
        freqs_hz: ``(n_freqs,)`` frequencies.
        measured_phase_rad, fitted_phase_rad: ``(n_freqs,)`` phase of the wet relative to the
            dry and of the fitted filter; both are drawn wrapped to (-180, 180] degrees.
        measured_delay_samples, fitted_delay_samples: ``(n_freqs,)`` group delays in samples
            (drawn in ms when ``sample_rate`` is given).
        coherence: ``(n_freqs,)`` in [0, 1]; measured points fade where it is low.
        sample_rate: Hz, to draw delays in milliseconds.
        path: where to write a PNG, or ``None``.
        title: figure title.

    Returns:
        The figure: phase (degrees) on top, group delay below, against frequency (log axis).
    """
    f = np.asarray(freqs_hz, dtype=float)
    keep = f > 0
    f = f[keep]
    wrap = lambda p: np.degrees(np.angle(np.exp(1j * np.asarray(p)[keep])))  # noqa: E731
    alpha = np.clip(np.asarray(coherence, dtype=float)[keep], 0.05, 1.0)
    scale, unit = (1000.0 / sample_rate, "ms") if sample_rate else (1.0, "samples")
    fig = Figure(figsize=(8, 6), layout="constrained")
    ax_phase, ax_delay = fig.subplots(2, 1, sharex=True)
    colors = np.zeros((f.size, 4))
    colors[:, 3] = alpha
    ax_phase.scatter(f, wrap(measured_phase_rad), s=2, c=colors, label="measured (wet vs dry)")
    ax_phase.semilogx(f, wrap(fitted_phase_rad), color="C1", linewidth=1.2, label="fitted filter")
    ax_phase.set_ylabel("phase (degrees)")
    ax_phase.set_ylim(-190, 190)
    ax_phase.set_yticks([-180, -90, 0, 90, 180])
    measured_delay = np.asarray(measured_delay_samples, dtype=float)[keep] * scale
    fitted_delay = np.asarray(fitted_delay_samples, dtype=float)[keep] * scale
    ax_delay.scatter(f, measured_delay, s=2, c=colors, label="measured")
    ax_delay.semilogx(f, fitted_delay, color="C1", linewidth=1.2, label="fitted filter")
    # The measured delay is a derivative of a noisy phase: limit the view to the fit's range.
    span = np.ptp(fitted_delay) if fitted_delay.size else 1.0
    low, high = fitted_delay.min() - 0.5 * span - 1 * scale, fitted_delay.max() + 0.5 * span + scale
    ax_delay.set_ylim(low, high)
    ax_delay.set_ylabel(f"group delay ({unit})")
    ax_delay.set_xlabel("frequency (Hz)")
    ax_delay.set_xlim(max(f.min(), 10.0), f.max())
    for ax in (ax_phase, ax_delay):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_timbre_transfer(
    input_audio: np.ndarray,
    output_audio: np.ndarray,
    sample_rate: int,
    frame_rate_hz: int,
    f0_hz: np.ndarray,
    loudness_db: np.ndarray,
    output_f0_hz: np.ndarray | None = None,
    output_loudness_db: np.ndarray | None = None,
    titles: tuple[str, str] = ("input", "output"),
    path: str | os.PathLike | None = None,
    n_fft: int = 1024,
) -> Figure:
    """f0, loudness and spectrograms of a timbre transfer (or a resynthesis).

    Args:
        input_audio, output_audio: ``(samples,)`` audio at ``sample_rate`` Hz.
        frame_rate_hz: frames per second of the features.
        f0_hz, loudness_db: ``(frames,)`` controls the output was made from (e.g. the input's
            features after pitch and loudness adjustment).
        output_f0_hz, output_loudness_db: optional ``(frames,)`` features measured on the
            output, drawn dashed over the controls.
        titles: names of the two signals.
        path: where to write a PNG, or ``None``.
        n_fft: spectrogram window (Hann, hop ``n_fft / 4``).

    Returns:
        The figure: f0 (log axis) and loudness against time, then the two spectrograms in dB
        re the louder signal's peak (log frequency axis, 60 dB range).
    """
    from scipy.signal import stft

    signals = [np.asarray(a, dtype=np.float64).reshape(-1) for a in (input_audio, output_audio)]
    fig = Figure(figsize=(10, 9), layout="constrained")
    axes = fig.subplots(4, 1, sharex=True)
    t_frames = np.arange(len(f0_hz)) / frame_rate_hz
    axes[0].plot(t_frames, f0_hz, label="control", linewidth=1.0)
    if output_f0_hz is not None:
        t_out = np.arange(len(output_f0_hz)) / frame_rate_hz
        axes[0].plot(t_out, output_f0_hz, "--", label=f"{titles[1]} (CREPE)", linewidth=1.0)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("f0 (Hz)")
    axes[0].legend(loc="upper right")
    axes[1].plot(t_frames, loudness_db, label="control", linewidth=1.0)
    if output_loudness_db is not None:
        t_out = np.arange(len(output_loudness_db)) / frame_rate_hz
        axes[1].plot(t_out, output_loudness_db, "--", label=titles[1], linewidth=1.0)
    axes[1].set_ylabel("loudness (dB, A)")
    axes[1].legend(loc="upper right")
    spectra = []
    for x in signals:
        freqs, times, z = stft(x, fs=sample_rate, nperseg=n_fft, noverlap=3 * n_fft // 4)
        spectra.append((freqs, times, 20 * np.log10(np.maximum(np.abs(z), 1e-12))))
    top = max(s[2].max() for s in spectra)
    for ax, (freqs, times, level), name in zip(axes[2:], spectra, titles):
        mesh = ax.pcolormesh(
            times, freqs[1:], level[1:], vmin=top - 60, vmax=top, shading="auto", cmap="magma"
        )
        ax.set_yscale("log")
        ax.set_ylim(40, sample_rate / 2)
        ax.set_ylabel("Hz")
        ax.set_title(name)
    fig.colorbar(mesh, ax=axes[2:], label="dB re peak")
    axes[-1].set_xlabel("time (s)")
    return _save(fig, path)


def plot_postfilter(
    natural: np.ndarray,
    variants: dict[str, np.ndarray],
    spectra_db: dict[str, np.ndarray] | None = None,
    frame_rate_hz: float = 200.0,
    sample_rate: int | None = None,
    offset: int = 0,
    stream: str = "mgc",
    path: str | os.PathLike | None = None,
) -> Figure:
    """Global variance per dimension and spectral envelopes of post-filtered features.

    Args:
        natural: ``(frames, dims)`` natural features of one stream (voiced frames).
        variants: ``{name: (frames, dims)}`` the same utterance predicted and post-filtered.
        spectra_db: optional ``{name: (frames, bins)}`` envelopes in dB (e.g. from
            :func:`diffx.analysis.acoustic.mgc_to_log_spectrum_db`), drawn as spectrograms.
        frame_rate_hz, sample_rate: axes of the spectrograms.
        offset: the first dimension drawn in the GV panel (post-filtered dims).
        stream: its name, for labels.
        path: where to write a PNG, or ``None``.

    Returns:
        The figure: GV (log scale) per dimension of each variant against natural, then one
        spectrogram per entry of ``spectra_db``.
    """
    spectra_db = spectra_db or {}
    rows = 1 + len(spectra_db)
    fig = Figure(figsize=(9, 2.6 * rows), layout="constrained")
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    dims = np.arange(offset, natural.shape[1])
    axes[0].semilogy(dims, natural[:, offset:].var(axis=0), "k", lw=2, label="natural")
    for name, feats in variants.items():
        axes[0].semilogy(dims, feats[:, offset:].var(axis=0), label=name)
    axes[0].set(
        xlabel=f"{stream} dimension", ylabel="variance over frames", title="global variance"
    )
    axes[0].legend(fontsize=7, loc="upper right")
    if spectra_db:
        high = max(float(np.max(s)) for s in spectra_db.values())
        for ax, (name, spec) in zip(axes[1:], spectra_db.items()):
            t_max = spec.shape[0] / frame_rate_hz
            f_max = (sample_rate or 2 * (spec.shape[1] - 1)) / 2
            ax.imshow(
                spec.T, origin="lower", aspect="auto", vmin=high - 80, vmax=high,
                extent=(0, t_max, 0, f_max / 1000 if sample_rate else spec.shape[1]),
                cmap="magma",
            )
            ax.set(title=f"{name}: spectral envelope (dB)", xlabel="time (s)",
                   ylabel="kHz" if sample_rate else "bin")
    return _save(fig, path)

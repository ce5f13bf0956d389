"""Tests of diffx.analysis.plots: PNGs are written and the figures hold the stated content."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
import torch

from diffx.analysis.metrics import AUDIBILITY_NMR_DB, AliasingReport, aliasing_metrics
from diffx.analysis.plots import plot_aliasing_metrics, plot_tone_spectrum
from diffx.analysis.tones import chromatic_test_set

FS = 44100
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@pytest.fixture(scope="module")
def report() -> AliasingReport:
    tones = chromatic_test_set(
        FS, levels_dbfs=(-18, -6), midi_low=80, midi_high=100, duration_s=0.25, discard_s=0.05
    ).subset([0, 10, 20, 21, 31, 41])
    return aliasing_metrics(
        lambda x: torch.clamp(x, -0.1, 0.1), FS, tones=tones, teacher=torch.tanh, progress=False
    )


def test_tone_spectrum(tmp_path):
    f0, n = 1500.0, 8820
    t = torch.arange(n, dtype=torch.float64) / FS
    y = torch.clamp(0.5 * torch.sin(2 * torch.pi * f0 * t), -0.1, 0.1)
    path = tmp_path / "spectrum.png"
    fig = plot_tone_spectrum(y[None, None], f0, FS, path=path)
    assert_png(path)
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"output", "aliases", "harmonics"}
    np.testing.assert_allclose(lines["harmonics"].get_xdata(), f0 * np.arange(1, 15))
    # The clipped sine's fundamental, read by an independent FFT of the whole 0.2 s (1500 Hz
    # is bin 300, on a bin: rectangular window, no leakage): its level in dB re full scale.
    fundamental = 2 * np.abs(np.fft.rfft(y.numpy())[300]) / n
    assert lines["harmonics"].get_ydata()[0] == pytest.approx(20 * np.log10(fundamental), abs=1e-6)
    assert len(lines["output"].get_xdata()) == n // 2 + 1
    assert ax.get_xlabel() == "Frequency (Hz)"
    assert "1500" in ax.get_title()


def test_tone_spectrum_without_path_and_bad_input():
    x = torch.sin(2 * torch.pi * 1000.0 * torch.arange(4410) / FS)
    fig = plot_tone_spectrum(x, 1000.0, FS)
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match="one tone"):
        plot_tone_spectrum(torch.zeros(2, 1, 4410), 1000.0, FS)
    with pytest.raises(ValueError, match="f0_hz"):
        plot_tone_spectrum(x, 30000.0, FS)


def test_metrics_figure(report, tmp_path):
    path = tmp_path / "metrics.png"
    fig = plot_aliasing_metrics(report, path=path)
    assert_png(path)
    titles = [ax.get_title() for ax in fig.axes]
    assert [t.split()[0] for t in titles] == ["NMR-S", "ESR-S", "HESR-T"]
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
        labels = [line.get_label() for line in ax.get_lines()]
        assert labels[:2] == ["-18 dBFS", "-6 dBFS"]
        level_line = ax.get_lines()[1]
        np.testing.assert_allclose(level_line.get_xdata(), report.column("f0_hz")[3:])
    nmr_ax = fig.axes[0]
    threshold = [line for line in nmr_ax.get_lines() if line.get_label() == "audibility threshold"]
    assert len(threshold) == 1
    np.testing.assert_allclose(threshold[0].get_ydata(), AUDIBILITY_NMR_DB)
    # The plotted values are 10 log10 of the linear metric.
    np.testing.assert_allclose(
        nmr_ax.get_lines()[0].get_ydata(), 10 * np.log10(report.column("nmr_s")[:3])
    )
    assert fig.axes[-1].get_xlabel() == "f0 (Hz)"


def test_metrics_figure_selection_and_errors(report):
    fig = plot_aliasing_metrics(report, metrics=("esr_t",))
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match="not in the report"):
        plot_aliasing_metrics(report, metrics=("hesr_r",))
    with pytest.raises(ValueError, match="AliasingReport"):
        plot_aliasing_metrics(report.to_rows())
    with pytest.raises(ValueError, match="no rows"):
        plot_aliasing_metrics(AliasingReport(rows=[], sample_rate=FS))

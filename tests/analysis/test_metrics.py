"""Tests of diffx.analysis.metrics: analytic identities, known aliasing, report API, errors."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly
from torch import nn

from diffx.analysis.metrics import (
    AliasingReport,
    aliasing_metrics,
    harmonic_esr,
    self_metrics,
)
from diffx.analysis.tones import chromatic_test_set
from diffx.losses.nmr import noise_to_mask_ratio

FS = 44100


@pytest.fixture(scope="module")
def high_tones():
    """Three high notes at -6 dBFS, 0.3 s long with 0.1 s discarded (0.2 s analysed)."""
    return chromatic_test_set(
        FS, levels_dbfs=(-6,), midi_low=84, midi_high=108, duration_s=0.3, discard_s=0.1
    ).subset([0, 12, 24])


@pytest.fixture(scope="module")
def mixed_tones():
    """Two notes at each of two levels."""
    return chromatic_test_set(
        FS, levels_dbfs=(-18, -6), midi_low=57, midi_high=81, duration_s=0.3, discard_s=0.1
    ).subset([0, 24, 25, 49])


def clipper(x):
    return torch.clamp(x, -0.1, 0.1)


def oversampled_clipper_outputs(tones, factor=16, margin_s=0.02):
    """The clipper run at 16x the rate, independently of diffx: the sine is generated at the
    high rate (with a margin so the decimator's edge transients fall outside) and brought
    down with scipy's polyphase resampler."""
    margin = round(margin_s * FS)
    total = tones.audio.shape[-1]
    n = np.arange((total + 2 * margin) * factor) - margin * factor
    outs = []
    for f0, amp in zip(tones.f0_hz.numpy(), tones.amplitude.numpy()):
        x = amp * np.sin(2 * np.pi * f0 * n / (FS * factor))
        y = resample_poly(np.clip(x, -0.1, 0.1), 1, factor)
        outs.append(y[margin : margin + total])
    return torch.tensor(np.stack(outs))[:, None, :]


def test_identity_model_has_no_aliasing(mixed_tones):
    report = aliasing_metrics(lambda x: x, FS, tones=mixed_tones, progress=False)
    assert len(report) == 4
    assert report.metrics == ("esr_s", "nmr_s")
    assert np.all(10 * np.log10(report.column("esr_s")) < -100)
    assert np.all(10 * np.log10(report.column("nmr_s")) < -60)
    assert "esr_t" not in report.rows[0]


def test_hard_clipper_aliases_and_oversampling_reduces_it(high_tones):
    naive = aliasing_metrics(clipper, FS, tones=high_tones, progress=False)
    oversampled = aliasing_metrics(
        oversampled_clipper_outputs(high_tones), FS, tones=high_tones, progress=False
    )
    naive_db = 10 * np.log10(naive.column("esr_s"))
    oversampled_db = 10 * np.log10(oversampled.column("esr_s"))
    assert np.all(naive_db > -60)
    assert np.all(oversampled_db < naive_db)
    assert oversampled.means_db()["esr_s"] < naive.means_db()["esr_s"] - 10
    assert oversampled.means_db()["nmr_s"] < naive.means_db()["nmr_s"] - 10


def test_student_equal_to_teacher(mixed_tones):
    def model(x):
        return torch.tanh(4 * x)

    report = aliasing_metrics(model, FS, tones=mixed_tones, teacher=model, progress=False)
    assert report.metrics == ("esr_s", "nmr_s", "esr_t", "nmr_t", "hesr_t")
    # ESR-T = ESR(y, bl(T)) and NMR-T = NMR(y, bl(T)) become ESR-S and NMR-S when T = y, and
    # the harmonic ESR of bl(y) against itself is 0.
    np.testing.assert_array_equal(report.column("esr_t"), report.column("esr_s"))
    np.testing.assert_array_equal(report.column("nmr_t"), report.column("nmr_s"))
    np.testing.assert_array_equal(report.column("hesr_t"), 0.0)
    assert np.all(report.column("esr_s") > 0)


def test_precomputed_reference_whole_or_analysed(mixed_tones):
    outputs = torch.tanh(4 * mixed_tones.audio)
    whole = aliasing_metrics(
        lambda x: torch.tanh(4 * x), FS, tones=mixed_tones, reference=outputs, progress=False
    )
    analysed = aliasing_metrics(
        outputs,
        FS,
        tones=mixed_tones,
        reference=outputs[..., mixed_tones.discard_samples :],
        progress=False,
    )
    assert whole.metrics[-3:] == ("esr_r", "nmr_r", "hesr_r")
    for name in ("esr_s", "nmr_s", "esr_r", "nmr_r", "hesr_r"):
        np.testing.assert_allclose(whole.column(name), analysed.column(name), rtol=1e-12, atol=0)
    np.testing.assert_allclose(whole.column("esr_r"), whole.column("esr_s"), rtol=1e-12)


def test_teacher_at_a_different_gain(mixed_tones):
    # A student at half the teacher's (alias-free) output: ESR-T = HESR-T = 1/4 exactly.
    report = aliasing_metrics(
        lambda x: 0.5 * x, FS, tones=mixed_tones, teacher=lambda x: x, progress=False
    )
    np.testing.assert_allclose(report.column("esr_t"), 0.25, rtol=1e-9)
    np.testing.assert_allclose(report.column("hesr_t"), 0.25, rtol=1e-9)


def test_self_metrics_of_a_tone_plus_a_known_alias():
    n = 4410
    t = torch.arange(n, dtype=torch.float64) / FS
    tone = 0.5 * torch.sin(2 * math.pi * 440.0 * t)
    # A non-harmonic component 12 bins from the nearest harmonic (880 Hz).
    alias = 0.01 * torch.sin(2 * math.pi * 1000.0 * t + 0.3)
    y = (tone + alias)[None]
    metrics = self_metrics(y, 440.0, FS)
    expected = float(alias.square().sum() / tone.square().sum())
    assert float(metrics["esr_s"][0]) == pytest.approx(expected, rel=1e-6)
    # NMR-S is the NMR of the output against its harmonic part, here known analytically.
    oracle = noise_to_mask_ratio(y, tone[None], FS)
    assert float(metrics["nmr_s"][0]) == pytest.approx(float(oracle[0]), rel=1e-6)
    # The component leaks into each of the 50 harmonic bins at most at the window's side-lobe
    # level (1.5e-6 of its amplitude).
    torch.testing.assert_close(metrics["bandlimited"], tone[None], rtol=0, atol=50 * 0.01 * 1.5e-6)


def test_harmonic_esr_ignores_phase_and_measures_magnitude():
    n = 8820
    t = torch.arange(n, dtype=torch.float64) / FS
    target = torch.sin(2 * math.pi * 330.0 * t) + 0.3 * torch.sin(2 * math.pi * 990.0 * t + 1.0)
    delayed = torch.sin(2 * math.pi * 330.0 * t - 1.1) + 0.3 * torch.sin(
        2 * math.pi * 990.0 * t - 2.3
    )
    both = torch.stack([target, delayed, 0.5 * target])
    values = harmonic_esr(both, target.expand(3, n))
    assert float(values[0]) == 0.0
    # Equal magnitudes but for each partial's image, which leaks in through the window's side
    # lobes (~-116 dB) over all bins.
    assert float(values[1]) < 1e-8
    assert float(values[2]) == pytest.approx(0.25, rel=1e-12)


def test_report_api(mixed_tones, tmp_path):
    report = aliasing_metrics(
        clipper, FS, tones=mixed_tones, teacher=lambda x: x, batch_size=3, progress=True
    )
    assert isinstance(report, AliasingReport)
    rows = report.to_rows()
    assert [r["f0_hz"] for r in rows] == mixed_tones.f0_hz.tolist()
    assert [r["level_dbfs"] for r in rows] == mixed_tones.level_dbfs.tolist()
    rows[0]["esr_s"] = -1.0  # a copy
    assert report.rows[0]["esr_s"] > 0
    means = report.means_db()
    for name in report.metrics:
        assert means[name] == pytest.approx(10 * math.log10(np.mean(report.column(name))))
    assert report.levels_dbfs() == [-18.0, -6.0]
    loud = report.means_db(level_dbfs=-6)
    assert loud["esr_s"] == pytest.approx(10 * math.log10(np.mean(report.column("esr_s")[2:])))
    with pytest.raises(ValueError, match="no tones at level_dbfs"):
        report.means_db(level_dbfs=-30)
    with pytest.raises(KeyError, match="esr_r"):
        report.column("esr_r")
    path = tmp_path / "metrics.csv"
    report.to_csv(path)
    with open(path, newline="") as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == ["f0_hz", "midi", "level_dbfs", "amplitude", *report.metrics]
    assert [float(r["nmr_t"]) for r in read] == pytest.approx(
        report.column("nmr_t").tolist(), rel=1e-15
    )


class _Recorder(nn.Module):
    """A float32 module that records the dtype it was called with and its training flag."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(1.0))
        self.seen = []

    def forward(self, x):
        self.seen.append((x.dtype, self.training, torch.is_grad_enabled()))
        return torch.tanh(self.gain * x)


def test_module_runs_in_its_dtype_in_eval_mode(mixed_tones):
    module = _Recorder().train()
    report = aliasing_metrics(module, FS, tones=mixed_tones, progress=False)
    assert module.seen == [(torch.float32, False, False)]
    assert module.training  # restored
    assert np.all(np.isfinite(report.column("esr_s")))


def test_bad_models_raise(mixed_tones):
    with pytest.raises(ValueError, match=r"model \(<lambda>\) must map .* same shape"):
        aliasing_metrics(lambda x: x[..., :-1], FS, tones=mixed_tones, progress=False)
    with pytest.raises(ValueError, match=r"teacher \(<lambda>\) output has .*NaN"):
        aliasing_metrics(
            lambda x: x, FS, tones=mixed_tones, teacher=lambda x: x / 0 * 0, progress=False
        )
    with pytest.raises(ValueError, match="must return a tensor"):
        aliasing_metrics(lambda x: x.numpy(), FS, tones=mixed_tones, progress=False)
    with pytest.raises(ValueError, match="callable model or a tensor"):
        aliasing_metrics("tanh", FS, tones=mixed_tones, progress=False)
    with pytest.raises(ValueError, match="reference outputs must be shaped"):
        aliasing_metrics(
            lambda x: x, FS, tones=mixed_tones, reference=torch.zeros(2, 1, 100), progress=False
        )
    with pytest.raises(ValueError, match="sample_rate = 48000"):
        aliasing_metrics(lambda x: x, 48000, tones=mixed_tones, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        aliasing_metrics(lambda x: x, FS, tones=mixed_tones, batch_size=0, progress=False)

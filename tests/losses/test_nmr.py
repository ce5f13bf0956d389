"""NMRLoss against the published BS.1387 constants, a direct per-frame implementation of the
standard's formulas, and the masking behaviour an ear model must show."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch

from diffx.io.audio import load_demo
from diffx.losses.nmr import (
    ENERGY_FLOOR,
    NMRLoss,
    _EarModel,
    band_grouping,
    calibration_gain,
    critical_bands,
    ear_weighting_db,
    internal_noise,
    mask_offset_db,
    masking_patterns,
    noise_to_mask_ratio,
)

SR = 44100

# Entries of the BS.1387 band table that depart from the quarter-Bark formula by more than its
# 3-decimal rounding (misprints kept by every PEAQ implementation): (array, band index).
TABLE_MISPRINTS = {("upper", 28), ("lower", 66), ("upper", 70), ("center", 100), ("center", 108)}


def bark(f_hz):
    return 7.0 * np.arcsinh(np.asarray(f_hz) / 650.0)


def test_band_table_follows_the_quarter_bark_scale():
    lower, center, upper = critical_bands()
    assert lower.size == center.size == upper.size == 109
    assert lower[0] == 80.0 and upper[-1] == 18000.0
    # Published values: first and last bands of BS.1387 Table 6 / Kabal's report.
    assert (lower[1], center[0], upper[0]) == (103.445, 91.708, 103.445)
    z0 = bark(80.0)
    k = np.arange(109)
    formula = {
        "lower": 650 * np.sinh((z0 + 0.25 * k) / 7),
        "center": 650 * np.sinh((z0 + 0.25 * (k + 0.5)) / 7),
        "upper": np.minimum(650 * np.sinh((z0 + 0.25 * (k + 1)) / 7), 18000.0),
    }
    for name, table in (("lower", lower), ("center", center), ("upper", upper)):
        for band in range(109):
            if (name, band) in TABLE_MISPRINTS:
                continue
            assert table[band] == pytest.approx(formula[name][band], abs=5e-3), (name, band)


def test_ear_weighting_matches_the_bs1387_formula():
    f_khz = np.array([0.05, 0.1, 0.5, 1.0, 2.0, 3.3, 4.0, 8.0, 12.0, 16.0, 20.0])
    expected = -2.184 * f_khz**-0.8 + 6.5 * np.exp(-0.6 * (f_khz - 3.3) ** 2) - 0.001 * f_khz**3.6
    np.testing.assert_allclose(ear_weighting_db(f_khz * 1000), expected, rtol=1e-12)
    assert ear_weighting_db(np.array([0.0]))[0] == -np.inf
    # The resonance of the ear canal: the weighting peaks between 3 and 4 kHz, above +3 dB.
    f_hz = np.linspace(100, 18000, 5000)
    weight = ear_weighting_db(f_hz)
    assert 3000 < f_hz[np.argmax(weight)] < 4000 and weight.max() > 3.0


def test_internal_noise_and_mask_offset_values():
    # Internal noise 1.456 f^-0.8 dB (f in kHz): 1.456 dB at 1 kHz.
    assert 10 * np.log10(internal_noise(np.array([1000.0]))[0]) == pytest.approx(1.456)
    offset = mask_offset_db()
    assert offset[0] == 3.0 and offset[48] == 3.0  # 48 * 0.25 = 12 Bark
    assert offset[49] == pytest.approx(0.25 * 49 * 0.25) and offset[108] == pytest.approx(6.75)


def test_band_grouping_partitions_the_spectrum():
    grouping = band_grouping(SR)
    bin_hz = np.arange(1025) * SR / 2048
    bins_per_band = grouping.sum(axis=1)
    # Each band collects its width in bins (interior bands; edges at the table's values).
    lower, _, upper = critical_bands()
    np.testing.assert_allclose(bins_per_band, (upper - lower) / (SR / 2048), rtol=1e-12)
    # Every bin well inside 80 Hz - 18 kHz is shared out completely, except next to the
    # table's misprinted edges (band 28/29, 65/66 and 70/71 overlap or leave gaps).
    inside = (bin_hz > 80 + 22) & (bin_hz < 18000 - 22)
    near_misprint = np.zeros_like(inside)
    for edge_hz in (933.1, 3853.5, 4630.0):
        near_misprint |= np.abs(bin_hz - edge_hz) < 40
    np.testing.assert_allclose(grouping.sum(axis=0)[inside & ~near_misprint], 1.0, atol=1e-12)


def test_level_calibration_full_scale_sine_reads_92_db():
    n_fft = 2048
    t = np.arange(n_fft) / SR
    sine = np.sin(2 * np.pi * 1019.5 * t)
    hann = scipy.signal.windows.hann(n_fft, sym=True)
    peak = np.abs(np.fft.rfft(sine * hann)).max() * calibration_gain(SR)
    assert 20 * np.log10(peak) == pytest.approx(92.0, abs=0.02)


def direct_spreading(energy: np.ndarray, center_hz: np.ndarray) -> np.ndarray:
    """BS.1387 frequency spreading written out band by band (no closed forms).

    Each band's energy spreads over every band with slopes of 27 dB/Bark downwards and
    24 + 230/f_c - 2 log10(E) dB/Bark upwards, normalised to unit total; contributions add as
    powers 0.4; the result is divided by the same spreading of a flat unit pattern.
    """
    dz, n = 0.25, energy.size

    def spread(e):
        total = np.zeros(n)
        for m in range(n):
            slope_up_db = 24 + 230 / center_hz[m] - 2 * np.log10(e[m])
            spread_db = np.array(
                [-27 * (m - i) * dz if i <= m else -slope_up_db * (i - m) * dz for i in range(n)]
            )
            s = 10 ** (spread_db / 10)
            total += (e[m] * s / s.sum()) ** 0.4
        return total ** (1 / 0.4)

    return spread(energy) / spread(np.ones(n))


def test_spreading_matches_the_direct_formula():
    _, center, _ = critical_bands()
    model = _EarModel(SR)
    rng = np.random.default_rng(3)
    for energy in (10 ** rng.uniform(-3, 9, 109), 10 ** rng.uniform(4, 10, 109)):
        ours = model._spread(torch.from_numpy(energy)[None])[0].numpy()
        np.testing.assert_allclose(ours, direct_spreading(energy, center), rtol=1e-10)


def direct_patterns(test: np.ndarray, reference: np.ndarray, sr: float):
    """Noise pattern and mask of BS.1387's FFT ear model, frame by frame with numpy/scipy;
    each ``(frames, 109)``."""
    n_fft, hop = 2048, 1024
    window = scipy.signal.windows.hann(n_fft, sym=True)
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    with np.errstate(divide="ignore"):
        ear = 10 ** (ear_weighting_db(freqs) / 20)
    _, center, _ = critical_bands()
    grouping = band_grouping(sr)
    offset = 10 ** (-mask_offset_db() / 10)
    noises, masks = [], []
    for start in range(0, test.size - n_fft + 1, hop):
        frames = (x[start : start + n_fft] * window for x in (test, reference))
        test_mag, ref_mag = (np.abs(np.fft.rfft(f)) * ear * calibration_gain(sr) for f in frames)
        noises.append(np.maximum(grouping @ (test_mag - ref_mag) ** 2, 1e-12))
        pitch = np.maximum(grouping @ ref_mag**2, 1e-12) + internal_noise(center)
        masks.append(offset * direct_spreading(pitch, center))
    return np.array(noises), np.array(masks)


def direct_nmr(test: np.ndarray, reference: np.ndarray, sr: float) -> float:
    """NMR of BS.1387's FFT ear model computed frame by frame with numpy/scipy."""
    noise, mask = direct_patterns(test, reference, sr)
    return float(np.mean(noise / mask))


def test_nmr_matches_a_direct_implementation_on_real_audio():
    guitar, sr = load_demo("guitar_em9")
    reference = guitar[0, 44100 : 44100 + 4096].double()
    distorted = torch.tanh(4 * reference) / 4
    ours = noise_to_mask_ratio(distorted, reference, sr).item()
    assert ours == pytest.approx(direct_nmr(distorted.numpy(), reference.numpy(), sr), rel=1e-9)


def test_masking_patterns_match_the_direct_implementation_and_give_the_nmr():
    guitar, sr = load_demo("guitar_em9")
    reference = guitar[0, 44100 : 44100 + 6144].double()
    distorted = torch.tanh(4 * reference) / 4
    noise, mask = masking_patterns(distorted[None, None], reference[None, None], sr)
    assert noise.shape == mask.shape == (1, 1, 5, 109)
    direct_noise, direct_mask = direct_patterns(distorted.numpy(), reference.numpy(), sr)
    np.testing.assert_allclose(noise[0, 0].numpy(), direct_noise, rtol=1e-9)
    np.testing.assert_allclose(mask[0, 0].numpy(), direct_mask, rtol=1e-9)
    nmr = noise_to_mask_ratio(distorted, reference, sr)
    assert (noise / mask).mean().item() == pytest.approx(nmr.item(), rel=1e-12)


def test_masking_patterns_of_float32_audio_far_above_full_scale_are_finite():
    g = torch.Generator().manual_seed(2)
    reference = 1e12 * torch.randn(1, 1, 4096, generator=g)
    noise, mask = masking_patterns(1.1 * reference, reference, SR)
    assert noise.dtype == torch.float64 and torch.isfinite(noise / mask).all()


def test_masking_patterns_of_silence_are_finite_with_finite_gradients():
    silence = torch.zeros(2, 1, 4096, dtype=torch.float64, requires_grad=True)
    noise, mask = masking_patterns(silence, torch.zeros(2, 1, 4096, dtype=torch.float64), SR)
    assert torch.isfinite(noise).all() and torch.isfinite(mask).all() and (mask > 0).all()
    (noise / mask).mean().backward()
    assert torch.isfinite(silence.grad).all()


def test_masking_patterns_refuse_a_signal_shorter_than_a_frame():
    x = torch.zeros(1, 1, 1000)
    with pytest.raises(ValueError, match="n_fft=2048"):
        masking_patterns(x, x, SR)
    with pytest.raises(ValueError, match="sample_rate"):
        masking_patterns(torch.zeros(1, 1, 4096), torch.zeros(1, 1, 4096), 16000)


def test_identical_signals_give_the_floor():
    guitar, sr = load_demo("guitar_em9")
    x = guitar[None, :, : sr // 2]
    nmr_db = NMRLoss(sr, output="db")(x, x).item()
    assert nmr_db < -100.0
    # Exactly the energy floor over the mask, averaged.
    assert math.isfinite(nmr_db) and 10 ** (nmr_db / 10) > ENERGY_FLOOR * 1e-6


def test_nmr_rises_monotonically_with_added_noise_level():
    guitar, sr = load_demo("guitar_em9")
    clean = guitar[None, :, sr : 2 * sr].double()
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0), dtype=clean.dtype)
    loss = NMRLoss(sr, output="db", reduction="none")
    levels_db = [-90, -70, -50, -30, -10]
    values = [loss(clean + 10 ** (lvl / 20) * noise, clean).item() for lvl in levels_db]
    assert all(b > a + 5 for a, b in zip(values[:-1], values[1:])), values
    assert values[0] < 0 < values[-1]


def test_noise_under_a_loud_tone_is_masked_but_not_alone():
    """Narrow-band noise 20 dB under a -6 dBFS tone at the same frequency is masked (NMR < 0
    dB); the same noise against silence is far above the ear's internal noise (NMR > 0 dB).
    (White noise 20 dB under a tone is audible away from the tone, and NMR says so.)"""
    t = torch.arange(SR, dtype=torch.float64) / SR
    tone = 10 ** (-6 / 20) * torch.sin(2 * math.pi * 1000 * t)
    sos = scipy.signal.butter(4, [920, 1080], btype="band", fs=SR, output="sos")
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(scipy.signal.sosfilt(sos, rng.standard_normal(SR)))
    noise = noise * tone.square().mean().sqrt() / noise.square().mean().sqrt() * 0.1
    loss = NMRLoss(SR, output="db")
    assert loss((tone + noise)[None, None], tone[None, None]).item() < 0.0
    assert loss(noise[None, None], torch.zeros(1, 1, SR, dtype=torch.float64)).item() > 0.0
    white = torch.from_numpy(rng.standard_normal(SR)) * tone.square().mean().sqrt() * 0.1
    assert loss((tone + white)[None, None], tone[None, None]).item() > 0.0


def test_batch_items_are_independent_and_float32_agrees():
    g = torch.Generator().manual_seed(1)
    target = torch.randn(3, 2, 6000, generator=g, dtype=torch.float64) * 0.3
    pred = target + 0.01 * torch.randn(3, 2, 6000, generator=g, dtype=torch.float64)
    loss = NMRLoss(SR, reduction="none")
    batch = loss(pred, target)
    assert batch.shape == (3, 2)
    for b in range(3):
        torch.testing.assert_close(batch[b], loss(pred[b : b + 1], target[b : b + 1])[0])
    torch.testing.assert_close(
        loss(pred.float(), target.float()).double(), batch, rtol=1e-4, atol=0
    )
    assert NMRLoss(SR)(pred, target).item() == pytest.approx(batch.mean().item())
    assert NMRLoss(SR, reduction="sum")(pred, target).item() == pytest.approx(batch.sum().item())
    db = NMRLoss(SR, output="db", reduction="none")(pred, target)
    torch.testing.assert_close(db, 10 * torch.log10(batch))


def test_gradcheck():
    g = torch.Generator().manual_seed(2)
    target = torch.randn(1, 1, 128, generator=g, dtype=torch.float64) * 0.5
    pred = target + 0.1 * torch.randn(1, 1, 128, generator=g, dtype=torch.float64)
    pred.requires_grad_(True)
    target.requires_grad_(True)
    loss = NMRLoss(SR, n_fft=64, hop_length=32)
    assert torch.autograd.gradcheck(loss, (pred, target))


@pytest.mark.parametrize("case", ["identical", "silent_target", "all_silent"])
def test_gradients_stay_finite_at_the_edges(case):
    x = torch.randn(1, 1, 4096, generator=torch.Generator().manual_seed(4)) * 0.5
    pred = x.clone() if case != "all_silent" else torch.zeros_like(x)
    target = x.clone() if case == "identical" else torch.zeros_like(x)
    pred.requires_grad_(True)
    target.requires_grad_(True)
    value = NMRLoss(SR, output="db")(pred, target)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(pred.grad).all() and torch.isfinite(target.grad).all()


def test_bad_input_is_named():
    x = torch.zeros(1, 1, 4096)
    loss = NMRLoss(SR)
    with pytest.raises(ValueError, match="length"):
        loss(x, torch.zeros(1, 1, 4000))
    with pytest.raises(ValueError, match="pred contains 1 NaN"):
        bad = x.clone()
        bad[0, 0, 7] = float("nan")
        loss(bad, x)
    with pytest.raises(ValueError, match="n_fft=2048"):
        loss(torch.zeros(1, 1, 1000), torch.zeros(1, 1, 1000))
    with pytest.raises(ValueError, match="sample_rate 16000"):
        NMRLoss(16000)
    with pytest.raises(ValueError, match="output"):
        NMRLoss(SR, output="dB10")
    with pytest.raises(ValueError, match="reduction"):
        NMRLoss(SR, reduction="avg")
    with pytest.raises(ValueError, match="channels"):
        loss(torch.zeros(4096), torch.zeros(4096))


def test_float32_input_far_above_full_scale_is_finite_and_matches_float64():
    # Issue 20's fuzz: silence against a 300 dB square wave overflowed float32 band powers.
    target = 1e15 * torch.sign(torch.sin(torch.arange(4096) / 5.0 + 0.1)).reshape(1, 1, -1)
    pred = torch.zeros_like(target)
    loss = NMRLoss(44100)
    value = loss(pred.float(), target.float())
    assert value.dtype == torch.float32 and bool(torch.isfinite(value))
    torch.testing.assert_close(value.double(), loss(pred.double(), target.double()), rtol=1e-5,
                               atol=0)  # fmt: skip

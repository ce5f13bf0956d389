"""Pre-emphasis filters against scipy and the IEC 61672-1 A-weighting table."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
from torch import nn

from diffx.losses.filters import (
    AntialiasLowpass,
    AWeighting,
    FirstOrderHighpass,
    a_weighting_sos,
    antialias_lowpass_taps,
    make_pre_emphasis,
)

# IEC 61672-1:2013, Table 3: A-weighting design goals in dB at the nominal one-third-octave
# frequencies 10 Hz ... 20 kHz. The standard computes them at the exact base-10 mid-band
# frequencies 1000 * 10^(n / 10) (n = -20 ... 13), which the nominal values label; they are
# rounded to 0.1 dB, so comparisons allow 0.05 dB of rounding on top of the filter's error.
IEC_61672_NOMINAL_HZ = [
    10, 12.5, 16, 20, 25, 31.5, 40, 50, 63, 80, 100, 125, 160, 200, 250, 315, 400, 500, 630,
    800, 1000, 1250, 1600, 2000, 2500, 3150, 4000, 5000, 6300, 8000, 10000, 12500, 16000, 20000,
]  # fmt: skip
IEC_61672_A_DB = [
    -70.4, -63.4, -56.7, -50.5, -44.7, -39.4, -34.6, -30.2, -26.2, -22.5, -19.1, -16.1, -13.4,
    -10.9, -8.6, -6.6, -4.8, -3.2, -1.9, -0.8, 0.0, 0.6, 1.0, 1.2, 1.3, 1.2, 1.0, 0.5, -0.1,
    -1.1, -2.5, -4.3, -6.6, -9.3,
]  # fmt: skip
IEC_EXACT_HZ = 1000.0 * 10.0 ** (np.arange(-20, 14) / 10.0)


def iec_analog_db(f: np.ndarray) -> np.ndarray:
    """IEC 61672-1 eq. E.6 with the rounded pole frequencies of eq. E.1-E.5, 0 dB at 1 kHz."""
    f1, f2, f3, f4 = 20.6, 107.7, 737.9, 12194.0

    def r(f):
        f = np.asarray(f, dtype=np.float64)
        return (
            f4**2
            * f**4
            / ((f**2 + f1**2) * np.sqrt((f**2 + f2**2) * (f**2 + f3**2)) * (f**2 + f4**2))
        )

    return 20 * np.log10(r(f) / r(1000.0))


def test_iec_table_is_the_analog_weighting_at_exact_frequencies():
    # Guards the transcription of the table above against the standard's own formula.
    assert len(IEC_61672_NOMINAL_HZ) == len(IEC_61672_A_DB) == len(IEC_EXACT_HZ)
    np.testing.assert_allclose(iec_analog_db(IEC_EXACT_HZ), IEC_61672_A_DB, atol=0.06)


# --- first-order high-pass -------------------------------------------------------------


@pytest.mark.parametrize("coefficient", [0.0, 0.85, 0.95, 1.0])
def test_highpass_matches_lfilter(coefficient, dtype):
    x = torch.randn(2, 3, 257, dtype=torch.float64)
    y = FirstOrderHighpass(coefficient)(x.to(dtype))
    expected = scipy.signal.lfilter([1.0, -coefficient], [1.0], x.numpy(), axis=-1)
    assert y.shape == x.shape and y.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    np.testing.assert_allclose(y.double().numpy(), expected, atol=tol)


def test_highpass_gradcheck():
    x = torch.randn(1, 2, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(FirstOrderHighpass(0.85), (x,))


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_highpass_rejects_bad_coefficient(bad):
    with pytest.raises(ValueError, match="coefficient"):
        FirstOrderHighpass(bad)


# --- A-weighting ------------------------------------------------------------------------


@pytest.mark.parametrize("sample_rate", [44100, 48000])
def test_a_weighting_matches_iec_table(sample_rate):
    sos = a_weighting_sos(sample_rate)
    keep = np.array(IEC_61672_NOMINAL_HZ) <= 16000
    _, h = scipy.signal.sosfreqz(sos, worN=IEC_EXACT_HZ[keep], fs=sample_rate)
    measured_db = 20 * np.log10(np.abs(h))
    np.testing.assert_allclose(measured_db, np.array(IEC_61672_A_DB)[keep], atol=0.5)
    # Far tighter in fact: the design tracks the analog weighting, and the table is rounded.
    np.testing.assert_allclose(measured_db, np.array(IEC_61672_A_DB)[keep], atol=0.05 + 0.2)


@pytest.mark.parametrize("sample_rate", [8000, 16000, 22050, 32000, 44100, 48000, 96000, 192000])
def test_a_weighting_tracks_analog_formula_and_is_stable(sample_rate):
    sos = a_weighting_sos(sample_rate)
    freqs = np.geomspace(10.0, 0.9 * sample_rate / 2, 1500)
    _, h = scipy.signal.sosfreqz(sos, worN=freqs, fs=sample_rate)
    # The rounded pole frequencies of iec_analog_db shift it by < 0.01 dB from the exact ones.
    np.testing.assert_allclose(20 * np.log10(np.abs(h)), iec_analog_db(freqs), atol=0.21)
    _, h_ref = scipy.signal.sosfreqz(sos, worN=[1000.0], fs=sample_rate)
    assert abs(20 * np.log10(abs(h_ref[0]))) < 1e-9
    for section in sos:
        assert np.all(np.abs(np.roots(section[3:])) < 1)


def test_a_weighting_output_matches_scipy_sosfilt(dtype):
    sample_rate = 44100
    x = torch.randn(2, 2, 3000, dtype=torch.float64)
    y = AWeighting(sample_rate)(x.to(dtype))
    expected = scipy.signal.sosfilt(a_weighting_sos(sample_rate), x.numpy(), axis=-1)
    assert y.shape == x.shape and y.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(y.double().numpy(), expected, atol=tol * np.abs(expected).max())


def test_a_weighting_gradcheck():
    x = torch.randn(1, 2, 32, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(AWeighting(48000), (x,))


@pytest.mark.parametrize("bad", [0, -44100, 2000, float("inf")])
def test_a_weighting_rejects_bad_sample_rate(bad):
    with pytest.raises(ValueError, match="sample_rate"):
        AWeighting(bad)


def test_filters_reject_bad_audio():
    for module in (FirstOrderHighpass(), AWeighting(44100), AntialiasLowpass(44100)):
        with pytest.raises(ValueError, match="x"):
            module(torch.randn(2, 100))
        bad = torch.randn(1, 1, 100)
        bad[0, 0, 5] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            module(bad)


# --- anti-aliasing low-pass -------------------------------------------------------------


@pytest.mark.parametrize("sample_rate", [44100, 48000, 96000])
def test_lowpass_meets_its_specification(sample_rate):
    taps = antialias_lowpass_taps(sample_rate)
    assert len(taps) % 2 == 1
    np.testing.assert_array_equal(taps, taps[::-1])  # linear phase
    # A grid independent of (and denser than) the design's own check.
    freqs, h = scipy.signal.freqz(taps, worN=1 << 17, fs=sample_rate)
    mag_db = 20 * np.log10(np.abs(h) + 1e-300)
    assert mag_db[freqs >= 16000].max() <= -80.0
    # Kaiser windows give pass-band ripple about equal to the stop-band's 1e-4.
    assert np.abs(np.abs(h[freqs <= 12000]) - 1).max() <= 2e-4


def test_lowpass_kaiser_estimate_alone_misses_80_db():
    # Why the design grows the filter: the textbook length leaves the spec unmet at 44.1 kHz.
    sample_rate = 44100
    num_taps, beta = scipy.signal.kaiserord(80.0, 4000 / (sample_rate / 2))
    h = scipy.signal.firwin(num_taps, 14000, window=("kaiser", beta), fs=sample_rate)
    freqs, response = scipy.signal.freqz(h, worN=1 << 16, fs=sample_rate)
    assert 20 * np.log10(np.abs(response[freqs >= 16000]).max()) > -80.0
    assert len(antialias_lowpass_taps(sample_rate)) > num_taps


def test_lowpass_output_is_aligned_convolution(dtype):
    module = AntialiasLowpass(48000, passband_hz=10000, stopband_hz=14000, attenuation_db=60)
    taps = module.taps.numpy()
    delay = (len(taps) - 1) // 2
    x = torch.randn(2, 3, 500, dtype=torch.float64)
    y = module(x.to(dtype))
    full = np.apply_along_axis(lambda s: np.convolve(s, taps), -1, x.numpy())
    expected = full[..., delay : delay + x.shape[-1]]
    assert y.shape == x.shape and y.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(y.double().numpy(), expected, atol=tol)
    # The same as lfilter's causal output advanced by the group delay.
    causal = scipy.signal.lfilter(taps, [1.0], x.numpy(), axis=-1)
    np.testing.assert_allclose(expected[..., :-delay], causal[..., delay:], atol=1e-12)


def test_lowpass_passes_a_tone_in_place():
    sample_rate = 44100
    n = np.arange(4000)
    tone = np.sin(2 * np.pi * 1000 * n / sample_rate)
    y = AntialiasLowpass(sample_rate)(torch.from_numpy(tone)[None, None])[0, 0].numpy()
    middle = slice(200, -200)  # away from the zero-padded edges
    np.testing.assert_allclose(y[middle], tone[middle], atol=3e-4)


def test_lowpass_gradcheck():
    module = AntialiasLowpass(16000, passband_hz=4000, stopband_hz=6000, attenuation_db=40)
    x = torch.randn(1, 2, 40, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(stopband_hz=22050), "stopband_hz"),
        (dict(stopband_hz=30000), "stopband_hz"),
        (dict(passband_hz=16000), "passband_hz"),
        (dict(passband_hz=17000), "passband_hz"),
        (dict(passband_hz=0), "passband_hz"),
        (dict(attenuation_db=0), "attenuation_db"),
        (dict(attenuation_db=float("nan")), "attenuation_db"),
    ],
)
def test_lowpass_rejects_bad_specification(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AntialiasLowpass(44100, **kwargs)


# --- factory ----------------------------------------------------------------------------


def test_make_pre_emphasis_by_name():
    assert isinstance(make_pre_emphasis(None), nn.Identity)
    assert isinstance(make_pre_emphasis("none", 44100), nn.Identity)
    hp = make_pre_emphasis("hp", coefficient=0.95)
    assert isinstance(hp, FirstOrderHighpass) and hp.coefficient == 0.95
    aw = make_pre_emphasis("aw", 48000)
    assert isinstance(aw, AWeighting) and aw.sample_rate == 48000
    lp = make_pre_emphasis("lp", 44100, passband_hz=10000)
    assert isinstance(lp, AntialiasLowpass) and lp.passband_hz == 10000


def test_make_pre_emphasis_errors():
    with pytest.raises(ValueError, match="name"):
        make_pre_emphasis("fd", 44100)
    with pytest.raises(ValueError, match="sample_rate"):
        make_pre_emphasis("aw")
    with pytest.raises(ValueError, match="sample_rate"):
        make_pre_emphasis("lp")

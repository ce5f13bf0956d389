"""feedback_delay and fdn_reverb: analytic echoes, independent per-sample oracles, RT60 fitted
from the impulse response per band, gradients of every order, batches and bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.signal
import torch

import diffx.functional as F
from diffx.functional import delay as D


def impulse(samples, batch=1, channels=1, dtype=torch.float64):
    x = torch.zeros(batch, channels, samples, dtype=dtype)
    x[..., 0] = 1.0
    return x


# --------------------------------------------------------------------------------------------
# feedback_delay


def echo_oracle(x, sr, delay_ms, feedback, mix, lowpass_hz=None, highpass_hz=None):
    """Per-sample float64 loop: delay buffer, linear interpolation, Butterworth sections from
    scipy (direct form I), written independently of diffx."""
    d = delay_ms * sr / 1000.0
    whole, frac = int(math.floor(d)), d - math.floor(d)
    sections = []
    if lowpass_hz is not None:
        sections.append(scipy.signal.butter(2, lowpass_hz, "low", fs=sr, output="sos")[0])
    if highpass_hz is not None:
        sections.append(scipy.signal.butter(2, highpass_hz, "high", fs=sr, output="sos")[0])
    x = np.asarray(x, dtype=np.float64)
    y = np.zeros_like(x)
    for ch in range(x.shape[0]):
        v = np.zeros(x.shape[1])
        state = [[0.0, 0.0, 0.0, 0.0] for _ in sections]  # in1, in2, out1, out2
        for n in range(x.shape[1]):
            tap0 = v[n - whole] if n - whole >= 0 else 0.0
            tap1 = v[n - whole - 1] if n - whole - 1 >= 0 else 0.0
            s = (1 - frac) * tap0 + frac * tap1
            for sec, st in zip(sections, state):
                b0, b1, b2, a0, a1, a2 = sec
                out = (b0 * s + b1 * st[0] + b2 * st[1] - a1 * st[2] - a2 * st[3]) / a0
                st[:] = [s, st[0], out, st[2]]
                s = out
            v[n] = x[ch, n] + feedback * s
            y[ch, n] = (1 - mix) * x[ch, n] + mix * s
    return y


def test_echo_times_and_levels_follow_feedback_powers():
    sr, T = 8000.0, 1000
    y = F.feedback_delay(impulse(T), sr, delay_ms=12.5, feedback=0.6, mix=1.0)[0, 0]  # 100 samples
    expected = torch.zeros(T, dtype=torch.float64)
    for k in range(1, 10):
        expected[100 * k] = 0.6 ** (k - 1)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-15)


def test_negative_feedback_alternates_sign_and_mix_keeps_the_dry_signal():
    sr, T = 1000.0, 40
    y = F.feedback_delay(impulse(T), sr, delay_ms=7.0, feedback=-0.5, mix=0.25)[0, 0]
    assert float(y[0]) == pytest.approx(0.75)
    assert [float(y[7 * k]) for k in (1, 2, 3)] == pytest.approx([0.25, -0.125, 0.0625])


def test_fractional_delay_is_linear_interpolation_and_near_band_limited_value():
    sr, T, d = 48000.0, 2000, 100.3  # samples
    t = np.arange(T)
    f0 = 240.0  # 1/200 of the sample rate: linear interpolation is accurate to ~1e-4
    window = np.sin(np.pi * t / T) ** 2
    x = np.sin(2 * np.pi * f0 * t / sr) * window
    y = F.feedback_delay(torch.from_numpy(x)[None, None], sr, d * 1000 / sr, 0.0, mix=1.0)[0, 0]
    interp = np.interp(t - d, t, x, left=0.0)
    np.testing.assert_allclose(y.numpy(), interp, rtol=0, atol=1e-12)
    # Against the analytic delayed signal: the error of linear interpolation is at most
    # f(1-f)/2 (2 pi f0 / sr)^2 of the amplitude, plus the window's own curvature.
    tau = t - d
    analytic = np.where(tau >= 0, np.sin(2 * np.pi * f0 * tau / sr)
                        * np.sin(np.pi * tau / T) ** 2, 0.0)  # fmt: skip
    bound = 0.3 * 0.7 / 2 * (2 * np.pi * f0 / sr) ** 2 * 1.5
    assert np.abs(y.numpy() - analytic).max() < bound


@pytest.mark.parametrize("filters", [(None, None), (1500.0, None), (None, 300.0), (2500.0, 80.0)])
def test_matches_per_sample_oracle_with_loop_filters(filters):
    sr, T = 16000.0, 1500
    x = torch.randn(1, 2, T, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lp, hp = filters
    y = F.feedback_delay(x, sr, 3.37, 0.8, 0.6, lowpass_hz=lp, highpass_hz=hp)
    ref = echo_oracle(x[0], sr, 3.37, 0.8, 0.6, lp, hp)
    np.testing.assert_allclose(y[0].numpy(), ref, rtol=0, atol=1e-9 * np.abs(ref).max())


def test_blocks_backend_agrees_with_numba():
    sr = 8000.0
    x = torch.randn(2, 2, 900, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    kwargs = dict(delay_ms=torch.tensor([2.1, 5.55]), feedback=torch.tensor([0.7, -0.4]),
                  mix=0.5, lowpass_hz=2000.0, highpass_hz=100.0)  # fmt: skip
    a = F.feedback_delay(x, sr, **kwargs, backend="numba")
    b = F.feedback_delay(x, sr, **kwargs, backend="blocks")
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_gradcheck_and_gradgradcheck_in_every_parameter():
    sr = 1000.0  # delays of 3.4 and 5.7 samples
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 1, 24, generator=gen, dtype=torch.float64, requires_grad=True)
    params = [torch.tensor(v, dtype=torch.float64, requires_grad=True)
              for v in ([3.4, 5.7], [0.6, -0.5], [0.4, 0.9], [300.0, 200.0], [50.0, 20.0])]

    def fn(x, delay_ms, feedback, mix, lp, hp):
        return F.feedback_delay(x, sr, delay_ms, feedback, mix, lowpass_hz=lp, highpass_hz=hp)

    assert torch.autograd.gradcheck(fn, [x, *params])
    assert torch.autograd.gradgradcheck(fn, [x, *params])


def test_batch_items_are_independent():
    sr = 8000.0
    x = torch.randn(3, 2, 500, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    delay, fb, lp = torch.tensor([1.3, 7.0, 20.2]), torch.tensor([0.3, 0.9, -0.6]), 1000.0
    batched = F.feedback_delay(x, sr, delay, fb, 0.5, lowpass_hz=lp)
    for i in range(3):
        single = F.feedback_delay(x[i : i + 1], sr, float(delay[i]), float(fb[i]), 0.5,
                                  lowpass_hz=lp)  # fmt: skip
        torch.testing.assert_close(batched[i : i + 1], single, rtol=0, atol=1e-14)


@pytest.mark.parametrize("kwargs, name", [
    (dict(delay_ms=0.5), "delay_ms"),
    (dict(delay_ms=20000.0), "delay_ms"),
    (dict(delay_ms=1.5, sample_rate=500.0), "delay_ms"),
    (dict(feedback=1.0), "feedback"),
    (dict(feedback=-1.2), "feedback"),
    (dict(feedback=float("nan")), "feedback"),
    (dict(mix=1.5), "mix"),
    (dict(lowpass_hz=4000.0), "lowpass_hz"),
    (dict(highpass_hz=0.0), "highpass_hz"),
    (dict(delay_ms=torch.ones(3) * 5), "delay_ms"),
    (dict(backend="fft"), "backend"),
])  # fmt: skip
def test_bad_input_names_the_argument(kwargs, name):
    args = dict(sample_rate=8000.0, delay_ms=5.0, feedback=0.5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        F.feedback_delay(torch.zeros(2, 1, 100), **args)


def test_bad_audio_raises():
    with pytest.raises(ValueError, match="x"):
        F.feedback_delay(torch.full((1, 1, 10), float("nan")), 8000.0, 5.0, 0.5)
    with pytest.raises(ValueError, match="x"):
        F.feedback_delay(torch.zeros(10), 8000.0, 5.0, 0.5)


# --------------------------------------------------------------------------------------------
# FDN reverb


def fdn_oracle(x, delays, a, b, c, sos):
    """Per-sample float64 loop over explicit delay lines and direct-form-I sections."""
    N, K = len(delays), sos.shape[1]
    lines = [np.zeros(m) for m in delays]  # circular buffers
    st = np.zeros((N, K, 4))
    y = np.zeros((c.shape[0], len(x)))
    for n in range(len(x)):
        u = np.zeros(N)
        for i, m in enumerate(delays):
            s = lines[i][n % m]  # written m samples ago
            for k in range(K):
                b0, b1, b2, a1, a2 = sos[i, k]
                out = b0 * s + b1 * st[i, k, 0] + b2 * st[i, k, 1] - a1 * st[i, k, 2] \
                    - a2 * st[i, k, 3]
                st[i, k] = (s, st[i, k, 0], out, st[i, k, 2])
                s = out
            u[i] = s
        v = b * x[n] + a @ u
        for i, m in enumerate(delays):
            lines[i][n % m] = v[i]
        y[:, n] = c @ u
    return y


@pytest.mark.parametrize("mixing", ["householder", "hadamard", "random"])
@pytest.mark.parametrize("output_channels", [1, 2])
def test_fdn_matches_per_sample_oracle(mixing, output_channels):
    sr, T = 16000.0, 2000
    delays = [31, 37, 41, 53]
    x = torch.randn(1, 1, T, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    rt60 = torch.tensor([[0.3, 0.2, 0.1]], dtype=torch.float64)
    if mixing == "random":
        mixing = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(5),
                                             dtype=torch.float64))[0]  # fmt: skip
    b = torch.tensor([0.5, -0.3, 0.8, 0.1], dtype=torch.float64)
    y = F.fdn_reverb(x, sr, rt60, mix=1.0, delays=delays, mixing=mixing, input_gains=b,
                     output_channels=output_channels)  # fmt: skip
    a = D.mixing_matrix(mixing, 4) if isinstance(mixing, str) else mixing
    sos = D.fdn_absorption_sos(delays, rt60, sr)[0].numpy()
    c = D._default_output_gains(output_channels, 4, x).numpy()
    ref = fdn_oracle(x[0, 0].numpy(), delays, a.numpy(), b.numpy(), c, sos)
    np.testing.assert_allclose(y[0].numpy(), ref, rtol=0, atol=1e-9 * np.abs(ref).max())


def test_absorption_filters_have_the_jot_gains_at_dc_and_nyquist():
    sr, delays = 48000.0, [1201, 1499, 2003]
    rt60 = torch.tensor([[2.0, 1.0, 0.4]], dtype=torch.float64)
    sos = D.fdn_absorption_sos(delays, rt60, sr)[0]
    for z, band in ((1.0, 0), (-1.0, 2)):
        gain = torch.ones(3, dtype=torch.float64)
        for k in range(sos.shape[1]):
            s = sos[:, k]
            gain = gain * (s[:, 0] + s[:, 1] * z + s[:, 2]) / (1 + s[:, 3] * z + s[:, 4])
        expected_db = -60 * torch.tensor(delays, dtype=torch.float64) / (sr * rt60[0, band])
        torch.testing.assert_close(20 * torch.log10(gain.abs()), expected_db, rtol=1e-9, atol=0)


@pytest.mark.parametrize("ratio", [2.0, 4.0, 8.0])
def test_loop_gain_never_exceeds_the_largest_band_gain(ratio):
    """The shelves' transitions do not add up to a boost: stability for every RT60 choice."""
    values = [0.05, 0.07, 0.2, 1.0, 10.0, 100.0]
    combos = torch.tensor(list(itertools.product(values, repeat=3)), dtype=torch.float64)
    z = torch.exp(-1j * torch.linspace(0, math.pi, 8001, dtype=torch.float64))
    for sr, low in ((48000.0, 100.0), (48000.0, 2500.0), (8000.0, 250.0)):
        delay = int(D.MAX_LINE_DELAY_S * sr)
        sos = D.fdn_absorption_sos([delay], combos, sr, [low, low * ratio])[:, 0]
        h = torch.ones(len(combos), len(z), dtype=torch.complex128)
        for k in range(sos.shape[1]):
            s = sos[:, k, :, None]
            h = h * (s[:, 0] + s[:, 1] * z + s[:, 2] * z**2) / (1 + s[:, 3] * z + s[:, 4] * z**2)
        peak_db = 20 * torch.log10(h.abs()).max(dim=1).values
        largest_db = (-60 * delay / (sr * combos)).max(dim=1).values
        assert float((peak_db - largest_db).max()) < 1e-7


def schroeder_rt60(ir: np.ndarray, sr: float, band: tuple[float, float]) -> float:
    """RT60 from the band-filtered IR's backward-integrated energy: a line fitted to the
    decay between -5 and -35 dB, extrapolated to -60 dB."""
    sos = scipy.signal.butter(4, band, "bandpass", fs=sr, output="sos")
    h = scipy.signal.sosfilt(sos, ir)
    edc = np.cumsum(h[::-1] ** 2)[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    idx = np.nonzero((edc_db <= -5) & (edc_db >= -35))[0]
    t = idx / sr
    slope, _ = np.polyfit(t, edc_db[idx], 1)
    return -60.0 / slope


# Test bands, away from the default crossovers (250 Hz and 4 kHz at 48 kHz).
RT60_BANDS = ((40.0, 80.0), (700.0, 1400.0), (12000.0, 18000.0))


def fitted_rt60(rt60, sr=48000.0, n_lines=8, seconds=None):
    seconds = seconds or 1.2 * max(rt60)
    T = int(seconds * sr)
    ir = F.fdn_reverb(impulse(T), sr, torch.tensor([rt60], dtype=torch.float64), mix=1.0,
                      n_lines=n_lines)[0, 0].numpy()  # fmt: skip
    return [schroeder_rt60(ir, sr, band) for band in RT60_BANDS]


# Measured errors per band (low, mid, high) at 48 kHz with the default 8 lines of 10-30 ms:
# 1.2/1.0/0.0 %, 0.7/0.1/0.1 %, 0.4/0.3/0.5 %, 0.6/0.2/0.1 %.
@pytest.mark.parametrize("rt60", [(1.2, 0.8, 0.3), (0.4, 0.9, 1.5), (2.0, 1.0, 0.5),
                                  (0.6, 1.2, 2.0)])  # fmt: skip
def test_rt60_fitted_from_the_impulse_response_is_within_5_percent(rt60):
    fitted = fitted_rt60(list(rt60))
    errors = [abs(f - d) / d for f, d in zip(fitted, rt60)]
    assert max(errors) < 0.05, f"designed {rt60}, fitted {fitted}, errors {errors}"


def test_stereo_output_is_decorrelated_and_mono_mix_keeps_channels():
    sr, T = 16000.0, 16000
    y = F.fdn_reverb(impulse(T), sr, 0.5, mix=1.0, output_channels=2)
    assert y.shape == (1, 2, T)
    left, right = y[0, 0].numpy(), y[0, 1].numpy()
    corr = np.dot(left, right) / np.sqrt(np.dot(left, left) * np.dot(right, right))
    assert abs(corr) < 0.2
    x = torch.randn(2, 3, 100, dtype=torch.float64)
    assert F.fdn_reverb(x, sr, 0.5).shape == (2, 3, 100)
    torch.testing.assert_close(F.fdn_reverb(x, sr, 0.5, mix=0.0), x, rtol=0, atol=0)
    # A stereo input: the send is the mean of its channels, the dry signal stays stereo.
    stereo = torch.randn(1, 2, 3000, dtype=torch.float64)
    wet = F.fdn_reverb(stereo, sr, 0.5, mix=1.0, output_channels=2)
    mono_send = F.fdn_reverb(stereo.mean(1, keepdim=True), sr, 0.5, mix=1.0, output_channels=2)
    torch.testing.assert_close(wet, mono_send, rtol=0, atol=1e-15)
    dry = F.fdn_reverb(stereo, sr, 0.5, mix=0.0, output_channels=2)
    torch.testing.assert_close(dry, stereo, rtol=0, atol=0)


def test_fdn_gradcheck_and_gradgradcheck():
    sr = 1000.0
    delays = [3, 5, 7, 11]
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 1, 24, generator=gen, dtype=torch.float64, requires_grad=True)
    rt60 = torch.tensor([[0.2, 0.1, 0.07], [0.08, 0.3, 0.15]], dtype=torch.float64,
                        requires_grad=True)  # fmt: skip
    mix = torch.tensor([0.4, 0.8], dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    q = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=torch.float64))[0]
    q.requires_grad_(True)

    def fn(x, rt60, mix, b, c, q):
        return F.fdn_reverb(x, sr, rt60, mix, delays=delays, mixing=q, input_gains=b,
                            output_gains=c, output_channels=2)  # fmt: skip

    assert torch.autograd.gradcheck(fn, [x, rt60, mix, b, c, q])
    assert torch.autograd.gradgradcheck(fn, [x, rt60, mix, b, c, q])


def test_fdn_batch_items_are_independent_and_backends_agree():
    sr = 8000.0
    x = torch.randn(3, 1, 800, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    rt60 = torch.tensor([[0.5, 0.3], [1.0, 0.2], [0.1, 0.1]], dtype=torch.float64)
    mix = torch.tensor([0.2, 0.5, 1.0])
    batched = F.fdn_reverb(x, sr, rt60, mix, n_lines=4, output_channels=2)
    blocks = F.fdn_reverb(x, sr, rt60, mix, n_lines=4, output_channels=2, backend="blocks")
    torch.testing.assert_close(batched, blocks, rtol=0, atol=1e-12)
    for i in range(3):
        single = F.fdn_reverb(x[i : i + 1], sr, rt60[i : i + 1], float(mix[i]), n_lines=4,
                              output_channels=2)  # fmt: skip
        torch.testing.assert_close(batched[i : i + 1], single, rtol=0, atol=1e-14)


def test_fdn_delays_are_distinct_primes_in_range():
    d = F.fdn_delays(8, 48000.0)
    assert len(set(d)) == 8 and d == sorted(d)
    assert all(all(n % k for k in range(2, int(n**0.5) + 1)) for n in d)
    assert 0.010 * 48000 <= d[0] and d[-1] <= 0.030 * 48000 * 1.01


@pytest.mark.parametrize("kwargs, name", [
    (dict(rt60_s=0.01), "rt60_s"),
    (dict(rt60_s=1000.0), "rt60_s"),
    (dict(rt60_s=torch.ones(1, 4)), "rt60_s"),
    (dict(rt60_s=float("inf")), "rt60_s"),
    (dict(mix=-0.1), "mix"),
    (dict(delays=[0, 5]), "delays"),
    (dict(delays=[3.5, 5]), "delays"),
    (dict(delays=[5000]), "delays"),
    (dict(mixing=torch.ones(8, 8)), "mixing"),
    (dict(mixing="circulant"), "mixing"),
    (dict(n_lines=6, mixing="hadamard"), "hadamard"),
    (dict(output_channels=3), "output_channels"),
    (dict(input_gains=torch.ones(5)), "input_gains"),
    (dict(output_gains=torch.ones(3, 8)), "output_gains"),
    (dict(rt60_s=torch.ones(1, 3), crossovers_hz=[1000.0, 1500.0]), "crossovers_hz"),
    (dict(rt60_s=torch.ones(1, 2), crossovers_hz=[9000.0]), "crossovers_hz"),
    (dict(backend="fft"), "backend"),
])  # fmt: skip
def test_fdn_bad_input_names_the_argument(kwargs, name):
    args = dict(sample_rate=16000.0, rt60_s=0.5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        F.fdn_reverb(torch.zeros(1, 1, 100), **args)


def test_fdn_stereo_output_refuses_more_than_two_channels():
    with pytest.raises(ValueError, match="mono or stereo"):
        F.fdn_reverb(torch.zeros(1, 3, 100), 16000.0, 0.5, output_channels=2)

"""sosfilt_varying, biquad_trajectory, state_variable_filter, modulated_filter and auto_wah:
scipy and float64 loop oracles, the block-centre interpolation, gradients, errors, behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch
from torch.autograd import gradcheck, gradgradcheck

from diffx.functional import (
    FILTER_TYPES,
    auto_wah,
    biquad,
    biquad_trajectory,
    modulated_filter,
    sosfilt,
    sosfilt_varying,
    state_variable_filter,
)
from diffx.functional.varying import MAX_SWEEP_FRACTION, envelope
from tests.functional.test_filters import random_sos
from tests.kernels.test_varying import df1_oracle, svf_oracle

SR = 16000.0


def noise(batch: int, channels: int, samples: int, seed: int = 0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return 0.3 * torch.randn(batch, channels, samples, generator=gen, dtype=dtype)


def normalized(sos: np.ndarray) -> np.ndarray:
    """(..., 6, n) scipy layout -> (..., 5, n) [b0, b1, b2, a1, a2] divided by a0."""
    a0 = sos[..., 3:4, :]
    return np.concatenate([sos[..., :3, :], sos[..., 4:, :]], axis=-2) / a0


# --------------------------------------------------------------------------------------------
# sosfilt_varying


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_constant_trajectory_equals_sosfilt_and_scipy(backend):
    sos = random_sos(2, 3, seed=1)  # a0 != 1: exercises the normalization
    x = noise(2, 2, 400)
    T = x.shape[-1]
    y = sosfilt_varying(x, sos[..., None].expand(-1, -1, -1, T), backend=backend)
    torch.testing.assert_close(y, sosfilt(x, sos), rtol=0, atol=1e-10)
    for b in range(2):
        norm = sos[b].numpy() / sos[b, :, 3:4].numpy()
        np.testing.assert_allclose(y[b].numpy(), scipy.signal.sosfilt(norm, x[b].numpy()),
                                   rtol=0, atol=1e-10)  # fmt: skip
    # One block is the same filter for the whole signal.
    torch.testing.assert_close(sosfilt_varying(x, sos[..., None]), y, rtol=0, atol=1e-12)


def test_swept_lowpass_matches_float64_loop():
    T = 1500
    f = torch.from_numpy(np.geomspace(100.0, 6000.0, T))[None].repeat(2, 1)
    f[1] = f[1].flip(0)
    sos = biquad_trajectory("low_pass", f, torch.tensor([0.7, 4.0], dtype=torch.float64), SR)
    x = noise(2, 1, T, seed=2)
    y = sosfilt_varying(x, sos.unsqueeze(1))
    ref = df1_oracle(x.numpy(), normalized(sos.numpy())[:, None])
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-11)


def test_blocks_are_interpolated_linearly_from_their_centres():
    T, n_blocks = 100, 7
    rng = np.random.default_rng(3)
    freqs = rng.uniform(200.0, 5000.0, size=(1, n_blocks))
    sos = biquad_trajectory("peaking", torch.from_numpy(freqs), 2.0, SR, 6.0)  # (1, 6, n)
    x = noise(1, 1, T, seed=3)
    y = sosfilt_varying(x, sos.unsqueeze(1))
    # Independently: block j's value sits at sample (j + 0.5) T / n - 0.5; held at the ends.
    centres = (np.arange(n_blocks) + 0.5) * T / n_blocks - 0.5
    coef = normalized(sos.numpy())[0]  # (5, n)
    per_sample = np.stack([np.interp(np.arange(T), centres, row) for row in coef])
    ref = df1_oracle(x.numpy(), per_sample[None, None])
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-11)


def test_float32_audio_relative_error():
    T = 4000
    f = torch.from_numpy(np.geomspace(60.0, 7000.0, T))[None]
    sos = biquad_trajectory("band_pass", f, 3.0, SR).unsqueeze(1)
    x = noise(1, 1, T, seed=4)
    ref = df1_oracle(x.float().double().numpy(), normalized(sos.numpy()))
    y = sosfilt_varying(x.float(), sos)
    assert y.dtype == torch.float32
    assert np.abs(y.double().numpy() - ref).max() / np.abs(ref).max() < 1e-6


def test_shared_sos_broadcasts_and_batch_consistency():
    T = 300
    f = torch.linspace(300.0, 3000.0, T, dtype=torch.float64).expand(3, T)
    sos = torch.stack([biquad_trajectory("low_pass", f, 0.7, SR),
                       biquad_trajectory("high_pass", f.flip(-1), 1.0, SR)], 1)  # fmt: skip
    x = noise(3, 2, T, seed=5)
    batched = sosfilt_varying(x, sos)
    for b in range(3):
        torch.testing.assert_close(batched[b : b + 1], sosfilt_varying(x[b : b + 1],
                                   sos[b : b + 1]), rtol=0, atol=0)  # fmt: skip
    torch.testing.assert_close(sosfilt_varying(x, sos[0]), batched, rtol=0, atol=0)


@pytest.mark.parametrize("needs", [(True, False), (False, True), (True, True)])
def test_sosfilt_varying_gradcheck(needs):
    T = 12
    f = torch.linspace(500.0, 4000.0, T, dtype=torch.float64)[None]
    sos = torch.stack([biquad_trajectory("peaking", f, 2.0, SR, 6.0),
                       biquad_trajectory("low_pass", f.flip(-1), 0.9, SR)], 1)  # fmt: skip
    sos = (sos * 1.3).requires_grad_(needs[1])  # a0 != 1
    x = noise(1, 2, T, seed=6).requires_grad_(needs[0])
    assert gradcheck(sosfilt_varying, (x, sos))
    assert gradgradcheck(sosfilt_varying, (x, sos))
    # Per-block coefficients: the interpolation is differentiable too.
    blocks = sos[..., ::4].detach().requires_grad_(needs[1])
    assert gradcheck(sosfilt_varying, (x, blocks))


@pytest.mark.parametrize(
    ("sos", "match"),
    [
        (torch.zeros(1, 1, 6, 10), "a0 = 0"),
        (torch.tensor([1.0, 0, 0, 1, 0, 1.5])[None, None, :, None].expand(1, 1, 6, 10),
         "unstable"),
        (torch.full((1, 1, 6, 10), math.nan), "sos contains"),
        (torch.ones(1, 1, 5, 10), "sos must be shaped"),
        (torch.ones(1, 1, 6, 11), "sos has 11"),
        (torch.ones(3, 1, 6, 10), "sos has batch size 3"),
        (torch.ones(1, 0, 6, 10), "sos must be shaped"),
        (torch.ones(1, 1, 6, 10, dtype=torch.int64), "sos must be a floating"),
    ],
)  # fmt: skip
def test_sosfilt_varying_bad_sos(sos, match):
    with pytest.raises(ValueError, match=match):
        sosfilt_varying(torch.zeros(2, 1, 10), sos)


def test_sosfilt_varying_bad_audio_and_backend():
    sos = biquad("low_pass", 1000.0, 0.7, SR)[:, None, :, None]
    with pytest.raises(ValueError, match="x"):
        sosfilt_varying(torch.zeros(1, 10), sos)
    with pytest.raises(ValueError, match="x contains"):
        sosfilt_varying(torch.full((1, 1, 10), math.inf), sos)
    with pytest.raises(ValueError, match="backend"):
        sosfilt_varying(torch.zeros(1, 1, 10), sos, backend="scan")


# --------------------------------------------------------------------------------------------
# biquad_trajectory


@pytest.mark.parametrize("filter_type", FILTER_TYPES)
def test_biquad_trajectory_is_biquad_at_every_step(filter_type):
    n = 9
    f = torch.linspace(50.0, 7000.0, n, dtype=torch.float64)[None].repeat(2, 1)
    q = torch.tensor([0.5, 3.0], dtype=torch.float64)
    g = torch.linspace(-12.0, 12.0, n, dtype=torch.float64)[None].repeat(2, 1)
    traj = biquad_trajectory(filter_type, f, q, SR, g)
    assert traj.shape == (2, 6, n)
    for i in range(n):
        step = biquad(filter_type, f[:, i], q, SR, g[:, i])
        torch.testing.assert_close(traj[..., i], step, rtol=0, atol=0)


def test_biquad_trajectory_constant_and_float32_rounding():
    const = biquad_trajectory("peaking", 1000.0, 2.0, SR, 3.0)
    assert const.shape == (1, 6, 1) and const.dtype == torch.float32
    torch.testing.assert_close(const[..., 0], biquad("peaking", 1000.0, 2.0, SR, 3.0))
    f = torch.tensor([[1e-3, 4000.0, SR / 2 - 1e-3]])
    traj = biquad_trajectory("low_pass", f, 1e3, SR)
    for i in range(3):
        torch.testing.assert_close(traj[..., i], biquad("low_pass", f[:, i], 1e3, SR),
                                   rtol=0, atol=0)  # fmt: skip


def test_biquad_trajectory_gradcheck():
    f = torch.linspace(300.0, 3000.0, 5, dtype=torch.float64)[None].requires_grad_()
    q = torch.tensor([1.5], dtype=torch.float64, requires_grad=True)
    g = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda a, b, c: biquad_trajectory("high_shelf", a, b, SR, c), (f, q, g))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"freq_hz": torch.tensor([[100.0, SR / 2]])}, "freq_hz must lie in"),
        ({"freq_hz": torch.tensor([[0.0, 100.0]])}, "freq_hz must lie in"),
        ({"q": torch.tensor([[1.0, 2e3]])}, "q must lie in"),
        ({"gain_db": 200.0}, "gain_db must lie in"),
        ({"freq_hz": torch.tensor([[math.nan]])}, "freq_hz contains"),
        ({"q": torch.ones(1, 3)}, "lengths differ"),
        ({"freq_hz": torch.ones(1, 2, 2)}, "freq_hz must be a scalar"),
        ({"filter_type": "lowpass"}, "filter_type"),
    ],
)  # fmt: skip
def test_biquad_trajectory_bad_parameters(kwargs, match):
    args = {"filter_type": "low_pass", "freq_hz": torch.tensor([[100.0, 200.0]]), "q": 0.7,
            "sample_rate": SR, **kwargs}  # fmt: skip
    with pytest.raises(ValueError, match=match):
        biquad_trajectory(**args)


# --------------------------------------------------------------------------------------------
# state_variable_filter


@pytest.mark.parametrize("mode", ["lowpass", "bandpass", "highpass"])
def test_svf_constant_cutoff_is_the_bilinear_biquad(mode):
    """Constant parameters: the RBJ biquad of the same prototype (also a prewarped BLT)."""
    fc, q = 900.0, 3.0
    x = noise(1, 1, 2000, seed=7)
    y = state_variable_filter(x, fc, q, SR, mode)
    rbj = {"lowpass": "low_pass", "bandpass": "band_pass", "highpass": "high_pass"}[mode]
    sos = biquad(rbj, fc, q, SR, dtype=torch.float64)
    expected = sosfilt(x, sos[:, None])
    # RBJ's band pass has 0 dB peak gain; the SVF's (s / (s^2 + k s + 1)) peaks at Q.
    torch.testing.assert_close(y, expected * (q if mode == "bandpass" else 1.0),
                               rtol=0, atol=1e-10)  # fmt: skip


def test_svf_parameter_forms_agree():
    T = 240
    x = noise(2, 2, T, seed=8)
    per_item = state_variable_filter(x, torch.tensor([500.0, 500.0]), torch.tensor([2.0, 2.0]),
                                     SR, "bandpass")  # fmt: skip
    torch.testing.assert_close(state_variable_filter(x, 500.0, 2.0, SR, "bandpass"), per_item,
                               rtol=0, atol=0)  # fmt: skip
    per_sample = state_variable_filter(x, torch.full((2, T), 500.0), torch.full((1, T), 2.0),
                                       SR, "bandpass")  # fmt: skip
    torch.testing.assert_close(per_sample, per_item, rtol=0, atol=0)


def test_svf_swept_matches_float64_loop_and_blocks_interpolate():
    T = 1000
    rng = np.random.default_rng(9)
    cutoff = np.geomspace(80.0, 7000.0, T)[None] * np.ones((2, 1))
    q = rng.uniform(0.5, 8.0, size=(2, 1))
    x = noise(2, 1, T, seed=9)
    y = state_variable_filter(x, torch.from_numpy(cutoff), torch.from_numpy(q[:, 0]), SR,
                              "lowpass")  # fmt: skip
    g = np.tan(np.pi * cutoff / SR)
    ref = svf_oracle(x.numpy(), g, np.broadcast_to(1 / q, (2, T)), "lowpass")
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-11)
    blocks = torch.tensor([[200.0, 2000.0, 500.0, 4000.0]], dtype=torch.float64)
    centres = (np.arange(4) + 0.5) * T / 4 - 0.5
    interp = np.interp(np.arange(T), centres, blocks[0].numpy())[None]
    y_blocks = state_variable_filter(x[:1], blocks, 1.0, SR, "highpass")
    ref_blocks = svf_oracle(x[:1].numpy(), np.tan(np.pi * interp / SR), np.ones((1, T)),
                            "highpass")  # fmt: skip
    np.testing.assert_allclose(y_blocks.numpy(), ref_blocks, rtol=0, atol=1e-11)


def test_svf_backends_agree_and_float32():
    T = 500
    cutoff = torch.linspace(100.0, 7900.0, T)[None].repeat(2, 1)
    x = noise(2, 2, T, seed=10, dtype=torch.float32)
    ys = [state_variable_filter(x, cutoff, 0.7, SR, backend=b) for b in ("numba", "torch")]
    assert ys[0].dtype == torch.float32
    torch.testing.assert_close(ys[0], ys[1], rtol=1e-6, atol=1e-6)


def test_svf_gradcheck_through_physical_parameters():
    T = 10
    cutoff = torch.linspace(300.0, 6000.0, T, dtype=torch.float64)[None].requires_grad_()
    q = torch.tensor([1.7], dtype=torch.float64, requires_grad=True)
    x = noise(1, 2, T, seed=11).requires_grad_()

    def fn(a, b, c):
        return state_variable_filter(a, b, c, SR, "bandpass")

    assert gradcheck(fn, (x, cutoff, q))
    assert gradgradcheck(fn, (x, cutoff, q))


def test_svf_finite_at_range_ends():
    x = noise(1, 1, 2000, seed=12, dtype=torch.float32)
    for cutoff in (SR / 2 * 1e-6, SR / 2 * (1 - 1e-6)):
        for q in (1e-3, 1e3):
            c = torch.tensor([cutoff], requires_grad=True)
            qs = torch.tensor([q], requires_grad=True)
            xs = x.clone().requires_grad_()
            for mode in ("lowpass", "bandpass", "highpass"):
                y = state_variable_filter(xs, c, qs, SR, mode)
                y.square().sum().backward()
                assert bool(torch.isfinite(y).all())
                for t in (xs, c, qs):
                    assert bool(torch.isfinite(t.grad).all())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cutoff_hz": SR / 2}, "cutoff_hz must lie in"),
        ({"cutoff_hz": 0.0}, "cutoff_hz must lie in"),
        ({"cutoff_hz": torch.tensor([[100.0, math.inf]])}, "cutoff_hz contains"),
        ({"cutoff_hz": torch.ones(1, 11)}, "cutoff_hz must have 1 to 10"),
        ({"cutoff_hz": torch.ones(3, 10)}, "cutoff_hz has batch size 3"),
        ({"cutoff_hz": torch.ones(2)}, "cutoff_hz must be a scalar"),
        ({"q": 0.0}, "q must lie in"),
        ({"q": math.nan}, "q contains"),
        ({"mode": "notch"}, "mode"),
        ({"sample_rate": -1.0}, "sample_rate"),
        ({"backend": "scan"}, "backend"),
    ],
)  # fmt: skip
def test_svf_bad_arguments(kwargs, match):
    args = {"x": torch.zeros(1, 1, 10), "cutoff_hz": 1000.0, "q": 0.7, "sample_rate": SR,
            **kwargs}  # fmt: skip
    with pytest.raises(ValueError, match=match):
        state_variable_filter(**args)


# --------------------------------------------------------------------------------------------
# modulated_filter and auto_wah


def test_modulated_filter_follows_its_lfo():
    T = 3000
    x = noise(1, 1, T, seed=13)
    # No depth: the fixed filter.
    torch.testing.assert_close(modulated_filter(x, SR, 1000.0, 2.0, 3.0, 0.0, "bandpass"),
                               state_variable_filter(x, 1000.0, 2.0, SR, "bandpass"),
                               rtol=0, atol=1e-12)  # fmt: skip
    rate, depth, phase = 4.0, 1.5, 0.3
    n = np.arange(T)
    cutoff = 1000.0 * 2 ** (depth * np.sin(2 * np.pi * rate * n / SR + phase))
    y = modulated_filter(x, SR, 1000.0, 0.7, rate, depth, "lowpass", phase_rad=phase)
    ref = svf_oracle(x.numpy(), np.tan(np.pi * cutoff / SR)[None], np.full((1, T), 1 / 0.7),
                     "lowpass")  # fmt: skip
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-11)
    # A sweep past Nyquist is clipped at MAX_SWEEP_FRACTION * fs, not refused.
    wide = modulated_filter(x, SR, 7000.0, 0.7, rate, 8.0, "lowpass")
    clipped = np.minimum(7000.0 * 2 ** (8.0 * np.sin(2 * np.pi * rate * n / SR)),
                         MAX_SWEEP_FRACTION * SR)  # fmt: skip
    ref = svf_oracle(x.numpy(), np.tan(np.pi * clipped / SR)[None], np.full((1, T), 1 / 0.7),
                     "lowpass")  # fmt: skip
    np.testing.assert_allclose(wide.numpy(), ref, rtol=0, atol=1e-10)


def test_modulated_filter_gradcheck_and_errors():
    x = noise(1, 1, 10, seed=14).requires_grad_()
    p = [torch.tensor([v], dtype=torch.float64, requires_grad=True)
         for v in (1200.0, 1.3, 900.0, 0.8)]  # fmt: skip
    assert gradcheck(lambda a, f, q, r, d: modulated_filter(a, SR, f, q, r, d, "highpass"),
                     (x, *p))  # fmt: skip
    for kwargs, match in [({"rate_hz": -1.0}, "rate_hz"), ({"depth_octaves": 9.0}, "depth"),
                          ({"freq_hz": SR}, "freq_hz"), ({"mode": "peak"}, "mode"),
                          ({"phase_rad": math.nan}, "phase_rad")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            modulated_filter(**{"x": x.detach(), "sample_rate": SR, "freq_hz": 500.0, **kwargs})


def test_envelope_rise_time_is_the_attack_time():
    """A unit step: the envelope rises from 10 % to 90 % in attack_ms (one-pole, ln 9 tau)."""
    x = torch.ones(1, 1, 4000, dtype=torch.float64)
    env = envelope(x, SR, 20.0, 500.0)[0].numpy()
    t10, t90 = np.argmax(env >= 0.1), np.argmax(env >= 0.9)
    assert abs((t90 - t10) / SR * 1e3 - 20.0) < 0.2
    # Release: after the step ends, the fall from 90 % to 10 % takes release_ms.
    x = torch.cat([torch.ones(1, 1, 8000), torch.zeros(1, 1, 24000)], -1).double()
    env = envelope(x, SR, 1.0, 300.0)[0, 8000:].numpy()
    t90, t10 = np.argmax(env <= 0.9), np.argmax(env <= 0.1)
    assert abs((t10 - t90) / SR * 1e3 - 300.0) < 1.0


def spectral_peak_hz(y: torch.Tensor) -> float:
    """Frequency of the largest averaged (Welch) power density."""
    freqs, power = scipy.signal.welch(y.detach().numpy().reshape(-1), SR, nperseg=2048)
    return float(freqs[np.argmax(power)])


def test_auto_wah_centre_follows_the_level():
    """Louder input moves the band pass up: the output's spectral peak rises with the level,
    from min_freq_hz at silence towards max_freq_hz."""
    white = noise(1, 1, 32000, seed=15) / 0.3
    kwargs = dict(min_freq_hz=300.0, max_freq_hz=3000.0, sensitivity_db=12.0, q=4.0,
                  attack_ms=5.0, release_ms=50.0)  # fmt: skip
    peaks = [spectral_peak_hz(auto_wah(white * 10 ** (db / 20), SR, **kwargs)[..., 2000:])
             for db in (-60.0, -20.0, -6.0)]  # fmt: skip
    assert peaks[0] < peaks[1] < peaks[2]
    assert abs(peaks[0] - 300.0) < 30.0  # at min_freq_hz when quiet
    assert 1500.0 < peaks[2] < 3000.0  # well up the sweep when loud
    # The same sweep as the SVF driven by the expected cutoff trajectory.
    x = white * 0.5
    env = envelope(x, SR, 5.0, 50.0)
    cutoff = 300.0 * 10.0 ** (-torch.expm1(-env * 10 ** (12 / 20)))
    torch.testing.assert_close(auto_wah(x, SR, **kwargs),
                               state_variable_filter(x, cutoff, 4.0, SR, "bandpass"),
                               rtol=0, atol=1e-12)  # fmt: skip


def test_auto_wah_mix_and_gradcheck():
    x = noise(2, 2, 200, seed=16)
    torch.testing.assert_close(auto_wah(x, SR, mix=0.0), x, rtol=0, atol=0)
    xs = noise(1, 1, 12, seed=17).requires_grad_()
    p = [torch.tensor([v], dtype=torch.float64, requires_grad=True)
         for v in (400.0, 2500.0, 20.0, 2.0, 0.4, 0.9, 0.7)]  # fmt: skip
    assert gradcheck(lambda a, *q: auto_wah(a, SR, *q), (xs, *p))


def test_auto_wah_errors_name_the_argument():
    x = torch.zeros(1, 1, 10)
    for kwargs, match in [({"min_freq_hz": 0.0}, "min_freq_hz"),
                          ({"max_freq_hz": SR / 2}, "max_freq_hz"),
                          ({"sensitivity_db": 500.0}, "sensitivity_db"),
                          ({"q": 1e4}, "q"), ({"attack_ms": 0.0}, "attack_ms"),
                          ({"release_ms": math.inf}, "release_ms"),
                          ({"mix": 1.5}, "mix")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            auto_wah(x, SR, **kwargs)

"""The global allpass fit, against scipy's responses of known cascades."""

import math

import numpy as np
import pytest
import scipy.signal

from diffx.analysis.allpass_fit import (
    AllpassFit,
    PoleSet,
    fit_allpass_phase,
    fit_pair,
    response_n_fft,
    response_weights,
    unwarp_poles,
    warped_frequency,
)
from diffx.analysis.phase_alignment import apply_delay, estimate_response, parallel_mix

SR = 44100


def section(radius, freq_hz, sr=SR):
    c, d = radius**2, -2 * radius * math.cos(2 * math.pi * freq_hz / sr)
    return [c, d, 1.0, 1.0, d, c]


def first_order(a):
    return [a, 1.0, 0.0, 1.0, a, 0.0]


def random_cascade(seed, max_sections=4, max_radius=0.97, sr=SR):
    """1..max_sections sections (second order with probability 0.7), radii 0.3..max_radius,
    centre frequencies log-uniform 20 Hz - 18 kHz."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(int(rng.integers(1, max_sections + 1))):
        r = rng.uniform(0.3, max_radius)
        if rng.random() < 0.7:
            rows.append(section(r, math.exp(rng.uniform(math.log(20), math.log(18000))), sr))
        else:
            rows.append(first_order(r * rng.choice([-1.0, 1.0])))
    return np.array(rows)


def sos_phase(sos, freqs_hz, sr=SR):
    _, h = scipy.signal.sosfreqz(sos, worN=freqs_hz, fs=sr)
    return np.angle(h)


def wrapped_deg(a, b):
    return np.degrees(np.abs(np.angle(np.exp(1j * (a - b)))))


FREQS = np.arange(1, 2048) * SR / 4096


def test_pole_set_phase_and_sos_match_scipy():
    rng = np.random.default_rng(0)
    poles = PoleSet(rng.uniform(0, 0.99, 3), rng.uniform(0, math.pi, 3),
                    rng.uniform(-0.99, 0.99, 2))  # fmt: skip
    fit = AllpassFit(SR, poles, delay_samples=2.5, polarity=-1, objective=0.0,
                     phase_error_deg=0.0)  # fmt: skip
    omega = 2 * np.pi * FREQS / SR
    expected = sos_phase(fit.sos(), FREQS) - 2.5 * omega + np.pi
    assert wrapped_deg(fit.phase_rad(FREQS), expected).max() < 1e-9
    # unwrapped: 0 at 0 Hz, -pi per pole at Nyquist
    freqs = np.r_[1e-6, FREQS]
    _, h = scipy.signal.sosfreqz(fit.sos(), worN=freqs, fs=SR)
    np.testing.assert_allclose(poles.phase(2 * np.pi * freqs / SR), np.unwrap(np.angle(h)),
                               atol=1e-6)  # fmt: skip
    assert fit.kind == "mixed" and fit.n_second == 3 and fit.n_first == 2
    # the parameters rebuild the same rows with diffx's own designer
    import torch

    from diffx.functional import allpass_sos

    rows = allpass_sos(SR, "mixed", **{k: torch.tensor(v, dtype=torch.float64)
                                          for k, v in fit.params().items()},
                       dtype=torch.float64)[0].numpy()  # fmt: skip
    np.testing.assert_allclose(rows, fit.sos(), atol=1e-12)


def test_warped_design_maps_back_exactly():
    # An allpass G designed on the warped axis nu(omega) has, as H(z) = G(W(z)), the phase
    # G(nu(omega)); its poles in z are unwarp_poles of G's.
    rng = np.random.default_rng(1)
    g_poles = PoleSet(rng.uniform(0.2, 0.9, 2), rng.uniform(0.1, 3.0, 2), rng.uniform(-0.8, 0.8, 1))
    roots = np.concatenate([g_poles.pair_radius * np.exp(1j * g_poles.pair_angle),
                            g_poles.pair_radius * np.exp(-1j * g_poles.pair_angle), g_poles.real])
    omega = 2 * np.pi * FREQS / SR
    for warp in (0.6, -0.5):
        h_poles = PoleSet.from_roots(unwarp_poles(roots, warp))
        expected = g_poles.phase(warped_frequency(omega, warp))
        assert wrapped_deg(h_poles.phase(omega), expected).max() < 1e-8
    # 0 < warp stretches the low frequencies by (1 + warp) / (1 - warp)
    slope = warped_frequency(np.array([1e-6]), 0.6)[0] / 1e-6
    assert slope == pytest.approx(1.6 / 0.4, rel=1e-6)


@pytest.mark.parametrize("seed", range(8))
def test_exact_phase_of_random_cascades_is_recovered(seed):
    sos = random_cascade(seed)
    target = sos_phase(sos, FREQS)
    fit = fit_allpass_phase(FREQS, target, np.ones_like(FREQS), SR, max_poles=8)
    assert wrapped_deg(fit.phase_rad(FREQS), target).max() < 0.5
    assert fit.polarity == 1 and abs(fit.delay_samples) < 0.05
    true_poles = sum(2 if row[2] else 1 for row in sos)
    assert fit.poles.n_poles == true_poles  # the fewest poles that fit


def test_delay_and_inversion_are_found():
    sos = np.array([section(0.9, 500), section(0.8, 4000)])
    omega = 2 * np.pi * FREQS / SR
    target = sos_phase(sos, FREQS) - 0.4 * omega + np.pi  # inverted, 0.4 samples late
    fit = fit_allpass_phase(FREQS, target, np.ones_like(FREQS), SR, max_poles=8)
    assert fit.polarity == -1
    assert wrapped_deg(fit.phase_rad(FREQS), target).max() < 0.5


def test_structure_limits_are_kept():
    sos = np.array([section(0.9, 500), first_order(0.6), first_order(-0.5)])
    target = sos_phase(sos, FREQS)
    fit = fit_allpass_phase(FREQS, target, np.ones_like(FREQS), SR, max_pairs=3, max_real=0)
    assert fit.n_first == 0 and fit.n_second <= 3
    loose = fit_allpass_phase(FREQS, target, np.ones_like(FREQS), SR, max_poles=8)
    assert loose.objective < 1e-8 and loose.n_first == 2 and loose.n_second == 1
    # two real poles of opposite sign are no conjugate pair: the constrained fit is worse
    assert fit.objective > loose.objective


def test_constrained_pole_sets():
    p = PoleSet(np.array([0.9]), np.array([0.1]), np.array([0.5, 0.6, -0.3]))
    only_pairs = p.constrained(3, 0)
    assert only_pairs.real.size == 0 and only_pairs.pair_radius.size == 3
    assert only_pairs.pair_radius[1] == pytest.approx(math.sqrt(0.5 * 0.6))
    only_real = p.constrained(0, 5)
    assert only_real.pair_radius.size == 0 and only_real.real.size == 5
    assert p.constrained(1, 1).n_poles == 3


@pytest.mark.parametrize("seed", range(4))
def test_recorded_pairs_are_aligned(seed):
    """Measured, not analytic: 1.5 s of noise through a random cascade of up to 4 sections."""
    rng = np.random.default_rng(100 + seed)
    sos = random_cascade(100 + seed)
    x = 0.1 * rng.standard_normal(int(1.5 * SR))
    y = scipy.signal.sosfilt(sos, x)
    fit = fit_pair(x, y, SR, max_sections=4)
    assert not fit.fallback
    aligned = fit.apply(x)
    assert parallel_mix(aligned, y).ncc > 0.99
    phase = fit.fit.phase_rad(FREQS) - 2 * np.pi * FREQS / SR * fit.bulk_samples
    assert wrapped_deg(phase, sos_phase(sos, FREQS)).max() < 5.0


def test_fit_is_deterministic():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(SR)
    y = scipy.signal.sosfilt(np.array([section(0.95, 300), section(0.93, 3000)]), x)
    a, b = fit_pair(x, y, SR), fit_pair(x, y, SR)
    np.testing.assert_array_equal(a.sos(), b.sos())
    assert a.delay_samples == b.delay_samples


def test_leading_phase_falls_back_to_a_delay():
    """A parametric EQ whose phase leads below 500 Hz (shelf boost) on guitar: fitted over the
    whole band (coherence weights), no lagging cascade sums better than the best delay, so the
    delay alone is returned. (Weighted by cross-power, "auto" finds one that does.)"""
    import torch

    from diffx.functional import parametric_eq
    from diffx.io import load_demo

    x, _ = load_demo("guitar_clean", sample_rate=SR)
    x = x[0, : 3 * SR].double()
    with torch.no_grad():
        y = parametric_eq(
            x[None, None], SR, low_shelf_freq_hz=100.0, low_shelf_gain_db=6.0,
            band_freqs_hz=torch.tensor([250.0, 1000.0]), band_gains_db=torch.tensor([-6.0, 4.0]),
            band_qs=torch.tensor([0.707, 0.707]), high_shelf_freq_hz=8000.0,
            high_shelf_gain_db=-5.0,
        )[0, 0].numpy()  # fmt: skip
    fit = fit_pair(x.numpy(), y, SR, weighting="coherence")
    assert fit.fallback and fit.fit is None and len(fit.sos()) == 0
    assert fit.comb_loss_db == fit.delay_only_comb_loss_db
    assert parallel_mix(fit.apply(x.numpy()), y).comb_loss_db == pytest.approx(fit.comb_loss_db)
    kept = fit_pair(x.numpy(), y, SR, weighting="coherence", fallback_to_delay=False)
    assert kept.fit is not None and kept.comb_loss_db < fit.comb_loss_db
    assert fit_pair(x.numpy(), y, SR).comb_loss_db > fit.comb_loss_db


@pytest.mark.parametrize("sos", [[section(0.9, 300)], [first_order(0.5)]])
def test_anticausal_phase_never_sums_worse_than_the_delay(sos):
    # the wet leads the dry: the dry through an allpass run backwards in time
    x = np.random.default_rng(4).standard_normal(SR)
    y = scipy.signal.sosfilt(np.array(sos), x[::-1])[::-1]
    fit = fit_pair(x, y, SR)
    assert fit.comb_loss_db >= fit.delay_only_comb_loss_db
    assert fit.comb_loss_db > parallel_mix(x, y).comb_loss_db
    # apply() filters, then shifts the whole signal; the fit shifted by the bulk lag first
    # (a few samples differ at the ends)
    assert parallel_mix(fit.apply(x), y).comb_loss_db == pytest.approx(fit.comb_loss_db, abs=1e-3)


def test_response_weights():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(SR)
    y = scipy.signal.lfilter([1.0, 0.5], [1.0], x) + 0.3 * rng.standard_normal(SR)
    r = estimate_response(x, y, SR, 1024)
    w = response_weights(r, "coherence")
    g = np.clip(r.coherence, 0, 0.9999)
    np.testing.assert_allclose(w, np.where(g >= 0.05, g / (1 - g), 0))
    np.testing.assert_allclose(response_weights(r, "cross_power"),
                               np.where(g >= 0.05, r.cross_power, 0))  # fmt: skip
    with pytest.raises(ValueError, match="weighting must be one of"):
        response_weights(r, "loud")


def test_n_fft_scales_with_rate_and_length():
    assert response_n_fft(10 * SR, SR) == 4096
    assert response_n_fft(10 * 96000, 96000) == 8192
    assert response_n_fft(8000, SR) == 512
    assert response_n_fft(100, SR) == 256


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(phase_rad=np.full(10, np.nan)), "phase_rad contains NaN"),
        (dict(weight=np.zeros(10)), "positive sum"),
        (dict(freqs_hz=np.linspace(0, 100, 10)), "strictly between 0"),
        (dict(phase_rad=np.zeros(9)), "equally long"),
        (dict(max_poles=0), "max_poles must be >= 1"),
        (dict(polarities=(2,)), "polarities"),
        (dict(max_pairs=0, max_real=0), "leave no pole"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    args = dict(freqs_hz=np.linspace(100, 1000, 10), phase_rad=np.zeros(10), weight=np.ones(10),
                sample_rate=SR)  # fmt: skip
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        fit_allpass_phase(**args)


def test_bad_pairs_are_named():
    x = np.random.default_rng(6).standard_normal(4000)
    with pytest.raises(ValueError, match="wet is silent"):
        fit_pair(x, np.zeros_like(x), SR)
    with pytest.raises(ValueError, match="differ in length"):
        fit_pair(x, x[:-1], SR)
    with pytest.raises(ValueError, match="dry contains 1 NaN"):
        fit_pair(np.r_[x[:-1], np.nan], x, SR)
    with pytest.raises(ValueError, match="max_sections"):
        fit_pair(x, x, SR, max_sections=0)
    with pytest.raises(ValueError, match="100 samples: too short"):
        fit_pair(x[:100], x[:100], SR)


def test_pure_latency_is_a_delay():
    x = np.random.default_rng(7).standard_normal(SR)
    fit = fit_pair(x, apply_delay(x, 7.0), SR)
    assert len(fit.sos()) == 0 and fit.delay_samples == pytest.approx(7.0, abs=1e-6)


def test_auto_weighting_keeps_the_better_mix_on_a_filter_that_is_no_allpass():
    # a 2nd-order Butterworth high-pass at 300 Hz on guitar: its phase leads at low frequencies
    from diffx.io import load_demo

    x, _ = load_demo("guitar_clean", sample_rate=SR)
    x = x[0, : 2 * SR].double().numpy()
    y = scipy.signal.sosfilt(scipy.signal.butter(2, 300, "highpass", fs=SR, output="sos"), x)
    fits = {w: fit_pair(x, y, SR, weighting=w, fallback_to_delay=False)
            for w in ("auto", "coherence", "cross_power")}  # fmt: skip
    losses = {w: f.comb_loss_db for w, f in fits.items()}
    assert losses["auto"] == max(losses["coherence"], losses["cross_power"])
    assert losses["auto"] > parallel_mix(x, y).comb_loss_db
    with pytest.raises(ValueError, match="weighting must be 'auto' or one of"):
        fit_pair(x, y, SR, weighting="loud")

"""Tests for diffx.functional.distortion: waveshapers and first-order ADAA."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from diffx.functional.distortion import (
    MAX_ABS_DRIVE_DB,
    MAX_THRESHOLD_DB,
    MIN_THRESHOLD_DB,
    adaa_tolerance,
    hard_clip,
    soft_clip,
    tanh_distortion,
)
from tests.conftest import requires_cuda

# --- float64 numpy oracles: each shaper, its antiderivative and the ADAA formula -----------


def _np_tanh(u):
    return np.tanh(u)


def _np_logcosh(u):
    return np.logaddexp(u, -u) - np.log(2.0)


def _np_hard(u):
    return np.clip(u, -1.0, 1.0)


def _np_hard_F(u):
    return np.where(np.abs(u) <= 1, u**2 / 2, np.abs(u) - 0.5)


def _np_cubic(u):
    v = np.clip(u, -1.0, 1.0)
    return 1.5 * (v - v**3 / 3)


def _np_cubic_F(u):
    inner = 1.5 * (u**2 / 2 - u**4 / 12)
    return np.where(np.abs(u) <= 1, inner, np.abs(u) - 1 + 1.5 * (0.5 - 1 / 12))


def _np_adaa(u, f, F, tol):
    """(F(u[n]) - F(u[n-1])) / (u[n] - u[n-1]), midpoint rule where the samples are close."""
    prev = np.concatenate([np.zeros_like(u[..., :1]), u[..., :-1]], axis=-1)
    du = u - prev
    close = np.abs(du) <= tol * np.maximum(1.0, np.maximum(np.abs(u), np.abs(prev)))
    with np.errstate(divide="ignore", invalid="ignore"):
        quotient = (F(u) - F(prev)) / du
    return np.where(close, f((u + prev) / 2), quotient)


# name -> (function, param name, param value, numpy f, numpy F, u from x and param)
SHAPERS = {
    "tanh": (
        tanh_distortion,
        "drive_db",
        12.0,
        _np_tanh,
        _np_logcosh,
        lambda x, p: x * 10 ** (p / 20),
    ),
    "hard": (
        hard_clip,
        "threshold_db",
        -6.0,
        _np_hard,
        _np_hard_F,
        lambda x, p: x / 10 ** (p / 20),
    ),
    "soft": (soft_clip, "drive_db", 6.0, _np_cubic, _np_cubic_F, lambda x, p: x * 10 ** (p / 20)),
}
POST = {"tanh": lambda p: 1.0, "hard": lambda p: 10 ** (p / 20), "soft": lambda p: 1.0}


def _combos(n):
    return [c for c in itertools.product([False, True], repeat=n) if any(c)]


@pytest.mark.parametrize("name", SHAPERS)
def test_shapers_match_numpy(name, dtype):
    fn, pname, p, f, _, to_u = SHAPERS[name]
    x = np.random.default_rng(0).uniform(-1.5, 1.5, (2, 2, 200))
    y = fn(torch.tensor(x, dtype=dtype), **{pname: p})
    expected = POST[name](p) * f(to_u(x, p))
    np.testing.assert_allclose(
        y.double().numpy(), expected, atol=1e-12 if dtype == torch.float64 else 2e-6
    )


@pytest.mark.parametrize("name", SHAPERS)
def test_adaa_matches_float64_antiderivative_formula(name, dtype):
    fn, pname, p, f, F, to_u = SHAPERS[name]
    rng = np.random.default_rng(1)
    # A mix of large jumps, small steps and repeated samples, so both branches are exercised.
    x = np.cumsum(rng.normal(0, 0.05, (2, 2, 400)), axis=-1)
    x[..., 100:120] = x[..., 100:101]
    tol = adaa_tolerance(dtype)
    y = fn(torch.tensor(x, dtype=dtype), **{pname: p}, antialiasing="adaa1")
    expected = POST[name](p) * _np_adaa(to_u(x, p), f, F, tol)
    # float32: the quotient's cancellation error is about eps * |F| / tol (~1e-5).
    atol = 1e-12 if dtype == torch.float64 else 5e-5
    np.testing.assert_allclose(y.double().numpy(), expected, atol=atol)


def _mean_value(f, a: float, b: float) -> float:
    """Average of f over [a, b] by Gauss-Legendre quadrature (well conditioned, unlike the
    antiderivative difference), split at the kinks +-1 of the clippers."""
    lo, hi = min(a, b), max(a, b)
    cuts = [lo] + [k for k in (-1.0, 1.0) if lo < k < hi] + [hi]
    nodes, weights = np.polynomial.legendre.leggauss(12)
    total = 0.0
    for c0, c1 in itertools.pairwise(cuts):
        total += (c1 - c0) / 2 * np.sum(weights * f((c1 - c0) / 2 * nodes + (c0 + c1) / 2))
    return total / (hi - lo)


# Largest |f''| of each shaper (tanh: 4 / 3^1.5; cubic: 3 at |u| = 1) for the midpoint error.
F2_MAX = {"tanh": 0.77, "soft": 3.0, "hard": 0.0}


@pytest.mark.parametrize("name", SHAPERS)
def test_adaa_is_continuous_across_the_tolerance(name, dtype):
    # Just above the tolerance the quotient is used, just below the midpoint rule. Both must
    # match the exact average of f over the step within their error budgets (cancellation
    # ~eps |F| / du above, f'' du^2 / 24 below, du / 8 at the hard clipper's kink), so the
    # switch between them is continuous up to those budgets.
    fn, pname, p, f, F, to_u = SHAPERS[name]
    tol = adaa_tolerance(dtype)
    eps = torch.finfo(dtype).eps
    for u0 in (-2.0, -0.7, 0.0, 0.3, 0.995, 1.5):
        results = []
        for factor in (1.001, 0.999):
            # The threshold is tol * max(1, |u[n-1]|, |u[n]|): solve for the step by iteration.
            du = tol * factor
            for _ in range(5):
                du = tol * factor * max(1.0, abs(u0), abs(u0 + du))
            x = torch.tensor([[[u0, u0 + du]]], dtype=torch.float64) / to_u(1.0, p)
            x = x.to(dtype)
            u = to_u(x.double().numpy()[0, 0], p)  # the samples as rounded to dtype
            y = float(fn(x, **{pname: p}, antialiasing="adaa1")[0, 0, 1]) / POST[name](p)
            results.append((y, _mean_value(f, u[0], u[1]), u[1] - u[0]))
        (y_q, exact_q, du_q), (y_m, exact_m, du_m) = results
        scale = max(1.0, abs(u0), abs(u0 + du_q))
        assert abs(y_q - exact_q) <= 16 * eps * scale / du_q + 4 * eps, (u0, "quotient")
        midpoint_budget = F2_MAX[name] * du_m**2 / 24 + (du_m / 8 if name == "hard" else 0.0)
        assert abs(y_m - exact_m) <= midpoint_budget + 4 * eps, (u0, "midpoint")


def _aliasing_db(y: np.ndarray, f0: float, sr: int) -> float:
    """Energy away from the true harmonics (k f0 < Nyquist) over energy at them, in dB."""
    n = y.shape[-1]
    spectrum = np.abs(np.fft.rfft(y * np.hanning(n))) ** 2
    freqs = np.fft.rfftfreq(n, 1 / sr)
    harmonic = np.zeros(spectrum.shape, bool)
    bin_hz = sr / n
    for k in range(1, int(sr / 2 / f0) + 1):
        harmonic |= np.abs(freqs - k * f0) <= 4 * bin_hz
    harmonic |= freqs <= 4 * bin_hz  # DC
    return 10 * np.log10(spectrum[~harmonic].sum() / spectrum[harmonic].sum())


@pytest.mark.parametrize("name,param", [("tanh", 20.0), ("hard", -12.0), ("soft", 12.0)])
def test_adaa_reduces_aliasing_of_a_high_sine(name, param):
    # 5 kHz at 44.1 kHz driven hard: harmonics 25, 30, 35 ... kHz fold onto bins that are not
    # multiples of 5 kHz. One second of signal puts every component on an exact 1 Hz bin.
    fn, pname, *_ = SHAPERS[name]
    sr, f0 = 44100, 5000.0
    x = torch.tensor(0.9 * np.sin(2 * np.pi * f0 * np.arange(sr) / sr))[None, None]
    plain = _aliasing_db(fn(x, **{pname: param})[0, 0].numpy(), f0, sr)
    adaa = _aliasing_db(fn(x, **{pname: param}, antialiasing="adaa1")[0, 0].numpy(), f0, sr)
    # Measured: about -13 -> -20 dB (tanh), -16 -> -23 (hard), -14 -> -21 (soft).
    assert adaa < plain - 5.0, (plain, adaa)


def test_adaa_is_delayed_by_half_a_sample():
    # For a slow signal the ADAA output is f(x(t - 1/2)) up to the second-order error of the
    # average: compare with the analytic half-sample-delayed tanh.
    sr, f = 8000.0, 50.0
    t = np.arange(400)
    x = 0.8 * np.sin(2 * np.pi * f * t / sr)
    y = tanh_distortion(torch.tensor(x)[None, None], 6.0, antialiasing="adaa1")[0, 0].numpy()
    g = 10 ** (6 / 20)
    delayed = np.tanh(g * 0.8 * np.sin(2 * np.pi * f * (t - 0.5) / sr))
    undelayed = np.tanh(g * x)
    err_delayed = np.abs(y[1:] - delayed[1:]).max()
    # ADAA averages f over the straight line between samples: the chord's distance from the
    # curve (max |u''| / 8, f' <= 1) plus the average's own error (max |f''| max |u'|^2 / 24).
    w = 2 * np.pi * f / sr
    budget = g * 0.8 * w**2 / 8 + 0.77 * (g * 0.8 * w) ** 2 / 24
    assert err_delayed < budget
    assert err_delayed < 0.05 * np.abs(y[1:] - undelayed[1:]).max()


@pytest.mark.parametrize("name", SHAPERS)
@pytest.mark.parametrize("antialiasing", [None, "adaa1"])
@pytest.mark.parametrize("flags", _combos(2))
def test_shapers_gradcheck(name, antialiasing, flags):
    fn, pname, p, *_ = SHAPERS[name]
    gen = torch.Generator().manual_seed(5)
    x = (torch.rand(2, 1, 10, generator=gen, dtype=torch.float64) * 2 - 1) * 0.9
    param = torch.tensor([p, p / 2 - 1.0], dtype=torch.float64)
    x = x.requires_grad_(flags[0])
    param = param.requires_grad_(flags[1])

    def call(a, q):
        return fn(a, **{pname: q}, antialiasing=antialiasing)

    assert torch.autograd.gradcheck(call, (x, param))
    assert torch.autograd.gradgradcheck(call, (x, param))


@pytest.mark.parametrize("name", SHAPERS)
def test_adaa_gradients_finite_in_the_ill_conditioned_branch(name):
    fn, pname, p, *_ = SHAPERS[name]
    tol = adaa_tolerance(torch.float32)
    signals = [
        torch.zeros(1, 1, 32),  # silence: every step is 0 / 0
        torch.full((1, 1, 32), 0.5),  # constant
        0.5 + tol * 1e-3 * torch.arange(32.0).view(1, 1, -1),  # nearly constant
        torch.ones(1, 1, 32),  # full scale
    ]
    for x in signals:
        x = x.clone().requires_grad_()
        param = torch.tensor(p, requires_grad=True)
        y = fn(x, **{pname: param}, antialiasing="adaa1")
        (gx, gp) = torch.autograd.grad(y.sum(), (x, param), create_graph=True)
        assert torch.isfinite(y).all() and torch.isfinite(gx).all() and torch.isfinite(gp)
        (ggx,) = torch.autograd.grad(gx.sum() + gp, x)
        assert torch.isfinite(ggx).all()


@pytest.mark.parametrize("name", SHAPERS)
@pytest.mark.parametrize("antialiasing", [None, "adaa1"])
def test_shapers_extremes_finite(name, antialiasing):
    fn, pname, *_ = SHAPERS[name]
    limits = (
        (-MAX_ABS_DRIVE_DB, MAX_ABS_DRIVE_DB)
        if pname == "drive_db"
        else (MIN_THRESHOLD_DB, MAX_THRESHOLD_DB)
    )
    full_scale = torch.sign(torch.sin(torch.arange(64.0)))
    for x0, p in itertools.product((torch.zeros(64), full_scale), limits):
        x = x0.view(1, 1, -1).clone().requires_grad_()
        param = torch.tensor(p, requires_grad=True)
        y = fn(x, **{pname: param}, antialiasing=antialiasing)
        y.sum().backward()
        assert (
            torch.isfinite(y).all() and torch.isfinite(x.grad).all() and torch.isfinite(param.grad)
        )


@pytest.mark.parametrize("name", SHAPERS)
@pytest.mark.parametrize("antialiasing", [None, "adaa1"])
def test_shapers_batch_consistency(name, antialiasing):
    fn, pname, p, *_ = SHAPERS[name]
    x = torch.randn(3, 2, 50, dtype=torch.float64)
    param = torch.tensor([p, p - 3.0, p + 2.0], dtype=torch.float64)
    y = fn(x, **{pname: param}, antialiasing=antialiasing)
    for b in range(3):
        torch.testing.assert_close(
            y[b : b + 1], fn(x[b : b + 1], **{pname: param[b]}, antialiasing=antialiasing)
        )


@pytest.mark.parametrize("name", SHAPERS)
def test_shapers_bad_inputs(name):
    fn, pname, *_ = SHAPERS[name]
    x = torch.randn(2, 1, 16)
    with pytest.raises(ValueError, match="x"):
        fn(torch.full_like(x, math.nan))
    with pytest.raises(ValueError, match="x"):
        fn(torch.full_like(x, math.inf), antialiasing="adaa1")
    with pytest.raises(ValueError, match=pname):
        fn(x, **{pname: torch.tensor([0.0, math.nan])})
    with pytest.raises(ValueError, match=pname):
        fn(x, **{pname: 1000.0})
    with pytest.raises(ValueError, match="antialiasing"):
        fn(x, antialiasing="adaa2")


@requires_cuda
@pytest.mark.parametrize("name", SHAPERS)
@pytest.mark.parametrize("antialiasing", [None, "adaa1"])
def test_shapers_cuda_match_cpu(name, antialiasing):
    fn, pname, p, *_ = SHAPERS[name]
    x = torch.randn(2, 2, 300, dtype=torch.float64)
    param = torch.tensor([p, p - 2.0], dtype=torch.float64)
    cpu = fn(x, **{pname: param}, antialiasing=antialiasing)
    gpu = fn(x.cuda(), **{pname: param.cuda()}, antialiasing=antialiasing)
    torch.testing.assert_close(gpu.cpu(), cpu)


# ------------------------------------------------------------------ issue 20 regressions
@pytest.mark.parametrize("tol", [-1e-3, 1.5, math.nan, math.inf, "tight"])
def test_adaa_tolerance_out_of_range_is_refused(tol):
    with pytest.raises(ValueError, match="adaa_tol must be a number in"):
        tanh_distortion(torch.zeros(1, 1, 8), 0.0, antialiasing="adaa1", adaa_tol=tol)


@pytest.mark.parametrize("antialiasing", [None, "adaa1"])
@pytest.mark.parametrize("shaper", ["tanh", "soft", "hard"])
def test_huge_finite_audio_saturates_instead_of_returning_nan(antialiasing, shaper):
    """float32 audio near its largest value times +60 dB of drive overflowed to Inf and the
    shapers returned NaN; they now saturate (the output of a saturated shaper is +-1)."""
    x = torch.tensor([[[3e38, -3e38, 1e30, 0.0, 3e38]]], requires_grad=True)
    if shaper == "hard":
        y = hard_clip(x, -100.0, antialiasing=antialiasing)
        limit = 1e-5
    else:
        fn = tanh_distortion if shaper == "tanh" else soft_clip
        y = fn(x, 60.0, antialiasing=antialiasing)
        limit = 1.0
    y.sum().backward()
    assert bool(torch.isfinite(y).all()) and bool(torch.isfinite(x.grad).all())
    assert float(y.abs().max()) <= limit * (1 + 1e-6)
    if antialiasing is None:  # memoryless: each sample saturates to its sign
        torch.testing.assert_close(y[0, 0, :2], torch.tensor([limit, -limit]))

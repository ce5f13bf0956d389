"""Tests for the differentiable compressor: hand-derived steady states and time constants,
pedalboard (JUCE) on real audio, gradients, back ends and bad input."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from diffx.functional.dynamics import (
    KNEE_RANGE_DB,
    MAKEUP_RANGE_DB,
    MAX_RATIO,
    THRESHOLD_RANGE_DB,
    TIME_RANGE_MS,
    _compress_reference,
    compressor,
    compressor_gain_db,
    time_to_pole,
)
from tests.conftest import requires_cuda, requires_pedalboard

DEMO = Path(__file__).resolve().parents[2] / "diffx" / "assets" / "demo"
PARAM_NAMES = (
    "threshold_db",
    "ratio",
    "attack_ms",
    "release_ms",
    "knee_db",
    "makeup_gain_db",
)


def _db(v) -> float:
    return 20.0 * math.log10(abs(float(v)))


def _dc_steps(levels_db, samples_each, dtype=torch.float64):
    """Piecewise-constant signal (positive DC) at the given levels, (1, 1, samples)."""
    parts = [torch.full((samples_each,), 10.0 ** (lv / 20.0), dtype=dtype) for lv in levels_db]
    return torch.cat(parts)[None, None]


# --------------------------------------------------------------------------------------------
# static curve, unity, time constants: hand-derived oracles
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_steady_state_follows_static_curve(backend):
    """Settled output level of a DC input at L: L below the knee, T + (L - T) / R above,
    L + (1/R - 1)(L - T + W/2)^2 / (2W) inside (Giannoulis 2012 eq. 4)."""
    T, R, W, sr = -24.0, 3.0, 12.0, 8000
    levels = [-60.0, -31.0, -28.0, -24.0, -20.0, -17.0, -12.0, 0.0]
    # Each level held for 400 samples: attack 1 ms / release 5 ms settle within ~40 samples.
    n = 400
    x = _dc_steps(levels, n)
    y = compressor(x, sr, T, R, attack_ms=1.0, release_ms=5.0, knee_db=W, backend=backend)
    hand = {-60.0: -60.0, -31.0: -31.0, -24.0: -25.0, -12.0: -20.0, 0.0: -16.0}
    for i, lv in enumerate(levels):
        out_db = _db(y[0, 0, (i + 1) * n - 1])
        if lv <= T - W / 2:
            expected = lv
        elif lv >= T + W / 2:
            expected = T + (lv - T) / R
        else:
            expected = lv + (1 / R - 1) * (lv - T + W / 2) ** 2 / (2 * W)
        if lv in hand:  # the same formulas evaluated by hand
            assert expected == pytest.approx(hand[lv], abs=1e-12)
        assert out_db == pytest.approx(expected, abs=1e-6), lv


def test_hard_knee_and_makeup_steady_state():
    T, R, makeup = -20.0, 4.0, 6.0
    x = _dc_steps([-8.0], 2000)
    y = compressor(x, 16000, T, R, 0.5, 2.0, knee_db=0.0, makeup_gain_db=makeup)
    assert _db(y[0, 0, -1]) == pytest.approx(-20.0 + 12.0 / 4.0 + 6.0, abs=1e-6)


def test_gain_computer_curve_by_hand():
    level = torch.tensor([[-40.0, -30.0, -20.0, -10.0, 0.0]], dtype=torch.float64)
    g = compressor_gain_db(
        level,
        torch.tensor([-20.0], dtype=torch.float64),
        torch.tensor([2.0], dtype=torch.float64),
        torch.tensor([20.0], dtype=torch.float64),
    )
    # Knee [-30, -10]: gain = -0.5 (L + 30)^2 / 40 inside; -0.5 (L + 20) above.
    expected = torch.tensor([[0.0, 0.0, -1.25, -5.0, -10.0]], dtype=torch.float64)
    torch.testing.assert_close(g, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_unity_below_threshold(backend, dtype):
    """A sine peaking 1 dB below the knee passes bit for bit (the gain is exactly 0 dB)."""
    t = torch.arange(2048, dtype=dtype) / 16000
    amp = 10.0 ** ((-30.0 - 4.0 - 1.0) / 20.0)
    x = torch.stack([amp * torch.sin(2 * math.pi * 440 * t), amp * torch.cos(2 * math.pi * 97 * t)])
    x = x[None]
    y = compressor(x, 16000, -30.0, 8.0, 1.0, 50.0, knee_db=8.0, backend=backend)
    assert torch.equal(y, x)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_attack_and_release_times(backend):
    """10%-90% time of the gain in dB after a level step equals attack_ms / release_ms.

    With alpha = exp(-ln 9 / (fs t)) the gain moves as G (1 - alpha^k), which goes from 10% to
    90% of G in ln 9 / (-ln alpha) = fs t samples; crossings are linearly interpolated.
    """
    sr, attack_ms, release_ms = 48000, 2.0, 15.0
    # Quiet (-60 dB, no compression) -> loud (0 dB, gain -22.5 dB) -> quiet again.
    x = _dc_steps([-60.0, 0.0, -60.0], 6000)
    y = compressor(x, sr, -30.0, 4.0, attack_ms, release_ms, backend=backend)
    gain = 20.0 * torch.log10(y[0, 0] / x[0, 0]).numpy()
    full = -22.5
    assert gain[11999] == pytest.approx(full, abs=1e-9)  # attack has settled

    def crossing(seg, level):
        k = int(np.argmax(seg <= level)) if seg[0] > level else int(np.argmax(seg >= level))
        return k - 1 + (level - seg[k - 1]) / (seg[k] - seg[k - 1])

    on = gain[6000:12000]
    attack_samples = crossing(on, 0.9 * full) - crossing(on, 0.1 * full)
    assert attack_samples == pytest.approx(sr * attack_ms / 1000, abs=0.5)
    off = gain[12000:]
    release_samples = crossing(off, 0.1 * full) - crossing(off, 0.9 * full)
    assert release_samples == pytest.approx(sr * release_ms / 1000, abs=0.5)


# --------------------------------------------------------------------------------------------
# pedalboard (JUCE dsp::Compressor)
# --------------------------------------------------------------------------------------------


@requires_pedalboard
def test_steady_state_matches_pedalboard():
    import pedalboard

    sr = 44100
    for T, R, level in [(-20.0, 4.0, -6.0), (-35.0, 10.0, -3.0), (-10.0, 2.0, -20.0)]:
        x = _dc_steps([level], sr // 2, dtype=torch.float32)
        ours = compressor(x, sr, T, R, 5.0, 100.0)[0, 0, -1]
        pb = pedalboard.Compressor(threshold_db=T, ratio=R, attack_ms=5.0, release_ms=100.0)
        theirs = pb(x[0].numpy(), sr)[0, -1]
        assert _db(ours) == pytest.approx(_db(theirs), abs=0.01)


@requires_pedalboard
@pytest.mark.parametrize("name", ["guitar_em9", "violin"])
@pytest.mark.parametrize("settings", [(-20.0, 4.0, 5.0, 100.0), (-30.0, 8.0, 1.0, 200.0)])
def test_real_audio_close_to_pedalboard(name, settings):
    """On music, with JUCE's times converted to ours (t ln9 / 2pi), 50 ms block levels agree:
    median difference < 0.75 dB, 90th percentile < 1.5 dB, overall level within 1 dB. The two
    designs differ on transients (JUCE smooths the linear peak level, we smooth gain in dB)."""
    import pedalboard
    import soundfile as sf

    audio, sr = sf.read(DEMO / f"{name}.flac", dtype="float32")
    audio = audio / np.abs(audio).max() * 0.9
    T, R, attack, release = settings
    pb = pedalboard.Compressor(threshold_db=T, ratio=R, attack_ms=attack, release_ms=release)
    theirs = pb(audio[None], sr)[0]
    conv = math.log(9) / (2 * math.pi)
    ours = compressor(torch.from_numpy(audio)[None, None], sr, T, R, attack * conv, release * conv)
    ours = ours[0, 0].numpy()

    block = int(0.05 * sr)
    nb = len(audio) // block

    def block_db(v):
        return 10 * np.log10(np.mean(v[: nb * block].reshape(nb, block) ** 2, axis=1) + 1e-12)

    active = block_db(audio) > -50
    diff = np.abs(block_db(ours) - block_db(theirs))[active]
    reduction = (block_db(theirs) - block_db(audio))[active].mean()
    assert reduction < -3.0  # the comparison is not vacuous: both compress audibly
    assert np.median(diff) < 0.75
    assert np.percentile(diff, 90) < 1.5
    assert abs(10 * np.log10(np.mean(ours**2) / np.mean(theirs**2))) < 1.0


# --------------------------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------------------------


def _grad_inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(2, 2, 20, generator=gen, dtype=torch.float64)
    sc = 0.3 * torch.randn(2, 3, 20, generator=gen, dtype=torch.float64)
    params = {
        "threshold_db": torch.tensor([-18.0, -30.0], dtype=torch.float64),
        "ratio": torch.tensor([3.0, 6.0], dtype=torch.float64),
        "attack_ms": torch.tensor([0.5, 0.2], dtype=torch.float64),
        "release_ms": torch.tensor([2.0, 5.0], dtype=torch.float64),
        "knee_db": torch.tensor([6.0, 3.0], dtype=torch.float64),
        "makeup_gain_db": torch.tensor([1.5, -2.0], dtype=torch.float64),
    }
    return x, sc, params


ALL_NAMES = ("x", *PARAM_NAMES, "sidechain")
COMBOS = [c for c in itertools.product([False, True], repeat=len(ALL_NAMES)) if any(c)]


def _check_grads(needs, backend, second_order, fast_mode=False):
    x, sc, params = _grad_inputs()
    values = {"x": x, **params, "sidechain": sc}
    # Without a side-chain gradient, alternate between no side-chain and a constant one, so
    # both detector paths are exercised.
    use_sc = needs[-1] or sum(needs) % 2 == 0
    order = [n for n, need in zip(ALL_NAMES, needs) if need]
    fixed = {n: v for n, v in values.items() if n not in order}
    if not use_sc:
        fixed.pop("sidechain")

    def fn(*args):
        kwargs = {**fixed, **dict(zip(order, args))}
        return compressor(kwargs.pop("x"), 8000, backend=backend, **kwargs)

    inputs = tuple(values[n].clone().requires_grad_() for n in order)
    assert gradcheck(fn, inputs)
    if second_order:
        assert gradgradcheck(fn, inputs, fast_mode=fast_mode)


@pytest.mark.parametrize("needs", COMBOS, ids=lambda c: "".join("1" if v else "0" for v in c))
def test_gradcheck_every_combination(needs):
    """All 255 subsets of inputs requiring grad (the CPU backward skips work by subset).

    First order: the full Jacobian for every subset. Second order: gradgradcheck's fast mode
    (a random projection) for the sweep, the full check for single inputs and all together.
    """
    full = sum(needs) in (1, len(needs))
    _check_grads(needs, "numba", second_order=True, fast_mode=not full)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_gradgradcheck_all_inputs(backend):
    _check_grads((True,) * len(ALL_NAMES), backend, second_order=True)


def test_hard_knee_gradients():
    """knee_db = 0 (the boundary of its range) gives the hard knee with exact gradients."""
    x, _, params = _grad_inputs(1)
    params["knee_db"] = 0.0
    names = ("threshold_db", "ratio", "attack_ms", "release_ms")

    def fn(x, *args):
        return compressor(x, 8000, **{**params, **dict(zip(names, args))})

    inputs = (x.requires_grad_(), *(params[n].clone().requires_grad_() for n in names))
    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs)


@pytest.mark.parametrize("with_sidechain", [False, True])
def test_backends_agree_values_and_gradients(dtype, with_sidechain):
    gen = torch.Generator().manual_seed(3)
    x = (0.5 * torch.randn(3, 2, 600, generator=gen, dtype=torch.float64)).to(dtype)
    sc = (0.5 * torch.randn(3, 1, 600, generator=gen, dtype=torch.float64)).to(dtype)
    params = {
        "threshold_db": torch.tensor([-20.0, -10.0, -40.0], dtype=dtype),
        "ratio": torch.tensor([4.0, 2.0, 20.0], dtype=dtype),
        "attack_ms": torch.tensor([1.0, 0.1, 10.0], dtype=dtype),
        "release_ms": torch.tensor([20.0, 5.0, 100.0], dtype=dtype),
        "knee_db": torch.tensor([6.0, 0.0, 12.0], dtype=dtype),
        "makeup_gain_db": torch.tensor([3.0, 0.0, -6.0], dtype=dtype),
    }
    results = {}
    for backend in ("numba", "torch"):
        xb = x.clone().requires_grad_()
        scb = sc.clone().requires_grad_() if with_sidechain else None
        pb = {k: v.clone().requires_grad_() for k, v in params.items()}
        y = compressor(xb, 44100, sidechain=scb, backend=backend, **pb)
        (y * torch.linspace(-1, 1, 600, dtype=dtype)).sum().backward()
        grads = [xb.grad, *(pb[k].grad for k in PARAM_NAMES)]
        if with_sidechain:
            grads.append(scb.grad)
        results[backend] = (y.detach(), *grads)
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)
    for ref, got in zip(results["torch"], results["numba"]):
        torch.testing.assert_close(got, ref, **tol)


@pytest.mark.parametrize("channels, sc_channels", [(1, None), (2, None), (1, 1), (2, 3)])
def test_long_input_matches_reference_composition(channels, sc_channels):
    """Inputs long enough for the multi-threaded kernels, mono and multichannel, against the
    differentiable reference composition (tensor ops + the ballistics Function), float64."""
    gen = torch.Generator().manual_seed(6)
    B, T, sr = 2, 20000, 44100
    x = 0.5 * torch.randn(B, channels, T, generator=gen, dtype=torch.float64)
    sc = None
    if sc_channels is not None:
        sc = 0.5 * torch.randn(B, sc_channels, T, generator=gen, dtype=torch.float64)
    f64 = dict(dtype=torch.float64)
    params = {
        "threshold_db": torch.tensor([-20.0, -35.0], **f64),
        "ratio": torch.tensor([4.0, 10.0], **f64),
        "attack_ms": torch.tensor([5.0, 0.5], **f64),
        "release_ms": torch.tensor([50.0, 20.0], **f64),
        "knee_db": torch.tensor([6.0, 0.0], **f64),
        "makeup_gain_db": torch.tensor([2.0, -1.0], **f64),
    }
    weight = torch.randn(B, channels, T, generator=gen, dtype=torch.float64)
    results = []
    for use_reference in (False, True):
        xb = x.clone().requires_grad_()
        scb = None if sc is None else sc.clone().requires_grad_()
        pb = {k: v.clone().requires_grad_() for k, v in params.items()}
        if use_reference:
            p = pb
            alpha_a = time_to_pole(p["attack_ms"], sr)
            alpha_r = time_to_pole(p["release_ms"], sr)
            slope = 1.0 / p["ratio"] - 1.0
            args = (p["threshold_db"], slope, p["knee_db"], alpha_a, alpha_r)
            y = _compress_reference(xb, scb, *args, p["makeup_gain_db"], "numba")
        else:
            y = compressor(xb, sr, sidechain=scb, backend="numba", **pb)
        (y * weight).sum().backward()
        grads = [xb.grad, *(pb[k].grad for k in PARAM_NAMES)]
        if sc is not None:
            grads.append(scb.grad)
        results.append((y.detach(), *grads))
    assert results[0][0].abs().max() < 0.9 * x.abs().max()  # it compresses
    for got, ref in zip(*results):
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)


def test_batch_consistency():
    gen = torch.Generator().manual_seed(4)
    x = 0.5 * torch.randn(3, 2, 500, generator=gen)
    params = {
        "threshold_db": torch.tensor([-20.0, -10.0, -40.0]),
        "ratio": torch.tensor([4.0, 2.0, 20.0]),
        "attack_ms": torch.tensor([1.0, 0.1, 10.0]),
        "release_ms": torch.tensor([20.0, 5.0, 100.0]),
        "knee_db": torch.tensor([6.0, 0.0, 12.0]),
        "makeup_gain_db": torch.tensor([3.0, 0.0, -6.0]),
    }
    y = compressor(x, 44100, **params)
    for b in range(3):
        single = compressor(x[b : b + 1], 44100, **{k: float(v[b]) for k, v in params.items()})
        torch.testing.assert_close(single, y[b : b + 1], rtol=1e-6, atol=1e-7)


def test_scalar_params_broadcast():
    x = 0.5 * torch.randn(2, 1, 300)
    y1 = compressor(x, 44100, -20.0, 4.0, 1.0, 30.0, 3.0, 2.0)
    y2 = compressor(x, 44100, *(torch.tensor([v, v]) for v in (-20.0, 4.0, 1.0, 30.0, 3.0, 2.0)))
    torch.testing.assert_close(y1, y2)


# --------------------------------------------------------------------------------------------
# extremes, silence, full scale
# --------------------------------------------------------------------------------------------

EXTREMES = {
    "threshold_db": THRESHOLD_RANGE_DB,
    "ratio": (1.0, 1000.0),
    "attack_ms": TIME_RANGE_MS,
    "release_ms": TIME_RANGE_MS,
    "knee_db": (0.0, 48.0),
    "makeup_gain_db": MAKEUP_RANGE_DB,
}


@pytest.mark.parametrize("signal", ["silence", "full_scale", "tiny"])
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_finite_at_range_extremes(signal, backend, dtype):
    T = 64
    if signal == "silence":
        x = torch.zeros(1, 2, T, dtype=dtype)
    elif signal == "full_scale":
        x = torch.ones(1, 2, T, dtype=dtype)
        x[..., 1::2] = -1.0
    else:  # around the detector floor
        x = torch.full((1, 2, T), 1e-8, dtype=dtype)
    corners = list(itertools.product(*EXTREMES.values()))
    if backend == "torch":
        corners = corners[::7]  # the reference loop is slow; a spread-out subset
    for corner in corners:
        params = {
            k: torch.tensor([v], dtype=dtype, requires_grad=True) for k, v in zip(EXTREMES, corner)
        }
        xg = x.clone().requires_grad_()
        y = compressor(xg, 48000, backend=backend, **params)
        assert torch.isfinite(y).all(), corner
        y.sum().backward()
        for name, t in [("x", xg), *params.items()]:
            assert torch.isfinite(t.grad).all(), (name, corner)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold_db": -200.0}, "threshold_db"),
        ({"threshold_db": 30.0}, "threshold_db"),
        ({"ratio": 0.5}, "ratio"),
        ({"ratio": float("inf")}, "ratio"),
        ({"attack_ms": 0.0}, "attack_ms"),
        ({"release_ms": -5.0}, "release_ms"),
        ({"release_ms": 1e6}, "release_ms"),
        ({"knee_db": -1.0}, "knee_db"),
        ({"makeup_gain_db": float("nan")}, "makeup_gain_db"),
        ({"makeup_gain_db": 500.0}, "makeup_gain_db"),
        ({"threshold_db": torch.zeros(3)}, "threshold_db"),
        ({"sample_rate": 0}, "sample_rate"),
        ({"backend": "fast"}, "backend"),
        ({"sidechain": torch.zeros(2, 1, 99)}, "sidechain"),
        ({"sidechain": torch.zeros(3, 1, 100)}, "sidechain"),
        ({"sidechain": torch.full((2, 1, 100), float("nan"))}, "sidechain"),
    ],
)
def test_bad_inputs(kwargs, match):
    args = dict(
        x=torch.zeros(2, 1, 100),
        sample_rate=44100,
        threshold_db=-20.0,
        ratio=4.0,
        attack_ms=1.0,
        release_ms=50.0,
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        compressor(**args)


def test_bad_audio():
    with pytest.raises(ValueError, match="x"):
        compressor(torch.zeros(100), 44100, -20.0, 4.0, 1.0, 50.0)
    x = torch.zeros(1, 1, 100)
    x[0, 0, 5] = float("inf")
    with pytest.raises(ValueError, match="x contains"):
        compressor(x, 44100, -20.0, 4.0, 1.0, 50.0)


@requires_cuda
def test_cuda_matches_numba():
    gen = torch.Generator().manual_seed(5)
    x = 0.5 * torch.randn(4, 2, 2000, generator=gen, dtype=torch.float64)
    params = dict(threshold_db=-20.0, ratio=4.0, attack_ms=1.0, release_ms=30.0, knee_db=6.0)
    xc = x.cuda().requires_grad_()
    yc = compressor(xc, 44100, **params)
    yc.square().sum().backward()
    xn = x.clone().requires_grad_()
    yn = compressor(xn, 44100, backend="numba", **params)
    yn.square().sum().backward()
    torch.testing.assert_close(yc.detach().cpu(), yn.detach(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(xc.grad.cpu(), xn.grad, rtol=1e-8, atol=1e-8)


# ------------------------------------------------------------------ issue 20 regressions
@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("knee_db", [0.0, 2.2250738585072014e-308, 1e-300, 1e-7, 1e-6, 1.5e-6])
def test_compressor_tiny_knee_gives_finite_gradients(backend, knee_db):
    """A subnormal knee width made 1 / (2 W) infinite and the knee gradient NaN (DC input of
    one sample, the property suite's find). Tiny knees act as the hard knee, to 1e-7 dB."""
    x = torch.full((2, 1, 1), 10 ** (-120 / 20), dtype=torch.float64, requires_grad=True)
    knee = torch.tensor([knee_db, 0.0], dtype=torch.float64, requires_grad=True)
    y = compressor(x, 8000, -120.0, 1.0, 1e-3, 1e-3, knee_db=knee, makeup_gain_db=-120.0,
                   backend=backend)  # fmt: skip
    y.sum().backward()
    assert bool(torch.isfinite(y).all())
    assert bool(torch.isfinite(x.grad).all()) and bool(torch.isfinite(knee.grad).all())
    torch.testing.assert_close(y[0], y[1], rtol=1e-8, atol=0)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_compressor_silence_at_the_range_ends_is_silence(backend):
    for threshold, ratio, time_ms in itertools.product(
        THRESHOLD_RANGE_DB, (1.0, MAX_RATIO), TIME_RANGE_MS
    ):
        x = torch.zeros(1, 2, 300, requires_grad=True)
        y = compressor(x, 96000, threshold, ratio, time_ms, time_ms, knee_db=KNEE_RANGE_DB[1],
                       makeup_gain_db=120.0, backend=backend)  # fmt: skip
        y.sum().backward()
        assert bool((y == 0).all()) and bool(torch.isfinite(x.grad).all())


@pytest.mark.parametrize("argument, value", [("ratio", 2e6), ("knee_db", 121.0),
                                             ("knee_db", -1e-9), ("ratio", 0.999)])
def test_compressor_refuses_ratio_and_knee_beyond_their_ranges(argument, value):
    args = dict(threshold_db=-20.0, ratio=4.0, attack_ms=5.0, release_ms=50.0, knee_db=6.0)
    args[argument] = value
    with pytest.raises(ValueError, match=rf"^{argument} must be"):
        compressor(torch.zeros(1, 1, 16), 44100, **args)


def test_compressor_on_audio_whose_power_overflows_float32_is_finite_on_both_back_ends():
    """1e21 squared overflows float32: the level read +inf and the gain NaN. The level now
    saturates at the largest finite power, with no gradient through the saturated detector,
    and the numba and reference back ends agree."""
    grads = []
    for backend in ("auto", "torch"):
        x = torch.tensor([[[1e21, 1e21, 1e20, 1.0, 0.0]]], requires_grad=True)
        y = compressor(x, 8000, -20.0, 4.0, 1.0, 10.0, backend=backend)
        y.sum().backward()
        assert bool(torch.isfinite(y).all()) and bool(torch.isfinite(x.grad).all())
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=0)

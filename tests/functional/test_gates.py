"""Tests for the expander, the noise gate with hold and the look-ahead limiter, and for the
stereo ``link`` shared with the compressor: float64 numpy oracles of the stated algorithms,
hand-derived behaviour, pedalboard (JUCE) on real audio, gradients, batches and bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from diffx.functional.dynamics import compressor, loudest_channel
from diffx.functional.gates import (
    EXPANDER_RATIO_RANGE,
    HOLD_RANGE_MS,
    LOOKAHEAD_RANGE_MS,
    RANGE_RANGE_DB,
    expander,
    expander_gain_db,
    limiter,
    noise_gate,
)
from tests.conftest import requires_cuda, requires_pedalboard

DEMO = Path(__file__).resolve().parents[2] / "diffx" / "assets" / "demo"
LN9 = math.log(9.0)
JUCE_TO_DIFFX = math.log(9) / (2 * math.pi)  # JUCE tau = t / 2pi, ours tau = t / ln 9


# --------------------------------------------------------------------------------------------
# float64 oracles, written from the docstrings (per-sample loops)


def _pole(ms, sr):
    return math.exp(-LN9 / (sr * ms * 1e-3))


def _np_level(sc, link):
    """(C, T) side-chain -> (rows, T) levels in dB: one row, or one per channel for "none"."""
    power = sc**2
    if link == "mean":
        power = power.mean(0, keepdims=True)
    elif link == "max":
        power = power.max(0, keepdims=True)
    return 10 * np.log10(power + 1e-16)


def _np_expander_curve(d, R, W):
    if W > 0 and abs(d) <= W / 2:
        return -(R - 1) * (d - W / 2) ** 2 / (2 * W)
    return (R - 1) * d if d < 0 else 0.0


def _np_expander(x, sr, T, R, at, rt, W=0.0, makeup=0.0, sc=None, link="mean"):
    levels = _np_level(x if sc is None else sc, link)
    aa, ar = _pole(at, sr), _pole(rt, sr)
    y = np.empty_like(x)
    for row, level in enumerate(levels):
        state = 0.0
        gains = np.empty(len(level))
        for n, L in enumerate(level):
            g = _np_expander_curve(L - T, R, W)
            alpha = aa if g > state else ar  # attack while the gain rises
            state = alpha * state + (1 - alpha) * g
            gains[n] = state
        chans = slice(None) if len(levels) == 1 else slice(row, row + 1)
        y[chans] = x[chans] * 10 ** ((gains + makeup) / 20)
    return y


def _np_gate(x, sr, T, at, hold_ms, rt, floor=-80.0, R=10.0, W=0.0, makeup=0.0, link="mean"):
    levels = _np_level(x, link)
    aa, ar, hold = _pole(at, sr), _pole(rt, sr), round(hold_ms * sr / 1000)
    y = np.empty_like(x)
    for row, level in enumerate(levels):
        state, since = 0.0, hold + 1
        gains = np.empty(len(level))
        for n, L in enumerate(level):
            since = 0 if L >= T else min(since + 1, hold + 1)
            g = max(_np_expander_curve(L - T, R, W), floor)
            if g > state:
                state = aa * state + (1 - aa) * g
            elif since > hold:  # closing waits for the hold
                state = ar * state + (1 - ar) * g
            gains[n] = state
        chans = slice(None) if len(levels) == 1 else slice(row, row + 1)
        y[chans] = x[chans] * 10 ** ((gains + makeup) / 20)
    return y


def _np_limiter(x, sr, T, rt, lookahead_ms, makeup=0.0, link="max"):
    levels = _np_level(x, link)
    ar, D = _pole(rt, sr), round(lookahead_ms * sr / 1000)
    n_samples = x.shape[1]
    y = np.zeros_like(x)
    for row, level in enumerate(levels):
        need = np.array([min(0.0, T - level[max(0, n - D) : n + 1].max())
                         for n in range(n_samples)])  # fmt: skip
        smooth, state = np.empty(n_samples), 0.0
        for n in range(n_samples):
            alpha = 0.0 if need[n] < state else ar
            state = alpha * state + (1 - alpha) * need[n]
            smooth[n] = state
        gain = np.array([smooth[max(0, n - D) : n + 1].sum() / (D + 1) for n in range(n_samples)])
        chans = slice(None) if len(levels) == 1 else slice(row, row + 1)
        y[chans, D:] = x[chans, : n_samples - D] * 10 ** ((gain[D:] + makeup) / 20)
    return y


def _bursts(batch=2, channels=2, samples=1500, seed=0):
    """Noise whose level jumps between -70 and 0 dB every 100 samples, float64."""
    rng = np.random.default_rng(seed)
    env = 10 ** (rng.uniform(-70, 0, (batch, 1, samples // 100 + 1)) / 20)
    env = np.repeat(env, 100, axis=-1)[..., :samples]
    return torch.from_numpy(0.7 * rng.standard_normal((batch, channels, samples)) * env)


# --------------------------------------------------------------------------------------------
# oracles


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("link", ["mean", "max", "none"])
def test_expander_matches_oracle(backend, link):
    x = _bursts()
    sr = 16000
    settings = [(-30.0, 3.0, 0.5, 20.0, 6.0, 2.0), (-20.0, 1.5, 2.0, 5.0, 0.0, -1.0)]
    y = expander(x, sr, *(torch.tensor(v, dtype=torch.float64) for v in zip(*settings)),
                 link=link, backend=backend)  # fmt: skip
    for b, (T, R, at, rt, W, mk) in enumerate(settings):
        ref = _np_expander(x[b].numpy(), sr, T, R, at, rt, W, mk, link=link)
        np.testing.assert_allclose(y[b].numpy(), ref, rtol=1e-9, atol=1e-12)
    assert (y.abs() < 0.5 * x.abs()).float().mean() > 0.2  # it expands


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("link", ["mean", "max", "none"])
def test_noise_gate_matches_oracle(backend, link):
    x = _bursts(seed=1)
    sr = 16000
    settings = [(-30.0, 0.5, 3.0, 10.0, -60.0, 10.0, 0.0), (-25.0, 1.0, 0.0, 5.0, -30.0, 4.0, 3.0)]
    names = ("threshold_db", "attack_ms", "hold_ms", "release_ms", "range_db", "ratio", "knee_db")
    params = {n: torch.tensor(v, dtype=torch.float64) for n, v in zip(names, zip(*settings))}
    y = noise_gate(x, sr, **params, link=link, backend=backend)
    for b, s in enumerate(settings):
        ref = _np_gate(x[b].numpy(), sr, *s[:4], floor=s[4], R=s[5], W=s[6], link=link)
        np.testing.assert_allclose(y[b].numpy(), ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("link", ["mean", "max", "none"])
def test_limiter_matches_oracle(backend, link):
    x = 3 * _bursts(seed=2)
    sr = 16000
    settings = [(-6.0, 20.0, 1.0, 0.0), (-12.0, 5.0, 0.0, 2.0), (-3.0, 50.0, 2.5, -1.0)]
    x = torch.cat([x, x[:1]])
    y = limiter(x, sr, *(torch.tensor(v, dtype=torch.float64) for v in zip(*settings)),
                link=link, backend=backend)  # fmt: skip
    for b, (T, rt, la, mk) in enumerate(settings):
        ref = _np_limiter(x[b].numpy(), sr, T, rt, la, mk, link=link)
        np.testing.assert_allclose(y[b].numpy(), ref, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------
# behaviour


def test_expander_steady_state_slope_is_ratio():
    """A constant level L below the knee comes out at T + R (L - T): the output level falls R
    dB per dB of input; inside the knee it follows the quadratic; above it is unchanged."""
    T, R, W, sr = -20.0, 3.0, 4.0, 8000
    for L in (-50.0, -40.0, -30.0, -23.0, -21.0, -20.0, -19.0, -10.0):
        x = torch.full((1, 1, 3000), 10 ** (L / 20), dtype=torch.float64)
        y = expander(x, sr, T, R, attack_ms=1.0, release_ms=5.0, knee_db=W)
        out = 20 * math.log10(float(y[0, 0, -1]))
        d = L - T
        expected = L + ((R - 1) * d if d < -W / 2 else 0.0 if d > W / 2
                        else -(R - 1) * (d - W / 2) ** 2 / (2 * W))  # fmt: skip
        assert out == pytest.approx(expected, abs=1e-6), L
    lows = [-50.0, -40.0]
    outs = [20 * math.log10(float(expander(torch.full((1, 1, 3000), 10 ** (v / 20)), sr, T, R,
                                           1.0, 5.0)[0, 0, -1])) for v in lows]  # fmt: skip
    assert (outs[1] - outs[0]) / (lows[1] - lows[0]) == pytest.approx(R, abs=1e-4)


def test_expander_gain_curve_by_hand():
    level = torch.tensor([[-40.0, -24.0, -22.0, -20.0, -18.0, 0.0]], dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    g = expander_gain_db(level, -20.0 * one, 2.0 * one, 4.0 * one)
    # Knee [-22, -18]: -(L + 18)^2 / 8 inside; (L + 20) below.
    expected = torch.tensor([[-20.0, -4.0, -2.0, -0.5, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(g, expected, rtol=0, atol=1e-12)


def test_expander_attack_is_opening():
    """A step up in level opens the expander with the attack time, a step down closes it with
    the release time (10%-90% of the gain change in dB, in samples = fs t)."""
    sr, at, rt = 48000, 2.0, 15.0
    x = torch.cat([torch.full((6000,), 1e-3), torch.full((6000,), 0.5),
                   torch.full((6000,), 1e-3)]).double()[None, None]  # fmt: skip
    y = expander(x, sr, -30.0, 2.0, at, rt)
    gain = (20 * torch.log10(y[0, 0] / x[0, 0])).numpy()
    closed = gain[5999]
    assert closed == pytest.approx(-30.0, abs=1e-6)  # (R - 1)(L - T) = -60 + 30

    def time_10_90(seg, start, end):
        frac = (seg - start) / (end - start)
        return np.argmax(frac >= 0.9) - np.argmax(frac >= 0.1)

    assert time_10_90(gain[6000:12000], closed, 0.0) == pytest.approx(sr * at / 1000, abs=1)
    assert time_10_90(gain[12000:], 0.0, closed) == pytest.approx(sr * rt / 1000, abs=1)


def test_gate_closes_on_decaying_tone_after_hold():
    """A tone decaying at 60 dB/s crosses the threshold at a known time: the gain stays at
    0 dB for the hold time after the last sample above the threshold, then falls to the range."""
    sr, T, hold_ms, floor = 16000, -40.0, 50.0, -70.0
    t = np.arange(int(1.5 * sr)) / sr
    level_db = -6.0 - 60.0 * t
    x = 10 ** (level_db / 20) * np.sin(2 * np.pi * 1000 * t)
    x = torch.from_numpy(x)[None, None]
    y = noise_gate(x, sr, T, attack_ms=0.1, hold_ms=hold_ms, release_ms=20.0, range_db=floor,
                   ratio=100.0)  # fmt: skip
    gain = np.full(len(t), np.nan)
    nz = np.abs(x[0, 0].numpy()) > 1e-9
    gain[nz] = 20 * np.log10(np.abs(y[0, 0].numpy()[nz] / x[0, 0].numpy()[nz]))
    last_open = np.nonzero(20 * np.log10(np.abs(x[0, 0].numpy()) + 1e-16) >= T)[0].max()
    hold = round(hold_ms * sr / 1000)
    # Open (0 dB) through the end of the hold. (At the very start the tone's first zero
    # crossing, with no hold yet, closes the gate by 0.1 dB, reopened within ~1 ms.)
    before = gain[800 : last_open + hold + 1]
    assert np.nanmax(np.abs(before)) < 1e-9
    after = gain[last_open + hold + 1 :]
    assert np.nanmax(after[:5]) < 0  # closing starts right after the hold
    assert np.nanmin(after[-100:]) == pytest.approx(floor, abs=1e-3)  # closed at the range


def test_gate_hold_restarts_on_new_onsets():
    """Bursts 30 ms apart with a 40 ms hold keep the gate open in the gaps; with a 10 ms hold
    it closes between them."""
    sr = 16000
    burst = np.sin(2 * np.pi * 500 * np.arange(160) / sr) * 0.5
    gap = np.zeros(480)
    x = torch.from_numpy(np.tile(np.concatenate([burst, gap]), 5))[None, None]
    probe = torch.from_numpy(np.ones_like(x[0, 0].numpy()))[None, None]
    for hold_ms, closes in ((40.0, False), (10.0, True)):
        # The gain applied to a side-chained constant shows the gate's state in the gaps.
        y = noise_gate(probe, sr, -30.0, 0.1, hold_ms, 5.0, sidechain=x)
        gains = 20 * np.log10(y[0, 0, 700:].numpy())  # from the end of the first gap's start
        assert (gains.min() < -40) == closes


def test_limiter_caps_real_audio_with_transients():
    """Guitar and speech at +12 dB over full scale, plus noise bursts with sharp onsets: the
    output's sample peak never exceeds the threshold by more than 1e-4 dB (float32 rounding)."""
    import soundfile as sf

    for name in ("guitar_em9", "voice", "bass"):
        audio, sr = sf.read(DEMO / f"{name}.flac", dtype="float32")
        x = torch.from_numpy(audio / np.abs(audio).max() * 4.0)[None, None]
        for T, la in ((-1.0, 5.0), (-12.0, 1.0), (-6.0, 0.0)):
            y = limiter(x, sr, T, release_ms=50.0, lookahead_ms=la)
            peak = 20 * math.log10(float(y.abs().max()))
            assert peak <= T + 1e-4, (name, T, la)
            assert peak > T - 0.5  # the loud peaks are brought to the threshold, not below
    x = (8 * _bursts(batch=3, channels=2, samples=20000, seed=7)).float()
    y = limiter(x, 44100, -3.0, 100.0, 2.0)
    assert 20 * math.log10(float(y.abs().max())) <= -3.0 + 1e-4


def test_limiter_latency_equals_lookahead():
    """Below the threshold the output is the input delayed by exactly round(la fs) samples;
    an impulse above it comes out at that delay, at the threshold."""
    sr = 44100
    for la in (0.0, 1.0, 5.0):
        D = round(la * sr / 1000)
        x = 0.1 * torch.randn(1, 2, 3000, dtype=torch.float64)
        y = limiter(x, sr, 0.0, 50.0, la)
        torch.testing.assert_close(y[..., D:], x[..., : 3000 - D], rtol=0, atol=0)
        assert torch.equal(y[..., :D], torch.zeros_like(y[..., :D]))
        impulse = torch.zeros(1, 1, 3000, dtype=torch.float64)
        impulse[..., 1000] = 1.0
        out = limiter(impulse, sr, -10.0, 50.0, la)[0, 0]
        assert int(out.abs().argmax()) == 1000 + D
        assert float(out[1000 + D]) == pytest.approx(10 ** (-10 / 20), rel=1e-12)


# --------------------------------------------------------------------------------------------
# stereo link (compressor included)


def test_link_none_is_per_channel():
    x = _bursts(batch=2, channels=3, seed=4)
    calls = {
        "compressor": lambda v, **k: compressor(v, 16000, -30.0, 4.0, 1.0, 20.0, **k),
        "expander": lambda v, **k: expander(v, 16000, -30.0, 3.0, 1.0, 20.0, **k),
        "noise_gate": lambda v, **k: noise_gate(v, 16000, -30.0, 1.0, 5.0, 20.0, **k),
        "limiter": lambda v, **k: limiter(v, 16000, -10.0, 20.0, 1.0, **k),
    }
    for name, fn in calls.items():
        y = fn(x, link="none")
        for c in range(3):
            torch.testing.assert_close(y[:, c : c + 1], fn(x[:, c : c + 1]), rtol=1e-12,
                                       atol=1e-14, msg=name)  # fmt: skip


def test_link_max_reads_the_loudest_channel():
    x = _bursts(batch=2, channels=2, seed=5)
    loud = loudest_channel(x)
    assert torch.equal(loud.square(), x.square().amax(1, keepdim=True))
    y = compressor(x, 16000, -30.0, 4.0, 1.0, 20.0, link="max")
    torch.testing.assert_close(y, compressor(x, 16000, -30.0, 4.0, 1.0, 20.0, sidechain=loud))
    same = x[:, :1].expand(2, 2, x.shape[-1])
    for fn in (compressor, expander):
        ys = [fn(same, 16000, -30.0, 4.0, 1.0, 20.0, link=k) for k in ("mean", "max", "none")]
        torch.testing.assert_close(ys[0], ys[1], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(ys[0], ys[2], rtol=1e-12, atol=1e-14)


def test_link_default_keeps_the_compressor_unchanged():
    x = _bursts(seed=6)
    torch.testing.assert_close(
        compressor(x, 16000, -30.0, 4.0, 1.0, 20.0),
        compressor(x, 16000, -30.0, 4.0, 1.0, 20.0, link="mean"), rtol=0, atol=0,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# pedalboard (JUCE dsp::NoiseGate, dsp::Limiter)


def _block_db(v, block):
    nb = len(v) // block
    return 10 * np.log10(np.mean(v[: nb * block].reshape(nb, block) ** 2, axis=1) + 1e-12)


def _juce_rms_detector(x, sr):
    """JUCE NoiseGate's first stage, re-implemented: a power follower with instant attack and
    a 50 ms release (JUCE's convention alpha = exp(-2 pi / (fs t))), square-rooted."""
    alpha = math.exp(-2 * math.pi / (sr * 0.05))
    out, state = np.empty_like(x), 0.0
    for n, p in enumerate(x.astype(np.float64) ** 2):
        state = p if p > state else p + alpha * (state - p)
        out[n] = math.sqrt(state)
    return out


@requires_pedalboard
@pytest.mark.parametrize("name", ["guitar_em9", "violin", "guitar_e_slide"])
@pytest.mark.parametrize("settings", [(-30.0, 4.0, 1.0, 100.0), (-25.0, 10.0, 1.0, 50.0)])
def test_expander_close_to_pedalboard_noise_gate(name, settings):
    """JUCE's NoiseGate is an expander: gain (env / T)^(R - 1) below T, with env a peak
    follower (attack/release, tau = t / 2pi) of an RMS follower (instant attack, 50 ms
    release). Fed that RMS follower as side-chain (re-implemented above) and with times
    converted (t ln9 / 2pi), our expander's 50 ms block levels differ from pedalboard's by a
    median < 0.05 dB (measured <= 0.002) and a 90th percentile < 1 dB (measured <= 0.35),
    overall < 0.05 dB (measured <= 0.002): what remains is where each smooths (JUCE the linear
    envelope, we the gain in dB), which matters on the fastest level changes only. Measured on
    pedalboard 0.9.26."""
    import pedalboard
    import soundfile as sf

    audio, sr = sf.read(DEMO / f"{name}.flac", dtype="float32")
    audio = audio / np.abs(audio).max() * 0.9
    T, R, at, rt = settings
    theirs = pedalboard.NoiseGate(threshold_db=T, ratio=R, attack_ms=at, release_ms=rt)(
        audio[None], sr)[0]  # fmt: skip
    env = torch.from_numpy(_juce_rms_detector(audio, sr))[None, None]
    x = torch.from_numpy(audio.astype(np.float64))[None, None]
    conv = JUCE_TO_DIFFX
    ours = expander(x, sr, T, R, at * conv, rt * conv, sidechain=env)[0, 0].numpy()
    block = int(0.05 * sr)
    active = _block_db(audio, block) > -60
    diff = np.abs(_block_db(ours, block) - _block_db(theirs, block))[active]
    reduction = (_block_db(theirs, block) - _block_db(audio, block))[active]
    assert reduction.mean() < -0.5 and reduction.min() < -6.0  # not vacuous: it gates
    assert np.median(diff) < 0.05
    assert np.percentile(diff, 90) < 1.0
    assert abs(10 * np.log10(np.mean(ours**2) / np.mean(theirs**2))) < 0.05


@requires_pedalboard
@pytest.mark.parametrize("name", ["guitar_em9", "violin", "bass"])
def test_noise_gate_close_to_pedalboard_without_its_rms_stage(name):
    """With our own instantaneous detector (no RMS follower), hold 0 and a -200 dB range, the
    gate at threshold -30 dB, ratio 4 differs from pedalboard's NoiseGate by a median
    < 0.25 dB (measured <= 0.02) and overall < 0.1 dB (measured <= 0.01). Blocks in the gate's
    tails differ more (3 dB at the 90th percentile on the guitar, ~7 dB on speech): JUCE's RMS
    stage holds the level up for ~50 ms, our detector follows the waveform."""
    import pedalboard
    import soundfile as sf

    audio, sr = sf.read(DEMO / f"{name}.flac", dtype="float32")
    audio = audio / np.abs(audio).max() * 0.9
    T, R, at, rt = -30.0, 4.0, 1.0, 100.0
    theirs = pedalboard.NoiseGate(threshold_db=T, ratio=R, attack_ms=at, release_ms=rt)(
        audio[None], sr)[0]  # fmt: skip
    x = torch.from_numpy(audio.astype(np.float64))[None, None]
    conv = JUCE_TO_DIFFX
    ours = noise_gate(x, sr, T, at * conv, 0.0, rt * conv, range_db=-200.0, ratio=R)
    ours = ours[0, 0].numpy()
    block = int(0.05 * sr)
    active = _block_db(audio, block) > -60
    diff = np.abs(_block_db(ours, block) - _block_db(theirs, block))[active]
    assert np.median(diff) < 0.25
    assert abs(10 * np.log10(np.mean(ours**2) / np.mean(theirs**2))) < 0.1


@requires_pedalboard
@pytest.mark.parametrize("name", ["guitar_em9", "violin", "voice", "bass"])
@pytest.mark.parametrize("settings", [(-24.0, 100.0, 1.0), (-30.0, 50.0, 2.0)])
def test_limiter_close_to_pedalboard(name, settings):
    """JUCE's Limiter: a 4:1 compressor at -10 dBFS (2 ms / 200 ms), a 1000:1 compressor at the
    threshold with instant attack on a peak follower (release tau = t / 2pi), then a gain of
    +3.75 dB - threshold and a hard clip at +-1. With the audio's peaks at -12 dBFS (the first
    stage idle), its output divided by that gain, our output advanced by the look-ahead and
    clipped where JUCE clips (3.75 dB under the threshold), and the release converted
    (t ln9 / 2pi): 50 ms block levels differ by a median < 1 dB and a 90th percentile < 1.5 dB
    (measured <= 0.74 / 1.07, the largest on speech at -30 dB), overall < 1 dB (measured
    <= 0.70; ours is always a little quieter: the look-ahead ramps the gain down before each
    peak, and the release runs in dB). Our peak is exactly the threshold; theirs is clipped."""
    import pedalboard
    import soundfile as sf

    audio, sr = sf.read(DEMO / f"{name}.flac", dtype="float32")
    audio = audio / np.abs(audio).max() * 10 ** (-12 / 20)
    T, rt, la = settings
    theirs = pedalboard.Limiter(threshold_db=T, release_ms=rt)(audio[None], sr)[0]
    theirs = theirs / 10 ** ((3.75 - T) / 20)
    D = round(la * sr / 1000)
    ours = limiter(torch.from_numpy(audio)[None, None], sr, T, rt * JUCE_TO_DIFFX, la)
    ours = ours[0, 0].numpy()
    assert 20 * np.log10(np.abs(ours).max()) == pytest.approx(T, abs=1e-3)
    ours = np.concatenate([ours[D:], np.zeros(D, dtype=ours.dtype)])
    ceiling = 10 ** ((T - 3.75) / 20)
    ours = np.clip(ours, -ceiling, ceiling)
    block = int(0.05 * sr)
    active = _block_db(audio, block) > -60
    diff = np.abs(_block_db(ours, block) - _block_db(theirs, block))[active]
    reduction = (_block_db(theirs, block) - _block_db(audio, block))[active]
    assert reduction.mean() < -0.5 and reduction.min() < -6.0  # not vacuous: it limits
    assert np.median(diff) < 1.0
    assert np.percentile(diff, 90) < 1.5
    assert abs(10 * np.log10(np.mean(ours**2) / np.mean(theirs**2))) < 1.0


# --------------------------------------------------------------------------------------------
# gradients


def _inputs(seed=0, samples=24):
    gen = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(2, 2, samples, generator=gen, dtype=torch.float64)
    sc = 0.3 * torch.randn(2, 2, samples, generator=gen, dtype=torch.float64)
    return x, sc


def _f64(*values):
    return torch.tensor(values, dtype=torch.float64)


OPS = {
    "expander": (expander, dict(threshold_db=_f64(-12.0, -20.0), ratio=_f64(3.0, 1.5),
                                attack_ms=_f64(0.2, 0.1), release_ms=_f64(1.0, 3.0),
                                knee_db=_f64(6.0, 2.0), makeup_gain_db=_f64(1.0, -1.0))),
    "noise_gate": (noise_gate, dict(threshold_db=_f64(-12.0, -18.0), attack_ms=_f64(0.1, 0.2),
                                    hold_ms=_f64(0.25, 0.0), release_ms=_f64(1.0, 2.0),
                                    range_db=_f64(-20.0, -30.0), ratio=_f64(4.0, 10.0),
                                    knee_db=_f64(3.0, 1.0), makeup_gain_db=_f64(0.5, 0.0))),
    "limiter": (limiter, dict(threshold_db=_f64(-10.0, -14.0), release_ms=_f64(1.0, 2.0),
                              lookahead_ms=_f64(0.5, 0.0), makeup_gain_db=_f64(0.5, 1.0))),
}  # fmt: skip
NO_GRADIENT = {"hold_ms", "lookahead_ms"}  # whole samples: documented zero gradient


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("link", ["mean", "max", "none"])
@pytest.mark.parametrize("with_sidechain", [False, True])
def test_gradcheck_and_gradgradcheck(op, backend, link, with_sidechain):
    fn, params = OPS[op]
    x, sc = _inputs()
    names = [n for n in params if n not in NO_GRADIENT]
    fixed = {n: v for n, v in params.items() if n in NO_GRADIENT}

    def call(x, *args):
        *values, side = args if with_sidechain else (*args, None)
        return fn(x, 8000, **fixed, **dict(zip(names, values)), sidechain=side, link=link,
                  backend=backend)  # fmt: skip

    inputs = (x.requires_grad_(), *(params[n].clone().requires_grad_() for n in names))
    if with_sidechain:
        inputs = (*inputs, sc.requires_grad_())
    assert gradcheck(call, inputs)
    assert gradgradcheck(call, inputs)


@pytest.mark.parametrize("op", ["noise_gate", "limiter"])
def test_sample_counts_get_zero_gradient(op):
    fn, params = OPS[op]
    x, _ = _inputs()
    p = {n: v.clone().requires_grad_() for n, v in params.items()}
    fn(x, 8000, **p).square().sum().backward()
    for name in NO_GRADIENT & set(p):
        assert torch.equal(p[name].grad, torch.zeros_like(p[name].grad))
    assert all(p[n].grad.abs().sum() > 0 for n in ("threshold_db", "release_ms"))


@pytest.mark.parametrize("op", sorted(OPS))
def test_backends_agree_long_float32(op):
    """Long float32 inputs (threaded kernels) on both back ends, values and gradients."""
    fn, params = OPS[op]
    x = (3 * _bursts(batch=2, channels=2, samples=40000, seed=9)).float()
    results = []
    for backend in ("numba", "torch"):
        xb = x.clone().requires_grad_()
        pb = {n: v.float().clone().requires_grad_() for n, v in params.items()}
        y = fn(xb, 16000, **pb, backend=backend)
        (y * torch.linspace(-1, 1, 40000)).sum().backward()
        results.append((y.detach(), xb.grad, *(pb[n].grad for n in params)))
    for got, ref in zip(*results):
        torch.testing.assert_close(got, ref, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("op", sorted(OPS))
def test_batch_consistency(op):
    fn, params = OPS[op]
    x = _bursts(batch=2, channels=2, samples=800, seed=3).float()
    p32 = {n: v.float() for n, v in params.items()}
    y = fn(x, 16000, **p32)
    for b in range(2):
        single = fn(x[b : b + 1], 16000, **{n: float(v[b]) for n, v in p32.items()})
        torch.testing.assert_close(single, y[b : b + 1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("signal", ["silence", "tiny", "full_scale"])
def test_finite_on_silence_and_extremes(op, signal, dtype):
    fn, params = OPS[op]
    T = 64
    x = {"silence": torch.zeros(2, 2, T), "tiny": torch.full((2, 2, T), 1e-8),
         "full_scale": torch.ones(2, 2, T)}[signal].to(dtype)  # fmt: skip
    extreme = {"ratio": EXPANDER_RATIO_RANGE[1], "range_db": RANGE_RANGE_DB[0],
               "threshold_db": 24.0, "attack_ms": 1e-3, "release_ms": 60_000.0,
               "hold_ms": HOLD_RANGE_MS[1], "lookahead_ms": LOOKAHEAD_RANGE_MS[1]}  # fmt: skip
    for variant in (params, {n: _f64(extreme.get(n, float(v[0]))).expand(2)
                             for n, v in params.items()}):  # fmt: skip
        xg = x.clone().requires_grad_()
        p = {n: v.to(dtype).clone().requires_grad_() for n, v in variant.items()}
        y = fn(xg, 48000, **p)
        assert torch.isfinite(y).all()
        y.sum().backward()
        for name, t in [("x", xg), *p.items()]:
            assert torch.isfinite(t.grad).all(), name


# --------------------------------------------------------------------------------------------
# bad input


BAD = {
    "threshold_db": (-121.0, 25.0),
    "ratio": (0.5, 101.0),
    "attack_ms": (0.0, 70_000.0),
    "release_ms": (-1.0, 70_000.0),
    "hold_ms": (-1.0, 20_000.0),
    "range_db": (-201.0, 1.0),
    "knee_db": (-1.0, 121.0),
    "makeup_gain_db": (-121.0, 121.0),
    "lookahead_ms": (-0.5, 1001.0),
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_bad_parameters_raise_naming_them(op):
    fn, params = OPS[op]
    x, _ = _inputs()
    for name in params:
        for bad in (*BAD[name], float("nan"), float("inf")):
            with pytest.raises(ValueError, match=name):
                fn(x, 8000, **{**params, name: bad})
        with pytest.raises(ValueError, match=name):
            fn(x, 8000, **{**params, name: torch.zeros(3, dtype=torch.float64)})


@pytest.mark.parametrize("op", sorted(OPS))
def test_bad_audio_and_options_raise(op):
    fn, params = OPS[op]
    x, sc = _inputs()
    with pytest.raises(ValueError, match="x"):
        fn(x[0], 8000, **params)
    bad = x.clone()
    bad[0, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="x"):
        fn(bad, 8000, **params)
    with pytest.raises(ValueError, match="sample_rate"):
        fn(x, 0, **params)
    with pytest.raises(ValueError, match="sidechain"):
        fn(x, 8000, **params, sidechain=sc[..., :10])
    with pytest.raises(ValueError, match="sidechain"):
        fn(x, 8000, **params, sidechain=torch.randn(2, 3, x.shape[-1]), link="none")
    with pytest.raises(ValueError, match="link"):
        fn(x, 8000, **params, link="sum")
    with pytest.raises(ValueError, match="backend"):
        fn(x, 8000, **params, backend="jax")


def test_limiter_window_helpers_agree_across_devices_paths():
    """The CPU paths (numba sliding maximum, float64 running sum) against the pooling paths
    used on other devices, with per-row widths: the same window maxima (indices may differ
    on ties) and means, and the same gradient of the mean."""
    from diffx.functional.gates import _trailing_mean, _window_argmax

    gen = torch.Generator().manual_seed(8)
    v = torch.randn(4, 500, generator=gen, dtype=torch.float64)
    v[:, 200:220] = 5.0  # ties
    width = torch.tensor([1, 7, 7, 64])
    for pooled in (False, True):
        index = _window_argmax(v, width, pooled=pooled)
        for r, w in enumerate(width.tolist()):
            expected = [v[r, max(0, n - w + 1) : n + 1].max() for n in range(500)]
            torch.testing.assert_close(v[r].gather(0, index[r]), torch.stack(expected))
    u = v.clone().requires_grad_()
    means = [_trailing_mean(u, width, pooled=p) for p in (False, True)]
    torch.testing.assert_close(means[0], means[1], rtol=1e-12, atol=1e-12)
    grads = [torch.autograd.grad((m * v).sum(), u)[0] for m in means]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)


@requires_cuda
@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("link", ["mean", "none"])
def test_cuda_matches_cpu(op, link):
    """On CUDA tensors (hold loop and sliding maximum by tensor ops, the compressor's CUDA
    ballistics kernel) values and gradients equal the CPU's numba path."""
    fn, params = OPS[op]
    x = 3 * _bursts(batch=2, channels=2, samples=3000, seed=10)
    results = []
    for device in ("cpu", "cuda"):
        xb = x.to(device).requires_grad_()
        pb = {n: v.to(device).requires_grad_() for n, v in params.items()}
        y = fn(xb, 16000, **pb, link=link)
        (y * torch.linspace(-1, 1, 3000, dtype=torch.float64, device=device)).sum().backward()
        results.append([t.detach().cpu() for t in (y, xb.grad, *(pb[n].grad for n in params))])
    for got, ref in zip(results[1], results[0]):
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)

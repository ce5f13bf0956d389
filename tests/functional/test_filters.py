"""sosfilt, RBJ biquad design and the parametric EQ against scipy and analog prototypes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.signal
import torch
from torch.autograd import gradcheck, gradgradcheck

from diffx.functional.filters import (
    FILTER_TYPES,
    MAX_ABS_GAIN_DB,
    MAX_Q,
    MIN_Q,
    biquad,
    parametric_eq,
    parametric_eq_sos,
    sos_frequency_response,
    sosfilt,
)
from tests.kernels.test_iir import random_sections

SR = 44100.0


def random_sos(batch: int, n_sections: int, seed: int) -> torch.Tensor:
    """Random stable sections in scipy's layout with a0 != 1 to exercise normalization."""
    sec = random_sections(batch, n_sections, seed)
    a0 = np.random.default_rng(seed).uniform(0.5, 2.0, size=(batch, n_sections, 1))
    sos = np.concatenate([sec[..., :3], np.ones_like(a0), sec[..., 3:]], -1) * a0
    return torch.from_numpy(sos)


def lfilter_chain(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """scipy oracle for sections whose a0 may differ from 1 (lfilter normalizes by a[0])."""
    for section in sos:
        x = scipy.signal.lfilter(section[:3], section[3:], x)
    return x


# ------------------------------------------------------------------------------------ sosfilt


def test_sosfilt_float64_matches_scipy():
    sos = random_sos(3, 4, seed=1)
    x = torch.randn(3, 2, 4000, dtype=torch.float64)
    y = sosfilt(x, sos)
    for b, c in itertools.product(range(3), range(2)):
        ref = lfilter_chain(sos[b].numpy(), x[b, c].numpy())
        assert np.abs(y[b, c].numpy() - ref).max() < 1e-5


def test_sosfilt_float32_relative_error():
    sos = random_sos(2, 6, seed=2)
    x = torch.randn(2, 1, 20000)
    y = sosfilt(x, sos.float())
    for b in range(2):
        ref = lfilter_chain(sos[b].numpy(), x[b, 0].double().numpy())
        assert np.abs(y[b, 0].double().numpy() - ref).max() / np.abs(ref).max() < 1e-4


def test_sosfilt_shared_filter_broadcasts_over_batch():
    sos = random_sos(1, 2, seed=3)
    x = torch.randn(4, 1, 500, dtype=torch.float64)
    torch.testing.assert_close(sosfilt(x, sos[0]), sosfilt(x, sos.expand(4, -1, -1)))


def test_sosfilt_batch_consistency():
    sos = random_sos(4, 3, seed=4)
    x = torch.randn(4, 2, 300, dtype=torch.float64)
    batched = sosfilt(x, sos)
    for b in range(4):
        torch.testing.assert_close(batched[b : b + 1], sosfilt(x[b : b + 1], sos[b : b + 1]))


@pytest.mark.parametrize("needs", [(True, False), (False, True), (True, True)])
def test_sosfilt_gradcheck(needs):
    sos = random_sos(2, 2, seed=6).requires_grad_(needs[1])
    x = torch.randn(2, 1, 20, dtype=torch.float64).requires_grad_(needs[0])
    assert gradcheck(sosfilt, (x, sos))
    assert gradgradcheck(sosfilt, (x, sos))


def test_sosfilt_bad_input():
    sos = random_sos(2, 1, seed=0)
    x = torch.randn(2, 1, 100, dtype=torch.float64)
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        bad = x.clone()
        bad[0, 0, 3] = float("nan")
        sosfilt(bad, sos)
    with pytest.raises(ValueError, match="Inf"):
        bad = x.clone()
        bad[1, 0, 0] = float("inf")
        sosfilt(bad, sos)
    with pytest.raises(ValueError, match=r"x must be shaped \(batch, channels, samples\)"):
        sosfilt(x[0], sos)
    with pytest.raises(ValueError, match="sos has batch size 2 but the audio has batch size 3"):
        sosfilt(torch.randn(3, 1, 10, dtype=torch.float64), sos)
    with pytest.raises(ValueError, match="sos must be shaped"):
        sosfilt(x, sos[..., :5])
    unstable = sos.clone()
    unstable[1, 0, 5] = 1.5 * unstable[1, 0, 3]  # |a2| > 1
    with pytest.raises(ValueError, match=r"unstable section at index \(1, 0\)"):
        sosfilt(x, unstable)
    with pytest.raises(ValueError, match="sos contains"):
        sosfilt(x, sos * float("nan"))


# ---------------------------------------------------------------------------- biquad design


def analog_prototype(kind: str, gain_db: float, q: float) -> tuple[list, list]:
    """RBJ cookbook analog prototypes H(s) with s normalized to the corner frequency."""
    amp = 10 ** (gain_db / 40)
    sa = math.sqrt(amp)
    return {
        "low_pass": ([1], [1, 1 / q, 1]),
        "high_pass": ([1, 0, 0], [1, 1 / q, 1]),
        "band_pass": ([1 / q, 0], [1, 1 / q, 1]),
        "notch": ([1, 0, 1], [1, 1 / q, 1]),
        "allpass": ([1, -1 / q, 1], [1, 1 / q, 1]),
        "peaking": ([1, amp / q, 1], [1, 1 / (amp * q), 1]),
        "low_shelf": ([amp, amp * sa / q, amp * amp], [amp, sa / q, 1]),
        "high_shelf": ([amp * amp, amp * sa / q, amp], [1, sa / q, amp]),
    }[kind]


def bilinear_oracle(kind: str, freq_hz: float, gain_db: float, q: float, sr: float):
    """Bilinear transform of the prototype, prewarped at freq_hz (scipy.signal.bilinear)."""
    b, a = analog_prototype(kind, gain_db, q)
    warped = 2 * sr * math.tan(math.pi * freq_hz / sr)  # rad/s
    # Substitute s -> s / warped.
    b = [c / warped ** (len(b) - 1 - i) for i, c in enumerate(b)]
    a = [c / warped ** (len(a) - 1 - i) for i, c in enumerate(a)]
    bz, az = scipy.signal.bilinear(b, a, fs=sr)
    bz = np.pad(bz, (3 - len(bz), 0)) if len(bz) < 3 else bz
    return bz / az[0], az / az[0]


@pytest.mark.parametrize("kind", FILTER_TYPES)
def test_biquad_matches_bilinear_transform_of_analog_prototype(kind):
    rng = np.random.default_rng(0)
    freqs = rng.uniform(30, 18000, size=5)
    gains = rng.uniform(-24, 24, size=5)
    qs = rng.uniform(0.2, 8, size=5)
    sos = biquad(
        kind, torch.from_numpy(freqs), torch.from_numpy(qs), SR, torch.from_numpy(gains)
    ).numpy()
    for i in range(5):
        bz, az = bilinear_oracle(kind, freqs[i], gains[i], qs[i], SR)
        np.testing.assert_allclose(sos[i, :3] / sos[i, 3], bz, atol=1e-9)
        np.testing.assert_allclose(sos[i, 3:] / sos[i, 3], az, atol=1e-9)


def test_peaking_gain_at_centre_and_shelf_plateaus():
    f = torch.tensor([1000.0], dtype=torch.float64)
    sos = biquad("peaking", f, 2.0, SR, torch.tensor([9.0], dtype=torch.float64))
    _, h = scipy.signal.freqz(sos[0, :3].numpy(), sos[0, 3:].numpy(), worN=[1000.0], fs=SR)
    assert 20 * np.log10(abs(h[0])) == pytest.approx(9.0, abs=1e-9)
    low = biquad("low_shelf", 200.0, 0.707, SR, -6.0, dtype=torch.float64)[0].numpy()
    _, h = scipy.signal.freqz(low[:3], low[3:], worN=[5.0, 15000.0], fs=SR)
    assert 20 * np.log10(abs(h[0])) == pytest.approx(-6.0, abs=0.01)
    assert 20 * np.log10(abs(h[1])) == pytest.approx(0.0, abs=0.01)


GAIN_TYPES = ("peaking", "low_shelf", "high_shelf")


@pytest.mark.parametrize("kind", FILTER_TYPES)
@pytest.mark.parametrize("needs", list(itertools.product([True, False], repeat=3))[:-1])
def test_biquad_gradcheck(kind, needs):
    if kind not in GAIN_TYPES and needs[:2] == (False, False):
        pytest.skip("the design does not depend on gain_db")
    f = torch.tensor([500.0, 3000.0], dtype=torch.float64).requires_grad_(needs[0])
    q = torch.tensor([0.7, 3.0], dtype=torch.float64).requires_grad_(needs[1])
    g = torch.tensor([-6.0, 12.0], dtype=torch.float64)
    inputs = (f, q, g.requires_grad_(needs[2])) if kind in GAIN_TYPES else (f, q)

    def fn(f, q, g=g):
        return biquad(kind, f, q, SR, g)

    assert gradcheck(fn, inputs)
    assert gradgradcheck(fn, inputs)


def test_biquad_bad_parameters():
    with pytest.raises(ValueError, match="filter_type"):
        biquad("bell", 100.0, 1.0, SR)
    with pytest.raises(ValueError, match="freq_hz"):
        biquad("peaking", SR / 2, 1.0, SR)
    with pytest.raises(ValueError, match="freq_hz"):
        biquad("peaking", 0.0, 1.0, SR)
    with pytest.raises(ValueError, match="q must be >="):
        biquad("peaking", 100.0, 0.0, SR)
    with pytest.raises(ValueError, match="gain_db contains"):
        biquad("peaking", 100.0, 1.0, SR, float("nan"))
    with pytest.raises(ValueError, match="sample_rate"):
        biquad("peaking", 100.0, 1.0, -1)
    with pytest.raises(ValueError, match="q has batch size 2, which does not broadcast"):
        biquad("peaking", torch.ones(3) * 100, torch.ones(2), SR)


# ---------------------------------------------------------------------------- parametric EQ


def peq_params(batch: int, seed: int, dtype=torch.float64):
    """Random settings within DeepAFx-ST's PEQ ranges (gains +-24 dB, Q 0.1-10)."""
    g = torch.Generator().manual_seed(seed)

    def u(lo, hi, *shape):
        return (lo + (hi - lo) * torch.rand(*shape, generator=g)).to(dtype)

    return dict(
        low_shelf_freq_hz=u(20, 200, batch),
        low_shelf_gain_db=u(-24, 24, batch),
        band_freqs_hz=torch.stack(
            [u(200, 2000, batch), u(800, 4000, batch), u(2000, 8000, batch), u(4000, 10800, batch)],
            dim=1,
        ),  # fmt: skip
        band_gains_db=u(-24, 24, batch, 4),
        band_qs=u(0.1, 10, batch, 4),
        high_shelf_freq_hz=u(4000, 10800, batch),
        high_shelf_gain_db=u(-24, 24, batch),
        low_shelf_q=u(0.1, 10, batch),
        high_shelf_q=u(0.1, 10, batch),
    )


def test_parametric_eq_matches_scipy_lfilter_chain():
    params = peq_params(3, seed=0)
    x = torch.randn(3, 1, 8000, dtype=torch.float64)
    y = parametric_eq(x, SR, **params)
    sos = parametric_eq_sos(SR, **params)
    assert sos.shape == (3, 6, 6)
    for b in range(3):
        ref = lfilter_chain(sos[b].numpy(), x[b, 0].numpy())
        assert np.abs(y[b, 0].numpy() - ref).max() < 1e-5


@pytest.mark.parametrize("backend", ["numba", "scan"])
def test_parametric_eq_float32_relative_error(backend):
    """float32 audio and parameters against the float64 design and scipy, over 3 s.

    Low shelves near 20 Hz put poles within 0.3 % of z = 1; in plain float32 arithmetic
    their coefficient rounding alone costs ~3e-4, and a float32 chunked scan diverges.
    """
    params64 = peq_params(2, seed=1)
    params32 = {k: v.float() for k, v in params64.items()}
    x = torch.randn(2, 1, 131072)
    y = parametric_eq(x, SR, **params32, backend=backend)
    sos = parametric_eq_sos(SR, **params64).numpy()
    for b in range(2):
        ref = lfilter_chain(sos[b], x[b, 0].double().numpy())
        assert np.abs(y[b, 0].double().numpy() - ref).max() / np.abs(ref).max() < 1e-5


def test_frequency_response_matches_scipy_freqz():
    sos = parametric_eq_sos(SR, **peq_params(2, seed=2))
    freqs = torch.linspace(10, 20000, 300, dtype=torch.float64)
    h = sos_frequency_response(sos, freqs, SR)
    for b in range(2):
        ref = np.ones(len(freqs), dtype=complex)
        for section in sos[b].numpy():
            ref *= scipy.signal.freqz(section[:3], section[3:], worN=freqs.numpy(), fs=SR)[1]
        np.testing.assert_allclose(h[b].numpy(), ref, rtol=1e-9, atol=1e-12)


def test_parametric_eq_batch_consistency():
    params = peq_params(3, seed=3)
    x = torch.randn(3, 2, 400, dtype=torch.float64)
    batched = parametric_eq(x, SR, **params)
    for b in range(3):
        item = {k: v[b : b + 1] for k, v in params.items()}
        torch.testing.assert_close(batched[b : b + 1], parametric_eq(x[b : b + 1], SR, **item))


def test_parametric_eq_gradcheck_every_parameter():
    params = {k: v.requires_grad_() for k, v in peq_params(1, seed=4).items()}
    x = torch.randn(1, 1, 16, dtype=torch.float64, requires_grad=True)
    names = list(params)

    def fn(x, *values):
        return parametric_eq(x, SR, **dict(zip(names, values)))

    assert gradcheck(fn, (x, *params.values()))
    assert gradgradcheck(fn, (x, *params.values()))


@pytest.mark.parametrize("signal", ["silence", "full_scale"])
@pytest.mark.parametrize("extreme", ["low", "high"])
def test_parametric_eq_finite_at_range_extremes(signal, extreme):
    """Silence and full-scale input at the ends of every range: finite output and grads."""
    lo = extreme == "low"
    n = 2000
    x = torch.zeros(1, 1, n) if signal == "silence" else torch.sign(torch.randn(1, 1, n))
    x.requires_grad_()
    params = dict(
        low_shelf_freq_hz=torch.tensor([20.0 if lo else 200.0]),
        low_shelf_gain_db=torch.tensor([-24.0 if lo else 24.0]),
        band_freqs_hz=torch.tensor(
            [[200.0, 800.0, 2000.0, 4000.0]] if lo else [[2000.0, 4000.0, 8000.0, 10800.0]]
        ),  # fmt: skip
        band_gains_db=torch.full((1, 4), -24.0 if lo else 24.0),
        band_qs=torch.full((1, 4), 0.1 if lo else 10.0),
        high_shelf_freq_hz=torch.tensor([4000.0 if lo else 10800.0]),
        high_shelf_gain_db=torch.tensor([-24.0 if lo else 24.0]),
    )
    params = {k: v.requires_grad_() for k, v in params.items()}
    y = parametric_eq(x, SR, **params)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    for name, value in params.items():
        assert torch.isfinite(value.grad).all(), name


def test_parametric_eq_band_shape_mismatch():
    params = peq_params(2, seed=5)
    params["band_qs"] = params["band_qs"][:, :3]
    with pytest.raises(ValueError, match="band_qs has 3 bands but band_freqs_hz has 4"):
        parametric_eq(torch.randn(2, 1, 100, dtype=torch.float64), SR, **params)


def test_sosfilt_matches_torchaudio_lfilter_where_available():
    """Cross-check with torchaudio when it imports (optional; its wheels are CUDA-linked)."""
    try:
        import torchaudio.functional as torchaudio_functional
    except (ImportError, OSError) as error:  # PyPI's wheel may not load next to this torch
        pytest.skip(f"torchaudio does not import: {error}")
    sos = random_sos(2, 1, seed=12)
    x = torch.randn(2, 1, 3000, dtype=torch.float64)
    norm = sos[:, 0] / sos[:, 0, 3:4]
    expected = torchaudio_functional.lfilter(
        x[:, 0], norm[:, 3:], norm[:, :3], clamp=False, batching=True
    )
    torch.testing.assert_close(sosfilt(x, sos)[:, 0], expected, atol=1e-9, rtol=1e-9)


# ------------------------------------------------------------------ issue 20 regressions
def test_parametric_eq_broadcasts_0d_tensors_next_to_per_item_parameters():
    """A 0-d tensor shelf next to (batch,) shelves and (n_bands,) bands: the documented
    broadcasting, checked against the same EQ with every parameter given per item."""
    torch.manual_seed(0)
    x = torch.randn(3, 2, 512, dtype=torch.float64)
    per_item = dict(
        low_shelf_freq_hz=torch.full((3,), 120.0), low_shelf_gain_db=torch.tensor([3.0, -2, 6]),
        band_freqs_hz=torch.tensor([[900.0, 3000.0]] * 3), band_gains_db=torch.zeros(3, 2),
        band_qs=torch.ones(3, 2), high_shelf_freq_hz=torch.full((3,), 6000.0),
        high_shelf_gain_db=torch.tensor([-4.0, 0, 2]), low_shelf_q=torch.full((3,), 0.707),
        high_shelf_q=torch.full((3,), 2.0),
    )  # fmt: skip
    mixed = dict(per_item, low_shelf_freq_hz=torch.tensor(120.0), band_freqs_hz=torch.tensor(
        [900.0, 3000.0]), band_gains_db=torch.zeros(2), band_qs=torch.ones(2),
        high_shelf_freq_hz=6000.0, high_shelf_q=torch.tensor(2.0))  # fmt: skip
    expected = parametric_eq(x, 44100, **per_item)
    torch.testing.assert_close(parametric_eq(x, 44100, **mixed), expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    "argument, value",
    [("low_shelf_freq_hz", 0.0), ("high_shelf_q", 0.0), ("low_shelf_gain_db", math.nan),
     ("high_shelf_freq_hz", 30000.0), ("band_qs", -1.0), ("band_gains_db", 500.0)],
)  # fmt: skip
def test_parametric_eq_errors_name_the_users_argument(argument, value):
    args = dict(low_shelf_freq_hz=100.0, low_shelf_gain_db=0.0,
                band_freqs_hz=torch.tensor([1000.0]), band_gains_db=torch.tensor([0.0]),
                band_qs=torch.tensor([1.0]), high_shelf_freq_hz=8000.0, high_shelf_gain_db=0.0,
                low_shelf_q=0.707, high_shelf_q=0.707)  # fmt: skip
    args[argument] = torch.tensor([value]) if argument.startswith("band") else value
    with pytest.raises(ValueError, match=rf"^{argument}\b"):
        parametric_eq(torch.zeros(1, 1, 64), 44100, **args)


@pytest.mark.parametrize("filter_type", FILTER_TYPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_biquad_designs_at_the_range_ends_are_accepted_and_stable(filter_type, dtype):
    """Designs at the band edges and the Q ends were refused as unstable in float32; every
    design inside the documented ranges must filter, with poles inside the unit circle
    (checked with numpy's roots in float64 on the design rounded to ``dtype``)."""
    sr = 48000.0
    edge = float(torch.tensor(sr / 2 * (1 - 1e-6), dtype=dtype))
    for freq_hz, q, gain_db in itertools.product(
        (1e-3, 1.0, 20.0, 23000.0, edge), (MIN_Q, 0.707, MAX_Q), (-MAX_ABS_GAIN_DB, 0.0,
                                                                  MAX_ABS_GAIN_DB)
    ):  # fmt: skip
        sos = biquad(filter_type, freq_hz, q, sr, gain_db, dtype=dtype)
        assert sos.dtype == dtype
        poles = np.roots(sos[0, 3:].double().numpy())
        assert np.abs(poles).max() <= 1 + 1e-6, (freq_hz, q, gain_db)
        y = sosfilt(torch.ones(1, 1, 4096, dtype=dtype), sos[:, None, :])
        assert bool(torch.isfinite(y).all()), (freq_hz, q, gain_db)


def test_biquad_design_in_float32_is_the_rounded_float64_design():
    """Exactly the rounded float64 design in the middle of the band; within two ulps where the
    rounding had to be moved inward (a pole near z = -1)."""
    for freq_hz, tol in ((1000.0, 0.0), (23999.0, 2.0**-22)):
        sos32 = biquad("peaking", torch.tensor([freq_hz]), 1000.0, 48000.0, 12.0)
        sos64 = biquad("peaking", torch.tensor([freq_hz], dtype=torch.float64), 1000.0, 48000,
                       12.0)  # fmt: skip
        assert sos32.dtype == torch.float32
        torch.testing.assert_close(sos32, sos64.float(), rtol=tol, atol=0)

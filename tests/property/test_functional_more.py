"""Property tests of the functional ops whose inputs are not one audio signal with scalar
parameters (see ``test_functional.py`` for those): the allpass cascades of every kind, FFT
convolution, the diode-clipper simulation, the DDSP synthesizers and GV post-filtering.

Each is driven over generated inputs inside its documented ranges (ends included) and must give
finite outputs and gradients; out-of-range or non-finite arguments raise ``ValueError`` naming
them. FFT convolution is also checked against ``numpy.convolve`` (the oracle).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import diffx.functional as F
from diffx.functional import circuits
from tests.property.strategies import MAX_SAMPLES, audio, sample_rate, value_in

FLOAT32_HEADROOM = 1e-3  # as test_effects: float32 judged where the exact values fit in it


def _finite(*tensors: torch.Tensor | None) -> bool:
    return all(t is None or bool(torch.isfinite(t).all()) for t in tensors)


def _values(draw, n: int, low: float, high: float, log: bool = False) -> list[float]:
    return draw(st.lists(value_in(low, high, log), min_size=n, max_size=n))


# -- allpass cascades of every kind ------------------------------------------------------------

KIND_PARAMS = {
    "first_order": ("first_order_coeff",),
    "second_order": ("pole_radius", "freq_hz"),
    "mixed": ("pole_radius", "freq_hz", "first_order_coeff"),
    "warped": ("pole_radius", "freq_hz", "first_order_coeff", "warp"),
    "warped_stretched": ("pole_radius", "freq_hz", "first_order_coeff", "warp"),
}
OPEN = 1 - 1e-6  # the open ends of (-1, 1) and [0, 1), approached as far as float32 resolves


def _allpass_params(draw, kind: str, batch: int, sr: float, dtype: torch.dtype) -> dict:
    n_second, n_first = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ranges = {"pole_radius": (0.0, OPEN, n_second), "freq_hz": (0.0, sr / 2, n_second),
              "first_order_coeff": (-OPEN, OPEN, n_first), "warp": (-OPEN, OPEN, 1)}  # fmt: skip
    params = {}
    for name in KIND_PARAMS[kind]:
        low, high, n = ranges[name]
        values = _values(draw, batch * n, low, high)
        params[name] = torch.tensor(values, dtype=dtype).reshape(batch, n)
    if "warp" in params:
        params["warp"] = params["warp"][:, 0]
    if kind == "warped_stretched":
        params["stretch"] = draw(st.integers(1, 8))
    return params


@pytest.mark.parametrize("kind", list(KIND_PARAMS))
@given(data=st.data())
def test_allpass_cascade_is_finite_and_passes_all_frequencies(kind, data):
    signal = data.draw(audio(max_samples=min(MAX_SAMPLES, 2**15)))
    sr = data.draw(sample_rate())
    x = signal.tensor().requires_grad_(True)
    params = _allpass_params(data.draw, kind, signal.batch, sr, signal.dtype)
    leaves = {k: v.requires_grad_(True) for k, v in params.items() if isinstance(v, torch.Tensor)}
    y = F.allpass_cascade(x, sr, kind, **params)
    assert y.shape == x.shape and _finite(y), kind
    (y * torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)).sum().backward()
    assert _finite(x.grad), f"{kind}: gradient wrt x"
    for name, leaf in leaves.items():
        assert _finite(leaf.grad), f"{kind}: gradient wrt {name}"
    # Allpass: the energy of a white-noise input comes out whole once the tail has decayed,
    # which a long float64 signal shows (poles near the unit circle ring longer: skip those).
    radius = params.get("pole_radius")
    if (signal.kind == "impulse" and signal.dtype == torch.float64 and signal.samples >= 4096
            and signal.level_db == 0.0 and (radius is None or float(radius.max()) < 0.9)
            and float(params.get("warp", torch.zeros(1)).abs().max()) < 0.9
            and float(params.get("first_order_coeff", torch.zeros(1)).abs().max()) < 0.9):
        energy = y.detach().square().sum(-1)
        torch.testing.assert_close(energy, torch.ones_like(energy), rtol=1e-3, atol=0)


@pytest.mark.parametrize(
    "name, value",
    [("pole_radius", 1.0), ("pole_radius", -0.1), ("pole_radius", math.nan),
     ("freq_hz", -1.0), ("freq_hz", 1e6), ("first_order_coeff", 1.0),
     ("first_order_coeff", -math.inf), ("warp", -1.0), ("warp", math.nan)],
)  # fmt: skip
def test_allpass_cascade_names_the_parameter_out_of_range(name, value):
    params = {"pole_radius": torch.tensor([[0.5]]), "freq_hz": torch.tensor([[1000.0]]),
              "first_order_coeff": torch.tensor([[0.3]]), "warp": torch.tensor([0.2])}  # fmt: skip
    bad = params[name].clone()
    bad.view(-1)[0] = value
    params[name] = bad
    with pytest.raises(ValueError, match=name):
        F.allpass_cascade(torch.zeros(1, 1, 64), 48000.0, "warped", **params)


# -- FFT convolution ----------------------------------------------------------------------------


@given(data=st.data())
def test_fft_convolve_is_numpys_convolution(data):
    signal = data.draw(audio(max_samples=min(MAX_SAMPLES, 2**14)))
    taps = data.draw(st.one_of(st.sampled_from((1, 2, 3, 255, 256)), st.integers(1, 4096)))
    mode = data.draw(st.sampled_from(("causal", "full")))
    seed = data.draw(st.integers(0, 2**31 - 1))
    h = torch.randn(signal.batch, signal.channels, taps,
                    generator=torch.Generator().manual_seed(seed), dtype=torch.float64)  # fmt: skip
    x64 = signal.tensor().double()
    rows = zip(x64.reshape(-1, signal.samples).numpy(), h.reshape(-1, taps).numpy())
    expected = np.stack([np.convolve(a, b) for a, b in rows])
    if mode == "causal":
        expected = expected[:, : signal.samples]
    x = signal.tensor().requires_grad_(True)
    y = F.fft_convolve(x, h.to(signal.dtype), mode)
    assert y.dtype == x.dtype
    scale = float(np.abs(x64.numpy()).max() * np.abs(h.numpy()).sum()) or 1.0
    # Round-off of an FFT convolution: a few ulps of the largest value, times log2(length).
    ulp = torch.finfo(signal.dtype).eps * math.log2(signal.samples + taps) * 8
    float32_max = torch.finfo(torch.float32).max
    if signal.dtype == torch.float32 and scale > float32_max * FLOAT32_HEADROOM:
        return  # the exact values do not fit in float32
    got = y.detach().double().reshape(expected.shape).numpy()
    assert np.abs(got - expected).max() <= ulp * scale, (np.abs(got - expected).max(), scale)
    y.sum().backward()
    assert _finite(x.grad)


# -- diode clipper (a simulation: no gradient) -------------------------------------------------


@given(data=st.data())
def test_diode_clipper_is_finite_and_silent_for_silence(data):
    signal = data.draw(audio(max_samples=min(MAX_SAMPLES, 2**11), batch=(1, 2), channels=(1,)))
    sr = data.draw(sample_rate())
    oversampling = data.draw(st.sampled_from((1, 2, 8)))
    nyquist = sr * oversampling / 2
    drive_db = data.draw(value_in(-circuits.MAX_ABS_OUTPUT_GAIN_DB, circuits.MAX_DRIVE_DB))
    cutoff_hz = data.draw(value_in(1.0, nyquist * OPEN, log=True))
    gain_db = data.draw(value_in(-circuits.MAX_ABS_OUTPUT_GAIN_DB, circuits.MAX_ABS_OUTPUT_GAIN_DB))
    x = signal.tensor()
    y = F.diode_clipper(x, sr, drive_db, cutoff_hz, oversampling, gain_db)
    assert y.shape == x.shape and y.dtype == x.dtype and _finite(y)
    if signal.kind == "silence":
        assert bool((y == 0).all())


@pytest.mark.parametrize(
    "kwargs, name",
    [({"drive_db": 200.0}, "drive_db"), ({"drive_db": math.nan}, "drive_db"),
     ({"cutoff_hz": 1e9}, "cutoff_hz"), ({"cutoff_hz": 0.0}, "cutoff_hz"),
     ({"oversampling": 0}, "oversampling"), ({"output_gain_db": 500.0}, "output_gain_db")],
)  # fmt: skip
def test_diode_clipper_names_the_parameter_out_of_range(kwargs, name):
    with pytest.raises(ValueError, match=name):
        F.diode_clipper(torch.zeros(1, 1, 64), 44100.0, **kwargs)


# -- DDSP synthesizers -------------------------------------------------------------------------


@given(data=st.data())
def test_harmonic_synth_is_finite_for_any_valid_controls(data):
    batch, frames = data.draw(st.sampled_from((1, 3))), data.draw(st.integers(1, 40))
    n_harmonics, hop = data.draw(st.integers(1, 64)), data.draw(st.integers(1, 256))
    sr = data.draw(sample_rate())
    dtype = data.draw(st.sampled_from((torch.float32, torch.float64)))
    # f0 up to twice Nyquist (every harmonic muted there), amplitudes and weights may be 0.
    f0 = torch.tensor(_values(data.draw, batch * frames, 0.0, sr), dtype=dtype)
    amp = torch.tensor(_values(data.draw, batch * frames, 0.0, 10.0), dtype=dtype)
    dist = torch.tensor(_values(data.draw, batch * frames * n_harmonics, 0.0, 1.0), dtype=dtype)
    f0 = f0.reshape(batch, frames).requires_grad_(True)
    amp = amp.reshape(batch, frames).requires_grad_(True)
    dist = dist.reshape(batch, frames, n_harmonics).requires_grad_(True)
    y = F.harmonic_synth(f0, amp, dist, sr, n_samples=frames * hop)
    assert y.shape == (batch, 1, frames * hop) and _finite(y)
    assert float(y.detach().abs().max()) <= float(amp.detach().max()) * (1 + 1e-5) + 1e-6
    y.sum().backward()
    assert _finite(f0.grad, amp.grad, dist.grad)


@given(data=st.data())
def test_filtered_noise_is_finite_and_silent_for_zero_magnitudes(data):
    batch, frames = data.draw(st.sampled_from((1, 3))), data.draw(st.integers(1, 20))
    n_bands, hop = data.draw(st.integers(2, 65)), data.draw(st.integers(1, 256))
    dtype = data.draw(st.sampled_from((torch.float32, torch.float64)))
    zero = data.draw(st.booleans())
    values = [0.0] * (batch * frames * n_bands) if zero else _values(
        data.draw, batch * frames * n_bands, 0.0, 100.0)  # fmt: skip
    mags = torch.tensor(values, dtype=dtype).reshape(batch, frames, n_bands).requires_grad_(True)
    y = F.filtered_noise(mags, frames * hop, generator=torch.Generator().manual_seed(0))
    assert y.shape == (batch, 1, frames * hop) and _finite(y)
    if zero:
        assert bool((y == 0).all())
    y.sum().backward()
    assert _finite(mags.grad)


@pytest.mark.parametrize("bad", ["negative", "nan"])
def test_synthesizers_name_bad_controls(bad):
    value = -1.0 if bad == "negative" else math.nan
    f0, amp = torch.full((1, 4), 100.0), torch.ones(1, 4)
    dist = torch.ones(1, 4, 3)
    with pytest.raises(ValueError, match="f0_hz"):
        F.harmonic_synth(f0.clone().fill_(value), amp, dist, 16000.0, n_samples=64)
    with pytest.raises(ValueError, match="amplitudes"):
        F.harmonic_synth(f0, amp.clone().fill_(value), dist, 16000.0, n_samples=64)
    with pytest.raises(ValueError, match="magnitudes"):
        F.filtered_noise(torch.full((1, 4, 5), value), 64)


# -- global-variance post-filtering ------------------------------------------------------------


@given(data=st.data())
def test_variance_scaling_is_finite_for_flat_and_wild_trajectories(data):
    frames, dims = data.draw(st.integers(1, 50)), data.draw(st.integers(1, 8))
    dtype = data.draw(st.sampled_from((torch.float32, torch.float64)))
    kind = data.draw(st.sampled_from(("flat", "noise", "huge", "tiny")))
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    if kind == "flat":
        x = torch.full((2, frames, dims), 3.0, dtype=torch.float64)
    else:
        scale = {"noise": 1.0, "huge": 1e6, "tiny": 1e-6}[kind]
        x = scale * torch.randn(2, frames, dims, generator=gen, dtype=torch.float64)
    gv = torch.tensor(_values(data.draw, dims, 0.0, 1e3), dtype=dtype)
    strength = data.draw(value_in(0.0, 1.0))
    offset = data.draw(st.integers(0, dims))
    x = x.to(dtype).requires_grad_(True)
    y = F.variance_scaling(x, gv, strength, offset)
    assert y.shape == x.shape and _finite(y)
    assert torch.equal(y[..., :offset], x[..., :offset])
    y.sum().backward()
    assert _finite(x.grad)

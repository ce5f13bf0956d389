"""Tests of diffx.analysis.style_transfer against analytic values, numpy, pyloudnorm and
auraloss."""

from __future__ import annotations

import math

import auraloss
import numpy as np
import pyloudnorm
import pytest
import torch
from scipy.signal import welch

from diffx.analysis.style_transfer import (
    crest_factor_db,
    parameter_error,
    rule_based_match,
    side_to_mid_db,
    spectral_centroid_hz,
    style_metrics,
)
from diffx.effects import Compressor, EffectChain, ParametricEQ
from diffx.io.audio import load_demo
from diffx.losses.loudness import SILENCE_LUFS

FS = 24000
BIN_HZ = FS / 2048  # resolution of the centroid's default STFT
SINE_CREST_DB = 10 * math.log10(2)  # peak / RMS of a sine: sqrt(2)


def sine(freq_hz, seconds=1.0, amplitude=0.5, fs=FS):
    """A sine in numpy float64, starting at phase 0 (the oracle's signal)."""
    n = np.arange(round(seconds * fs))
    return amplitude * np.sin(2 * np.pi * freq_hz * n / fs)


def as_batch(*signals, dtype=torch.float64):
    """``(len(signals), 1, samples)`` tensor from 1-D numpy arrays of equal length."""
    return torch.tensor(np.stack(signals)[:, None, :], dtype=dtype)


@pytest.fixture(scope="module")
def guitar():
    audio, sr = load_demo("guitar_clean", sample_rate=FS)
    assert sr == FS
    return audio  # (1, samples) float32


@pytest.fixture(scope="module")
def chain():
    return EffectChain([ParametricEQ(FS), Compressor(FS)])


def physical(chain, params):
    """``{"eq.<name>" / "comp.<name>": (batch,) numpy}`` physical values of the chain."""
    short = {"parametriceq": "eq", "compressor": "comp"}
    out = {}
    for name, value in chain.denormalize(params).items():
        effect, param = name.split(".")
        out[f"{short[effect]}.{param}"] = value.detach().double().numpy()
    return out


def effect_params(effect, **values):
    """Normalized ``(1, n)`` parameters of ``effect``: its defaults, with ``values`` (physical)."""
    params = effect.default_parameters(1, dtype=torch.float64).clone()
    for name, value in values.items():
        i = effect.param_names.index(name)
        params[0, i] = effect.param_specs[i].normalize(value)
    return params.float()


def pyloudnorm_lufs(x):
    meter = pyloudnorm.Meter(FS)
    return np.array([meter.integrated_loudness(item.T) for item in x.double().numpy()])


def third_octave_error_db(a, b):
    """Mean |dB difference| of the 1/3-octave band levels (40 Hz - 10 kHz, scipy's Welch
    estimate) of ``a`` and ``b`` after removing their mean level difference, per item."""
    f, pa = welch(a.double().numpy()[:, 0], fs=FS, nperseg=4096)
    _, pb = welch(b.double().numpy()[:, 0], fs=FS, nperseg=4096)
    edges = 40.0 * 2.0 ** (np.arange(25) / 3)  # 40 Hz .. 10.2 kHz
    bands = [(f >= lo) & (f < hi) for lo, hi in zip(edges[:-1], edges[1:])]
    la = np.stack([10 * np.log10(pa[:, m].mean(-1)) for m in bands], -1)
    lb = np.stack([10 * np.log10(pb[:, m].mean(-1)) for m in bands], -1)
    d = la - lb
    return np.abs(d - d.mean(-1, keepdims=True)).mean(-1)


# ------------------------------------------------------------------------------- descriptors
def test_centroid_of_a_sine_is_its_frequency():
    freqs = [440.0, 1234.5, 5000.3]  # off-bin
    x = as_batch(*(sine(f) for f in freqs))
    centroid = spectral_centroid_hz(x, FS)
    assert centroid.shape == (3,)
    np.testing.assert_allclose(centroid.numpy(), freqs, atol=BIN_HZ)
    float32 = spectral_centroid_hz(x.float(), FS)
    assert float32.dtype == torch.float32
    np.testing.assert_allclose(float32.numpy(), freqs, atol=BIN_HZ)


def test_centroid_of_white_noise_is_a_quarter_of_the_sample_rate():
    rng = np.random.default_rng(0)
    x = as_batch(rng.standard_normal(2 * FS) * 0.1)
    assert abs(float(spectral_centroid_hz(x, FS)[0]) - FS / 4) < 0.01 * FS / 4


def test_centroid_weights_frames_by_energy_channels_by_power_and_silence_reads_zero():
    half = sine(500.0, 1.0, amplitude=0.8)
    quiet_high = sine(3000.0, 1.0, amplitude=0.4)
    # two segments: frames carry energy 0.64 and 0.16, so the centroid is their weighted mean
    expected = (0.64 * 500.0 + 0.16 * 3000.0) / 0.8
    two_notes = np.concatenate([half, quiet_high])
    # a note then silence: the silent frames carry no weight
    note_then_silence = np.concatenate([half, np.zeros_like(half)])
    x = as_batch(two_notes, note_then_silence, np.zeros_like(two_notes))
    centroid = spectral_centroid_hz(x, FS).numpy()
    assert abs(centroid[0] - expected) < 2 * BIN_HZ
    assert abs(centroid[1] - 500.0) < BIN_HZ
    assert centroid[2] == 0.0
    # channels in opposite phase: their mean signal is silent, their mean power is not
    stereo = torch.tensor(np.stack([half, -half])[None])
    assert abs(float(spectral_centroid_hz(stereo, FS)[0]) - 500.0) < BIN_HZ


def test_side_to_mid_of_mono_wide_inverted_and_scaled_stereo():
    from diffx.functional import stereo_width

    rng = np.random.default_rng(2)
    left, right = rng.standard_normal((2, 4000))
    pairs = [(left, left), (left, right), (left, -left), (0 * left, 0 * left)]
    x = torch.tensor(np.stack([np.stack(p) for p in pairs]))
    got = side_to_mid_db(x).numpy()
    expected_uncorrelated = 10 * np.log10(np.sum((left - right) ** 2) / np.sum((left + right) ** 2))
    np.testing.assert_allclose(got, [-60.0, expected_uncorrelated, 60.0, -60.0], atol=1e-9)
    # A width w adds 20 log10 w dB (the side scaled, the mid kept).
    wider = side_to_mid_db(stereo_width(x[1:2], 2.5))
    np.testing.assert_allclose(wider.numpy(), [expected_uncorrelated + 20 * np.log10(2.5)])
    with pytest.raises(ValueError, match="stereo"):
        side_to_mid_db(x[:, :1])


def test_crest_factor_of_sine_square_and_a_numpy_signal():
    rng = np.random.default_rng(1)
    tone = sine(FS / 8, 0.5)  # 8 samples per period, one of them on the peak
    square = np.sign(sine(FS / 16, 0.5) + 1e-9) * 0.3
    x = as_batch(tone, square, np.zeros_like(tone))
    np.testing.assert_allclose(crest_factor_db(x).numpy(), [SINE_CREST_DB, 0.0, 0.0], atol=1e-9)
    assert abs(SINE_CREST_DB - 3.0103) < 1e-4
    # a stereo signal: peak and RMS over both channels, computed with numpy
    signal = rng.standard_normal((2, 4000)) * np.array([[0.2], [0.05]]) + 0.01
    expected = 20 * np.log10(np.abs(signal).max() / np.sqrt(np.mean(signal**2)))
    measured = crest_factor_db(torch.tensor(signal[None]))
    np.testing.assert_allclose(measured.numpy(), [expected], rtol=1e-12)
    # a float32 signal whose squares underflow reads the same as its full-scale copy
    tiny = torch.tensor(tone[None, None] * 1e-30, dtype=torch.float32)
    assert abs(float(crest_factor_db(tiny)[0]) - SINE_CREST_DB) < 1e-4


def test_descriptors_reject_bad_input():
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        crest_factor_db(torch.tensor([[[0.0, float("nan")]]]))
    with pytest.raises(ValueError, match="x must be shaped"):
        spectral_centroid_hz(torch.zeros(100), FS)
    with pytest.raises(ValueError, match="hop_length"):
        spectral_centroid_hz(torch.zeros(1, 1, 100), FS, hop_length=0)


# ----------------------------------------------------------------------------------- metrics
def test_style_metrics_match_pyloudnorm_auraloss_and_analytic_values():
    rng = np.random.default_rng(2)
    noise = rng.standard_normal(FS) * 0.1
    output = as_batch(sine(1000.0), noise, dtype=torch.float32)
    target = as_batch(sine(3000.0, amplitude=0.25), noise * 0.5, dtype=torch.float32)
    metrics = style_metrics(output, target, FS)
    assert set(metrics) == {"mrstft", "lufs_error_lu", "centroid_error_hz", "crest_error_db"}
    for value in metrics.values():
        assert value.shape == (2,) and value.dtype == torch.float32

    lufs = np.abs(pyloudnorm_lufs(output) - pyloudnorm_lufs(target))
    np.testing.assert_allclose(metrics["lufs_error_lu"].numpy(), lufs, rtol=1e-6)
    assert abs(float(metrics["lufs_error_lu"][1]) - 20 * math.log10(2)) < 1e-3  # half amplitude

    reference = auraloss.freq.MultiResolutionSTFTLoss()
    expected = [float(reference(output[i : i + 1], target[i : i + 1])) for i in range(2)]
    np.testing.assert_allclose(metrics["mrstft"].numpy(), expected, rtol=1e-6)

    assert abs(float(metrics["centroid_error_hz"][0]) - 2000.0) < 2 * BIN_HZ
    assert float(metrics["centroid_error_hz"][1]) < 1e-2  # a scaled copy
    # both sines have a sample on their peak (24 and 8 samples per period)
    np.testing.assert_allclose(metrics["crest_error_db"].numpy(), [0.0, 0.0], atol=1e-5)


def test_style_metrics_of_silence_are_finite():
    rng = np.random.default_rng(3)
    noise = as_batch(rng.standard_normal(FS) * 0.1)
    silence = torch.zeros_like(noise)
    both_silent = style_metrics(silence, silence, FS)
    for value in both_silent.values():
        assert bool(torch.isfinite(value).all())
    assert float(both_silent["lufs_error_lu"][0]) == 0.0
    against_noise = style_metrics(silence, noise, FS)
    expected = abs(SILENCE_LUFS - pyloudnorm_lufs(noise)[0])
    assert abs(float(against_noise["lufs_error_lu"][0]) - expected) < 1e-9
    assert bool(torch.isfinite(against_noise["mrstft"]).all())


def test_style_metrics_reject_bad_input():
    x = torch.zeros(1, 1, FS)
    with pytest.raises(ValueError, match="differ in shape"):
        style_metrics(x, torch.zeros(1, 1, FS + 1), FS)
    bad = x.clone()
    bad[0, 0, 5] = float("inf")
    with pytest.raises(ValueError, match="target contains 0 NaN and 1 Inf"):
        style_metrics(x, bad, FS)
    short = torch.zeros(1, 1, round(0.3 * FS))
    with pytest.raises(ValueError, match="output has 7200 samples; at least 9600"):
        style_metrics(short, short, FS)


def test_parameter_error_is_the_mean_absolute_difference():
    predicted = torch.tensor([[0.0, 0.0, 1.0], [0.25, 0.5, 0.75]])
    true = torch.tensor([[0.5, 1.0, 1.0], [0.25, 0.25, 0.25]])
    np.testing.assert_allclose(parameter_error(predicted, true).numpy(), [0.5, 0.25])
    assert float(parameter_error(true, true).abs().max()) == 0.0
    with pytest.raises(ValueError, match="true must hold normalized parameters.*column 2"):
        parameter_error(predicted, torch.tensor([[0.5, 1.0, 12.0], [0.2, 0.2, 0.2]]))
    with pytest.raises(ValueError, match="predicted contains NaN"):
        parameter_error(torch.full((2, 3), float("nan")), true)
    with pytest.raises(ValueError, match="differ in shape"):
        parameter_error(predicted, true[:, :2])
    with pytest.raises(ValueError, match=r"predicted must be a float tensor \(batch, n_params\)"):
        parameter_error(predicted[0], true[0])


# ------------------------------------------------------------------------ rule-based baseline
def test_matching_the_input_itself_is_the_identity(guitar, chain):
    x = guitar[None, :, : round(1.5 * FS)]
    output, params = rule_based_match(x, x.clone(), FS)
    assert params.shape == (1, chain.parameter_size()) and params.dtype == torch.float32
    assert bool(((params >= 0) & (params <= 1)).all())
    p = physical(chain, params)
    for name in ("low_shelf", "band1", "band2", "band3", "band4", "high_shelf"):
        assert abs(p[f"eq.{name}_gain_db"][0]) < 0.05, name
    assert p["comp.ratio"][0] < 1.01
    assert abs(p["comp.makeup_gain_db"][0]) < 0.2
    assert abs(pyloudnorm_lufs(output)[0] - pyloudnorm_lufs(x)[0]) < 0.2
    torch.testing.assert_close(output, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(output, chain(x, params), atol=1e-6, rtol=0)


def test_fitted_eq_finds_shelves_on_another_crop(guitar, chain):
    # The reference is another crop of the same passage (0.1 s later, so not sample-aligned
    # but with the same notes) through +6 dB low shelf and -6 dB high shelf.
    eq = ParametricEQ(FS)
    true_eq = effect_params(eq, low_shelf_gain_db=6.0, high_shelf_gain_db=-6.0)
    n, shift = 2 * FS, round(0.1 * FS)
    starts = (0, 4 * FS)
    x = torch.stack([guitar[:, s : s + n] for s in starts])
    reference = torch.cat([eq(guitar[None, :, s + shift : s + shift + n], true_eq) for s in starts])
    output, params = rule_based_match(x, reference, FS)
    p = physical(chain, params)
    assert np.all(p["eq.low_shelf_gain_db"] > 3.0), p["eq.low_shelf_gain_db"]
    assert np.all(p["eq.high_shelf_gain_db"] < -3.0), p["eq.high_shelf_gain_db"]
    before = third_octave_error_db(x, reference)
    after = third_octave_error_db(output, reference)
    assert np.all(after < 0.5 * before), (before, after)
    assert np.all(np.abs(pyloudnorm_lufs(output) - pyloudnorm_lufs(reference)) < 0.5)
    # each item is matched on its own: the second alone gets the same settings
    _, alone = rule_based_match(x[1:], reference[1:], FS)
    torch.testing.assert_close(alone, params[1:], atol=1e-5, rtol=0)


def test_compressor_brings_the_crest_factor_towards_a_compressed_reference(guitar, chain):
    comp = Compressor(FS)
    hard = effect_params(comp, threshold_db=-30.0, ratio=8.0, attack_ms=0.1, release_ms=50.0)
    x = guitar[None, :, : round(1.5 * FS)]
    reference = comp(x, hard)
    crest_x, crest_ref = float(crest_factor_db(x)[0]), float(crest_factor_db(reference)[0])
    assert crest_x - crest_ref > 2.0  # the reference is audibly more compressed
    output, params = rule_based_match(x, reference, FS)
    p = physical(chain, params)
    assert p["comp.ratio"][0] > 1.5
    assert abs(float(crest_factor_db(output)[0]) - crest_ref) < 0.5 * (crest_x - crest_ref)
    assert abs(pyloudnorm_lufs(output)[0] - pyloudnorm_lufs(reference)[0]) < 0.5


def test_silent_input_or_reference_gets_identity_settings(guitar, chain):
    clip = guitar[:, :FS]
    x = torch.stack([clip, torch.zeros_like(clip)])
    reference = torch.stack([torch.zeros_like(clip), clip])
    output, params = rule_based_match(x, reference, FS)
    identity = chain.default_parameters(2)
    p = physical(chain, params)
    for name in ("low_shelf", "band1", "band2", "band3", "band4", "high_shelf"):
        np.testing.assert_allclose(p[f"eq.{name}_gain_db"], 0.0, atol=1e-5)
    np.testing.assert_allclose(p["comp.ratio"], 1.0, atol=1e-6)
    np.testing.assert_allclose(p["comp.makeup_gain_db"], 0.0, atol=1e-5)
    assert params.shape == identity.shape
    torch.testing.assert_close(output[0], clip, atol=1e-5, rtol=0)
    assert float(output[1].abs().max()) == 0.0


def test_rule_based_match_rejects_bad_input(guitar):
    x = guitar[None, :, :FS].clone()
    bad = x.clone()
    bad[0, 0, 10] = float("nan")
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        rule_based_match(bad, x, FS)
    bad[0, 0, 10] = float("inf")
    with pytest.raises(ValueError, match="reference contains 0 NaN and 1 Inf"):
        rule_based_match(x, bad, FS)
    with pytest.raises(ValueError, match="same number of items"):
        rule_based_match(x, torch.cat([x, x]), FS)
    with pytest.raises(ValueError, match="reference has 2400 samples"):
        rule_based_match(x, x[..., :2400], FS)
    with pytest.raises(ValueError, match="n_iterations"):
        rule_based_match(x, x, FS, n_iterations=-1)

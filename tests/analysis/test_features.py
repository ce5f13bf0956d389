"""DDSP control features: A-weighted loudness against analytic levels and the IEC 61672 table,
CREPE f0 against known sine frequencies, note detection and quantile mapping against numpy."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from diffx.analysis.features import (
    LOUDNESS_FLOOR_DB,
    a_weighted_loudness_db,
    adjust_loudness,
    cents,
    crepe_pitch,
    detect_notes,
    frame_hop,
    import_torchcrepe,
    loudness_quantiles,
    map_quantiles,
    n_frames,
)

SR = 16000
HOP = 64  # 16 kHz / 250 Hz


def sine(freq_hz: float, amplitude: float, seconds: float = 1.0, sr: int = SR) -> torch.Tensor:
    t = np.arange(round(seconds * sr)) / sr
    return torch.tensor(amplitude * np.sin(2 * np.pi * freq_hz * t))


# IEC 61672-1:2013 Table 3, A-weighting (dB), nominal frequencies (exact base-10 frequencies
# differ from the nominal ones by < 1 %, which moves these values by < 0.1 dB).
IEC_A_WEIGHTING_DB = {100.0: -19.1, 1000.0: 0.0, 4000.0: 1.0, 6300.0: -0.1}


@pytest.mark.parametrize("freq_hz", sorted(IEC_A_WEIGHTING_DB))
@pytest.mark.parametrize("amplitude", [1.0, 0.1])
def test_loudness_of_a_sine_is_its_mean_square_plus_the_a_weight(freq_hz, amplitude):
    # The window spans many periods, so the leakage shifts no power out of the weighting's
    # slope by more than a few hundredths of a dB.
    loudness = a_weighted_loudness_db(sine(freq_hz, amplitude), SR)
    expected = 20 * np.log10(amplitude / np.sqrt(2)) + IEC_A_WEIGHTING_DB[freq_hz]
    middle = loudness[50:-50]  # frames whose window lies inside the clip
    np.testing.assert_allclose(middle.numpy(), expected, atol=0.15)


def test_loudness_of_white_noise_is_its_variance_times_the_mean_a_weight():
    from diffx.losses import a_weighting_db

    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(0.0, 0.2, 10 * SR))
    loudness = a_weighted_loudness_db(x, SR)[50:-50]
    # Flat spectrum: the expected weighted power is the variance times the mean weight over
    # frequency (independently computed on a fine grid up to Nyquist).
    grid = np.linspace(1.0, SR / 2, 200001)
    mean_weight = np.mean(10 ** (a_weighting_db(grid) / 10))
    expected = 10 * np.log10(0.04 * mean_weight)
    mean_power_db = 10 * np.log10(np.mean(10 ** (loudness.numpy() / 10)))
    assert abs(mean_power_db - expected) < 0.1


def test_loudness_frames_are_centred_on_multiples_of_the_hop():
    # A sine switched on exactly at frame 100's centre: that frame's Hann window sees the tone
    # over its second half, which holds half the window's energy: -3.01 dB.
    x = sine(1000.0, 0.5)
    x[: 100 * HOP] = 0.0
    loudness = a_weighted_loudness_db(x, SR)
    steady = 20 * np.log10(0.5 / np.sqrt(2))
    assert abs(float(loudness[100]) - (steady - 10 * np.log10(2))) < 0.1
    assert float(loudness[80]) == LOUDNESS_FLOOR_DB  # window wholly before the onset


@pytest.mark.parametrize("n", [1, 63, 64, 65, 16000])
def test_frame_count_is_ceil_of_samples_over_hop(n):
    assert a_weighted_loudness_db(torch.zeros(2, n), SR).shape == (2, n_frames(n, HOP))
    assert n_frames(n, HOP) == -(-n // HOP)


def test_loudness_of_silence_is_the_floor_with_a_zero_gradient():
    x = torch.zeros(1, 4000, requires_grad=True)
    loudness = a_weighted_loudness_db(x, SR)
    assert torch.all(loudness == LOUDNESS_FLOOR_DB)
    loudness.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.all(x.grad == 0)


def test_loudness_gradient_matches_finite_differences():
    x = (0.1 * torch.randn(1, 512, dtype=torch.float64)).requires_grad_()
    torch.autograd.gradcheck(lambda a: a_weighted_loudness_db(a, SR, n_fft=256), (x,))


def test_loudness_rejects_bad_input():
    with pytest.raises(ValueError, match="audio"):
        a_weighted_loudness_db(torch.tensor([0.0, float("nan")]), SR)
    with pytest.raises(ValueError, match="frame_rate_hz"):
        a_weighted_loudness_db(torch.zeros(100), 44100)  # 44100 / 250 is not whole
    with pytest.raises(ValueError, match="samples"):
        a_weighted_loudness_db(torch.zeros(0), SR)


def test_frame_hop_names_a_bad_rate():
    assert frame_hop(16000, 250) == 64
    with pytest.raises(ValueError, match="sample_rate"):
        frame_hop(16000.0, 250)


# -- CREPE ----------------------------------------------------------------------------------


@pytest.mark.parametrize("freq_hz", [110.0, 261.63, 440.0, 987.77])
def test_crepe_finds_the_frequency_of_a_sine(freq_hz):
    f0, confidence = crepe_pitch(sine(freq_hz, 0.5, 0.6).float(), SR, model="tiny")
    assert f0.shape == confidence.shape == (n_frames(round(0.6 * SR), HOP),)
    inner = slice(20, -20)  # frames whose 64 ms CREPE window lies inside the clip
    error = cents(f0[inner].double(), torch.tensor(freq_hz, dtype=torch.float64)).abs()
    # CREPE's published accuracy is about 10 cents on clean monophonic audio (Kim et al., 2018).
    assert float(error.max()) < 20.0
    assert float(confidence[inner].min()) > 0.7


def test_crepe_resamples_and_keeps_frames_on_time():
    # At 48 kHz the hop is 192 samples; the frames must be the same as at 16 kHz.
    x16 = sine(440.0, 0.5, 0.5).float()
    x48 = sine(440.0, 0.5, 0.5, sr=48000).float()
    f16, _ = crepe_pitch(x16, SR, model="tiny")
    f48, _ = crepe_pitch(x48, 48000, model="tiny")
    assert f16.shape == f48.shape
    assert float(cents(f48[20:-20].double(), f16[20:-20].double()).abs().max()) < 10.0


def test_crepe_is_deterministic_and_batched_like_single_clips():
    x = torch.stack([sine(330.0, 0.5, 0.4).float(), sine(660.0, 0.3, 0.4).float()])
    f_batch, c_batch = crepe_pitch(x[:, None], SR, model="tiny")
    assert f_batch.shape == (2, 1, n_frames(x.shape[-1], HOP))
    f_first, c_first = crepe_pitch(x[0], SR, model="tiny")
    torch.testing.assert_close(f_batch[0, 0], f_first)
    torch.testing.assert_close(c_batch[0, 0], c_first)


def test_crepe_confidence_is_low_on_noise_and_silence():
    rng = np.random.default_rng(1)
    noise = torch.tensor(rng.uniform(-0.5, 0.5, SR // 2), dtype=torch.float32)
    _, confidence = crepe_pitch(noise, SR, model="tiny")
    assert float(confidence.median()) < 0.5
    _, confidence = crepe_pitch(torch.zeros(4000), SR, model="tiny")
    assert float(confidence.max()) < 0.5


def test_crepe_rejects_bad_input():
    with pytest.raises(ValueError, match="audio"):
        crepe_pitch(torch.tensor([0.0, float("inf")]), SR)
    with pytest.raises(ValueError, match="model"):
        crepe_pitch(torch.zeros(1000), SR, model="large")
    with pytest.raises(ValueError, match="mono"):
        crepe_pitch(torch.zeros(1, 2, 1000), SR)


def test_missing_torchcrepe_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcrepe", None)  # makes `import torchcrepe` fail
    with pytest.raises(ImportError, match="torchcrepe"):
        import_torchcrepe()


# -- notes and loudness mapping ---------------------------------------------------------------


def test_detect_notes_marks_confident_loud_frames_only():
    frames = 300
    confidence = np.r_[np.full(100, 0.9), np.full(100, 0.1), np.full(100, 0.9)]
    loudness = np.r_[np.full(100, -20.0), np.full(100, -20.0), np.full(100, -90.0)]
    mask, strength = detect_notes(loudness, confidence)
    assert mask.shape == strength.shape == (frames,)
    assert mask[10:90].all() and not mask[110:290].any()
    assert np.all(strength[mask] == 1.0)
    assert np.all((strength >= 0) & (strength <= 1))
    with pytest.raises(ValueError, match="same frames"):
        detect_notes(loudness[:10], confidence)


def test_map_quantiles_moves_one_distribution_onto_another():
    rng = np.random.default_rng(2)
    source = rng.normal(-40.0, 5.0, 20000)
    target = rng.uniform(-30.0, -10.0, 20000)
    mapped = map_quantiles(source, loudness_quantiles(source), loudness_quantiles(target))
    probabilities = np.linspace(0.05, 0.95, 19)
    np.testing.assert_allclose(
        np.quantile(mapped, probabilities), np.quantile(target, probabilities), atol=0.3
    )
    # Beyond the ends it shifts by the end offsets, and it never reverses the order.
    edges = map_quantiles(np.array([-100.0, 0.0]), np.array([-50.0, -30.0]), np.array([-5, -1]))
    np.testing.assert_allclose(edges, [-55.0, 29.0])
    assert np.all(np.diff(map_quantiles(np.sort(source), *map(loudness_quantiles, (source,
                                                                                   target)))) >= 0)


def test_adjust_loudness_matches_training_notes_and_quiets_the_rest():
    frames = 400
    rng = np.random.default_rng(3)
    loudness = rng.uniform(-50.0, -30.0, frames)
    confidence = np.r_[np.full(300, 0.95), np.full(100, 0.05)]
    target_q = loudness_quantiles(rng.uniform(-20.0, -5.0, 5000))
    adjusted, mask = adjust_loudness(loudness, confidence, target_q)
    notes = adjusted[mask]
    assert abs(np.median(notes) - np.median(target_q)) < 1.0
    assert notes.min() >= target_q[0] - 1e-9 and notes.max() <= target_q[-1] + 1e-9
    # Off frames: the same map, then 20 dB down (their confidence is far under the threshold).
    off = ~mask
    off[:310] = False  # past the smoothing window's reach into the note
    mapped = map_quantiles(loudness, loudness_quantiles(loudness[mask]), target_q)
    np.testing.assert_allclose(adjusted[off], mapped[off] - 20.0 * (1 - 0.05 / 0.6), atol=1e-9)


def test_viterbi_tracks_real_speech_like_the_frame_by_frame_decoder():
    # torchcrepe's own Viterbi decoder slides to the edge of the range on this clip (32 Hz);
    # CREPE's decoding must agree with the per-frame argmax wherever CREPE is confident.
    from diffx.io import load_demo

    audio, _ = load_demo("voice", sample_rate=SR)
    f0_path, confidence = crepe_pitch(audio[0], SR, model="tiny", decoder="viterbi")
    f0_frame, _ = crepe_pitch(audio[0], SR, model="tiny", decoder="argmax")
    confident = confidence > 0.8
    assert confident.sum() > 30
    gap = cents(f0_path[confident].double(), f0_frame[confident].double()).abs()
    assert float((gap < 50).double().mean()) > 0.95
    # A man's speaking voice: autocorrelation of the clip puts it at 74-124 Hz.
    assert 70 < float(f0_path[confident].median()) < 130

"""Style-transfer encoders and controller: front end against NumPy, batch independence,
any length, silence and full scale, the controller's map, and named input errors."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import scipy.signal
import torch

from diffx.nn import Controller, SpectralEncoder, TCNEncoder
from diffx.nn.style_transfer import (
    FRAME_LEVEL_QUANTILES,
    LEVEL_BAND_LOW_HZ,
    LEVEL_SCALE_DB,
    MAGNITUDE_EPS,
    STD_EPS,
)

SR = 24000


def spectral(**kwargs) -> SpectralEncoder:
    torch.manual_seed(0)
    args = dict(sample_rate=SR, n_fft=256, hop_length=64, channels=(4, 8, 8), embed_dim=16)
    args.update(kwargs)
    return SpectralEncoder(**args)


def waveform(**kwargs) -> TCNEncoder:
    torch.manual_seed(0)
    args = dict(embed_dim=16, n_blocks=3, channels=6, kernel_size=5, dilation_growth=3)
    args.update(kwargs)
    return TCNEncoder(**args)


def spectral_levels(**kwargs) -> SpectralEncoder:
    return spectral(level_bands=12, **kwargs)


ENCODERS = {"spectral": spectral, "spectral_levels": spectral_levels, "tcn": waveform}


def test_spectrogram_matches_numpy_frames():
    encoder = spectral()
    torch.manual_seed(1)
    x = torch.randn(2, 1, 1000, dtype=torch.float64)
    spec = encoder.double().spectrogram(x)
    n_frames = 1 + (1000 - 256) // 64
    assert spec.shape == (2, 1, 129, n_frames)
    window = scipy.signal.get_window("hann", 256)  # periodic, as for spectral analysis
    for b in range(2):
        frames = np.stack([x[b, 0, i * 64 : i * 64 + 256].numpy() for i in range(n_frames)])
        power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # (frames, bins)
        expected = (power + MAGNITUDE_EPS) ** 0.15
        np.testing.assert_allclose(spec[b, 0].numpy(), expected.T, rtol=1e-10)


def test_spectrogram_of_a_full_scale_sine_is_n_fft_over_4_to_the_0_3():
    # A sine on bin 32 of a 256-point periodic Hann frame: |X| = A * sum(w) / 2 = 256 / 4.
    encoder = spectral()
    t = torch.arange(2048, dtype=torch.float64)
    x = torch.sin(2 * math.pi * 32 * t / 256).view(1, 1, -1)
    spec = encoder.double().spectrogram(x)[0, 0]
    torch.testing.assert_close(spec[32], torch.full_like(spec[32], 64.0**0.3), rtol=1e-9, atol=0)
    # Silence sits at the documented floor.
    floor = encoder.spectrogram(torch.zeros(1, 1, 256, dtype=torch.float64))
    torch.testing.assert_close(floor, torch.full_like(floor, MAGNITUDE_EPS**0.15))


def test_level_features_match_welch_numpy_frames_and_the_waveform():
    encoder = spectral(level_bands=12).double()
    torch.manual_seed(3)
    T = 3000
    t = torch.arange(T, dtype=torch.float64)
    x = torch.stack(
        [
            0.3 * torch.randn(T, dtype=torch.float64),
            0.5 * torch.sin(2 * math.pi * 1000 * t / SR) * torch.linspace(0.1, 1, T),
        ]
    ).unsqueeze(1)
    features = encoder.level_features(x).numpy() * LEVEL_SCALE_DB
    assert features.shape == (2, 12 + len(FRAME_LEVEL_QUANTILES) + 3)
    weights = encoder.band_weights.double().numpy()
    window = scipy.signal.get_window("hann", 256)
    n_frames = 1 + (T - 256) // 64
    for b in range(2):
        signal = x[b, 0].numpy()
        # Long-term spectrum: Welch's one-sided density (V^2/Hz) is twice the per-bin
        # per-sample power (except at 0 and Nyquist) times n_fft / fs.
        _, psd = scipy.signal.welch(
            signal, fs=SR, window=window, nperseg=256, noverlap=192, detrend=False
        )
        per_bin = psd * SR / 256 / 2
        per_bin[[0, -1]] *= 2
        expected_bands = 10 * np.log10(weights @ per_bin + 1e-10)
        np.testing.assert_allclose(features[b, :12], expected_bands, atol=1e-6)
        # Frame levels: mean square of each Hann-windowed frame, over the window's energy.
        frames = np.stack([signal[i * 64 : i * 64 + 256] for i in range(n_frames)])
        frame_power = ((frames * window) ** 2).sum(-1) / (window**2).sum()
        expected_frames = 10 * np.log10(np.quantile(frame_power, FRAME_LEVEL_QUANTILES) + 1e-10)
        np.testing.assert_allclose(features[b, 12:16], expected_frames, atol=1e-6)
        rms_db = 10 * np.log10(np.mean(signal**2) + 1e-10)
        peak_db = 10 * np.log10(np.max(signal**2) + 1e-10)
        np.testing.assert_allclose(features[b, 16:], [rms_db, peak_db, peak_db - rms_db])
    # Analytic anchors: white noise of std 0.3 sits near -10.5 dB RMS; the ramped sine peaks
    # at its last trough, sample 2994 (24 samples per cycle), where the ramp is 0.1 + 0.9 x
    # 2994 / 2999.
    assert abs(features[0, 16] - 20 * math.log10(0.3)) < 0.2
    expected_peak = 0.5 * (0.1 + 0.9 * 2994 / 2999)
    assert features[1, 17] == pytest.approx(20 * math.log10(expected_peak), abs=1e-6)
    # Silence sits at the -100 dB floor (0 dB crest), finite.
    silent = encoder.level_features(torch.zeros(1, 1, 512, dtype=torch.float64))[0]
    expected = torch.full_like(silent, -100 / LEVEL_SCALE_DB)
    expected[-1] = 0
    torch.testing.assert_close(silent, expected)


def test_level_bands_split_log_frequency_from_40_hz_to_nyquist():
    encoder = spectral(level_bands=12)
    bin_hz = np.arange(129) * SR / 256
    edges = np.geomspace(LEVEL_BAND_LOW_HZ, SR / 2, 13)
    weights = encoder.band_weights.numpy()
    np.testing.assert_allclose(weights.sum(1), 1, rtol=1e-6)  # averages
    for k, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        inside = (bin_hz >= low) & ((bin_hz < high) | (k == 11) & (bin_hz == SR / 2))
        if inside.any():
            np.testing.assert_allclose(weights[k], inside / inside.sum(), rtol=1e-6)
        else:  # narrower than a bin: the nearest bin to its centre
            assert weights[k].argmax() == np.abs(bin_hz - np.sqrt(low * high)).argmin()
    with pytest.raises(ValueError, match="level_bands"):
        spectral().level_features(torch.zeros(1, 1, 512))


@pytest.mark.parametrize("kind", ENCODERS)
def test_each_item_alone_equals_the_batch(kind):
    encoder = ENCODERS[kind]().eval()
    torch.manual_seed(2)
    x = torch.randn(4, 1, 3000) * torch.tensor([0.01, 0.1, 0.5, 1.0]).view(4, 1, 1)
    with torch.no_grad():
        batched = encoder(x)
        for b in range(4):
            torch.testing.assert_close(encoder(x[b : b + 1]), batched[b : b + 1])


@pytest.mark.parametrize("kind", ENCODERS)
@pytest.mark.parametrize("T", [256, 257, 1000, 4801])
def test_any_length_gives_one_finite_embedding(kind, T):
    encoder = ENCODERS[kind]()
    y = encoder(torch.randn(2, 1, T))
    assert y.shape == (2, 16) and torch.isfinite(y).all()


@pytest.mark.parametrize("kind", ENCODERS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("signal", ["silence", "full_scale"])
def test_silence_and_full_scale_give_finite_embeddings_and_gradients(kind, train, signal):
    encoder = ENCODERS[kind]().train(train)
    if signal == "silence":
        x = torch.zeros(2, 1, 2000)
    else:  # a full-scale square wave: every sample at +-1
        x = torch.sign(torch.sin(torch.arange(2000) * 0.05)).expand(2, 1, -1).contiguous()
    x.requires_grad_(True)
    y = encoder(x)
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(y).all()
    assert torch.isfinite(x.grad).all()
    for name, p in encoder.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_spectral_front_end_gradient_at_silence_is_finite_and_zero():
    # d/dx (|X|^2 + eps)^0.15 = 0.15 (|X|^2 + eps)^-0.85 * d|X|^2/dx, and d|X|^2/dx = 0 at x = 0.
    encoder = spectral()
    x = torch.zeros(1, 1, 512, requires_grad=True)
    encoder.spectrogram(x).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("kind", ENCODERS)
def test_embedding_depends_on_level(kind):
    # The normalization must not discard the level: a controller sets gains from it.
    encoder = ENCODERS[kind]().eval()
    x = torch.randn(1, 1, 3000) * 0.5
    with torch.no_grad():
        loud, quiet = encoder(x), encoder(0.1 * x)
    assert float((loud - quiet).abs().max()) > 1e-3


def test_tcn_encoder_pools_mean_and_std_of_its_features():
    encoder = waveform(stride=3).double()
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(2, 1, 1000, dtype=torch.float64)
    h = encoder.features(x)
    assert h.shape == (2, 6, math.ceil(1000 / 3**3))
    hn = h.detach().numpy()
    pooled = np.concatenate([hn.mean(-1), np.sqrt(hn.var(-1) + STD_EPS)], axis=-1)
    w, b = encoder.proj.weight.detach().numpy(), encoder.proj.bias.detach().numpy()
    np.testing.assert_allclose(encoder(x).detach().numpy(), pooled @ w.T + b, rtol=1e-10)
    # One frame of the last block reads 1 + sum_i (k - 1) growth^i stride^i input samples.
    assert encoder.receptive_field == 1 + sum(4 * 3**i * 3**i for i in range(3))


def test_default_sizes():
    assert SpectralEncoder(SR)(torch.randn(1, 1, 1024)).shape == (1, 128)
    assert TCNEncoder()(torch.randn(1, 1, 1024)).shape == (1, 128)


@pytest.mark.parametrize("kind", ENCODERS)
@pytest.mark.parametrize(
    "shape, message",
    [
        ((2, 1000), r"x must be shaped \(batch, channels, samples\)"),
        ((2, 2, 1000), r"x must be shaped \(batch, 1, samples\)"),
        ((2, 1, 1, 1000), r"x must be shaped \(batch, 1, samples\)"),
        ((2, 1, 255), "x must have at least 256 samples, got 255"),
    ],
)
def test_bad_audio_is_named(kind, shape, message):
    encoder = spectral() if kind == "spectral" else waveform(min_samples=256)
    with pytest.raises(ValueError, match=message):
        encoder(torch.randn(*shape))


@pytest.mark.parametrize("kind", ENCODERS)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_audio_is_named(kind, value):
    x = torch.randn(2, 1, 1000)
    x[1, 0, 500] = value
    with pytest.raises(ValueError, match="x contains"):
        ENCODERS[kind]()(x)


def test_controller_is_the_papers_mlp_with_a_sigmoid():
    torch.manual_seed(0)
    controller = Controller(embed_dim=8, n_params=5, hidden=12, n_layers=3).double()
    linears = [m for m in controller.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 12), (12, 12), (12, 5)]
    a, r = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
    h = np.concatenate([a.numpy(), r.numpy()], axis=-1)
    for i, m in enumerate(linears):
        if i:
            h = np.where(h >= 0, h, 0.01 * h)  # LeakyReLU(0.01)
        h = h @ m.weight.detach().numpy().T + m.bias.detach().numpy()
    expected = 1 / (1 + np.exp(-h))
    out = controller(a, r)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12)
    assert out.shape == (4, 5) and bool(((out > 0) & (out < 1)).all())
    # The order of the embeddings matters: input first, reference second.
    assert not torch.allclose(controller(r, a), out)


def test_controller_defaults_and_single_layer():
    out = Controller(128, 18)(torch.randn(3, 128), torch.randn(3, 128))
    assert out.shape == (3, 18) and bool(((out > 0) & (out < 1)).all())
    single = Controller(4, 2, n_layers=1)
    assert [type(m) for m in single.mlp] == [torch.nn.Linear]


@pytest.mark.parametrize(
    "a_shape, r_shape, message",
    [
        ((3, 7), (3, 8), r"input_embedding must be shaped \(batch, embed_dim=8\)"),
        ((3, 8), (3, 8, 1), r"reference_embedding must be shaped \(batch, embed_dim=8\)"),
        ((3, 8), (2, 8), "must have the same batch size, got 3 and 2"),
    ],
)
def test_controller_bad_embeddings_are_named(a_shape, r_shape, message):
    with pytest.raises(ValueError, match=message):
        Controller(8, 3)(torch.randn(*a_shape), torch.randn(*r_shape))


def test_controller_non_finite_embedding_is_named():
    r = torch.randn(2, 8)
    r[0, 3] = float("nan")
    with pytest.raises(ValueError, match="reference_embedding contains 1 NaN"):
        Controller(8, 3)(torch.randn(2, 8), r)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SpectralEncoder(0), "sample_rate must be a positive"),
        (lambda: SpectralEncoder(SR, channels=()), "channels must name at least one"),
        (lambda: SpectralEncoder(SR, level_bands=-1), "level_bands must be an integer >= 0"),
        (lambda: TCNEncoder(stride=0), "stride must be an integer >= 1"),
        (lambda: Controller(8, 0), "n_params must be an integer >= 1"),
    ],
)
def test_bad_configuration_is_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("kind", ENCODERS)
def test_gradients_match_finite_differences(kind):
    encoder = ENCODERS[kind](embed_dim=3).double().eval()
    with torch.no_grad():  # move off the zero biases of initialization
        for p in encoder.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(1, 1, 300, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(encoder, (x,))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["spectral", "spectral_levels"])
def test_compiled_spectral_encoder_agrees_with_eager_and_keeps_its_state_dict(kind):
    eager, compiled = ENCODERS[kind](), ENCODERS[kind]()
    keys = list(compiled.state_dict())
    compiled.compile()
    assert list(compiled.state_dict()) == keys
    torch.manual_seed(3)
    x = torch.randn(3, 1, 3000) * 0.3
    outputs = []
    for encoder in (eager, compiled):
        y = encoder(x)
        y.square().sum().backward()
        outputs.append((y.detach(), encoder.proj.weight.grad, encoder.cnn[0].weight.grad))
    for ours, theirs in zip(outputs[1], outputs[0]):  # fused kernels round differently
        scale = theirs.abs().max()
        torch.testing.assert_close(ours / scale, theirs / scale, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="NaN"):  # the eager front end still checks the audio
        compiled(torch.full((1, 1, 3000), float("nan")))
    copied = pickle.loads(pickle.dumps(compiled))  # runs eagerly, as after nn.Module.compile
    with torch.no_grad():
        torch.testing.assert_close(copied(x), eager(x))

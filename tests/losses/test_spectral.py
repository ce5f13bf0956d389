"""Spectral losses against auraloss called directly."""

from __future__ import annotations

import importlib.util
import sys
import types

import auraloss
import numpy as np
import pytest
import torch

from diffx.losses.spectral import (
    MelSTFTLoss,
    MultiResolutionSTFTLoss,
    SumAndDifferenceSTFTLoss,
    mel_filterbank,
)

SMALL = dict(fft_sizes=(256, 512, 128), hop_sizes=(64, 128, 32), win_lengths=(256, 400, 128))


def pair(dtype=torch.float64, batch=3, channels=2, samples=1024, seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(batch, channels, samples, generator=g, dtype=torch.float64)
    target = 0.5 * pred + torch.randn(batch, channels, samples, generator=g, dtype=torch.float64)
    return pred.to(dtype), target.to(dtype)


def reference_slaney_mel(sample_rate, fft_size, n_mels):
    """Slaney's mel filterbank written out filter by filter, as an independent oracle."""

    def hz_to_mel(f):
        return f / (200 / 3) if f < 1000 else 15 + 27 * np.log(f / 1000) / np.log(6.4)

    def mel_to_hz(m):
        return m * (200 / 3) if m < 15 else 1000 * 6.4 ** ((m - 15) / 27)

    top = hz_to_mel(sample_rate / 2)
    edges = [mel_to_hz(top * k / (n_mels + 1)) for k in range(n_mels + 2)]
    bins = np.arange(fft_size // 2 + 1) * sample_rate / fft_size
    fb = np.zeros((n_mels, len(bins)))
    for i in range(n_mels):
        lo, centre, hi = edges[i : i + 3]
        for k, f in enumerate(bins):
            if lo < f <= centre:
                fb[i, k] = (f - lo) / (centre - lo)
            elif centre < f < hi:
                fb[i, k] = (hi - f) / (hi - centre)
        fb[i] *= 2 / (hi - lo)
    return fb


# --- sum and difference (stereo) --------------------------------------------------------


@pytest.mark.parametrize("weights", [dict(), dict(w_sum=0.5, w_diff=2.0, w_lin_mag=0.5)])
def test_sum_and_difference_equals_auraloss(dtype, weights):
    pred, target = pair(dtype)
    ours = SumAndDifferenceSTFTLoss(**SMALL, **weights)(pred, target)
    ref = auraloss.freq.SumAndDifferenceSTFTLoss(
        **{k: list(v) for k, v in SMALL.items()}, **weights
    )(pred, target)
    assert ours.dtype == dtype and ours.shape == ()
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_sum_and_difference_sees_the_stereo_image_a_channel_loss_barely_weighs():
    """Swapping left and right leaves the sum unchanged and flips the difference's sign: with
    a magnitude loss both terms are zero. Narrowing the image changes only the difference."""
    g = torch.Generator().manual_seed(3)
    mid, side = torch.randn(2, 1, 1, 4096, generator=g, dtype=torch.float64)
    wide = torch.cat([mid + side, mid - side], dim=1)
    narrow = torch.cat([mid + 0.5 * side, mid - 0.5 * side], dim=1)
    loss = SumAndDifferenceSTFTLoss(**SMALL, reduction="none")
    swapped = wide.flip(1)
    assert float(loss(swapped, wide)) < 1e-12
    only_sum = SumAndDifferenceSTFTLoss(**SMALL, w_diff=0.0)
    only_diff = SumAndDifferenceSTFTLoss(**SMALL, w_sum=0.0)
    assert float(only_sum(narrow, wide)) < 1e-12
    # |log 0.5| = 0.69 on every bin of the difference, and a spectral convergence of 0.5.
    torch.testing.assert_close(
        only_diff(narrow, wide), torch.tensor((0.5 + np.log(2.0)) / 2, dtype=torch.float64),
        rtol=1e-6, atol=0,
    )  # fmt: skip


def test_sum_and_difference_rejects_mono_and_bad_weights():
    pred, target = pair(channels=1)
    with pytest.raises(ValueError, match="stereo"):
        SumAndDifferenceSTFTLoss(**SMALL)(pred, target)
    with pytest.raises(ValueError, match="w_diff"):
        SumAndDifferenceSTFTLoss(**SMALL, w_diff=-1.0)
    with pytest.raises(ValueError, match="w_sum"):
        SumAndDifferenceSTFTLoss(**SMALL, w_sum=0.0, w_diff=0.0)


# --- multi-resolution STFT --------------------------------------------------------------


@pytest.mark.parametrize("weights", [dict(), dict(w_sc=0.0, w_lin_mag=0.5)])
def test_mrstft_equals_auraloss(dtype, weights):
    pred, target = pair(dtype)
    ours = MultiResolutionSTFTLoss(**SMALL, **weights)(pred, target)
    ref = auraloss.freq.MultiResolutionSTFTLoss(**{k: list(v) for k, v in SMALL.items()}, **weights)
    expected = ref(pred, target)
    assert ours.dtype == dtype and ours.shape == ()
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)


def test_mrstft_default_resolutions_equal_auraloss_defaults():
    pred, target = pair(torch.float32, batch=2, channels=1, samples=2048)
    torch.testing.assert_close(
        MultiResolutionSTFTLoss()(pred, target),
        auraloss.freq.MultiResolutionSTFTLoss()(pred, target),
    )


def test_mrstft_reductions_are_per_item():
    pred, target = pair()
    none = MultiResolutionSTFTLoss(**SMALL, reduction="none")(pred, target)
    ref = auraloss.freq.MultiResolutionSTFTLoss(**{k: list(v) for k, v in SMALL.items()})
    expected = torch.stack([ref(pred[i : i + 1], target[i : i + 1]) for i in range(3)])
    assert none.shape == (3,)
    torch.testing.assert_close(none, expected)
    total = MultiResolutionSTFTLoss(**SMALL, reduction="sum")(pred, target)
    torch.testing.assert_close(total, expected.sum())


def test_mrstft_is_zero_for_identical_inputs_with_finite_gradient(dtype):
    pred, _ = pair(dtype)
    pred.requires_grad_(True)
    loss = MultiResolutionSTFTLoss(**SMALL)(pred, pred.detach().clone())
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("target_silent", [True, False])
def test_mrstft_silence_is_finite(dtype, target_silent):
    pred = torch.zeros(2, 1, 600, dtype=dtype, requires_grad=True)
    target = torch.zeros(2, 1, 600, dtype=dtype)
    if not target_silent:
        target = target + torch.randn(2, 1, 600, dtype=dtype)
    for reduction in ("mean", "none"):
        loss = MultiResolutionSTFTLoss(**SMALL, reduction=reduction)(pred, target)
        loss.sum().backward()
        assert torch.isfinite(loss).all() and torch.isfinite(pred.grad).all()
        pred.grad = None


def test_mrstft_rejects_bad_inputs():
    loss = MultiResolutionSTFTLoss(**SMALL)
    pred, target = pair(torch.float32)
    with pytest.raises(ValueError, match="shape"):
        loss(pred, target[:, :1])
    with pytest.raises(ValueError, match="length"):
        loss(pred, target[..., :-1])
    with pytest.raises(ValueError, match="pred"):
        loss(pred[0], target[0])
    bad = target.clone()
    bad[0, 0, 3] = float("inf")
    with pytest.raises(ValueError, match="target"):
        loss(pred, bad)
    with pytest.raises(ValueError, match="float64"):
        loss(pred, target.double())
    with pytest.raises(ValueError, match=r"fewer than the largest fft_size \(512\)"):
        loss(pred[..., :500], target[..., :500])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(fft_sizes=(256, 512), hop_sizes=(64,), win_lengths=(256, 512)), "equal length"),
        (dict(fft_sizes=(256,), hop_sizes=(0,), win_lengths=(256,)), r"hop_sizes\[0\]"),
        (dict(fft_sizes=(256,), hop_sizes=(64,), win_lengths=(300,)), r"win_lengths\[0\]"),
        (dict(w_sc=-1.0), "w_sc"),
        (dict(w_sc=0.0, w_log_mag=0.0), "positive"),
        (dict(eps=0.0), "eps"),
        (dict(window="hann"), "window"),
        (dict(reduction="avg"), "reduction"),
        (dict(fast_backward="yes"), "fast_backward must be true or false"),
        (dict(compile=1), "compile must be true or false"),
    ],
)
def test_mrstft_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiResolutionSTFTLoss(**kwargs)


# --- the wrappers' own forward and the speed options ----------------------------------------

MEL_SMALL = dict(fft_size=512, hop_size=128, win_length=512, n_mels=40)


def value_and_gradient(loss, pred, target):
    pred = pred.clone().requires_grad_(True)
    value = loss(pred, target)
    value.sum().backward()
    return value.detach(), pred.grad


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: MultiResolutionSTFTLoss(**SMALL, **kw),
        lambda **kw: MultiResolutionSTFTLoss(**SMALL, w_sc=0.0, w_lin_mag=0.5, **kw),
        lambda **kw: MultiResolutionSTFTLoss(**SMALL, reduction="none", **kw),
        lambda **kw: MelSTFTLoss(16000, **MEL_SMALL, **kw),
    ],
    ids=["mrstft", "linear_term", "per_item", "mel"],
)
def test_value_and_gradient_are_those_of_auraloss_forward_bit_for_bit(dtype, make):
    # The wrappers skip the phase spectra auraloss computes and discards and fuse the
    # magnitude's backward; value and gradient stay those of auraloss's forward (`loss.loss`).
    loss = make()
    pred, target = pair(dtype)
    pred[0, 0] *= 1e-6  # STFT power under eps: the clamp's zero gradient
    ours = value_and_gradient(loss, pred, target)
    theirs_loss = loss.loss
    if loss.reduction == "none":

        def theirs_loss(p, t):
            return torch.stack([loss.loss(p[i : i + 1], t[i : i + 1]) for i in range(3)])

    theirs = value_and_gradient(theirs_loss, pred, target)
    assert torch.equal(ours[0], theirs[0])
    assert torch.equal(ours[1], theirs[1])


@pytest.mark.parametrize(
    "settings",
    [SMALL, dict(fft_sizes=(255, 128), hop_sizes=(64, 50), win_lengths=(200, 101))],
    ids=["even", "odd"],
)
def test_fast_backward_keeps_the_value_and_the_gradient_to_rounding(dtype, settings):
    pred, target = pair(dtype)
    pred[0, 0] *= 1e-6
    exact = value_and_gradient(MultiResolutionSTFTLoss(**settings), pred, target)
    fast = value_and_gradient(MultiResolutionSTFTLoss(**settings, fast_backward=True), pred, target)
    assert torch.equal(fast[0], exact[0])
    scale = exact[1].abs().max()
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    torch.testing.assert_close(fast[1] / scale, exact[1] / scale, rtol=0, atol=tol)
    mel = MelSTFTLoss(16000, **MEL_SMALL)
    mel_fast = MelSTFTLoss(16000, **MEL_SMALL, fast_backward=True)
    exact, fast = value_and_gradient(mel, pred, target), value_and_gradient(mel_fast, pred, target)
    assert torch.equal(fast[0], exact[0])
    scale = exact[1].abs().max()
    torch.testing.assert_close(fast[1] / scale, exact[1] / scale, rtol=0, atol=tol)


def test_fast_backward_passes_gradcheck_and_refuses_a_second_order():
    loss = MultiResolutionSTFTLoss(
        fft_sizes=(64, 31), hop_sizes=(16, 10), win_lengths=(48, 20), fast_backward=True
    )
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 1, 200, dtype=torch.float64, generator=g, requires_grad=True)
    target = torch.randn(2, 1, 200, dtype=torch.float64, generator=g)
    assert torch.autograd.gradcheck(lambda p: loss(p, target), (pred,))
    (grad,) = torch.autograd.grad(loss(pred, target), pred, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


@pytest.mark.slow
def test_compiled_terms_agree_with_eager_to_rounding():
    pred, target = pair(torch.float32)
    for fast in (False, True):
        eager = value_and_gradient(MultiResolutionSTFTLoss(**SMALL), pred, target)
        compiled = MultiResolutionSTFTLoss(**SMALL, fast_backward=fast, compile=True)
        value, grad = value_and_gradient(compiled, pred, target)
        torch.testing.assert_close(value, eager[0], rtol=1e-5, atol=0)
        scale = eager[1].abs().max()
        torch.testing.assert_close(grad / scale, eager[1] / scale, rtol=0, atol=1e-5)


# --- mel --------------------------------------------------------------------------------


def test_slaney_mel_scale_anchors():
    # Slaney's scale: 15 mels at 1 kHz, 27 more per factor 6.4 (so 42 at 6.4 kHz).
    from diffx.losses.spectral import _hz_to_mel, _mel_to_hz

    np.testing.assert_allclose(_hz_to_mel(np.array([0.0, 500.0, 1000.0, 6400.0])), [0, 7.5, 15, 42])
    np.testing.assert_allclose(_mel_to_hz(np.array([7.5, 15.0, 42.0])), [500, 1000, 6400])


@pytest.mark.parametrize(
    ("sample_rate", "fft_size", "n_mels"), [(44100, 1024, 128), (16000, 512, 40)]
)
def test_mel_filterbank_matches_reference(sample_rate, fft_size, n_mels):
    fb = mel_filterbank(sample_rate, fft_size, n_mels)
    ref = reference_slaney_mel(sample_rate, fft_size, n_mels)
    assert fb.shape == ref.shape and fb.dtype == np.float32
    np.testing.assert_allclose(fb, ref, rtol=1e-6, atol=1e-9)


@pytest.mark.skipif(importlib.util.find_spec("librosa") is None, reason="needs librosa")
def test_mel_filterbank_matches_librosa():
    import librosa

    for sr, n_fft, n_mels in [(44100, 1024, 128), (48000, 2048, 80), (22050, 512, 40)]:
        expected = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)
        np.testing.assert_allclose(mel_filterbank(sr, n_fft, n_mels), expected, atol=1e-8)


@pytest.fixture
def auraloss_with_reference_mel(monkeypatch):
    """auraloss.freq.MelSTFTLoss with librosa's mel stood in by the reference filterbank."""
    fake = types.ModuleType("librosa")
    fake.filters = types.ModuleType("librosa.filters")
    fake.filters.mel = lambda sr, n_fft, n_mels: reference_slaney_mel(sr, n_fft, n_mels).astype(
        np.float32
    )
    monkeypatch.setitem(sys.modules, "librosa", fake)
    monkeypatch.setitem(sys.modules, "librosa.filters", fake.filters)
    return auraloss.freq.MelSTFTLoss


def test_mel_loss_equals_auraloss(auraloss_with_reference_mel):
    settings = dict(fft_size=512, hop_size=128, win_length=512, n_mels=40)
    pred, target = pair(torch.float32)
    ours = MelSTFTLoss(16000, **settings)(pred, target)
    expected = auraloss_with_reference_mel(16000, **settings)(pred, target)
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-7)
    none = MelSTFTLoss(16000, **settings, reduction="none")(pred, target)
    ref = auraloss_with_reference_mel(16000, **settings)
    expected = torch.stack([ref(pred[i : i + 1], target[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(none, expected, rtol=1e-6, atol=1e-7)


def test_mel_loss_float64_agrees_with_float32():
    settings = dict(fft_size=512, hop_size=128, win_length=512, n_mels=40)
    loss = MelSTFTLoss(16000, **settings)
    pred, target = pair(torch.float64)
    value64 = loss(pred, target)
    value32 = loss(pred.float(), target.float())
    assert value64.dtype == torch.float64 and value32.dtype == torch.float32
    torch.testing.assert_close(value64.float(), value32, rtol=1e-5, atol=1e-6)


def test_mel_loss_zero_and_silence_finite(dtype):
    loss = MelSTFTLoss(16000, fft_size=512, hop_size=128, win_length=512, n_mels=40)
    pred, _ = pair(dtype)
    assert loss(pred, pred.clone()).item() == 0.0
    silent = torch.zeros(2, 1, 600, dtype=dtype, requires_grad=True)
    value = loss(silent, torch.zeros(2, 1, 600, dtype=dtype))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(silent.grad).all()


def test_mel_loss_rejects_empty_bands_and_short_input():
    # 128 mels over 0-22 kHz are ~31 Hz apart at the bottom, finer than 512-point FFT bins.
    with pytest.raises(ValueError, match="n_mels=128"):
        MelSTFTLoss(44100, fft_size=512, win_length=512)
    loss = MelSTFTLoss(16000, fft_size=512, hop_size=128, win_length=512, n_mels=40)
    pred, target = pair(torch.float32, samples=400)
    with pytest.raises(ValueError, match=r"fft_size \(512\)"):
        loss(pred, target)
    with pytest.raises(ValueError, match="sample_rate"):
        MelSTFTLoss(0)
    with pytest.raises(ValueError, match="n_mels"):
        MelSTFTLoss(16000, n_mels=0)


# -- DDSP's multi-scale spectral loss ----------------------------------------------------------


def _numpy_magnitudes(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| with centred frames (zero padding), a periodic Hann window, no scaling."""
    from scipy.signal import get_window

    padded = np.pad(x, n_fft // 2)
    window = get_window("hann", n_fft, fftbins=True)
    starts = range(0, padded.size - n_fft + 1, hop)
    return np.abs(np.stack([np.fft.rfft(window * padded[s : s + n_fft]) for s in starts]))


def test_multiscale_spectral_loss_matches_a_numpy_computation():
    from diffx.losses import MultiScaleSpectralLoss

    rng = np.random.default_rng(0)
    pred = rng.normal(0, 0.3, (2, 1, 4096))
    target = rng.normal(0, 0.1, (2, 1, 4096))
    sizes = (2048, 512, 64)
    expected = np.zeros(2)
    for n_fft in sizes:
        hop = n_fft // 4
        for i in range(2):
            p = _numpy_magnitudes(pred[i, 0], n_fft, hop)
            t = _numpy_magnitudes(target[i, 0], n_fft, hop)
            expected[i] += np.abs(p - t).mean()
            expected[i] += np.abs(np.log(p + 1e-7) - np.log(t + 1e-7)).mean()
    loss = MultiScaleSpectralLoss(sizes, reduction="none")
    got = loss(torch.tensor(pred), torch.tensor(target))
    np.testing.assert_allclose(got.numpy()[:, 0], expected, rtol=1e-9)
    mean = MultiScaleSpectralLoss(sizes)(torch.tensor(pred), torch.tensor(target))
    assert float(mean) == pytest.approx(expected.mean(), rel=1e-9)


def test_multiscale_spectral_loss_is_zero_on_equal_signals_and_finite_on_silence():
    from diffx.losses import MultiScaleSpectralLoss

    loss = MultiScaleSpectralLoss()
    x = torch.randn(1, 1, 4000)
    assert float(loss(x, x)) == 0.0
    silent = torch.zeros(1, 1, 4000, requires_grad=True)
    value = loss(silent, x)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(silent.grad).all()
    assert float(loss(torch.zeros(1, 1, 4000), torch.zeros(1, 1, 4000))) == 0.0


def test_multiscale_spectral_loss_rejects_bad_settings_and_input():
    from diffx.losses import MultiScaleSpectralLoss

    with pytest.raises(ValueError, match="fft_sizes"):
        MultiScaleSpectralLoss([])
    with pytest.raises(ValueError, match="overlap"):
        MultiScaleSpectralLoss(overlap=1.0)
    with pytest.raises(ValueError, match="samples"):
        MultiScaleSpectralLoss()(torch.zeros(1, 1, 500), torch.zeros(1, 1, 500))
    with pytest.raises(ValueError):
        MultiScaleSpectralLoss()(torch.zeros(1, 1, 4000), torch.zeros(1, 1, 3000))

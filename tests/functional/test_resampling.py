"""Tests for diffx.functional.resampling (FFT-domain resampling) and diffx.nn.Oversampled.

Oracles: scipy.signal.resample (an independent FFT resampler with the same Nyquist-bin rules),
analytic band-limited sinusoids, and the analytic Fourier series of a hard-clipped sine, from
which the aliases of a clipper run at any rate are predicted bin by bin.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F
from torch import nn

from diffx.functional import fft_downsample, fft_upsample
from diffx.nn import Oversampled
from tests.conftest import requires_cuda

FACTORS = [2, 3, 4, 8]
LENGTHS = [1, 2, 7, 16, 33, 100]  # odd and even, including the one- and two-sample edge cases


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- scipy.signal.resample oracle ----------------------------------------------------------


@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("n", LENGTHS)
def test_upsample_matches_scipy_resample(n, factor):
    x = _rng(n).standard_normal((2, 3, n))
    expected = scipy.signal.resample(x, factor * n, axis=-1)
    got = fft_upsample(torch.from_numpy(x), factor).numpy()
    assert got.shape == (2, 3, factor * n)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("n_out", LENGTHS)
def test_downsample_matches_scipy_resample(n_out, factor):
    # White noise at the high rate has content at and above the new Nyquist frequency, so the
    # truncation and the even-length Nyquist merge are both exercised.
    x = _rng(n_out + 100).standard_normal((2, factor * n_out))
    expected = scipy.signal.resample(x, n_out, axis=-1)
    got = fft_downsample(torch.from_numpy(x), factor).numpy()
    assert got.shape == (2, n_out)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("factor", [2, 3])
@pytest.mark.parametrize("n", [16, 33])
def test_pad_samples_matches_scipy_on_padded_signal(n, factor):
    pad = 5
    x = _rng(3).standard_normal((2, n))
    up_expected = scipy.signal.resample(np.pad(x, ((0, 0), (0, pad))), factor * (n + pad), axis=-1)
    up = fft_upsample(torch.from_numpy(x), factor, pad_samples=pad).numpy()
    np.testing.assert_allclose(up, up_expected[:, : factor * n], rtol=0, atol=1e-13)

    hi = _rng(4).standard_normal((2, factor * n))
    down_expected = scipy.signal.resample(np.pad(hi, ((0, 0), (0, factor * pad))), n + pad, axis=-1)
    down = fft_downsample(torch.from_numpy(hi), factor, pad_samples=pad).numpy()
    np.testing.assert_allclose(down, down_expected[:, :n], rtol=0, atol=1e-13)


def test_float32_matches_scipy_and_keeps_dtype(dtype):
    x = _rng(5).standard_normal((1, 2, 50))
    xt = torch.from_numpy(x).to(dtype)
    up = fft_upsample(xt, 4)
    down = fft_downsample(up, 4)
    assert up.dtype == dtype and down.dtype == dtype
    # float32 FFTs of these lengths are accurate to a few ulps of the signal's scale.
    atol = 1e-5 if dtype == torch.float32 else 1e-13
    expected = scipy.signal.resample(xt.double().numpy(), 200, axis=-1)
    np.testing.assert_allclose(up.double().numpy(), expected, rtol=0, atol=atol)
    np.testing.assert_allclose(down.double().numpy(), xt.double().numpy(), rtol=0, atol=atol)


# --- analytic results --------------------------------------------------------------------


@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("n", [64, 75])
def test_periodic_bandlimited_sinusoids_upsample_exactly(n, factor):
    # A sum of sinusoids with whole numbers of cycles in n samples, all below Nyquist, is one
    # period of a band-limited periodic signal: ideal interpolation is the same sum evaluated at
    # the higher rate.
    cycles = [0, 1, 5, (n - 1) // 2]
    amps = [0.3, 1.0, 0.5, 0.25]
    phases = [0.0, 0.4, -1.1, 2.0]

    def signal(num):
        t = np.arange(num) / num  # time in periods
        return sum(a * np.cos(2 * np.pi * k * t + p) for k, a, p in zip(cycles, amps, phases))

    got = fft_upsample(torch.from_numpy(signal(n)), factor).numpy()
    np.testing.assert_allclose(got, signal(factor * n), rtol=0, atol=1e-12)
    # and the original samples sit at every factor-th output sample
    np.testing.assert_allclose(got[::factor], signal(n), rtol=0, atol=1e-12)


@pytest.mark.parametrize("factor", [2, 3, 8])
def test_nyquist_cosine_is_split_in_halves(factor):
    # (-1)^n is a cosine at fs/2; split between +fs/2 and -fs/2 it stays a cosine at fs/2 with
    # unit amplitude: cos(pi * m / factor) at the higher rate.
    n = 16
    x = torch.from_numpy(np.cos(np.pi * np.arange(n)))
    m = np.arange(factor * n)
    np.testing.assert_allclose(
        fft_upsample(x, factor).numpy(), np.cos(np.pi * m / factor), rtol=0, atol=1e-12
    )
    # Downsampling that cosine from the higher rate folds +fs/2 and -fs/2 back into one bin.
    hi = torch.from_numpy(np.cos(np.pi * m / factor))
    np.testing.assert_allclose(fft_downsample(hi, factor).numpy(), x.numpy(), rtol=0, atol=1e-12)


def test_downsample_removes_components_above_new_nyquist():
    # 3 cycles survive, 40 cycles (above the new Nyquist of 32 cycles) are removed, not aliased.
    n_hi, factor = 256, 4
    t = np.arange(n_hi) / n_hi
    low = np.sin(2 * np.pi * 3 * t)
    x = torch.from_numpy(low + 0.7 * np.sin(2 * np.pi * 40 * t))
    np.testing.assert_allclose(fft_downsample(x, factor).numpy(), low[::factor], rtol=0, atol=1e-12)


@pytest.mark.parametrize("factor", FACTORS)
@pytest.mark.parametrize("n", [1, 2, 31, 32])
def test_round_trip_is_identity(n, factor):
    x = torch.from_numpy(_rng(n).standard_normal((3, 2, n)))
    np.testing.assert_allclose(
        fft_downsample(fft_upsample(x, factor), factor).numpy(), x.numpy(), rtol=0, atol=1e-13
    )


def test_factor_one_is_identity():
    x = torch.from_numpy(_rng(9).standard_normal((2, 1, 10)))
    assert fft_upsample(x, 1) is x
    assert fft_downsample(x, 1) is x


def test_any_leading_dims_match_row_by_row():
    x = torch.from_numpy(_rng(11).standard_normal((2, 3, 4, 30)))
    up = fft_upsample(x, 3)
    down = fft_downsample(up, 3)
    assert up.shape == (2, 3, 4, 90) and down.shape == x.shape
    flat = x.reshape(-1, 30)
    for i in range(flat.shape[0]):
        row_up = fft_upsample(flat[i], 3)
        np.testing.assert_allclose(up.reshape(-1, 90)[i].numpy(), row_up.numpy(), atol=1e-14)
        np.testing.assert_allclose(
            down.reshape(-1, 30)[i].numpy(), fft_downsample(row_up, 3).numpy(), atol=1e-14
        )


# --- aliasing of a hard clipper --------------------------------------------------------------

SAMPLE_RATE = 44100
F0_HZ = 5000  # 5 kHz: 500 whole cycles in N_FFT samples, so every harmonic sits on a bin
N_FFT = 4410  # 0.1 s; bin spacing 10 Hz
CLIP_LEVEL = 0.5  # clipping a unit sine at half its amplitude


class _HardClip(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-CLIP_LEVEL, CLIP_LEVEL)


def _clipped_sine_coefficients(k: np.ndarray) -> np.ndarray:
    """Sine-series coefficients b_k of clip(sin(theta), -c, c) for odd k (even k vanish).

    With quarter-wave symmetry b_k = (4/pi) * integral over [0, pi/2] of y(theta) sin(k theta),
    where y = sin(theta) below theta_c = asin(c) and c above it; integrated in closed form.
    """
    c = CLIP_LEVEL
    theta_c = math.asin(c)
    k = k.astype(float)
    b = np.empty_like(k)
    one = k == 1
    b[one] = (4 / np.pi) * (theta_c / 2 - np.sin(2 * theta_c) / 4 + c * np.cos(theta_c))
    kk = k[~one]
    b[~one] = (4 / np.pi) * (
        0.5 * (np.sin((kk - 1) * theta_c) / (kk - 1) - np.sin((kk + 1) * theta_c) / (kk + 1))
        + c * np.cos(kk * theta_c) / kk
    )
    return b


def _predicted_spectrum(rate_factor: int, k_max: int) -> tuple[np.ndarray, float]:
    """rfft bins of the clipped sine sampled ideally at rate_factor*fs, then brought to fs.

    Harmonic k of the continuous clipped sine sampled at R = rate_factor * fs folds to
    |k f0 mod R| (reflected above R/2, which flips the sine's sign); an ideal low-pass at fs/2
    then keeps it only if it lands below fs/2. Each survivor is a sine with a whole number of
    cycles in N_FFT samples, i.e. rfft bin value -i * N/2 * amplitude. Returns the predicted
    bins and the sum of |b_k| over the harmonics left out (the largest error they can cause).
    """
    k = np.arange(1, k_max + 1, 2)
    b = _clipped_sine_coefficients(k)
    rate = rate_factor * SAMPLE_RATE
    folded = (k * F0_HZ) % rate  # exact integer arithmetic in Hz
    sign = np.where(folded > rate // 2, -1.0, 1.0)
    folded = np.where(folded > rate // 2, rate - folded, folded)
    # Nothing lands exactly on either Nyquist frequency, where the folding rule is different.
    assert not np.any(2 * folded == rate) and not np.any(2 * folded == SAMPLE_RATE)
    # A harmonic folded onto 0 Hz is sin(2 pi m) = 0 at every sample: it contributes nothing.
    keep = (2 * folded < SAMPLE_RATE) & (folded != 0)
    bins = folded[keep] * N_FFT // SAMPLE_RATE
    assert np.all(bins * SAMPLE_RATE == folded[keep] * N_FFT)  # whole cycles, exact bins
    spectrum = np.zeros(N_FFT // 2 + 1, dtype=complex)
    np.add.at(spectrum, bins, -0.5j * N_FFT * sign[keep] * b[keep])
    # |b_k| falls as 1/k^2, so the sum beyond 10 * k_max is a tenth of the sum below it.
    k_tail = np.arange(k_max + 1 + (k_max % 2 == 0), 10 * k_max, 2)
    tail = 1.1 * float(np.abs(_clipped_sine_coefficients(k_tail)).sum())
    return spectrum, tail


def _aliasing_ratio(spectrum: np.ndarray) -> float:
    """Energy at non-harmonic bins over energy at harmonic bins (including DC) of an rfft."""
    power = np.abs(spectrum) ** 2
    cycles = F0_HZ * N_FFT // SAMPLE_RATE
    harmonic = np.arange(power.size) % cycles == 0
    return float(power[~harmonic].sum() / power[harmonic].sum())


def _sine(dtype=torch.float64) -> torch.Tensor:
    n = np.arange(N_FFT)
    return torch.from_numpy(np.sin(2 * np.pi * F0_HZ * n / SAMPLE_RATE)).to(dtype).view(1, 1, -1)


@pytest.mark.parametrize("factor", [1, 8])
def test_clipper_aliasing_matches_analytic_prediction(factor):
    # The sine has whole cycles in N_FFT samples, so the FFT resampler's periodic assumption
    # holds exactly and the output must be ideal oversampling: the analytic prediction.
    y = Oversampled(_HardClip(), factor)(_sine()).numpy().ravel()
    got = np.fft.rfft(y)
    expected, tail = _predicted_spectrum(factor, k_max=200_001)
    # Per bin, the harmonics left out of the prediction can add at most tail * N/2.
    np.testing.assert_allclose(got / (N_FFT / 2), expected / (N_FFT / 2), rtol=0, atol=tail + 1e-9)
    assert _aliasing_ratio(got) == pytest.approx(_aliasing_ratio(expected), rel=1e-3)


def test_oversampled_clipper_aliases_less_than_bare_clipper(dtype):
    x = _sine(dtype)
    bare = _HardClip()(x).double().numpy().ravel()
    over = Oversampled(_HardClip(), 8)(x).double().numpy().ravel()
    bare_ratio = _aliasing_ratio(np.fft.rfft(bare))
    over_ratio = _aliasing_ratio(np.fft.rfft(over))
    # The bare clipper aliases every harmonic above 22.05 kHz (from the 5th); at 8x only those
    # above 176.4 kHz (from the 37th) can, and |b_k|^2 falls as 1/k^4. Compare with the
    # analytic ratios rather than a fixed margin: both orderings and the sizes are predicted.
    bare_pred = _aliasing_ratio(_predicted_spectrum(1, k_max=200_001)[0])
    over_pred = _aliasing_ratio(_predicted_spectrum(8, k_max=200_001)[0])
    assert over_pred < bare_pred
    assert over_ratio < bare_ratio
    # float32 rounding (about -140 dB) is far below the 8x aliasing (about -66 dB).
    rel = 1e-3 if dtype == torch.float64 else 1e-2
    assert bare_ratio == pytest.approx(bare_pred, rel=rel)
    assert over_ratio == pytest.approx(over_pred, rel=rel)


# --- the wrapper ---------------------------------------------------------------------------


class _Drive(nn.Module):
    """tanh(gain * x) with a trainable gain, and an optional per-item gain passed to forward."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(2.0, dtype=torch.float64))

    def forward(self, x: torch.Tensor, extra_gain: torch.Tensor | None = None) -> torch.Tensor:
        g = self.gain if extra_gain is None else self.gain * extra_gain.view(-1, 1, 1)
        return torch.tanh(g * x)


class _CausalDecay(nn.Module):
    """Causal FIR with an exponentially decaying kernel: a model with memory (a ring-out)."""

    def __init__(self, length: int = 256, tau: float = 40.0) -> None:
        super().__init__()
        kernel = torch.exp(-torch.arange(length, dtype=torch.float64) / tau)
        self.register_buffer("kernel", kernel.flip(0).view(1, 1, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(F.pad(x, (self.kernel.shape[-1] - 1, 0)), self.kernel)


def test_wrapper_equals_up_model_down():
    x = torch.from_numpy(_rng(12).standard_normal((2, 1, 40)))
    model = _Drive()
    expected = fft_downsample(model(fft_upsample(x, 4)), 4)
    torch.testing.assert_close(Oversampled(model, 4)(x), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("pad", [0, 7])
@pytest.mark.parametrize("factor", [1, 3, 8])
def test_wrapper_around_identity_returns_input(factor, pad):
    x = torch.from_numpy(_rng(13).standard_normal((2, 3, 41)))
    y = Oversampled(nn.Identity(), factor, pad_samples=pad)(x)
    torch.testing.assert_close(y, x, rtol=0, atol=1e-13)


def test_wrapper_with_padding_matches_scipy_pipeline():
    factor, pad, n = 4, 64, 512
    x = np.zeros(n)
    x[400:464] = np.hanning(64) * np.sin(2 * np.pi * 0.1 * np.arange(64))
    model = _CausalDecay()
    kernel = model.kernel.flip(-1).numpy().ravel()
    hi = scipy.signal.resample(np.pad(x, (0, pad)), factor * (n + pad))
    expected = scipy.signal.resample(np.convolve(hi, kernel)[: hi.size], n + pad)[:n]
    got = Oversampled(model, factor, pad_samples=pad)(torch.from_numpy(x).view(1, 1, -1))
    np.testing.assert_allclose(got.numpy().ravel(), expected, rtol=0, atol=1e-12)


def test_padding_keeps_ring_out_from_wrapping_onto_the_start():
    # A burst near the end through a decaying filter: without padding the cut-off ring-out
    # (e^(-48/10) ~ -42 dB of the burst at the last sample) jumps back to silence at the start
    # and rings there; with padding longer than the kernel the ring-out decays in the padding.
    n = 512
    x = np.zeros(n)
    x[400:464] = np.hanning(64) * np.sin(2 * np.pi * 0.1 * np.arange(64))
    x = torch.from_numpy(x).view(1, 1, -1)
    start = slice(0, 300)  # silent in input and (causally) in the ideal output
    plain = Oversampled(_CausalDecay(), 4)(x)[..., start]
    padded = Oversampled(_CausalDecay(), 4, pad_samples=64)(x)[..., start]
    assert float((padded**2).sum()) < 1e-2 * float((plain**2).sum())


def test_wrapper_registers_and_trains_model_parameters():
    model = _Drive()
    wrapper = Oversampled(model, 2)
    assert [p for p in wrapper.parameters()] == [model.gain]
    assert "model.gain" in wrapper.state_dict()
    x = torch.from_numpy(_rng(14).standard_normal((2, 1, 32)))
    target = torch.tanh(3.0 * x)
    optimizer = torch.optim.SGD(wrapper.parameters(), lr=0.5)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = F.mse_loss(wrapper(x), target)
        loss.backward()
        losses.append(float(loss.detach()))
        optimizer.step()
    assert model.gain.grad is not None and losses[-1] < losses[0]
    assert float(model.gain.detach()) != 2.0


def test_wrapper_passes_extra_arguments_to_model():
    x = torch.from_numpy(_rng(15).standard_normal((2, 1, 20)))
    extra = torch.tensor([0.5, 1.5], dtype=torch.float64)
    model = _Drive()
    expected = fft_downsample(model(fft_upsample(x, 3), extra_gain=extra), 3)
    torch.testing.assert_close(Oversampled(model, 3)(x, extra_gain=extra), expected)


# --- gradients ------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 3])
@pytest.mark.parametrize("n", [6, 7])
def test_gradcheck_resampling(n, factor):
    x = torch.from_numpy(_rng(16).standard_normal((2, n))).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: fft_upsample(v, factor), (x,))
    assert torch.autograd.gradgradcheck(lambda v: fft_upsample(v, factor), (x,))
    hi = torch.from_numpy(_rng(17).standard_normal((2, factor * n))).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: fft_downsample(v, factor), (hi,))
    assert torch.autograd.gradcheck(lambda v: fft_upsample(v, factor, pad_samples=3), (x,))
    assert torch.autograd.gradcheck(lambda v: fft_downsample(v, factor, pad_samples=3), (hi,))


@pytest.mark.parametrize("n", [8, 9])
def test_gradcheck_wrapper_input_and_parameters(n):
    model = _Drive()
    wrapper = Oversampled(model, 2, pad_samples=2)
    x = torch.from_numpy(_rng(18).standard_normal((2, 1, n))).requires_grad_()
    extra = torch.tensor([0.7, 1.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, e: wrapper(v, extra_gain=e), (x, extra))

    # The model's own parameter, reached through the wrapper's registered name.
    gain = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda g: torch.func.functional_call(wrapper, {"model.gain": g}, (x.detach(),)), (gain,)
    )


def test_silence_gives_zero_output_and_finite_gradient():
    x = torch.zeros(1, 1, 32, dtype=torch.float64, requires_grad=True)
    y = Oversampled(_Drive(), 4)(x)
    assert torch.count_nonzero(y) == 0
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


# --- devices ---------------------------------------------------------------------------------


@requires_cuda
def test_cuda_matches_cpu():
    x = torch.from_numpy(_rng(19).standard_normal((2, 1, 100)))
    up = fft_upsample(x.cuda(), 4)
    torch.testing.assert_close(up.cpu(), fft_upsample(x, 4))
    torch.testing.assert_close(fft_downsample(up, 4).cpu(), x)
    wrapper = Oversampled(_Drive(), 4).cuda()
    torch.testing.assert_close(wrapper(x.cuda()).cpu(), Oversampled(_Drive(), 4)(x))


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [0, -2, 1.5, 2.0, float("nan"), True, "2", None])
def test_bad_factor_raises(factor):
    x = torch.zeros(1, 1, 8)
    with pytest.raises(ValueError, match="factor"):
        fft_upsample(x, factor)
    with pytest.raises(ValueError, match="factor"):
        fft_downsample(x, factor)
    with pytest.raises(ValueError, match="factor"):
        Oversampled(nn.Identity(), factor)


def test_numpy_integer_factor_is_accepted():
    x = torch.zeros(1, 1, 8)
    assert fft_upsample(x, np.int64(2)).shape[-1] == 16
    assert Oversampled(nn.Identity(), np.int32(2)).factor == 2


@pytest.mark.parametrize("pad", [-1, 1.5, True])
def test_bad_pad_samples_raises(pad):
    x = torch.zeros(1, 1, 8)
    with pytest.raises(ValueError, match="pad_samples"):
        fft_upsample(x, 2, pad_samples=pad)
    with pytest.raises(ValueError, match="pad_samples"):
        fft_downsample(x, 2, pad_samples=pad)
    with pytest.raises(ValueError, match="pad_samples"):
        Oversampled(nn.Identity(), 2, pad_samples=pad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_audio_raises(bad):
    x = torch.zeros(1, 1, 8)
    x[0, 0, 3] = bad
    with pytest.raises(ValueError, match="x contains"):
        fft_upsample(x, 2)
    with pytest.raises(ValueError, match="x contains"):
        fft_downsample(x, 2)
    with pytest.raises(ValueError, match="x contains"):
        Oversampled(nn.Identity(), 2)(x)


def test_downsample_length_not_divisible_raises():
    with pytest.raises(ValueError, match="not divisible by factor=3"):
        fft_downsample(torch.zeros(1, 1, 10), 3)


def test_bad_audio_tensors_raise():
    with pytest.raises(ValueError, match="floating-point"):
        fft_upsample(torch.zeros(1, 8, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="no samples"):
        fft_upsample(torch.zeros(1, 0), 2)
    with pytest.raises(ValueError, match="must be shaped"):
        Oversampled(nn.Identity(), 2)(torch.zeros(1, 8))


def test_wrapper_rejects_bad_models():
    with pytest.raises(ValueError, match="model must be a torch.nn.Module"):
        Oversampled(lambda v: v, 2)
    shortening = nn.Conv1d(1, 1, kernel_size=3)  # "valid" convolution drops 2 samples
    with pytest.raises(ValueError, match="preserves the signal length"):
        Oversampled(shortening, 2)(torch.zeros(1, 1, 8))

    class _ReturnsTuple(nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(ValueError, match="floating-point tensor"):
        Oversampled(_ReturnsTuple(), 2)(torch.zeros(1, 1, 8))

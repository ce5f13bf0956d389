"""Differentiable BS.1770 loudness against pyloudnorm, the standard's values and EBU tests."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
import torch

from diffx.io.audio import demo_audio_files, load_demo
from diffx.losses.loudness import (
    SILENCE_LUFS,
    LoudnessLoss,
    integrated_loudness,
    k_weighting_sos,
    pyloudnorm_loudness,
)

# ITU-R BS.1770-4, Tables 1 and 2: the K-weighting biquads at 48 kHz, [b0, b1, b2, a0, a1, a2].
BS1770_SHELF_48K = [1.53512485958697, -2.69169618940638, 1.19839281085285,
                    1.0, -1.69065929318241, 0.73248077421585]  # fmt: skip
BS1770_HIGHPASS_48K = [1.0, -2.0, 1.0, 1.0, -1.99004745483398, 0.99007225036621]


def sine(level_dbfs, freq_hz, seconds, sample_rate, channels=1):
    n = np.arange(round(seconds * sample_rate))
    tone = 10 ** (level_dbfs / 20) * np.sin(2 * np.pi * freq_hz * n / sample_rate)
    return np.tile(tone, (channels, 1))


def block_aligned(x, sample_rate):
    """Trim to a whole number of 100 ms steps after the first block, where pyloudnorm's block
    count (it rounds, so it may add a partial block at the end) equals BS.1770's."""
    block, step = round(0.4 * sample_rate), round(0.1 * sample_rate)
    return x[..., : block + (x.shape[-1] - block) // step * step]


def test_k_weighting_reproduces_bs1770_coefficients():
    np.testing.assert_allclose(
        k_weighting_sos(48000), [BS1770_SHELF_48K, BS1770_HIGHPASS_48K], rtol=0, atol=1e-13
    )


@pytest.fixture(scope="module")
def demo_clips():
    return {name: load_demo(name) for name in demo_audio_files()}


def test_every_demo_clip_matches_pyloudnorm(demo_clips):
    assert len(demo_clips) >= 11
    for name, (audio, sample_rate) in demo_clips.items():
        x = audio[None].double()
        meter = pyloudnorm.Meter(sample_rate)
        ours = integrated_loudness(x, sample_rate).item()
        ref = meter.integrated_loudness(audio.double().numpy().T)
        # pyloudnorm adds a partial final block where BS.1770 has whole blocks only: up to
        # 0.12 LU on the short clips (arctic_a0009, 3.1 s; voice2, 0.9 s).
        assert abs(ours - ref) < 0.5, (name, ours, ref)
        # On whole blocks, what is left is pyloudnorm's default K-weighting (RBJ-cookbook
        # biquads): 0.04 dB from BS.1770's at 44.1/48 kHz, 0.13 dB at 16 kHz (at Nyquist, by
        # scipy.signal.freqz of both meters' filters). Measured worst case 0.130 LU
        # (arctic_a0007, 16 kHz).
        aligned = block_aligned(x, sample_rate)
        ours = integrated_loudness(aligned, sample_rate).item()
        ref = meter.integrated_loudness(aligned[0].numpy().T)
        assert abs(ours - ref) < 0.16, (name, ours, ref)


def test_demo_clips_match_bs1770_filters_tightly(demo_clips):
    # With BS.1770's own coefficients ("DeMan"), whole blocks only and near-hard gates, the
    # only difference left is arithmetic: it must vanish.
    for name, (audio, sample_rate) in demo_clips.items():
        x = block_aligned(audio[None].double(), sample_rate)
        ours = integrated_loudness(x, sample_rate, gate_temperature_lu=1e-3).item()
        meter = pyloudnorm.Meter(sample_rate, filter_class="DeMan")
        ref = meter.integrated_loudness(x[0].numpy().T)
        assert abs(ours - ref) < 1e-3, (name, ours, ref)


def test_soft_gate_default_stays_close_to_hard_gate(demo_clips):
    for name, (audio, sample_rate) in demo_clips.items():
        x = block_aligned(audio[None].double(), sample_rate)
        meter = pyloudnorm.Meter(sample_rate, filter_class="DeMan")
        ref = meter.integrated_loudness(x[0].numpy().T)
        assert abs(integrated_loudness(x, sample_rate).item() - ref) < 0.05, name


@pytest.mark.parametrize("sample_rate", [44100, 48000])
def test_calibration_997_hz_sine(sample_rate, dtype):
    # BS.1770-4 sec. 2.1: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS.
    x = torch.from_numpy(sine(-20.0, 997.0, 3.0, sample_rate))[None].to(dtype)
    value = integrated_loudness(x, sample_rate)
    assert value.dtype == dtype and value.shape == (1,)
    assert abs(value.item() - (-23.01)) < 0.01


# EBU Tech 3341 (2016), Table 1, cases 1-5: 1 kHz stereo sine segments (dBFS per channel,
# seconds) whose integrated loudness must read -23.0 (case 2: -33.0) +-0.1 LUFS; cases 3 and 4
# exercise the relative and absolute gates.
EBU_3341 = [
    ([(-23.0, 20.0)], -23.0),
    ([(-33.0, 20.0)], -33.0),
    ([(-36.0, 10.0), (-23.0, 60.0), (-36.0, 10.0)], -23.0),
    ([(-72.0, 10.0), (-36.0, 10.0), (-23.0, 60.0), (-36.0, 10.0), (-72.0, 10.0)], -23.0),
    ([(-26.0, 20.0), (-20.0, 20.1), (-26.0, 20.0)], -23.0),
]


@pytest.mark.parametrize(("segments", "expected"), EBU_3341, ids=[f"case{i}" for i in range(1, 6)])
def test_ebu_tech_3341_cases(segments, expected):
    sample_rate = 48000
    x = np.concatenate([sine(lvl, 1000.0, sec, sample_rate, 2) for lvl, sec in segments], -1)
    value = integrated_loudness(torch.from_numpy(x)[None].float(), sample_rate).item()
    assert abs(value - expected) <= 0.1


def test_multichannel_weights_match_pyloudnorm():
    sample_rate = 16000
    g = torch.Generator().manual_seed(1)
    gains = torch.tensor([1.0, 0.5, 0.25, 0.8, 0.1], dtype=torch.float64)
    x = torch.randn(1, 5, 16000, generator=g, dtype=torch.float64) * gains[:, None]
    for channels in (1, 2, 3, 5):
        xc = x[:, :channels]
        ref = pyloudnorm.Meter(sample_rate, filter_class="DeMan").integrated_loudness(
            xc[0].numpy().T
        )
        ours = integrated_loudness(xc, sample_rate, gate_temperature_lu=1e-3).item()
        assert abs(ours - ref) < 1e-6, channels


def test_float32_agrees_with_float64(demo_clips):
    audio, sample_rate = demo_clips["voice"]
    x = audio[None].double()
    torch.testing.assert_close(
        integrated_loudness(x.float(), sample_rate).double(),
        integrated_loudness(x, sample_rate),
        rtol=0,
        atol=1e-4,
    )


def test_gradcheck_with_active_gates():
    sample_rate = 4000  # 1600-sample blocks keep the check small
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 2200, generator=g, dtype=torch.float64) * 0.1
    x[:, :, 1600:] *= 0.2  # later blocks near the relative gate: its gradient is exercised
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda s: integrated_loudness(s, sample_rate, gate_temperature_lu=2.0), (x,), fast_mode=True
    )


def test_silence_reads_floor_with_finite_gradient(dtype):
    x = torch.zeros(2, 2, 20000, dtype=dtype, requires_grad=True)
    value = integrated_loudness(x, 44100)
    value.sum().backward()
    torch.testing.assert_close(value, torch.full((2,), SILENCE_LUFS, dtype=dtype))
    assert torch.isfinite(x.grad).all()
    target = torch.randn(2, 2, 20000, dtype=dtype)
    x.grad = None
    loss = LoudnessLoss(44100)(x, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_loss_is_the_gain_difference_in_lu(demo_clips):
    audio, sample_rate = demo_clips["guitar_e_slide"]
    target = audio[None].double()
    pred = torch.cat([target * 10 ** (-6 / 20), target * 10 ** (3 / 20)])
    target = torch.cat([target, target])
    per_item = LoudnessLoss(sample_rate, reduction="none")(pred, target)
    assert per_item.shape == (2,)
    # Gain shifts every block by the same LU, so only blocks near the fixed -70 LUFS gate (the
    # clip's fade-out) change weight: a deviation of ~1e-4 LU.
    expected = torch.tensor([6.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(per_item, expected, atol=1e-3, rtol=0)
    mean = LoudnessLoss(sample_rate)(pred, target)
    torch.testing.assert_close(mean, per_item.mean())


def test_pyloudnorm_loudness_is_pyloudnorm_per_item():
    sample_rate = 8000
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 2, 6000, generator=g) * torch.tensor([1.0, 0.1, 0.0])[:, None, None]
    values = pyloudnorm_loudness(x, sample_rate)
    meter = pyloudnorm.Meter(sample_rate)
    expected = [meter.integrated_loudness(item.double().numpy().T) for item in x[:2]]
    assert values.shape == (3,) and values.dtype == np.float64
    np.testing.assert_allclose(values[:2], expected)
    assert values[2] == -np.inf  # pyloudnorm's reading of silence


def test_bad_inputs():
    sample_rate = 8000
    with pytest.raises(ValueError, match="3200 samples"):
        integrated_loudness(torch.randn(1, 1, 3199), sample_rate)
    with pytest.raises(ValueError, match="shorter than one 400 ms"):
        pyloudnorm_loudness(torch.randn(1, 1, 3199), sample_rate)
    with pytest.raises(ValueError, match="channels"):
        integrated_loudness(torch.randn(1, 6, 4000), sample_rate)
    with pytest.raises(ValueError, match="sample_rate"):
        integrated_loudness(torch.randn(1, 1, 4000), 3000)
    with pytest.raises(ValueError, match="gate_temperature_lu"):
        integrated_loudness(torch.randn(1, 1, 4000), sample_rate, gate_temperature_lu=0.0)
    bad = torch.randn(1, 1, 4000)
    bad[..., 10] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        integrated_loudness(bad, sample_rate)
    with pytest.raises(ValueError, match="x"):
        integrated_loudness(torch.randn(4000), sample_rate)
    loss = LoudnessLoss(sample_rate)
    with pytest.raises(ValueError, match="length"):
        loss(torch.randn(1, 1, 4000), torch.randn(1, 1, 4001))
    with pytest.raises(ValueError, match="reduction"):
        LoudnessLoss(sample_rate, reduction="avg")
    with pytest.raises(ValueError, match="sample_rate"):
        LoudnessLoss(1000)

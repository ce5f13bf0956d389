"""TimbreTransfer: the synthesis wiring against analytic signals and scipy, learning on a batch,
training statistics, and the transfer used by ``diffx timbre``."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
from torch import nn

from diffx.analysis.features import cents, crepe_pitch
from diffx.tasks import TimbreTransfer
from diffx.tasks.timbre_transfer import suggest_octaves, summarize_errors, transfer_timbre

SR = 16000
HOP = 64


class FixedControls(nn.Module):
    """Stands in for the decoder: one harmonic of a given amplitude, optional noise."""

    def __init__(self, amplitude=0.5, distribution=(1.0,), noise=0.0, bands=5):
        super().__init__()
        self.amplitude, self.noise, self.bands = amplitude, noise, bands
        self.distribution = torch.tensor(distribution)

    def forward(self, f0_hz, loudness_db):
        B, F = f0_hz.shape
        return {
            "amplitude": torch.full((B, F), self.amplitude),
            "harmonic_distribution": self.distribution.expand(B, F, -1).clone(),
            "noise_magnitudes": torch.full((B, F, self.bands), self.noise),
        }


def small_model(**kwargs) -> TimbreTransfer:
    options = dict(hidden_size=16, gru_size=16, n_harmonics=8, n_noise_bands=9,
                   reverb_seconds=0.0, crepe_model="tiny")  # fmt: skip
    options.update(kwargs)
    return TimbreTransfer(**options)


def test_a_constant_note_is_an_exact_sine_on_the_frame_grid():
    model = small_model()
    model.decoder = FixedControls(amplitude=0.5)
    f0 = torch.full((2, 100), 441.0)
    out = model(f0, torch.zeros(2, 100))
    n = np.arange(100 * HOP)
    expected = 0.5 * np.sin(2 * np.pi * 441.0 * n / SR)
    assert out["audio"].shape == (2, 1, 100 * HOP)
    np.testing.assert_allclose(out["harmonic"][0, 0].numpy(), expected, atol=2e-5)
    assert float(out["noise"].abs().max()) == 0.0
    torch.testing.assert_close(out["audio"], out["harmonic"] + out["noise"])


def test_reverb_adds_the_dry_sound_convolved_with_the_learned_response():
    model = small_model(reverb_seconds=0.01, reverb="free")  # 159 learnt taps after tap 0
    model.decoder = FixedControls(amplitude=0.3, noise=0.01)
    with torch.no_grad():
        model.reverb_ir.copy_(0.1 * torch.randn(model.reverb_ir.shape))
    out = model(torch.full((1, 50), 300.0), torch.zeros(1, 50), noise_seed=3)
    dry = (out["harmonic"] + out["noise"])[0, 0].detach().double().numpy()
    response = np.r_[0.0, model.reverb_ir.detach().double().numpy()]
    expected = dry + scipy.signal.fftconvolve(dry, response)[: dry.size]
    np.testing.assert_allclose(out["audio"][0, 0].detach().numpy(), expected, atol=1e-5)
    # The same seed gives the same noise.
    again = model(torch.full((1, 50), 300.0), torch.zeros(1, 50), noise_seed=3)
    torch.testing.assert_close(again["audio"], out["audio"])


@pytest.mark.parametrize("reverb_seconds", [0.005, 0.01, 0.02, 0.05])
def test_short_noise_reverbs_start_with_finite_trainable_decays(reverb_seconds):
    """The initial RT60 lies strictly inside its range, so its logit is finite (a reverb of at
    most 2 x the minimum RT60 once started at the minimum itself: logit 0 = -inf)."""
    model = small_model(reverb_seconds=reverb_seconds)
    assert torch.isfinite(model.reverb_rt60_raw).all()
    model.reverb_response().square().sum().backward()
    assert model.reverb_rt60_raw.grad.abs().sum() > 0


def test_noise_reverb_starts_quiet_and_always_decays_within_its_length():
    model = small_model(reverb_seconds=0.5)
    response = model.reverb_response().detach().double()
    assert response.shape == (round(0.5 * SR) - 1,)
    # Energy -40 dB at the start (noise_reverb_ir normalizes each band's envelope to unit
    # energy; a 0.3 s decay is nearly complete within 0.5 s).
    assert 10 * np.log10(float((response**2).sum())) == pytest.approx(-40.0, abs=1.0)
    with torch.no_grad():  # the longest decay and the loudest gain the mapping allows
        model.reverb_rt60_raw.fill_(20.0)
        model.reverb_gain_raw.fill_(20.0)
    response = model.reverb_response().detach().double().numpy()
    tenth = response.size // 10
    first, last = (response[:tenth] ** 2).sum(), (response[-tenth:] ** 2).sum()
    assert 10 * np.log10(last / first) < -40.0  # RT60 <= the length: a real decay
    assert 10 * np.log10((response**2).sum()) < 0.5  # at most the dry path's energy
    with pytest.raises(ValueError, match="reverb"):
        small_model(reverb="plate")


def test_training_on_one_batch_lowers_the_spectral_loss():
    torch.manual_seed(0)
    frames = 125
    f0 = torch.full((2, frames), 220.0)
    loudness = torch.full((2, frames), -25.0)
    n = np.arange(frames * HOP)
    target = 0.2 * np.sin(2 * np.pi * 220 * n / SR) + 0.1 * np.sin(2 * np.pi * 440 * n / SR)
    audio = torch.tensor(target, dtype=torch.float32).expand(2, 1, -1)
    model = small_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = model.spectral_loss(model(f0, loudness)["audio"], audio).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_summarize_errors_divides_sums_by_counts():
    sums = {"spectral_loss_sum": 6.0, "clips": 3.0, "loudness_abs_error_db_sum": 20.0,
            "note_frames": 10.0, "f0_abs_error_cents_sum": 50.0, "voiced_frames": 10.0,
            "f0_within_50_cents": 9.0}  # fmt: skip
    assert summarize_errors(sums) == {
        "spectral_loss": 2.0, "loudness_error_db": 2.0, "f0_error_cents": 5.0,
        "f0_within_50_cents": 0.9,
    }  # fmt: skip
    assert "f0_error_cents" not in summarize_errors({"clips": 1.0, "spectral_loss_sum": 1.0})


def test_suggested_octaves_bring_the_mean_pitch_nearest():
    assert suggest_octaves(48.0, 72.0) == 2
    assert suggest_octaves(60.0, 65.0) == 0
    assert suggest_octaves(60.0, 67.0) == 1
    assert suggest_octaves(80.0, 60.0) == -2


def voice():
    from diffx.io import load_demo

    audio, _ = load_demo("voice", sample_rate=SR)
    return audio[0]


def test_transfer_keeps_the_pitch_and_shifts_it_by_octaves():
    model = small_model()
    model.decoder = FixedControls(amplitude=0.3, distribution=(1.0, 0.5, 0.25))
    model.eval()
    audio = voice()
    for octaves in (0.0, 1.0):
        result = transfer_timbre(model, audio, pitch_shift_octaves=octaves, auto_adjust=False)
        assert result.audio.shape == audio.shape
        measured, _ = crepe_pitch(torch.from_numpy(result.audio), SR, model="tiny")
        voiced = result.note_mask
        assert voiced.sum() > 50
        error = cents(measured[voiced].double(),
                      torch.from_numpy(result.f0_hz[voiced]).double() * 2**octaves)  # fmt: skip
        assert float(error.abs().median()) < 20.0
        assert float((error.abs() <= 50).double().mean()) > 0.9


def test_auto_adjust_uses_the_training_statistics():
    model = small_model().eval()
    audio = voice()
    with pytest.warns(UserWarning, match="statistics"):
        plain = transfer_timbre(model, audio)
    np.testing.assert_allclose(plain.loudness_control_db, plain.loudness_db, atol=1e-4)
    with pytest.raises(ValueError, match="auto"):
        transfer_timbre(model, audio, pitch_shift_octaves="auto")
    model.loudness_quantiles_db.copy_(torch.linspace(-30.0, -10.0, 101))
    model.mean_pitch_midi.fill_(79.0)  # two octaves above a speaking voice
    result = transfer_timbre(model, audio, pitch_shift_octaves="auto", loudness_shift_db=-2.0)
    notes = result.loudness_control_db[result.note_mask]
    assert abs(np.median(notes) - (-20.0 - 2.0)) < 1.0
    assert result.suggested_octaves == result.pitch_shift_octaves
    midi = 69 + 12 * np.log2(result.f0_hz[result.note_mask] / 440)
    assert result.suggested_octaves == int(np.floor((79.0 - midi.mean()) / 12 + 0.5))
    np.testing.assert_allclose(result.f0_control_hz, result.f0_hz * 2.0**result.pitch_shift_octaves)
    with pytest.raises(ValueError, match="octaves"):
        transfer_timbre(model, audio, pitch_shift_octaves="up")

"""Property tests of the losses: any finite pair a training loop may hand them.

Over generated pairs (silence, DC, impulses, noise, sines, squares, independently for the
prediction and the target; from 1 sample up; float32/64; batch 1 and 7; 1-2 channels) each loss
either returns a finite value with a finite gradient with respect to the prediction, or, for
a signal too short for its analysis, raises ``ValueError`` saying so. Mismatched shapes and
non-finite input raise ``ValueError`` naming the argument.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st

from diffx import losses as L
from tests.property.strategies import Audio, audio

SR = 44100.0
FACTORIES = {
    "esr": lambda: L.ESRLoss(),
    "esr_hp": lambda: L.ESRLoss(L.make_pre_emphasis("hp")),
    "esr_aw": lambda: L.ESRLoss(L.make_pre_emphasis("aw", SR)),
    "esr_lp": lambda: L.ESRLoss(L.make_pre_emphasis("lp", SR)),
    "dc": lambda: L.DCLoss(),
    "ncc": lambda: L.NCCLoss(),
    "mr_stft": lambda: L.MultiResolutionSTFTLoss(),
    "mel_stft": lambda: L.MelSTFTLoss(SR, n_mels=32, fft_size=512, hop_size=128, win_length=512),
    "multi_scale": lambda: L.MultiScaleSpectralLoss(),
    "complex_stft": lambda: L.ComplexSTFTLoss(),
    "parallel_mix": lambda: L.ParallelMixLoss(SR),
    "loudness": lambda: L.LoudnessLoss(SR),
    "nmr": lambda: L.NMRLoss(SR),
}
SHORT = ("too short", "at least", "samples")  # words of the documented refusal


def _pair(draw, max_samples: int) -> tuple[Audio, Audio]:
    pred = draw(audio(max_samples=max_samples))
    target = draw(audio(max_samples=max_samples))
    # Same shape and dtype, independent content.
    target = Audio(target.kind, pred.batch, pred.channels, pred.samples, pred.dtype,
                   target.level_db, target.seed)  # fmt: skip
    return pred, target


def _loss_and_gradient(loss_fn, pred: torch.Tensor, target: torch.Tensor):
    pred = pred.detach().clone().requires_grad_(True)
    loss = loss_fn(pred, target)
    loss.backward()
    return loss.detach(), pred.grad


# As in test_effects: float32 is judged where the exact (float64) loss and gradient fit in it
# with this much headroom (an ESR of a 300 dB error over a silent target is about 1e38).
FLOAT32_HEADROOM = 1e-3


@pytest.mark.parametrize("name", FACTORIES)
@given(data=st.data())
def test_loss_and_gradient_are_finite_or_the_input_is_refused(name, data):
    pred_audio, target_audio = _pair(data.draw, 2**14)
    loss_fn = FACTORIES[name]()
    pred, target = pred_audio.tensor(), target_audio.tensor()
    try:
        exact = _loss_and_gradient(loss_fn, pred.double(), target.double())
    except ValueError as error:
        # The only refusal a finite pair may get: too short for the loss's analysis.
        assert any(word in str(error) for word in SHORT), f"{name}: {error}"
        with pytest.raises(ValueError):  # and in every dtype
            loss_fn(pred, target)
        return
    assert exact[0].dim() == 0 and bool(torch.isfinite(exact[0])), f"{name}: loss {exact[0]}"
    assert bool(torch.isfinite(exact[1]).all()), f"{name}: non-finite gradient (float64)"
    if pred.dtype == torch.float32:
        largest = max(float(t.abs().max()) for t in exact)
        if not largest < torch.finfo(torch.float32).max * FLOAT32_HEADROOM:
            event("float32 not judged: the exact values exceed its range")
            return
        loss, grad = _loss_and_gradient(loss_fn, pred, target)
        assert bool(torch.isfinite(loss)), f"{name}: loss {loss} (float32)"
        assert bool(torch.isfinite(grad).all()), f"{name}: non-finite gradient (float32)"


@pytest.mark.parametrize("name", FACTORIES)
@given(bad=st.sampled_from(("nan_pred", "inf_target", "shape", "dims")))
def test_bad_pairs_raise_value_error_naming_the_argument(name, bad):
    loss_fn = FACTORIES[name]()
    pred = torch.zeros(2, 1, 8192)
    target = torch.zeros(2, 1, 8192)
    if bad == "nan_pred":
        pred[0, 0, 10] = math.nan
        match = "pred"
    elif bad == "inf_target":
        target[1, 0, -1] = math.inf
        match = "target"
    elif bad == "shape":
        target = torch.zeros(2, 1, 8000)
        match = "shape|differ"
    else:
        pred, target = pred[0, 0], target[0, 0]
        match = "pred|shape|dim"
    with pytest.raises(ValueError, match=match):
        loss_fn(pred, target)

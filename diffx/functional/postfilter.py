"""Post-filter math on feature trajectories ``(..., frames, dims)``: variance scaling toward a
global variance, and the moving average that smooths a post-filter's noise at inference."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def _frame_weights(features: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
    """``(..., frames, 1)`` weights: 1 on the frames that count, 0 elsewhere."""
    if frame_mask is None:
        return torch.ones_like(features[..., :1])
    if frame_mask.shape != features.shape[:-1]:
        raise ValueError(
            f"frame_mask {tuple(frame_mask.shape)} must match the features' frames "
            f"{tuple(features.shape[:-1])}"
        )
    return frame_mask.to(features.dtype)[..., None]


def utterance_statistics(
    features: torch.Tensor, frame_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-utterance mean and (biased) variance ``(..., dims)`` over the masked frames, and
    the count of those frames ``(..., 1)``."""
    weights = _frame_weights(features, frame_mask)
    count = weights.sum(dim=-2)
    mean = (features * weights).sum(dim=-2) / count.clamp_min(1.0)
    variance = (((features - mean[..., None, :]) ** 2) * weights).sum(dim=-2) / count.clamp_min(1.0)
    return mean, variance, count


def variance_scaling(
    features: torch.Tensor,
    global_variance: torch.Tensor,
    strength: float = 1.0,
    offset: int = 0,
    frame_mask: torch.Tensor | None = None,
    eps: float = 1e-10,
) -> torch.Tensor:
    """Scale each trajectory about its utterance mean toward a global variance (Silén et al.,
    "Ways to implement global variance in statistical speech synthesis", Interspeech 2012)::

        out = mean + (gv / var) ** (strength / 2) * (x - mean)

    so the output's variance is ``var ** (1 - strength) * gv ** strength``: ``strength`` 1
    gives the global variance exactly, 0.5 half the way in dB, 0 the input. ``mean`` and
    ``var`` are the utterance's, over ``frame_mask``; with a mask only those frames change
    (NNSVS applies it to note frames).

    Args:
        features: ``(..., frames, dims)``.
        global_variance: ``(dims,)`` target variances (natural speech's GV).
        strength: in ``[0, 1]`` usually; values above 1 over-shoot.
        offset: dimensions below ``offset`` pass unchanged (NNSVS: 2 for mel-cepstra, whose
            ``c_0`` and ``c_1`` carry loudness and tilt).
        frame_mask: ``(..., frames)`` bool, the frames that count and change.
        eps: variance floor; a flat trajectory (variance 0) stays flat.

    Returns:
        ``(..., frames, dims)``.
    """
    if global_variance.shape[-1] != features.shape[-1]:
        raise ValueError(
            f"global_variance has {global_variance.shape[-1]} dims, features {features.shape[-1]}"
        )
    if not 0 <= offset <= features.shape[-1]:
        raise ValueError(f"offset must be in [0, {features.shape[-1]}], got {offset}")
    if not torch.isfinite(torch.as_tensor(strength)) or strength < 0:
        raise ValueError(f"strength must be a finite number >= 0, got {strength}")
    if torch.any(global_variance[offset:] < 0) or not torch.all(torch.isfinite(global_variance)):
        raise ValueError("global_variance must be finite and non-negative")
    # Only the dims from ``offset`` on are touched: statistics and scaling work on that slice.
    # (Two explicit passes: torch.var_mean over the frame axis is several times slower.)
    x = features[..., offset:]
    if frame_mask is None:
        mean = x.mean(dim=-2, keepdim=True)
        centred = x - mean
        variance = centred.square().mean(dim=-2, keepdim=True)
    else:
        mean, variance, _ = utterance_statistics(x, frame_mask)
        mean, variance = mean[..., None, :], variance[..., None, :]
        centred = x - mean
    target = global_variance[offset:].to(features)
    # A flat trajectory (variance under eps) has nothing to scale: its gain stays 1.
    # A target of 0 flattens (gain 0 for strength > 0): the power is taken of a safe base
    # there, as d(r ** p)/dr at r = 0 is infinite for p < 1 and its 0 x inf would be NaN.
    ratio = target / variance.clamp_min(eps)
    zero_gain = 0.0 if strength > 0 else 1.0
    gain = torch.where(ratio > 0, torch.where(ratio > 0, ratio, 1.0) ** (0.5 * strength), zero_gain)
    gain = torch.where(variance > eps, gain, 1.0)
    scaled = centred * gain + mean
    if frame_mask is not None:
        scaled = torch.where(frame_mask[..., None].bool(), scaled, x)
    if offset == 0:
        return scaled
    return torch.cat([features[..., :offset], scaled], dim=-1)


def moving_average(x: torch.Tensor, width: int) -> torch.Tensor:
    """Centred moving average of ``width`` frames along the last axis of ``x (..., frames)``;
    the ends are padded by repeating the edge values, so a constant stays constant. ``width``
    <= 1 returns ``x``."""
    if width <= 1:
        return x
    shape = x.shape
    flat = x.reshape(-1, 1, shape[-1])
    left = (width - 1) // 2
    padded = F.pad(flat, (left, width - 1 - left), mode="replicate")
    kernel = torch.full((1, 1, width), 1.0 / width, dtype=x.dtype, device=x.device)
    return F.conv1d(padded, kernel).reshape(shape)

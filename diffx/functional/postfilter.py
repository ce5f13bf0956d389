"""Post-filter math on feature trajectories ``(..., frames, dims)``: the layout of the streams
in a feature array, the global variance (GV) of natural utterances, variance scaling toward it,
and the moving average that smooths a post-filter's noise at inference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class StreamLayout:
    """Names and sizes of the streams concatenated along the last axis of a feature array.

    ``StreamLayout(("mgc", "lf0", "vuv", "bap"), (60, 1, 1, 1))`` describes NNSVS-style
    ``(frames, 63)`` arrays; any ``[frames, dims]`` streams can be named.
    """

    names: tuple[str, ...]
    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "sizes", tuple(int(s) for s in self.sizes))
        if len(self.names) != len(self.sizes) or not self.names:
            raise ValueError(f"stream names {self.names} and sizes {self.sizes} must pair up")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"stream names must be unique, got {self.names}")
        if any(s < 1 for s in self.sizes):
            raise ValueError(f"stream sizes must be positive, got {self.sizes}")

    @classmethod
    def from_dict(cls, sizes: dict[str, int]) -> StreamLayout:
        return cls(tuple(sizes), tuple(sizes.values()))

    def to_dict(self) -> dict[str, int]:
        return dict(zip(self.names, self.sizes))

    @property
    def dims(self) -> int:
        return sum(self.sizes)

    def span(self, name: str) -> slice:
        """The slice of the last axis that holds stream ``name``."""
        if name not in self.names:
            raise KeyError(f"unknown stream {name!r}; the layout has {list(self.names)}")
        start = sum(self.sizes[: self.names.index(name)])
        return slice(start, start + self.sizes[self.names.index(name)])

    def split(self, features):
        """``{name: features[..., span]}`` for an array or tensor ``(..., dims)``."""
        if features.shape[-1] != self.dims:
            raise ValueError(
                f"features have {features.shape[-1]} dims; the layout {self.to_dict()} "
                f"needs {self.dims}"
            )
        return {name: features[..., self.span(name)] for name in self.names}

    def voiced(self, features):
        """Voiced-frame mask ``(...)`` of an array or tensor ``(..., dims)``: its ``vuv``
        stream above 0.5; ``None`` when the layout has no ``vuv`` stream."""
        if "vuv" not in self.names:
            return None
        return features[..., self.span("vuv")][..., 0] > 0.5

    def join(self, streams: dict[str, np.ndarray]) -> np.ndarray:
        """Concatenate ``streams`` (every name of the layout, each ``(frames, size)``)."""
        missing = [n for n in self.names if n not in streams]
        if missing:
            raise KeyError(f"streams {missing} are missing")
        return np.concatenate([np.asarray(streams[n], np.float32) for n in self.names], axis=-1)


def masked_frames(features: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The frames of ``features (frames, dims)`` where ``mask (frames,)`` is true, as float64
    (all of them without a mask)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be (frames, dims), got {features.shape}")
    if mask is None:
        return features
    mask = np.asarray(mask, dtype=bool).reshape(-1)
    if mask.shape[0] != features.shape[0]:
        raise ValueError(f"mask has {mask.shape[0]} frames, features {features.shape[0]}")
    return features[mask]


def utterance_variance(features: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """GV of one utterance: per-dimension variance ``(dims,)`` over its (masked) frames;
    NaN when fewer than 2 frames remain."""
    frames = masked_frames(features, mask)
    if frames.shape[0] < 2:
        return np.full(frames.shape[1], np.nan)
    return frames.var(axis=0)


def global_variance(
    utterances: Sequence[np.ndarray], masks: Sequence[np.ndarray | None] | None = None
) -> np.ndarray:
    """The global variance ``(dims,)``: the mean over utterances of each utterance's
    per-dimension variance (Toda & Tokuda, 2007); utterances with under 2 frames are skipped.

    Raises:
        ValueError: no utterance with 2 or more (masked) frames.
    """
    masks = masks if masks is not None else [None] * len(utterances)
    variances = [utterance_variance(u, m) for u, m in zip(utterances, masks)]
    variances = [v for v in variances if np.all(np.isfinite(v))]
    if not variances:
        raise ValueError("global variance needs an utterance with at least 2 (masked) frames")
    return np.mean(variances, axis=0)


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

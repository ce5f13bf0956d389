"""Stereo: constant-power panning, mid/side encoding and decoding, stereo width.

Audio stays ``(batch, channels, samples)``; stereo means two channels ordered [left, right].
Mid/side uses the half-sum convention, ``M = (L + R) / 2``, ``S = (L - R) / 2``, so that
``L = M + S`` and ``R = M - S`` exactly, and a mono signal (L = R) has ``S = 0``.
"""

from __future__ import annotations

import math

import torch

from diffx._validation import as_param, check_audio

#: Widest stereo width accepted by :func:`stereo_width`: the side signal times 4 (+12 dB).
MAX_WIDTH = 4.0


def _check_stereo(x: torch.Tensor, name: str, what: str) -> None:
    check_audio(x, name)
    if x.shape[1] != 2:
        raise ValueError(
            f"{what} needs stereo {name} shaped (batch, 2, samples) [left, right], got "
            f"{x.shape[1]} channel(s)"
        )


def pan(x: torch.Tensor, pan_position: torch.Tensor | float) -> torch.Tensor:
    """Constant-power (sine/cosine) panning of mono audio to stereo.

    With ``theta = (p + 1) pi / 4`` for the position ``p`` in [-1, 1] (-1 hard left, 0 centre,
    1 hard right), ``left = cos(theta) x`` and ``right = sin(theta) x``: the summed power of
    the two channels equals the input's at every position (-3 dB per channel at the centre).

    Args:
        x: ``(batch, 1, samples)`` mono audio.
        pan_position: ``(batch,)`` or scalar position in [-1, 1].

    Returns:
        ``(batch, 2, samples)`` stereo audio [left, right].
    """
    check_audio(x, "x")
    if x.shape[1] != 1:
        raise ValueError(
            f"pan takes mono x shaped (batch, 1, samples), got {x.shape[1]} channels "
            "(for stereo input use stereo_width, or pan each source before mixing)"
        )
    p = as_param(pan_position, "pan_position", x.shape[0], x, -1.0, 1.0)
    theta = (p + 1.0) * (math.pi / 4.0)
    gains = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)  # (batch, 2)
    return x * gains[:, :, None]


def mid_side_encode(x: torch.Tensor) -> torch.Tensor:
    """``(batch, 2, samples)`` [left, right] to [mid, side], ``M = (L + R) / 2``,
    ``S = (L - R) / 2``."""
    _check_stereo(x, "x", "mid_side_encode")
    left, right = x[:, :1], x[:, 1:]
    return torch.cat([(left + right) * 0.5, (left - right) * 0.5], dim=1)


def mid_side_decode(ms: torch.Tensor) -> torch.Tensor:
    """``(batch, 2, samples)`` [mid, side] back to [left, right], ``L = M + S``,
    ``R = M - S`` (the exact inverse of :func:`mid_side_encode`)."""
    _check_stereo(ms, "ms", "mid_side_decode")
    mid, side = ms[:, :1], ms[:, 1:]
    return torch.cat([mid + side, mid - side], dim=1)


def stereo_width(x: torch.Tensor, width: torch.Tensor | float) -> torch.Tensor:
    """Scale the side signal: ``M`` kept, ``S`` times ``width``.

    0 folds to mono (both channels the mid), 1 leaves the input unchanged, above 1 widens
    (the side louder than recorded; 2 is +6 dB of side).

    Args:
        x: ``(batch, 2, samples)`` stereo audio [left, right].
        width: ``(batch,)`` or scalar in [0, ``MAX_WIDTH``].

    Returns:
        ``(batch, 2, samples)`` stereo audio.
    """
    _check_stereo(x, "x", "stereo_width")
    w = as_param(width, "width", x.shape[0], x, 0.0, MAX_WIDTH)
    ms = mid_side_encode(x)
    return mid_side_decode(torch.cat([ms[:, :1], ms[:, 1:] * w[:, None, None]], dim=1))

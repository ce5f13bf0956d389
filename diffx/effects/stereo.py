"""Stereo effects: constant-power panning of mono audio, stereo width by mid/side."""

from __future__ import annotations

from diffx import functional as F
from diffx.effects.base import Effect, ParamSpec
from diffx.functional import stereo as _stereo


class Pan(Effect):
    """Constant-power pan of mono audio to stereo (:func:`diffx.functional.pan`).

    Mono in, stereo out: ``x (batch, 1, samples)`` becomes ``(batch, 2, samples)`` [left,
    right], so place it where the chain turns a mono source into a stereo mix. Other channel
    counts raise ``ValueError``.
    """

    CHANNELS = 1
    PARAMS = (ParamSpec("pan_position", -1.0, 1.0, 0.0, "", limits=(-1.0, 1.0)),)

    def process(self, x, pan_position):
        return F.pan(x, pan_position)


class StereoWidth(Effect):
    """Stereo width by mid/side (:func:`diffx.functional.stereo_width`): the side signal is
    scaled by ``width`` (0 mono, 1 unchanged, 2 twice as wide) and the mid kept.

    Stereo only: ``x (batch, 2, samples)``; other channel counts raise ``ValueError`` (a mono
    signal has no side to scale).
    """

    CHANNELS = 2
    PARAMS = (ParamSpec("width", 0.0, 2.0, 1.0, "", limits=(0.0, _stereo.MAX_WIDTH)),)

    def process(self, x, width):
        return F.stereo_width(x, width)

"""Simulated analog devices as modules, for configs (e.g. the target of an effect-modeling run)."""

from __future__ import annotations

import torch
from torch import nn

from diffx._validation import check_audio
from diffx.functional.circuits import DEFAULT_CUTOFF_HZ, diode_clipper


class DiodeClipper(nn.Module):
    """The diode clipper pedal core, simulated alias-free (:func:`diffx.functional.diode_clipper`).

    A reference device, not a trainable effect: it has no parameters and no gradient.

    Args:
        sample_rate: Hz of the audio it processes.
        drive_db: gain before the circuit, dB (24 dB drives guitar at -1 dBFS peak deep into
            clipping: a high-gain pedal).
        cutoff_hz: small-signal cut-off, Hz.
        oversampling: internal rate factor (8 or more: practically alias-free).
        output_gain_db: gain after the circuit, dB.

    Shapes:
        ``(batch, channels, samples)`` in and out.
    """

    def __init__(
        self,
        sample_rate: int = 44100,
        drive_db: float = 24.0,
        cutoff_hz: float = DEFAULT_CUTOFF_HZ,
        oversampling: int = 8,
        output_gain_db: float = 0.0,
    ):
        super().__init__()
        self.sample_rate = sample_rate
        self.drive_db, self.cutoff_hz = float(drive_db), float(cutoff_hz)
        self.oversampling, self.output_gain_db = oversampling, float(output_gain_db)
        # fail on bad settings now, not on the first batch
        diode_clipper(torch.zeros(1, 8), sample_rate, drive_db, cutoff_hz, oversampling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_audio(x, "x")
        return diode_clipper(
            x,
            self.sample_rate,
            self.drive_db,
            self.cutoff_hz,
            self.oversampling,
            self.output_gain_db,
        )

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, drive_db={self.drive_db}, "
            f"cutoff_hz={self.cutoff_hz:.1f}, oversampling={self.oversampling}"
        )

"""Simulated analog devices as modules, for configs (e.g. the target of an effect-modeling run)."""

from __future__ import annotations

import torch
from torch import nn

from diffx._validation import check_audio, check_sample_rate
from diffx.functional.circuits import DEFAULT_CUTOFF_HZ, DEFAULT_DRIVE_DB, diode_clipper


class DiodeClipper(nn.Module):
    """The diode clipper pedal core, simulated without aliasing (:func:`diode_clipper`).

    A reference device, not a trainable effect: it has no parameters and passes no gradient
    (see :func:`diffx.functional.circuits.diode_clipper` for the circuit, levels and method).
    The defaults make a high-gain pedal: guitar peaking at -6..0 dBFS is driven 20-30 times
    past the diodes' knee.

    Args:
        sample_rate: Hz of the audio it processes.
        drive_db: gain before the circuit, dB (full scale times the drive gain is the source
            voltage in volts).
        cutoff_hz: small-signal cut-off ``1 / (2 pi R C)``, Hz.
        oversampling: integer factor of the internal rate (8 or more: practically alias-free;
            1: at the audio rate, aliasing).
        output_gain_db: gain after the circuit, dB.

    Shapes:
        ``(batch, channels, samples)`` in and out, the input's dtype and device.
    """

    def __init__(
        self,
        sample_rate: float,
        drive_db: float = DEFAULT_DRIVE_DB,
        cutoff_hz: float = DEFAULT_CUTOFF_HZ,
        oversampling: int = 8,
        output_gain_db: float = 0.0,
    ) -> None:
        super().__init__()
        self.sample_rate = check_sample_rate(sample_rate)
        self.drive_db = drive_db
        self.cutoff_hz = cutoff_hz
        self.oversampling = oversampling
        self.output_gain_db = output_gain_db
        # fail on a bad setting (named) when the config is read, not on the first batch
        self.forward(torch.zeros(1, 1, 8, dtype=torch.float64))
        self.drive_db, self.cutoff_hz = float(drive_db), float(cutoff_hz)
        self.output_gain_db = float(output_gain_db)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Process ``x``: ``(batch, channels, samples)``, full scale 1.0."""
        check_audio(x, "x")
        return diode_clipper(
            x,
            self.sample_rate,
            drive_db=self.drive_db,
            cutoff_hz=self.cutoff_hz,
            oversampling=self.oversampling,
            output_gain_db=self.output_gain_db,
        )

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate:g}, drive_db={self.drive_db:g}, "
            f"cutoff_hz={self.cutoff_hz:.1f}, oversampling={self.oversampling}, "
            f"output_gain_db={self.output_gain_db:g}"
        )

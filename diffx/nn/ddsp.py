"""DDSP's decoder: frame-rate f0 and loudness in, synthesizer controls out (Engel et al., 2020).

Each input goes through its own MLP; their outputs, concatenated, feed a GRU; the GRU's output
is concatenated with the two MLP outputs again and goes through a last MLP and a linear layer
that is split into the controls of a harmonic synthesizer and a filtered-noise synthesizer
(the paper's "RnnFcDecoder", Fig. 2 and Appendix B).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from diffx._validation import check_finite
from diffx.nn.gru import GRU

F0_SCALE_MIDI = 127.0
"""f0 enters the network as a MIDI note number divided by this (0..1 over the MIDI range)."""

LOUDNESS_RANGE_DB = 120.0
"""Loudness enters as ``loudness_db / LOUDNESS_RANGE_DB + 1``: 0 at the -120 dB floor of
:func:`diffx.analysis.features.a_weighted_loudness_db`, 1 at 0 dB."""

EXP_SIGMOID_EXPONENT = math.log(10.0)
EXP_SIGMOID_MAX = 2.0
EXP_SIGMOID_FLOOR = 1e-7
"""DDSP's output nonlinearity ``2 sigmoid(x) ** ln(10) + 1e-7``: positive, saturating at 2, and
with a gradient that reaches far into the quiet range (amplitudes span decades, a plain
sigmoid or softplus would crowd them near 0)."""

NOISE_BIAS = -5.0
"""Added to the noise magnitudes' pre-activations so the noise starts quiet (about -60 dB),
as DDSP's filtered-noise synthesizer does, and the harmonics learn first."""

MIN_F0_HZ = 1.0
"""f0 is floored here before the log of the MIDI conversion (unvoiced frames may read 0 Hz)."""


def exp_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``2 * sigmoid(x) ** ln(10) + 1e-7`` (DDSP's scaled sigmoid for amplitudes)."""
    return EXP_SIGMOID_MAX * torch.sigmoid(x) ** EXP_SIGMOID_EXPONENT + EXP_SIGMOID_FLOOR


def _mlp(in_size: int, hidden_size: int, layers: int) -> nn.Sequential:
    """``layers`` x (Linear, LayerNorm, LeakyReLU), DDSP's fully connected stack."""
    blocks: list[nn.Module] = []
    for i in range(layers):
        blocks += [
            nn.Linear(in_size if i == 0 else hidden_size, hidden_size),
            nn.LayerNorm(hidden_size),
            nn.LeakyReLU(),
        ]
    return nn.Sequential(*blocks)


class DDSPDecoder(nn.Module):
    """f0 and loudness per frame -> amplitude, harmonic distribution and noise magnitudes.

    Args:
        n_harmonics: harmonics of the oscillator bank (the paper uses 100).
        n_noise_bands: magnitudes of the filtered noise, evenly spaced from DC to Nyquist (65).
        hidden_size: width of every MLP layer (512 in the paper).
        gru_size: GRU units (512).
        mlp_layers: layers per MLP (3).

    Shapes:
        ``forward(f0_hz (batch, frames), loudness_db (batch, frames))`` returns a dict of
        ``amplitude (batch, frames)``, ``harmonic_distribution (batch, frames, n_harmonics)``
        and ``noise_magnitudes (batch, frames, n_noise_bands)``, all positive (linear scale;
        the distribution is normalized by the synthesizer).
    """

    def __init__(
        self,
        n_harmonics: int = 100,
        n_noise_bands: int = 65,
        hidden_size: int = 512,
        gru_size: int = 512,
        mlp_layers: int = 3,
    ) -> None:
        super().__init__()
        for value, name in (
            (n_harmonics, "n_harmonics"),
            (hidden_size, "hidden_size"),
            (gru_size, "gru_size"),
            (mlp_layers, "mlp_layers"),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if int(n_noise_bands) < 2:
            raise ValueError(f"n_noise_bands must be >= 2, got {n_noise_bands}")
        self.n_harmonics = int(n_harmonics)
        self.n_noise_bands = int(n_noise_bands)
        self.f0_mlp = _mlp(1, hidden_size, mlp_layers)
        self.loudness_mlp = _mlp(1, hidden_size, mlp_layers)
        # nn.GRU's parameters with a faster CPU backward (diffx.nn.gru); same checkpoints.
        self.gru = GRU(2 * hidden_size, gru_size)
        self.out_mlp = _mlp(gru_size + 2 * hidden_size, hidden_size, mlp_layers)
        self.head = nn.Linear(hidden_size, 1 + self.n_harmonics + self.n_noise_bands)

    @staticmethod
    def scale_inputs(f0_hz: torch.Tensor, loudness_db: torch.Tensor) -> torch.Tensor:
        """``(batch, frames, 2)`` network inputs: MIDI pitch / 127 and loudness / 120 dB + 1."""
        # MIDI note number (A4 = 440 Hz = 69), in the input dtype
        pitch = (69.0 + 12.0 * torch.log2(f0_hz.clamp_min(MIN_F0_HZ) / 440.0)) / F0_SCALE_MIDI
        level = loudness_db / LOUDNESS_RANGE_DB + 1.0
        return torch.stack([pitch, level], dim=-1)

    def forward(self, f0_hz: torch.Tensor, loudness_db: torch.Tensor) -> dict[str, torch.Tensor]:
        if f0_hz.dim() != 2 or f0_hz.shape != loudness_db.shape:
            raise ValueError(
                "f0_hz and loudness_db must both be (batch, frames), got "
                f"{tuple(f0_hz.shape)} and {tuple(loudness_db.shape)}"
            )
        check_finite(f0_hz.detach(), "f0_hz")
        check_finite(loudness_db.detach(), "loudness_db")
        inputs = self.scale_inputs(f0_hz, loudness_db)
        f0_hidden = self.f0_mlp(inputs[..., :1])
        loudness_hidden = self.loudness_mlp(inputs[..., 1:])
        joint = torch.cat([f0_hidden, loudness_hidden], dim=-1)
        recurrent, _ = self.gru(joint)
        hidden = self.out_mlp(torch.cat([recurrent, joint], dim=-1))
        raw = self.head(hidden)
        H = self.n_harmonics
        return {
            "amplitude": exp_sigmoid(raw[..., 0]),
            "harmonic_distribution": exp_sigmoid(raw[..., 1 : 1 + H]),
            "noise_magnitudes": exp_sigmoid(raw[..., 1 + H :] + NOISE_BIAS),
        }

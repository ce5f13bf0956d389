"""Sine-tone test and training sets for measuring and reducing aliasing.

Carson, Wright and Bilbao ("Anti-aliasing of neural distortion effects via model fine tuning",
DAFx 2025) drive a model with pure tones and analyse its steady-state output:

- Evaluation (section 4): the 88 piano notes, MIDI 21-108 (27.5 Hz-4186 Hz), each at
  -36, -18 and -6 dBFS peak, 1.2 s long, the first 0.2 s discarded so that onset transients
  settle, the remaining 1 s analysed.
- Fine tuning (section 3): tones with MIDI note drawn uniformly from [21, 127], amplitude from
  U(0, 1) and starting phase from U(0, 2 pi).

f0 = 440 * 2^((midi - 69) / 12) Hz (equal temperament, A4 = MIDI 69 = 440 Hz). Each tone's
phase is computed in float64 and the waveform cast to the requested dtype afterwards, so a
float32 tone carries no accumulated phase error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import Dataset

from diffx._validation import check_sample_rate

#: Peak levels of the evaluation tones (Carson et al., DAFx 2025, section 4).
TEST_LEVELS_DBFS = (-36.0, -18.0, -6.0)


def midi_to_hz(midi: torch.Tensor | float) -> torch.Tensor:
    """Equal-tempered frequency of a (possibly fractional) MIDI note, A4 = 69 = 440 Hz."""
    return 440.0 * 2.0 ** ((torch.as_tensor(midi, dtype=torch.float64) - 69.0) / 12.0)


def hz_to_midi(f0_hz: torch.Tensor | float) -> torch.Tensor:
    """Inverse of :func:`midi_to_hz` (fractional MIDI note number)."""
    return 69.0 + 12.0 * torch.log2(torch.as_tensor(f0_hz, dtype=torch.float64) / 440.0)


@dataclass(frozen=True)
class ToneSet:
    """A set of sine tones x = amplitude * sin(2 pi f0 n / fs + phase).

    Attributes:
        audio: ``(n, 1, samples)`` the tones.
        f0_hz: ``(n,)`` float64, Hz.
        amplitude: ``(n,)`` float64, peak amplitude (1 = full scale).
        level_dbfs: ``(n,)`` float64, 20 log10(amplitude), dB re full scale (peak).
        midi: ``(n,)`` float64, (fractional) MIDI note number.
        phase: ``(n,)`` float64, starting phase in radians.
        sample_rate: Hz.
        discard_samples: onset samples to drop before analysis; the remaining
            ``samples - discard_samples`` (even) are analysed.
    """

    audio: torch.Tensor
    f0_hz: torch.Tensor
    amplitude: torch.Tensor
    level_dbfs: torch.Tensor
    midi: torch.Tensor
    phase: torch.Tensor
    sample_rate: float
    discard_samples: int

    def __len__(self) -> int:
        return self.audio.shape[0]

    @property
    def analysed_samples(self) -> int:
        """Length of the analysed (steady-state) segment."""
        return self.audio.shape[-1] - self.discard_samples

    def subset(self, index: Sequence[int] | torch.Tensor | slice) -> ToneSet:
        """The tones selected by ``index`` (a slice, a list of indices or a boolean mask)."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index)
            if index.dim() == 0:
                index = index.reshape(1)
        return replace(
            self,
            audio=self.audio[index],
            f0_hz=self.f0_hz[index],
            amplitude=self.amplitude[index],
            level_dbfs=self.level_dbfs[index],
            midi=self.midi[index],
            phase=self.phase[index],
        )


def _samples(duration_s: float, discard_s: float, sample_rate: float) -> tuple[int, int]:
    """Total and discarded sample counts; the analysed remainder must be even and positive."""
    for name, value in (("duration_s", duration_s), ("discard_s", discard_s)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    total = round(duration_s * sample_rate)
    discard = round(discard_s * sample_rate)
    analysed = total - discard
    if analysed < 2 or analysed % 2:
        raise ValueError(
            f"duration_s - discard_s must leave an even number (>= 2) of samples to analyse, got "
            f"{total} - {discard} = {analysed} at {sample_rate:g} Hz (duration_s={duration_s}, "
            f"discard_s={discard_s})"
        )
    return total, discard


def _check_midi_range(midi_low: float, midi_high: float, sample_rate: float) -> None:
    if not (math.isfinite(midi_low) and math.isfinite(midi_high) and midi_low <= midi_high):
        raise ValueError(
            f"midi_low must be <= midi_high (finite), got midi_low={midi_low}, "
            f"midi_high={midi_high}"
        )
    top = float(midi_to_hz(midi_high))
    if not 0 < top < sample_rate / 2:
        raise ValueError(
            f"midi_high = {midi_high} is {top:.6g} Hz, not below Nyquist "
            f"({sample_rate / 2:g} Hz at sample_rate={sample_rate:g})"
        )


def _render(
    f0_hz: torch.Tensor,
    amplitude: torch.Tensor,
    phase: torch.Tensor,
    num_samples: int,
    sample_rate: float,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``(n, 1, samples)`` sines, phases reduced to cycles in float64 before the 2 pi."""
    n = torch.arange(num_samples, dtype=torch.float64)
    cycles = torch.frac(f0_hz[:, None] / sample_rate * n)
    x = amplitude[:, None] * torch.sin(2 * math.pi * cycles + phase[:, None])
    return x.to(dtype)[:, None, :]


def _make_set(
    midi, amplitude, phase, sample_rate, total, discard, dtype, level_dbfs=None
) -> ToneSet:
    midi = midi.to(torch.float64)
    amplitude = amplitude.to(torch.float64)
    phase = phase.to(torch.float64)
    f0 = midi_to_hz(midi)
    return ToneSet(
        audio=_render(f0, amplitude, phase, total, sample_rate, dtype),
        f0_hz=f0,
        amplitude=amplitude,
        level_dbfs=20.0 * torch.log10(amplitude) if level_dbfs is None else level_dbfs,
        midi=midi,
        phase=phase,
        sample_rate=sample_rate,
        discard_samples=discard,
    )


def chromatic_test_set(
    sample_rate: float,
    levels_dbfs: Sequence[float] = TEST_LEVELS_DBFS,
    midi_low: int = 21,
    midi_high: int = 108,
    duration_s: float = 1.2,
    discard_s: float = 0.2,
    dtype: torch.dtype = torch.float64,
) -> ToneSet:
    """The evaluation tones of Carson et al.: every MIDI note at every level, zero phase.

    Args:
        sample_rate: Hz.
        levels_dbfs: peak levels in dB re full scale (each < +inf; 0 dBFS = amplitude 1).
        midi_low, midi_high: inclusive range of integer MIDI notes (21-108 = the piano).
        duration_s: tone length in seconds.
        discard_s: onset to drop before analysis, seconds; ``duration_s - discard_s`` must be
            an even number of samples.
        dtype: of ``audio``.

    Returns:
        A :class:`ToneSet` of ``len(levels_dbfs) * (midi_high - midi_low + 1)`` tones, ordered
        by level, then by note (264 tones for the defaults).
    """
    sample_rate = check_sample_rate(sample_rate)
    total, discard = _samples(duration_s, discard_s, sample_rate)
    if int(midi_low) != midi_low or int(midi_high) != midi_high:
        raise ValueError(f"midi_low and midi_high must be integers, got {midi_low}, {midi_high}")
    _check_midi_range(midi_low, midi_high, sample_rate)
    levels = torch.as_tensor(np.asarray(levels_dbfs, dtype=np.float64)).reshape(-1)
    if levels.numel() == 0 or not bool(torch.isfinite(levels).all()):
        raise ValueError(f"levels_dbfs must be finite dB values, got {levels_dbfs!r}")
    notes = torch.arange(int(midi_low), int(midi_high) + 1, dtype=torch.float64)
    midi = notes.repeat(levels.numel())
    level_dbfs = levels.repeat_interleave(notes.numel())
    amplitude = 10.0 ** (level_dbfs / 20.0)
    return _make_set(
        midi, amplitude, torch.zeros_like(midi), sample_rate, total, discard, dtype, level_dbfs
    )


def random_training_tones(
    n: int,
    sample_rate: float,
    duration_s: float = 1.2,
    midi_low: float = 21,
    midi_high: float = 127,
    discard_s: float = 0.2,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> ToneSet:
    """Random tones for teacher-student fine tuning (Carson et al., section 3).

    MIDI note ~ U(midi_low, midi_high) (continuous, i.e. log-uniform f0), amplitude ~ U(0, 1]
    (linear, so levels cluster near full scale), phase ~ U(0, 2 pi).

    Args:
        n: number of tones.
        sample_rate: Hz; the top note must lie below Nyquist (MIDI 127 = 12.5 kHz).
        duration_s: tone length, seconds.
        midi_low, midi_high: range of the MIDI note.
        discard_s: onset the analysis drops, seconds (the rest must be an even length).
        generator: a ``torch.Generator`` for reproducible draws (default: torch's global RNG).
        dtype: of ``audio``.

    Returns:
        A :class:`ToneSet` of ``n`` tones.
    """
    sample_rate = check_sample_rate(sample_rate)
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    total, discard = _samples(duration_s, discard_s, sample_rate)
    _check_midi_range(midi_low, midi_high, sample_rate)
    u = torch.rand(3, int(n), generator=generator, dtype=torch.float64)
    midi = midi_low + (midi_high - midi_low) * u[0]
    # 1 - U[0, 1) is U(0, 1]: never exactly silent, so level_dbfs stays finite.
    amplitude = 1.0 - u[1]
    phase = 2 * math.pi * u[2]
    return _make_set(midi, amplitude, phase, sample_rate, total, discard, dtype)


class SineToneDataset(Dataset):
    """Random sine tones, drawn afresh per (seed, epoch, index), as a map-style dataset.

    Each item is a reproducible function of ``(seed, epoch, index)`` (numpy ``SeedSequence``),
    so it does not depend on worker count, order or process; call :meth:`set_epoch` (as with
    ``DistributedSampler``) to draw new tones each epoch, as Carson et al. do.

    Args:
        n: number of tones per epoch (the dataset length).
        sample_rate: Hz.
        duration_s, midi_low, midi_high, discard_s: as in :func:`random_training_tones`.
        seed: base seed.
        dtype: of the audio.

    Items:
        dict with ``"input"`` ``(1, samples)``, ``"f0_hz"`` ``()`` float64, ``"amplitude"`` ``()``
        float64, ``"phase"`` ``()`` float64 and ``"midi"`` ``()`` float64.
    """

    def __init__(
        self,
        n: int,
        sample_rate: float,
        duration_s: float = 1.2,
        midi_low: float = 21,
        midi_high: float = 127,
        discard_s: float = 0.2,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.sample_rate = check_sample_rate(sample_rate)
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.n = int(n)
        self.num_samples, self.discard_samples = _samples(duration_s, discard_s, sample_rate)
        _check_midi_range(midi_low, midi_high, self.sample_rate)
        self.midi_low, self.midi_high = float(midi_low), float(midi_high)
        self.seed = int(seed)
        self.epoch = 0
        self.dtype = dtype

    def set_epoch(self, epoch: int) -> None:
        """Draw a different set of tones (same for every worker/process) for ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} tones")
        index = index % self.n
        u = np.random.default_rng([self.seed, self.epoch, index]).random(3)
        midi = torch.tensor(
            [self.midi_low + (self.midi_high - self.midi_low) * u[0]], dtype=torch.float64
        )
        amplitude = torch.tensor([1.0 - u[1]], dtype=torch.float64)
        phase = torch.tensor([2 * math.pi * u[2]], dtype=torch.float64)
        f0 = midi_to_hz(midi)
        audio = _render(f0, amplitude, phase, self.num_samples, self.sample_rate, self.dtype)
        return {
            "input": audio[0],
            "f0_hz": f0[0],
            "amplitude": amplitude[0],
            "phase": phase[0],
            "midi": midi[0],
        }

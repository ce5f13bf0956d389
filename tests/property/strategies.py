"""Hypothesis strategies for the property suite: audio a user may pass, parameters as a user may
give them (Python floats, 0-d tensors, ``(batch,)`` tensors), at and beyond their range ends.

The CI profile bounds lengths to ``MAX_SAMPLES_CI``; the fuzz profile (``--hypothesis-profile
fuzz``, run by ``scripts/fuzz.py``) goes up to ``2**20`` samples.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

FUZZ = os.environ.get("DIFFX_FUZZ") == "1"
MAX_SAMPLES = 2**20 if FUZZ else 2**13
SAMPLE_RATES = (8000.0, 16000.0, 22050.0, 44100.0, 48000.0, 96000.0)
KINDS = ("silence", "dc", "impulse", "noise", "sine", "square")
FORMS = ("float", "0d", "batch")


@dataclass(frozen=True)
class Audio:
    """A drawn signal and how it was made (hypothesis prints this on failure)."""

    kind: str
    batch: int
    channels: int
    samples: int
    dtype: torch.dtype
    level_db: float
    seed: int

    def tensor(self) -> torch.Tensor:
        """``(batch, channels, samples)`` audio at ``level_db`` dBFS peak."""
        gen = torch.Generator().manual_seed(self.seed)
        shape = (self.batch, self.channels, self.samples)
        t = torch.arange(self.samples, dtype=torch.float64)
        if self.kind == "silence":
            x = torch.zeros(shape, dtype=torch.float64)
        elif self.kind == "dc":
            x = torch.ones(shape, dtype=torch.float64)
        elif self.kind == "impulse":
            x = torch.zeros(shape, dtype=torch.float64)
            x[..., 0] = 1.0
        elif self.kind == "noise":
            x = torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1
        elif self.kind == "sine":
            cycles = torch.rand(self.batch, self.channels, 1, generator=gen, dtype=torch.float64)
            x = torch.sin(2 * math.pi * 0.5 * cycles * t)  # up to Nyquist
        else:  # square: full-scale steps, the hardest case for ADAA and filters
            x = torch.sign(torch.sin(2 * math.pi * t / 37.0 + 0.1)).expand(shape)
        return (x * 10 ** (self.level_db / 20)).to(self.dtype)


@st.composite
def audio(draw, max_samples: int | None = None, min_samples: int = 1, batch=(1, 7),
          channels=(1, 2)) -> Audio:  # fmt: skip
    """Draw an :class:`Audio`: silence, DC, impulse, noise, sine or square, 1 sample up."""
    top = MAX_SAMPLES if max_samples is None else max_samples
    edge = [n for n in (1, 2, 3, 64, 1023, 1024, 4097) if min_samples <= n <= top]
    samples = draw(st.one_of(st.sampled_from(edge), st.integers(min_samples, top)))
    return Audio(
        kind=draw(st.sampled_from(KINDS)),
        batch=draw(st.sampled_from(batch)),
        channels=draw(st.sampled_from(channels)),
        samples=samples,
        dtype=draw(st.sampled_from((torch.float32, torch.float64))),
        level_db=draw(st.sampled_from((-120.0, -60.0, -20.0, 0.0, 20.0, 120.0, 300.0))),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def sample_rate() -> st.SearchStrategy[float]:
    """A listed rate or any rate in 8-96 kHz."""
    return st.one_of(st.sampled_from(SAMPLE_RATES), st.floats(8000.0, 96000.0))


def value_in(low: float, high: float, log: bool = False) -> st.SearchStrategy[float]:
    """A float in ``[low, high]``: the ends themselves, or uniform (log-uniform when ``log``)."""
    if log:
        inner = st.floats(math.log(low), math.log(high)).map(math.exp)
        inner = inner.map(lambda v: min(max(v, low), high))
    else:
        inner = st.floats(low, high)
    return st.one_of(st.sampled_from((low, high)), inner)


def as_form(values: list[float], form: str, dtype: torch.dtype):
    """One parameter as a user may pass it: ``values`` (one per batch item) as ``form``.

    ``"float"`` and ``"0d"`` use ``values[0]`` for every item.
    """
    if form == "float":
        return float(values[0])
    if form == "0d":
        return torch.tensor(values[0], dtype=dtype)
    return torch.tensor(values, dtype=dtype)

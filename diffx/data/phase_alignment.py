"""A dry/wet pair for ``diffx.tasks.PhaseAlignment``: one filter fitted to one pair.

The pair is either two recordings (``dry`` and ``wet``: demo clip names or files), a recording
and an effect that makes the wet from it (``dry`` and ``effect``), or an effect measured with
a test signal (``effect`` alone, ``probe="noise"`` or ``"sweep"``): the last is the paper's
"phase response of a virtual-analog simulation".

At setup the module

1. finds the bulk alignment, the integer lag and polarity that maximize the cross-correlation
   (:func:`diffx.analysis.phase_alignment.integer_delay`), and shifts the dry by it, so the filter
   only has the frequency-dependent remainder to learn;
2. estimates the transfer function from the shifted dry to the wet (Welch; phase, coherence,
   cross-power), which the frequency-domain losses fit;
3. serves random crops of the shifted dry and the wet for the time-domain losses, and the whole
   pair for validation.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from diffx._validation import check_integer
from diffx.analysis.phase_alignment import (
    PROBES,
    DelayEstimate,
    ResponseEstimate,
    apply_delay,
    estimate_response,
    integer_delay,
    max_lag_samples,
    probe_signal,
)
from diffx.data.sampling import ResumableDataModule
from diffx.data.sources import check_effect_rate, expand_sources, normalize_peak
from diffx.io.audio import load_audio, load_demo


class RandomCrops(Dataset):
    """``length`` random aligned crops of ``(dry, wet)``; item ``i`` is the same crop every time
    (its start is drawn from a generator seeded with ``seed + i``).

    Items: dict with ``"dry"`` and ``"wet"``, each ``(1, crop_samples)``.
    """

    def __init__(self, dry, wet, crop_samples: int, length: int, seed: int = 0):
        self.dry, self.wet = dry, wet
        self.crop = min(crop_samples, dry.shape[-1])
        self.length, self.seed = length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed + i)
        start = int(torch.randint(0, self.dry.shape[-1] - self.crop + 1, (1,), generator=g))
        return {
            "dry": self.dry[..., start : start + self.crop],
            "wet": self.wet[..., start : start + self.crop],
        }


def check_pair_audio(dry: torch.Tensor, wet: torch.Tensor) -> None:
    """Refuse what cannot be aligned, naming the culprit: shapes, NaN/Inf, silence."""
    for name, a in (("dry", dry), ("wet", wet)):
        if a.dim() != 2 or a.shape[0] != 1:
            raise ValueError(
                f"{name} must be one channel shaped (1, samples), got {tuple(a.shape)}"
            )
        if not torch.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or Inf samples")
        if not bool(a.abs().max() > 0):
            raise ValueError(f"{name} is silent: there is nothing to align")
    if dry.shape != wet.shape:
        raise ValueError(
            f"dry and wet differ in length ({dry.shape[-1]} and {wet.shape[-1]} samples); "
            "trim or pad them to the same length"
        )


class PhaseAlignmentDataModule(ResumableDataModule):
    """One dry/wet pair (see the module notes).

    Args:
        sample_rate: Hz; recordings are resampled to it.
        dry: demo clip name or audio file (its first channel is used; see ``channel``), or
            ``None`` to measure ``effect`` with a ``probe`` signal.
        wet: demo clip name or audio file, or ``None`` when ``effect`` makes the wet.
        effect: module mapping ``(1, 1, samples)`` to the wet (a diffx effect, a neural amp
            model, ...); run once at setup.
        probe: test signal when ``dry`` is ``None``: ``"noise"`` (white Gaussian) or
            ``"sweep"`` (exponential sine sweep).
        probe_seconds: length of the probe.
        probe_level_dbfs: RMS level of the noise probe, peak level of the sweep.
        dry_peak_dbfs: scale the dry to this peak before the effect (only with ``effect``).
        channel: which channel of multi-channel files to use.
        max_delay_ms: the bulk lag is searched within +-this.
        bulk_delay_samples, polarity: a bulk alignment to use instead of the search (both or
            neither): an integer lag (negative: the wet is earlier) and +1 or -1.
        n_fft: frequency resolution of the response estimate (bins ``sample_rate / n_fft``).
        crop_samples: length of the random training crops.
        batch_size: crops per step.
        steps_per_epoch: crops per epoch / batch_size.
        seed: of the crops and the noise probe.
    """

    def __init__(
        self,
        sample_rate: int = 44100,
        dry: str | None = "guitar_clean",
        wet: str | None = None,
        effect: nn.Module | None = None,
        probe: str = "noise",
        probe_seconds: float = 10.0,
        probe_level_dbfs: float = -18.0,
        dry_peak_dbfs: float | None = -1.0,
        channel: int = 0,
        max_delay_ms: float = 100.0,
        bulk_delay_samples: int | None = None,
        polarity: int | None = None,
        n_fft: int = 4096,
        crop_samples: int = 16384,
        batch_size: int = 8,
        steps_per_epoch: int = 100,
        seed: int = 0,
    ):
        super().__init__()
        self.sample_rate = check_integer(sample_rate, "sample_rate", 1)
        if (wet is None) == (effect is None):
            raise ValueError("give exactly one of wet (a recording) or effect (a module)")
        if dry is None and effect is None:
            raise ValueError("without a dry recording, give an effect to measure with a probe")
        if probe not in PROBES:
            raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
        check_effect_rate(effect, self.sample_rate, "effect")
        self.dry_source, self.wet_source, self.effect = dry, wet, effect
        self.probe, self.probe_seconds = probe, float(probe_seconds)
        self.probe_level_dbfs, self.dry_peak_dbfs = float(probe_level_dbfs), dry_peak_dbfs
        self.channel = check_integer(channel, "channel", 0)
        if not max_delay_ms >= 0:
            raise ValueError(f"max_delay_ms must be >= 0, got {max_delay_ms!r}")
        self.max_delay_ms = float(max_delay_ms)
        if (bulk_delay_samples is None) != (polarity is None):
            raise ValueError("give both bulk_delay_samples and polarity, or neither")
        if polarity is not None and polarity not in (-1, 1):
            raise ValueError(f"polarity must be +1 or -1, got {polarity!r}")
        if bulk_delay_samples is not None and int(bulk_delay_samples) != bulk_delay_samples:
            raise ValueError(f"bulk_delay_samples must be an integer, got {bulk_delay_samples!r}")
        self.fixed_bulk = (
            None if polarity is None else DelayEstimate(float(bulk_delay_samples), polarity, 0.0)
        )
        self.n_fft = check_integer(n_fft, "n_fft", 64)
        self.crop_samples = check_integer(crop_samples, "crop_samples", 64)
        self.batch_size = check_integer(batch_size, "batch_size", 1)
        self.steps_per_epoch = check_integer(steps_per_epoch, "steps_per_epoch", 1)
        self.seed = int(seed)
        self._given: tuple[torch.Tensor, torch.Tensor] | None = None
        self.dry: torch.Tensor | None = None  # the dry as given, (1, samples)
        self.wet: torch.Tensor | None = None
        self.bulk: DelayEstimate | None = None
        self.response: ResponseEstimate | None = None

    @classmethod
    def from_tensors(
        cls, dry: torch.Tensor, wet: torch.Tensor, sample_rate: int, **kwargs
    ) -> PhaseAlignmentDataModule:
        """A module for audio already in memory: ``dry`` and ``wet`` ``(1, samples)``."""
        module = cls(sample_rate, dry="<tensor>", wet="<tensor>", **kwargs)
        check_pair_audio(dry, wet)
        module._given = (dry.float(), wet.float())
        return module

    # ----------------------------------------------------------------------------------------

    def _load_one(self, source: str, what: str) -> torch.Tensor:
        """One channel of a demo clip or file, ``(1, samples)`` at ``sample_rate``."""
        if Path(source).expanduser().is_dir():
            raise ValueError(f"{what} must be one demo clip or audio file, got folder {source!r}")
        _, where = expand_sources([source])[0]
        if isinstance(where, str):  # a demo clip
            audio, _ = load_demo(where, sample_rate=self.sample_rate)
        else:  # load_sources would mix down to mono; keep the channels to pick one
            audio, _ = load_audio(where, sample_rate=self.sample_rate)
        if self.channel >= audio.shape[0]:
            raise ValueError(
                f"{what} {source!r} has {audio.shape[0]} channel(s); channel={self.channel} "
                "does not exist"
            )
        return audio[self.channel : self.channel + 1]

    def _pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._given is not None:
            return self._given
        if self.dry_source is None:
            probe = probe_signal(self.probe, self.sample_rate, self.probe_seconds,
                                 self.probe_level_dbfs, self.seed)  # fmt: skip
            dry = torch.from_numpy(probe).float()[None]
        else:
            dry = self._load_one(self.dry_source, "dry")
            if self.effect is not None:
                dry = normalize_peak(dry, self.dry_peak_dbfs)
        if self.effect is not None:
            with torch.no_grad():
                wet = self.effect(dry[None])
            if not isinstance(wet, torch.Tensor) or wet.shape != (1, *dry.shape):
                raise ValueError(
                    f"effect {type(self.effect).__name__} must map (1, 1, {dry.shape[-1]}) to "
                    f"the same shape, got {tuple(getattr(wet, 'shape', ()))}"
                )
            wet = wet[0].float()
        else:
            wet = self._load_one(self.wet_source, "wet")
            if wet.shape[-1] != dry.shape[-1]:
                raise ValueError(
                    f"dry {self.dry_source!r} has {dry.shape[-1]} samples and wet "
                    f"{self.wet_source!r} {wet.shape[-1]} at {self.sample_rate} Hz; a recorded "
                    "pair must be equally long"
                )
        return dry, wet

    def setup(self, stage: str | None = None) -> None:
        if self.dry is not None:
            return
        dry, wet = self._pair()
        check_pair_audio(dry, wet)
        max_lag = max_lag_samples(self.max_delay_ms, self.sample_rate)
        self.bulk = self.fixed_bulk or integer_delay(dry[0], wet[0], max_delay_samples=max_lag)
        self.dry, self.wet = dry, wet
        shifted = apply_delay(dry[0], self.bulk.delay_samples, self.bulk.polarity)
        self.dry_aligned = torch.from_numpy(shifted).float()[None]
        self.response = estimate_response(shifted, wet[0].numpy(), self.sample_rate, self.n_fft)
        self.train_set = RandomCrops(
            self.dry_aligned, self.wet, self.crop_samples,
            self.steps_per_epoch * self.batch_size, self.seed,
        )  # fmt: skip

    def measurement(self) -> tuple[ResponseEstimate, DelayEstimate]:
        """``(response, bulk)``: the transfer function from the bulk-aligned dry to the wet,
        and the bulk alignment (integer lag, polarity); set up on first use. What
        :class:`diffx.tasks.PhaseAlignment` takes as ``measurement``."""
        self.setup()
        return self.response, self.bulk

    def train_dataloader(self) -> DataLoader:
        # The crops are the same every epoch, in order; the sampler makes a resumed run
        # continue part-way into an epoch and shards them under DDP.
        return self.train_loader(
            self.train_set, self.batch_size, shuffle=False, drop_last=False, seed=self.seed
        )

    def val_dataloader(self) -> DataLoader:
        """The whole pair, once: ``{"dry": (1, 1, T), "wet": (1, 1, T)}`` (dry bulk-aligned).

        Under DDP every process validates this one item (Lightning's sampler repeats it), so
        their mean is its score: an unpadded split would leave a process with nothing."""
        return DataLoader([{"dry": self.dry_aligned, "wet": self.wet}], batch_size=1)

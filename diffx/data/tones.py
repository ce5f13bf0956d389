"""Sine tones for anti-aliasing fine-tuning, with real audio for validation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from diffx._validation import check_integer
from diffx.analysis.tones import SineToneDataset
from diffx.data.sampling import ResumableDataModule
from diffx.data.sources import (
    GUITAR_AND_BASS,
    check_effect_rate,
    load_sources,
    normalize_peak,
)


class ToneDataModule(ResumableDataModule):
    """Random sine tones to train on; real guitar and bass to validate on.

    Training follows Carson et al. (DAFx 2025): every epoch draws ``num_tones`` new tones of
    ``duration_s`` seconds with a random MIDI pitch in ``[midi_low, midi_high]`` (uniform in
    pitch), random peak amplitude in (0, 1] and random phase (their configuration: 1600 tones
    of 1.2 s per epoch at 44.1 kHz). The tones are made on the fly from ``(seed, epoch,
    index)``, so every DDP process draws the same set and its sampler shards it.

    Validation batches hold real audio: ``val_audio`` clips cut into ``val_segment_samples``
    chunks, each with the ``reference_effect``'s output when one is given (the analog device
    the teacher was trained to imitate). The chromatic-tone metrics are computed by the task.

    Args:
        sample_rate: Hz (linked to the task's rate by the CLI).
        num_tones: tones per epoch.
        duration_s: tone length, seconds.
        midi_low, midi_high: pitch range (MIDI note numbers; 21 = A0).
        batch_size: tones per training batch (40 in the paper).
        val_audio: demo clip names, files or folders for validation.
        val_peak_dbfs: peak level the validation clips are scaled to (``None``: as recorded).
        val_segment_samples: validation chunk length.
        reference_effect: optional module giving the reference device's output for the
            validation audio ``(1, 1, samples) -> (1, 1, samples)``.
        seed: base seed of the tones.
    """

    def __init__(
        self,
        sample_rate: int = 44100,
        num_tones: int = 1600,
        duration_s: float = 1.2,
        midi_low: float = 21.0,
        midi_high: float = 127.0,
        batch_size: int = 40,
        val_audio: Sequence[str] = GUITAR_AND_BASS,
        val_peak_dbfs: float | None = -1.0,
        val_segment_samples: int = 176400,
        reference_effect: nn.Module | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.sample_rate = check_integer(sample_rate, "sample_rate", 1)
        self.batch_size = check_integer(batch_size, "batch_size", 1)
        self.val_segment_samples = check_integer(val_segment_samples, "val_segment_samples", 1)
        check_effect_rate(reference_effect, self.sample_rate, "reference_effect")
        # Built here so that bad tone settings fail when the config is read, not mid-run.
        self.train_set = SineToneDataset(
            num_tones, self.sample_rate, duration_s, midi_low, midi_high, seed=seed
        )
        self.val_audio, self.val_peak_dbfs = list(val_audio), val_peak_dbfs
        self.reference_effect = reference_effect
        self.val_set: list[dict[str, torch.Tensor]] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.val_set is not None:
            return
        self.val_set, self.val_names = [], []
        with torch.no_grad():
            for name, x in load_sources(self.val_audio, self.sample_rate):
                x = normalize_peak(x, self.val_peak_dbfs)
                reference = (
                    None if self.reference_effect is None else self.reference_effect(x[None])[0]
                )
                for start in range(0, x.shape[-1], self.val_segment_samples):
                    stop = min(start + self.val_segment_samples, x.shape[-1])
                    if stop - start < 4096:  # too short for the NMR and spectral metrics
                        continue
                    item = {"input": x[..., start:stop], "index": torch.tensor(len(self.val_set))}
                    if reference is not None:
                        item["reference"] = reference[..., start:stop].to(x.dtype)
                    self.val_set.append(item)
                    self.val_names.append(name)

    def train_dataloader(self) -> DataLoader:
        # The sampler calls the tone set's set_epoch, so every epoch draws new tones.
        return self.train_loader(self.train_set, self.batch_size, seed=self.train_set.seed)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()

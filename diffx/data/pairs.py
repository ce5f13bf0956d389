"""Input/target audio pairs for effect modeling (``diffx.tasks.EffectModeling``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from diffx._validation import check_integer
from diffx.data.sampling import ResumableDataModule
from diffx.data.sources import (
    GUITAR_AND_BASS,
    check_effect_rate,
    load_sources,
    normalize_peak,
)


class SegmentDataset(Dataset):
    """Fixed-length segments cut from a list of aligned (input, target) clips.

    Args:
        inputs: clips, each ``(channels, samples)``.
        targets: clips, each shaped like the matching input.
        segment_samples: length of every segment.
        hop_samples: distance between segment starts (``segment_samples`` for no overlap).
        names: clip names, kept for messages and logs.

    Items:
        dict with ``"input"`` and ``"target"`` ``(channels, segment_samples)`` and ``"index"``
        (the item's index, so a probe can tell which data each process saw under DDP).
    """

    def __init__(
        self,
        inputs: list[torch.Tensor],
        targets: list[torch.Tensor],
        segment_samples: int,
        hop_samples: int,
        names: list[str] | None = None,
    ):
        self.inputs, self.targets = inputs, targets
        self.segment_samples = check_integer(segment_samples, "segment_samples", 1)
        self.hop_samples = check_integer(hop_samples, "hop_samples", 1)
        self.index: list[tuple[int, int]] = []
        for clip, x in enumerate(inputs):
            count = (x.shape[-1] - self.segment_samples) // self.hop_samples + 1
            self.index.extend((clip, i * self.hop_samples) for i in range(max(count, 0)))
        if not self.index:
            lengths = {n: x.shape[-1] for n, x in zip(names or range(len(inputs)), inputs)}
            raise ValueError(
                f"no clip is at least segment_samples={self.segment_samples} long "
                f"(clip lengths in samples: {lengths})"
            )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clip, start = self.index[index]
        stop = start + self.segment_samples
        return {
            "input": self.inputs[clip][..., start:stop],
            "target": self.targets[clip][..., start:stop],
            "index": torch.tensor(index),
        }


class AudioPairDataModule(ResumableDataModule):
    """Aligned (input, target) audio for training a model of an effect.

    The targets come either from recorded files (``targets``: one per input, same length, as
    in a NAM or GuitarML capture) or from an ``effect`` module applied to the inputs here (a
    "virtual capture" of a simulated device, e.g. :class:`diffx.effects.DiodeClipper`).
    Each clip is split in time: the first ``1 - val_fraction`` trains, the rest validates, so
    no validation audio is ever heard in training.

    Args:
        sample_rate: Hz; every clip is resampled to it (linked to the model's rate by the CLI).
        inputs: demo clip names, audio files or folders (see :mod:`diffx.data.sources`).
        targets: the recorded outputs, matching ``inputs`` one to one; or ``None`` with
            ``effect``.
        effect: module mapping ``(1, channels, samples)`` input to the target, run once at
            setup; its ``sample_rate`` attribute, when present, must equal ``sample_rate``.
        input_peak_dbfs: scale each input clip to this peak level (``None``: as recorded).
            Only with ``effect``: recorded pairs are used as they are.
        segment_samples: training segment length. For recurrent models, warm-up plus whole
            TBPTT frames (1000 + 4 x 2048 = 9192); for a WaveNet, the loss length plus its
            receptive field minus one (16384 + 4092 = 20476).
        hop_samples: distance between training segment starts (default: half a segment).
        val_fraction: share of every clip held out for validation, from its end.
        val_segment_samples: validation chunk length (a clip's whole held-out part when
            shorter).
        batch_size: training batch size (validation runs one chunk at a time).
        num_workers: data loader worker processes.
    """

    def __init__(
        self,
        sample_rate: int = 44100,
        inputs: Sequence[str] = GUITAR_AND_BASS,
        targets: Sequence[str] | None = None,
        effect: nn.Module | None = None,
        input_peak_dbfs: float | None = -1.0,
        segment_samples: int = 9192,
        hop_samples: int | None = None,
        val_fraction: float = 0.2,
        val_segment_samples: int = 88200,
        batch_size: int = 16,
        num_workers: int = 0,
    ):
        super().__init__()
        self.sample_rate = check_integer(sample_rate, "sample_rate", 1)
        if (targets is None) == (effect is None):
            raise ValueError("give exactly one of targets (recorded outputs) or effect (a module)")
        check_effect_rate(effect, self.sample_rate, "effect")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}")
        self.inputs, self.targets, self.effect = list(inputs), targets, effect
        self.input_peak_dbfs = input_peak_dbfs
        self.segment_samples = check_integer(segment_samples, "segment_samples", 1)
        self.hop_samples = check_integer(
            hop_samples if hop_samples is not None else max(segment_samples // 2, 1),
            "hop_samples",
            1,
        )
        self.val_fraction = float(val_fraction)
        self.val_segment_samples = check_integer(val_segment_samples, "val_segment_samples", 1)
        self.batch_size = check_integer(batch_size, "batch_size", 1)
        self.num_workers = check_integer(num_workers, "num_workers", 0)
        self.clips: list[tuple[str, torch.Tensor, torch.Tensor]] | None = None

    def _load(self) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        inputs = load_sources(self.inputs, self.sample_rate)
        if self.targets is not None:
            targets = load_sources(self.targets, self.sample_rate)
            if len(targets) != len(inputs):
                raise ValueError(
                    f"{len(inputs)} input clips but {len(targets)} target clips; they must pair up"
                )
            clips = []
            for (name, x), (target_name, y) in zip(inputs, targets):
                if x.shape != y.shape:
                    raise ValueError(
                        f"input {name!r} has shape {tuple(x.shape)} but target {target_name!r} "
                        f"has {tuple(y.shape)}; recorded pairs must be equally long and aligned"
                    )
                clips.append((name, x, y))
            return clips
        clips = []
        with torch.no_grad():
            for name, x in inputs:
                x = normalize_peak(x, self.input_peak_dbfs)
                y = self.effect(x[None])[0]
                if y.shape != x.shape or not torch.isfinite(y).all():
                    raise ValueError(
                        f"effect {type(self.effect).__name__} gave shape {tuple(y.shape)} or "
                        f"non-finite output for clip {name!r} of shape {tuple(x.shape)}"
                    )
                clips.append((name, x, y.to(x.dtype)))
        return clips

    def setup(self, stage: str | None = None) -> None:
        if self.clips is not None:
            return
        self.clips = self._load()
        train_in, train_out, val_in, val_out, self.val_names = [], [], [], [], []
        for name, x, y in self.clips:
            split = int(round(x.shape[-1] * (1.0 - self.val_fraction)))
            train_in.append(x[..., :split])
            train_out.append(y[..., :split])
            for start in range(split, x.shape[-1], self.val_segment_samples):
                stop = min(start + self.val_segment_samples, x.shape[-1])
                # A tail shorter than a quarter chunk adds little and makes a noisy ESR.
                if stop - start < min(self.val_segment_samples, x.shape[-1] - split) // 4:
                    continue
                val_in.append(x[..., start:stop])
                val_out.append(y[..., start:stop])
                self.val_names.append(name)
        names = [c[0] for c in self.clips]
        self.train_set = SegmentDataset(
            train_in, train_out, self.segment_samples, self.hop_samples, names
        )
        self.val_set = [
            {"input": x, "target": y, "index": torch.tensor(i)}
            for i, (x, y) in enumerate(zip(val_in, val_out))
        ]

    def train_dataloader(self) -> DataLoader:
        return self.train_loader(
            self.train_set,
            self.batch_size,
            drop_last=len(self.train_set) >= self.batch_size,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """Whole clips (input only), one at a time, in the order of ``inputs``."""
        return DataLoader(
            [{"input": x, "index": torch.tensor(i)} for i, (_, x, _) in enumerate(self.clips)],
            batch_size=1,
        )

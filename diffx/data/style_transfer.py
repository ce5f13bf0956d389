"""Self-supervised examples for audio-effect style transfer (``diffx.tasks.StyleTransfer``).

The recipe of Steinmetz et al. (DeepAFx-ST, JAES 2022), from any folder of audio: two crops
of one recording, each normalized, and two random settings of an effect chain:

* ``reference`` = chain(crop A, p_ref)   the style to match;
* ``input``     = chain(crop B, p_in)    another crop, processed some other way (or left
  clean with ``process_input=False``, which makes ``p_ref`` the exact answer);
* ``target``    = chain(crop B, p_ref)   the input crop processed like the reference.

A model sees ``input`` and ``reference`` and must output ``target``. ``params`` (= p_ref)
goes with every example so parameter error can be measured.

Every recording is split in time: the first ``train_fraction`` trains, then
``val_fraction`` validates, and the rest tests, so no held-out audio is heard in training.
Training examples are drawn afresh every time (new crops, new parameters); validation and
test examples are drawn once from ``seed`` and stay fixed. The chain runs on whole batches
in :meth:`StyleTransferDataModule.on_after_batch_transfer`, on the training device.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from diffx._validation import check_integer
from diffx.data.sampling import ResumableDataModule, global_seed
from diffx.data.sources import check_effect_rate, load_sources
from diffx.effects import Compressor, EffectChain, ParametricEQ
from diffx.losses.loudness import integrated_loudness

DEMO_CLIPS = (
    "guitar_em9",
    "guitar_e_fifths",
    "guitar_e_slide",
    "guitar_harmonics",
    "guitar_clean",
    "bass",
    "violin",
    "flute",
    "trumpet",
    "voice",
    "voice2",
)
"""Every shipped demo clip: the default sources."""

NORMALIZATIONS = ("loudness", "peak", None)

SILENT_CROP_DBFS = -50.0
"""Crops whose RMS is below this (dBFS) are drawn again: silence has no style to learn."""


def default_chain(sample_rate: int) -> EffectChain:
    """DeepAFx-ST's chain: a 6-band parametric EQ, then a compressor (diffx's own effects)."""
    return EffectChain([ParametricEQ(sample_rate), Compressor(sample_rate)])


def normalize_crops(
    crops: torch.Tensor, sample_rate: int, normalization: str | None, level_db: float
) -> torch.Tensor:
    """Scale every crop ``(batch, channels, samples)`` to ``level_db``.

    ``"loudness"``: integrated loudness (BS.1770, LUFS) equal to ``level_db``;
    ``"peak"``: absolute peak equal to ``level_db`` dBFS; ``None``: unchanged. A silent crop
    stays silent (gain 1).
    """
    if normalization is None:
        return crops
    if normalization == "loudness":
        with torch.no_grad():
            lufs = integrated_loudness(crops.double(), sample_rate)
        gain_db = (level_db - lufs).clamp(max=60.0)
    elif normalization == "peak":
        peak = crops.abs().amax(dim=(1, 2)).double()
        gain_db = level_db - 20.0 * torch.log10(peak.clamp_min(1e-12))
    else:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    silent = crops.abs().amax(dim=(1, 2)) == 0
    gain = torch.where(silent, torch.ones_like(gain_db), 10.0 ** (gain_db / 20.0))
    return crops * gain.to(crops.dtype)[:, None, None]


class CropPairs(Dataset):
    """Pairs of random crops (input, reference) of one recording, with random parameters.

    Args:
        clips: ``(name, audio (channels, samples))`` recordings, each at least ``crop`` long.
        crop_samples: length of every crop.
        n_params: parameter count of the chain (two random vectors per item).
        length: items per epoch.
        generator: a seeded generator for a fixed set (its items drawn once, in order); or
            ``None`` (training): item ``index`` of epoch ``epoch`` (:meth:`set_epoch`) is then
            drawn from ``(seed, epoch, index)``, the same in every run, worker and process,
            so that a resumed run draws what the killed one would have.
        seed: base seed of the training draws.

    Items: ``input_clean``, ``reference_clean`` ``(channels, crop_samples)``, ``input_params``,
    ``reference_params`` ``(n_params,)`` in [0, 1], and ``clip`` (index into ``clips``).
    A clip is picked with probability proportional to its length, so every second of audio
    is equally likely.
    """

    def __init__(
        self,
        clips: list[tuple[str, torch.Tensor]],
        crop_samples: int,
        n_params: int,
        length: int,
        generator: torch.Generator | None = None,
        seed: int = 0,
    ):
        self.clips = clips
        self.crop_samples = crop_samples
        self.n_params = n_params
        self.length = length
        self.generator = generator
        self.seed, self.epoch = int(seed), 0
        self.weights = torch.tensor([float(x.shape[-1]) for _, x in clips])

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s training items (the training sampler calls it)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _crop(self, audio: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # A few tries to avoid near-silent crops (a decayed note, a pause between words).
        best, best_rms = None, -1.0
        for _ in range(8):
            start = int(
                torch.randint(
                    0, audio.shape[-1] - self.crop_samples + 1, (1,), generator=generator
                )
            )
            crop = audio[..., start : start + self.crop_samples]
            rms = float(crop.square().mean().sqrt())
            if rms > best_rms:
                best, best_rms = crop, rms
            if rms > 10.0 ** (SILENT_CROP_DBFS / 20.0):
                break
        return best

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = self.generator
        if generator is None:
            seed = np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(1)
            generator = torch.Generator().manual_seed(int(seed[0]))
        clip = int(torch.multinomial(self.weights, 1, generator=generator))
        audio = self.clips[clip][1]
        return {
            "input_clean": self._crop(audio, generator),
            "reference_clean": self._crop(audio, generator),
            "input_params": torch.rand(self.n_params, generator=generator),
            "reference_params": torch.rand(self.n_params, generator=generator),
            "clip": torch.tensor(clip),
        }


class StyleTransferDataModule(ResumableDataModule):
    """Self-supervised (input, reference, target) examples from any audio (see module docs).

    Args:
        sample_rate: Hz; every recording is resampled to it (linked to the model's rate).
        sources: demo clip names, audio files or folders (see :mod:`diffx.data.sources`);
            default every shipped demo clip. LibriTTS, VCTK, DAPS or MUSDB folders work as
            they are.
        chain: the effect chain that makes the styles (default: :func:`default_chain`, the
            6-band EQ + compressor). Its parameter ranges set how far styles spread; narrow
            them with the effects' ``param_ranges``.
        crop_samples: samples per crop (input, reference and target are equally long).
        normalization: ``"loudness"``, ``"peak"`` or ``None``: how crops are levelled before
            processing.
        level_db: the level for ``normalization``: LUFS, or peak dBFS.
        process_input: process the input crop with random parameters (``True``, the paper's
            setting), or leave it clean (then ``params`` is the exact answer).
        train_fraction, val_fraction: shares of every recording (from its start) for training
            and validation; the rest tests. A recording whose share is shorter than a crop is
            left out of that split (with a warning).
        train_examples: training examples per epoch (each drawn at random).
        val_examples, test_examples: size of the fixed validation and test sets.
        batch_size: training and evaluation batch size.
        num_workers: data loader worker processes.
        seed: seed of the fixed validation and test sets.
    """

    def __init__(
        self,
        sample_rate: int = 24000,
        sources: Sequence[str] = DEMO_CLIPS,
        chain: EffectChain | None = None,
        crop_samples: int = 24000,
        normalization: str | None = "loudness",
        level_db: float = -23.0,
        process_input: bool = True,
        train_fraction: float = 0.6,
        val_fraction: float = 0.15,
        train_examples: int = 4000,
        val_examples: int = 64,
        test_examples: int = 256,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 1234,
    ):
        super().__init__()
        self.sample_rate = check_integer(sample_rate, "sample_rate", 1)
        self.sources = [sources] if isinstance(sources, str) else list(sources)
        self.chain = chain if chain is not None else default_chain(self.sample_rate)
        check_effect_rate(self.chain, self.sample_rate, "chain")
        self.crop_samples = check_integer(crop_samples, "crop_samples", 1)
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}"
            )
        if normalization == "loudness" and crop_samples < 0.4 * sample_rate:
            raise ValueError(
                f"crop_samples={crop_samples} is shorter than the 400 ms loudness block; "
                "lengthen it or use normalization: peak"
            )
        self.normalization, self.level_db = normalization, float(level_db)
        self.process_input = bool(process_input)
        if not (0 < train_fraction < 1 and 0 <= val_fraction and train_fraction + val_fraction < 1):
            raise ValueError(
                f"train_fraction ({train_fraction}) and val_fraction ({val_fraction}) must be "
                "positive with a sum below 1 (the rest is the test split)"
            )
        self.fractions = (float(train_fraction), float(val_fraction))
        self.train_examples = check_integer(train_examples, "train_examples", 1)
        self.val_examples = check_integer(val_examples, "val_examples", 1)
        self.test_examples = check_integer(test_examples, "test_examples", 1)
        self.batch_size = check_integer(batch_size, "batch_size", 1)
        self.num_workers = check_integer(num_workers, "num_workers", 0)
        self.seed = int(seed)
        self.splits: dict[str, list[tuple[str, torch.Tensor]]] | None = None
        self.fixed: dict[str, list[dict[str, torch.Tensor]]] = {}

    @property
    def param_names(self) -> list[str]:
        """Names of the chain's parameters (``"effect.param"``), the order of ``params``."""
        return self.chain.param_names

    # ------------------------------------------------------------------ splits
    def _split(self) -> dict[str, list[tuple[str, torch.Tensor]]]:
        train_share, val_share = self.fractions
        splits: dict[str, list] = {"train": [], "val": [], "test": []}
        left_out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        for name, audio in load_sources(self.sources, self.sample_rate):
            T = audio.shape[-1]
            a, b = round(T * train_share), round(T * (train_share + val_share))
            for split, piece in (("train", audio[..., :a]), ("val", audio[..., a:b]),
                                 ("test", audio[..., b:])):  # fmt: skip
                if piece.shape[-1] >= self.crop_samples:
                    splits[split].append((name, piece))
                else:
                    left_out[split].append(name)
        for split, names in left_out.items():
            if names:
                warnings.warn(
                    f"{split} split leaves out {names}: their {split} share is shorter than "
                    f"crop_samples={self.crop_samples}",
                    stacklevel=2,
                )
            if not splits[split]:
                raise ValueError(
                    f"no recording has a {split} share of at least crop_samples="
                    f"{self.crop_samples} samples; use longer audio or shorter crops"
                )
        return splits

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        self.splits = self._split()
        n = self.chain.parameter_size()
        self.train_set = CropPairs(
            self.splits["train"], self.crop_samples, n, self.train_examples, seed=global_seed()
        )
        for offset, (split, count) in enumerate(
            (("val", self.val_examples), ("test", self.test_examples))
        ):
            generator = torch.Generator().manual_seed(self.seed + offset)
            pairs = CropPairs(self.splits[split], self.crop_samples, n, count, generator)
            items = [pairs[i] for i in range(count)]
            processed = []
            for start in range(0, count, self.batch_size):
                batch = {
                    k: torch.stack([item[k] for item in items[start : start + self.batch_size]])
                    for k in items[0]
                }
                processed.append(self.make_examples(batch))
            self.fixed[split] = processed

    # ------------------------------------------------------------------ example making
    @torch.no_grad()
    def make_examples(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Turn raw crop pairs into ``input``, ``reference``, ``target`` and ``params``.

        Args:
            batch: a batch of :class:`CropPairs` items (on any device).

        Returns:
            ``input``, ``reference``, ``target`` ``(batch, channels, crop_samples)``;
            ``params`` ``(batch, n_params)`` (the reference's normalized parameters);
            ``clean`` (the unprocessed input crop) and ``clip``.
        """
        if "target" in batch:  # already made (the fixed sets)
            return batch
        chain = self.chain.to(batch["input_clean"].device)
        sr, norm, level = self.sample_rate, self.normalization, self.level_db
        clean = normalize_crops(batch["input_clean"], sr, norm, level)
        reference_clean = normalize_crops(batch["reference_clean"], sr, norm, level)
        p_ref, p_in = batch["reference_params"], batch["input_params"]
        x = chain(clean, p_in) if self.process_input else clean
        examples = {
            "input": x,
            "reference": chain(reference_clean, p_ref),
            "target": chain(clean, p_ref),
            "params": p_ref,
            "clean": clean,
            "clip": batch["clip"],
        }
        for key in ("input", "reference", "target"):
            if not torch.isfinite(examples[key]).all():
                raise ValueError(f"the style chain gave non-finite {key} audio")
        return examples

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return self.make_examples(batch)

    # ------------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        return self.train_loader(
            self.train_set, self.batch_size, shuffle=False, num_workers=self.num_workers
        )

    def _fixed_loader(self, split: str) -> DataLoader:
        # Batches are made already: the loader hands them out one by one.
        return self.eval_loader(self.fixed[split], batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self._fixed_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._fixed_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._fixed_loader("test")

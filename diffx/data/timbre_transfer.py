"""Data for DDSP timbre transfer: monophonic recordings with their f0, confidence and loudness.

By default the phrases shipped in ``diffx/assets/timbre/<instrument>/`` (violin, flute,
trumpet, rendered from the FluidR3 soundfont at varied dynamics; see the README there), split
into ``train_*``, ``valid_*`` and ``test_*`` files. A user's own recordings (files or folders)
replace them with ``audio``; their held-out audio is then the end of each file.

Features are computed once per recording and cached as ``.npz`` files, keyed by a hash of the
audio samples and every setting that changes the features, so a changed file, sample rate,
frame rate or CREPE model never reuses a stale cache.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from diffx.analysis.features import (
    CREPE_MODELS,
    DEFAULT_FRAME_RATE_HZ,
    a_weighted_loudness_db,
    crepe_pitch,
    detect_notes,
    frame_hop,
    loudness_quantiles,
)
from diffx.analysis.tones import hz_to_midi
from diffx.data.sampling import ResumableDataModule, global_seed
from diffx.data.sources import load_sources

TIMBRE_DIR = Path(__file__).resolve().parent.parent / "assets" / "timbre"
"""The shipped instrument phrases, one folder per instrument."""

SPLITS = ("train", "valid", "test")

FEATURE_CACHE_VERSION = 2
"""Bumped whenever the feature computation changes, which invalidates every cache entry."""


def shipped_instruments() -> list[str]:
    """Names of the instruments shipped in :data:`TIMBRE_DIR`."""
    if not TIMBRE_DIR.is_dir():
        return []
    return sorted(p.name for p in TIMBRE_DIR.iterdir() if p.is_dir())


def instrument_files(instrument: str, split: str) -> list[Path]:
    """The shipped files of one instrument and split (``"train"``, ``"valid"``, ``"test"``).

    Raises:
        ValueError: unknown instrument or split, or the split holds no files.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if instrument not in shipped_instruments():
        raise ValueError(
            f"no shipped instrument {instrument!r}; choose from {shipped_instruments()} or "
            "give your own recordings as `audio`"
        )
    files = sorted((TIMBRE_DIR / instrument).glob(f"{split}_*.flac"))
    if not files:
        raise ValueError(f"instrument {instrument!r} has no {split} files in {TIMBRE_DIR}")
    return files


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/diffx/features`` (``~/.cache/diffx/features`` by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "diffx" / "features"


@dataclass
class Track:
    """One recording with its frame-rate features.

    ``audio (samples,)`` float32 at ``sample_rate``; ``f0_hz``, ``confidence``,
    ``loudness_db`` ``(frames,)`` float32 with ``frames = ceil(samples / hop)``.
    """

    name: str
    audio: np.ndarray
    f0_hz: np.ndarray
    confidence: np.ndarray
    loudness_db: np.ndarray

    @property
    def frames(self) -> int:
        return int(self.f0_hz.shape[0])

    def slice(self, start: int, stop: int, hop: int) -> Track:
        """Frames ``[start, stop)`` and their samples (zero-padded past the end)."""
        audio = self.audio[start * hop : stop * hop]
        if audio.shape[0] < (stop - start) * hop:
            audio = np.pad(audio, (0, (stop - start) * hop - audio.shape[0]))
        return Track(
            self.name,
            audio,
            self.f0_hz[start:stop],
            self.confidence[start:stop],
            self.loudness_db[start:stop],
        )


def compute_features(
    audio: torch.Tensor,
    sample_rate: int,
    frame_rate_hz: int = DEFAULT_FRAME_RATE_HZ,
    crepe_model: str = "full",
) -> dict[str, np.ndarray]:
    """f0, confidence and loudness of one mono clip ``audio (samples,)`` as float32 arrays."""
    f0_hz, confidence = crepe_pitch(audio, sample_rate, frame_rate_hz, model=crepe_model)
    loudness = a_weighted_loudness_db(audio, sample_rate, frame_rate_hz)
    return {
        "f0_hz": f0_hz.numpy().astype(np.float32),
        "confidence": confidence.numpy().astype(np.float32),
        "loudness_db": loudness.numpy().astype(np.float32),
    }


def cached_features(
    audio: torch.Tensor,
    sample_rate: int,
    frame_rate_hz: int,
    crepe_model: str,
    cache_dir: str | os.PathLike | None,
) -> dict[str, np.ndarray]:
    """:func:`compute_features`, read from / written to ``cache_dir`` (``None``: no cache)."""
    if cache_dir is None:
        return compute_features(audio, sample_rate, frame_rate_hz, crepe_model)
    samples = np.ascontiguousarray(audio.numpy(), dtype=np.float32)
    key = hashlib.sha1(samples.tobytes())
    key.update(f"{FEATURE_CACHE_VERSION}:{sample_rate}:{frame_rate_hz}:{crepe_model}".encode())
    path = Path(cache_dir) / f"{key.hexdigest()}.npz"
    if path.exists():
        try:
            with np.load(path) as stored:
                return {name: stored[name] for name in ("f0_hz", "confidence", "loudness_db")}
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry (e.g. a run killed while writing) is recomputed
    features = compute_features(audio, sample_rate, frame_rate_hz, crepe_model)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary name and rename: a reader never sees a half-written file.
    partial = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(partial, **features)
    os.replace(partial, path)
    return features


def load_tracks(
    sources: list[str | Path],
    sample_rate: int,
    frame_rate_hz: int,
    crepe_model: str,
    cache_dir: str | os.PathLike | None,
    progress: bool = True,
) -> list[Track]:
    """Read every source (file, folder or demo name), resample, and attach its features."""
    clips = load_sources([str(s) for s in sources], sample_rate)
    tracks = []
    for name, audio in tqdm(clips, desc="f0 and loudness", unit="file", disable=not progress):
        mono = audio[0]
        features = cached_features(mono, sample_rate, frame_rate_hz, crepe_model, cache_dir)
        tracks.append(Track(name, mono.numpy(), **features))
    return tracks


def feature_statistics(tracks: list[Track]) -> dict[str, np.ndarray | float]:
    """What :func:`diffx.analysis.features.adjust_loudness` and the pitch hint need to know
    about the training data: loudness quantiles and mean MIDI pitch over note frames.

    Raises:
        ValueError: no note was found in any track (the data holds no pitched sound).
    """
    loudness, pitch = [], []
    for track in tracks:
        mask, _ = detect_notes(track.loudness_db, track.confidence)
        loudness.append(track.loudness_db[mask])
        pitch.append(hz_to_midi(torch.from_numpy(track.f0_hz[mask])).numpy())
    loudness_all, pitch_all = np.concatenate(loudness), np.concatenate(pitch)
    if loudness_all.size == 0:
        raise ValueError(
            "no pitched notes found in the training audio (CREPE confidence never reached "
            "the note threshold): timbre transfer needs monophonic pitched recordings"
        )
    return {
        "loudness_quantiles_db": loudness_quantiles(loudness_all),
        "mean_pitch_midi": float(pitch_all.mean()),
    }


def _as_tensors(track: Track) -> dict[str, torch.Tensor]:
    return {
        "audio": torch.from_numpy(np.ascontiguousarray(track.audio, dtype=np.float32))[None],
        "f0_hz": torch.from_numpy(np.ascontiguousarray(track.f0_hz)),
        "confidence": torch.from_numpy(np.ascontiguousarray(track.confidence)),
        "loudness_db": torch.from_numpy(np.ascontiguousarray(track.loudness_db)),
    }


class RandomClips(Dataset):
    """``length`` random clips of ``clip_frames`` frames, drawn anew every epoch.

    A track is chosen with probability proportional to its number of possible clips, then a
    start frame uniformly. Item ``index`` of epoch ``epoch`` (:meth:`set_epoch`) is drawn
    from ``(seed, epoch, index)``: the same in every run, worker and process, and a resumed
    run draws what the killed one would have.
    """

    def __init__(
        self, tracks: list[Track], clip_frames: int, hop: int, length: int, seed: int = 0
    ) -> None:
        self.tracks = [t for t in tracks if t.frames >= clip_frames]
        if not self.tracks:
            longest = max((t.frames for t in tracks), default=0)
            raise ValueError(
                f"no training recording is as long as one clip ({clip_frames} frames; the "
                f"longest has {longest}): lower clip_seconds"
            )
        self.clip_frames, self.hop, self.length = int(clip_frames), int(hop), int(length)
        counts = np.array([t.frames - clip_frames + 1 for t in self.tracks], dtype=np.float64)
        self.weights = counts / counts.sum()
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s clips (the training sampler calls it)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        track = self.tracks[int(rng.choice(len(self.tracks), p=self.weights))]
        start = int(rng.integers(0, track.frames - self.clip_frames + 1))
        return _as_tensors(track.slice(start, start + self.clip_frames, self.hop))


class FixedClips(Dataset):
    """Every track cut into clips of ``clip_frames``: back to back from its start, plus one
    clip ending at its last frame when a remainder is left (so all the audio is scored); a
    track shorter than one clip is zero-padded (its features padded with silence)."""

    def __init__(self, tracks: list[Track], clip_frames: int, hop: int) -> None:
        self.items: list[Track] = []
        for track in tracks:
            if track.frames < clip_frames:
                extra = clip_frames - track.frames
                padded = Track(
                    track.name,
                    np.pad(track.audio, (0, clip_frames * hop - track.audio.shape[0])),
                    np.pad(track.f0_hz, (0, extra), mode="edge"),
                    np.pad(track.confidence, (0, extra)),
                    np.pad(track.loudness_db, (0, extra), constant_values=-120.0),
                )
                self.items.append(padded)
                continue
            starts = list(range(0, track.frames - clip_frames + 1, clip_frames))
            if starts[-1] + clip_frames < track.frames:
                starts.append(track.frames - clip_frames)
            self.items.extend(track.slice(s, s + clip_frames, hop) for s in starts)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return _as_tensors(self.items[index])


class TimbreDataModule(ResumableDataModule):
    """Clips of monophonic recordings with DDSP's control features, for :class:`TimbreTransfer`.

    Args:
        sample_rate: Hz every recording is resampled to (DDSP: 16000).
        instrument: a shipped instrument (:func:`shipped_instruments`: ``"violin"``,
            ``"flute"``, ``"trumpet"``), used when ``audio`` is not given.
        audio: your own recordings instead: files, folders or demo clip names. The last
            ``holdout_fraction`` of each file is used for validation and the same again
            before it for testing (so nothing is trained on twice).
        holdout_fraction: see ``audio``.
        frame_rate_hz: feature frames per second (DDSP: 250).
        clip_seconds: length of each training and evaluation clip (DDSP: 4 s).
        batch_size: clips per step.
        steps_per_epoch: training batches per epoch (clips are drawn at random).
        crepe_model: ``"full"`` or ``"tiny"``; the model keeps it and uses the same tracker at
            inference (a different tracker at inference shifts the features it sees).
        cache_dir: where features are cached; default :func:`default_cache_dir`; ``""`` turns
            caching off.
        num_workers: DataLoader workers.

    Batches are dicts of ``audio (batch, 1, samples)`` and ``f0_hz``, ``confidence``,
    ``loudness_db`` ``(batch, frames)``.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        instrument: str = "violin",
        audio: list[str] | None = None,
        holdout_fraction: float = 0.1,
        frame_rate_hz: int = DEFAULT_FRAME_RATE_HZ,
        clip_seconds: float = 4.0,
        batch_size: int = 16,
        steps_per_epoch: int = 100,
        crepe_model: str = "full",
        cache_dir: str | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.hop = frame_hop(sample_rate, frame_rate_hz)
        if crepe_model not in CREPE_MODELS:
            raise ValueError(f"crepe_model must be one of {CREPE_MODELS}, got {crepe_model!r}")
        if not 0 < holdout_fraction < 0.5:
            raise ValueError(f"holdout_fraction must be in (0, 0.5), got {holdout_fraction}")
        if not clip_seconds > 0:
            raise ValueError(f"clip_seconds must be positive, got {clip_seconds}")
        for value, name in ((batch_size, "batch_size"), (steps_per_epoch, "steps_per_epoch")):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if audio is None:
            instrument_files(instrument, "train")  # fails early on an unknown instrument
        self.sample_rate = int(sample_rate)
        self.frame_rate_hz = int(frame_rate_hz)
        self.instrument = instrument
        self.audio = None if audio is None else list(audio)
        self.holdout_fraction = float(holdout_fraction)
        self.clip_frames = max(1, round(clip_seconds * frame_rate_hz))
        self.batch_size = int(batch_size)
        self.steps_per_epoch = int(steps_per_epoch)
        self.crepe_model = crepe_model
        if cache_dir == "":
            self.cache_dir = None
        else:
            self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.num_workers = int(num_workers)
        self.splits: dict[str, list[Track]] | None = None

    def _load(self, sources: list) -> list[Track]:
        return load_tracks(
            sources, self.sample_rate, self.frame_rate_hz, self.crepe_model, self.cache_dir
        )

    def _split(self) -> dict[str, list[Track]]:
        if self.audio is None:
            return {s: self._load(instrument_files(self.instrument, s)) for s in SPLITS}
        splits: dict[str, list[Track]] = {s: [] for s in SPLITS}
        for track in self._load(self.audio):
            held = max(1, round(track.frames * self.holdout_fraction))
            if track.frames - 2 * held < 1:
                raise ValueError(f"recording {track.name!r} is too short to split")
            cut_test, cut_valid = track.frames - 2 * held, track.frames - held
            splits["train"].append(track.slice(0, cut_test, self.hop))
            splits["test"].append(track.slice(cut_test, cut_valid, self.hop))
            splits["valid"].append(track.slice(cut_valid, track.frames, self.hop))
        return splits

    def prepare_data(self) -> None:
        # One process computes and caches the features; setup() on every process reads them.
        if self.cache_dir is not None:
            self._split()

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            self.splits = self._split()

    def statistics(self) -> dict[str, np.ndarray | float | int | str]:
        """:func:`feature_statistics` of the training split, with the ``frame_rate_hz`` and
        ``crepe_model`` its features were computed with (what
        :class:`diffx.tasks.TimbreTransfer` takes as ``training_statistics``)."""
        self.setup()
        statistics = feature_statistics(self.splits["train"])
        return {**statistics, "frame_rate_hz": self.frame_rate_hz, "crepe_model": self.crepe_model}

    def _eval_loader(self, split: str) -> DataLoader:
        self.setup()
        return self.eval_loader(
            FixedClips(self.splits[split], self.clip_frames, self.hop),
            self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        length = self.steps_per_epoch * self.batch_size
        clips = RandomClips(
            self.splits["train"], self.clip_frames, self.hop, length, seed=global_seed()
        )
        return self.train_loader(
            clips, self.batch_size, shuffle=False, drop_last=False, num_workers=self.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

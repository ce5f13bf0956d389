"""Data for post-filters: pairs of (predicted, natural) acoustic features.

**Layout** (NNSVS's): one folder per split, each with ``in_postfilter/`` (features predicted by
an acoustic model) and ``out_postfilter/`` (natural features of the same utterances), one
``(frames, dims)`` ``.npy`` per utterance with the same file name in both::

    pairs/
      streams.json          {"streams": {"mgc": 60, "lf0": 1, "vuv": 1, "bap": 1}, "world": {...}}
      train/in_postfilter/utt1-feats.npy   train/out_postfilter/utt1-feats.npy ...
      valid/...  test/...

Split folders may also carry NNSVS's names (``train_no_dev``, ``dev``, ``eval``). The features
are raw (not normalized): the data module fits the scaler (per-dimension mean and variance of
the natural training features, as NNSVS's ``out_postfilter_scaler``) and the task saves it
beside the model. ``streams.json`` names the streams; its ``world`` entry (when the features are
WORLD's) lets every result be synthesized and heard.

**Making pairs** without an outside acoustic model: :func:`make_pairs` runs WORLD analysis on
aligned (predicted audio, natural audio) pairs, for instance DDSP timbre-transfer resynthesis
against the recordings it was resynthesized from (``diffx postfilter pairs``). The shipped set
``"violin_ddsp"`` is that: the timbre-transfer quickstart model's resynthesis of the shipped
violin phrases (``diffx/assets/postfilter/``) against the phrases themselves.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from diffx.analysis.acoustic import WorldSettings, read_streams_json, world_analysis
from diffx.data.sampling import ResumableDataModule, global_seed
from diffx.functional.postfilter import StreamLayout, global_variance
from diffx.nn.postfilter import GVPostFilter

POSTFILTER_ASSETS = Path(__file__).resolve().parent.parent / "assets" / "postfilter"
TIMBRE_ASSETS = Path(__file__).resolve().parent.parent / "assets" / "timbre"
SHIPPED_PAIRS = {"violin_ddsp": ("violin_ddsp", "violin")}
"""Shipped pair sets: ``{name: (predicted audio folder in POSTFILTER_ASSETS, natural audio
folder in TIMBRE_ASSETS)}``."""

SHIPPED_WORLD = WorldSettings(16000, alpha=0.41, f0_floor_hz=100.0, f0_ceil_hz=2000.0)
"""Analysis of the shipped pairs: 16 kHz (the timbre models' rate), 5 ms frames, 60 mel-
cepstral coefficients warped by alpha 0.41 (pysptk's ``mcepalpha(16000)``; given here so that
importing diffx needs no pysptk), f0 searched over the violin's range."""

PAIRS_CACHE_VERSION = 1
SPLIT_NAMES = {
    "train": ("train", "train_no_dev"),
    "valid": ("valid", "dev"),
    "test": ("test", "eval"),
}
"""diffx's split folder names and NNSVS's."""
LENGTH_TOLERANCE_FRAMES = 5
"""Predicted and natural features may differ by this many frames (trimmed to the shorter);
more means the pair is not aligned."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("DIFFX_CACHE", Path.home() / ".cache" / "diffx")) / "postfilter"


def read_features(path: str | os.PathLike, dims: int | None = None) -> np.ndarray:
    """One ``(frames, dims)`` float32 feature file, checked.

    Raises:
        ValueError: unreadable, not 2-D, the wrong number of dims, NaN/Inf, or no frames.
    """
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable .npy feature file ({err})") from err
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(
            f"{path}: features must be (frames, dims) with frames > 0, got {array.shape}"
        )
    if dims is not None and array.shape[1] != dims:
        raise ValueError(f"{path}: {array.shape[1]} dims, the stream layout needs {dims}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{path}: holds NaN or Inf")
    return array.astype(np.float32)


def find_layout(folder: str | os.PathLike) -> tuple[StreamLayout, WorldSettings | None]:
    """The ``streams.json`` of ``folder`` or of one of its two parents.

    Raises:
        FileNotFoundError: none found.
    """
    folder = Path(folder).resolve()
    for candidate in (folder, folder.parent, folder.parent.parent):
        if (candidate / "streams.json").is_file():
            return read_streams_json(candidate / "streams.json")
    raise FileNotFoundError(
        f'no streams.json in {folder} or its parents: write one ({{"streams": {{"mgc": 60, '
        f"...}}}}) or pass stream sizes explicitly"
    )


def gv_postfilter_from_folder(
    folder: str | os.PathLike,
    layout: StreamLayout | dict[str, int] | None = None,
    streams: dict[str, int] | None = None,
    strength: float = 1.0,
    voiced_only: bool = True,
) -> GVPostFilter:
    """A :class:`~diffx.nn.GVPostFilter` with the global variance of every ``*.npy``
    ``(frames, dims)`` in ``folder`` (natural features, e.g. an ``out_postfilter`` folder).
    Without ``layout``, the ``streams.json`` in the folder or its two parents is read.

    Raises:
        FileNotFoundError: no ``.npy`` file in ``folder``, or no ``streams.json`` to read.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.npy"))
    if not files:
        raise FileNotFoundError(f"no .npy features in {folder}")
    if layout is None:
        layout = find_layout(folder)[0]
    elif isinstance(layout, dict):
        layout = StreamLayout.from_dict(layout)
    utterances = [read_features(f, layout.dims) for f in files]
    return GVPostFilter.from_utterances(utterances, layout, streams, strength, voiced_only)


def split_folder(root: Path, split: str) -> Path | None:
    """The folder of ``split`` ("train", "valid", "test") under ``root``, by diffx's or NNSVS's
    name; ``None`` when absent."""
    for name in SPLIT_NAMES[split]:
        if (root / name / "in_postfilter").is_dir():
            return root / name
    return None


@dataclass
class FeaturePair:
    """One utterance: raw predicted and natural features ``(frames, dims)``."""

    name: str
    predicted: np.ndarray
    natural: np.ndarray


def load_pairs(folder: str | os.PathLike, dims: int) -> list[FeaturePair]:
    """The pairs of one split folder (``in_postfilter/`` and ``out_postfilter/``), matched by
    file name; lengths that differ by up to :data:`LENGTH_TOLERANCE_FRAMES` are trimmed.

    Raises:
        FileNotFoundError: a missing folder, no files, or a file without its partner.
        ValueError: a bad file or a pair whose lengths differ by more.
    """
    folder = Path(folder)
    pred_dir, nat_dir = folder / "in_postfilter", folder / "out_postfilter"
    for sub in (pred_dir, nat_dir):
        if not sub.is_dir():
            raise FileNotFoundError(f"missing folder {sub}")
    names = sorted(p.name for p in pred_dir.glob("*.npy"))
    if not names:
        raise FileNotFoundError(f"no .npy files in {pred_dir}")
    unmatched = sorted(set(names) ^ {p.name for p in nat_dir.glob("*.npy")})
    if unmatched:
        raise FileNotFoundError(
            f"{folder}: files without a partner in the other folder: {unmatched}"
        )
    pairs = []
    for name in names:
        pred, nat = read_features(pred_dir / name, dims), read_features(nat_dir / name, dims)
        if abs(pred.shape[0] - nat.shape[0]) > LENGTH_TOLERANCE_FRAMES:
            raise ValueError(
                f"{folder}/{{in,out}}_postfilter/{name}: {pred.shape[0]} vs {nat.shape[0]} "
                f"frames; predicted and natural features must be time-aligned"
            )
        frames = min(pred.shape[0], nat.shape[0])
        pairs.append(FeaturePair(Path(name).stem, pred[:frames], nat[:frames]))
    return pairs


class FeatureScaler:
    """Per-dimension mean and variance ``(dims,)``; ``transform`` standardizes."""

    def __init__(self, mean: np.ndarray, variance: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.variance = np.asarray(variance, dtype=np.float64)
        if self.mean.shape != self.variance.shape or self.mean.ndim != 1:
            raise ValueError("mean and variance must be (dims,) arrays of one shape")

    @classmethod
    def fit(cls, utterances: Iterable[np.ndarray]) -> FeatureScaler:
        """Pooled statistics over every frame of every utterance."""
        frames = np.concatenate([np.asarray(u, dtype=np.float64) for u in utterances], axis=0)
        return cls(frames.mean(axis=0), frames.var(axis=0))

    @property
    def scale(self) -> np.ndarray:
        """Standard deviation, floored so a constant dimension passes unscaled."""
        return np.sqrt(np.where(self.variance > 1e-12, self.variance, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale).astype(np.float32)

    def inverse(self, x: np.ndarray) -> np.ndarray:
        return (x * self.scale + self.mean).astype(np.float32)

    def save(self, path: str | os.PathLike) -> None:
        np.savez(path, mean=self.mean, var=self.variance, scale=self.scale)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureScaler:
        try:
            with np.load(path) as data:
                return cls(data["mean"], data["var"])
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"{path}: not a scaler file ({err})") from err


# -- making pairs ----------------------------------------------------------------------------


def _write_atomically(array: np.ndarray, path: Path) -> None:
    partial = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(partial, array)
    os.replace(partial, path)


def make_pairs(
    splits: dict[str, Sequence[tuple[str, np.ndarray, np.ndarray]]],
    out_dir: str | os.PathLike,
    settings: WorldSettings,
    progress: bool = True,
) -> Path:
    """Write WORLD feature pairs of aligned audio in the NNSVS layout (see the module docs).

    Args:
        splits: ``{split: [(name, predicted audio (samples,), natural audio (samples,))]}``,
            both at ``settings.sample_rate`` and time-aligned (the longer is trimmed).
        out_dir: created if needed; ``streams.json`` is written there.
        settings: the WORLD analysis settings.

    Returns:
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    total = sum(len(items) for items in splits.values())
    bar = tqdm(total=total, desc="WORLD analysis", unit="pair", disable=not progress)
    layout = None
    for split, items in splits.items():
        for sub in ("in_postfilter", "out_postfilter"):
            (out_dir / split / sub).mkdir(parents=True, exist_ok=True)
        for name, predicted, natural in items:
            samples = min(len(predicted), len(natural))
            if samples == 0:
                raise ValueError(f"{split}/{name}: empty audio")
            pred = world_analysis(np.asarray(predicted)[:samples], settings)
            nat = world_analysis(np.asarray(natural)[:samples], settings)
            layout = layout or StreamLayout(tuple(pred), tuple(a.shape[1] for a in pred.values()))
            _write_atomically(
                layout.join(pred), out_dir / split / "in_postfilter" / f"{name}-feats.npy"
            )
            _write_atomically(
                layout.join(nat), out_dir / split / "out_postfilter" / f"{name}-feats.npy"
            )
            bar.update()
    bar.close()
    settings.save(out_dir / "streams.json", layout)
    return out_dir


AUDIO_SUFFIXES = (".wav", ".flac")


def audio_pairs(
    predicted_dir: str | os.PathLike,
    natural_dir: str | os.PathLike,
    sample_rate: int,
    split: str | None = None,
) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """Aligned audio for :func:`make_pairs`: every ``.wav``/``.flac`` in ``predicted_dir`` with
    its namesake in ``natural_dir``, mono at ``sample_rate``, as ``{split: [(name, predicted,
    natural)]}``. The split is ``split``, or else the file name before its last ``_``
    (``train_03.flac``: ``train``), as the shipped files are named.

    Raises:
        FileNotFoundError: no audio in ``predicted_dir``, or a file without its namesake.
    """
    from diffx.io.audio import load_audio

    predicted_dir, natural_dir = Path(predicted_dir), Path(natural_dir)
    files = sorted(p for p in predicted_dir.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no .wav or .flac files in {predicted_dir}")
    splits: dict[str, list] = {}
    for path in files:
        partner = natural_dir / path.name
        if not partner.is_file():
            raise FileNotFoundError(f"{path.name} has no partner {partner}")
        pred, _ = load_audio(path, sample_rate, mono=True)
        nat, _ = load_audio(partner, sample_rate, mono=True)
        name = split or path.stem.rsplit("_", 1)[0]
        splits.setdefault(name, []).append((path.stem, pred[0].numpy(), nat[0].numpy()))
    return splits


def shipped_pairs(
    name: str = "violin_ddsp", cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> Path:
    """The folder of a shipped pair set, analysed on first use and cached.

    The cache key hashes the audio files and the analysis settings; the folder is built under a
    temporary name and renamed, so a killed run never leaves a half-written set.
    """
    if name not in SHIPPED_PAIRS:
        raise ValueError(f"unknown shipped pair set {name!r}; choose from {sorted(SHIPPED_PAIRS)}")
    pred_dir, nat_dir = (
        POSTFILTER_ASSETS / SHIPPED_PAIRS[name][0],
        TIMBRE_ASSETS / SHIPPED_PAIRS[name][1],
    )
    files = sorted(pred_dir.glob("*.flac"))
    if not files:
        raise FileNotFoundError(f"no predicted audio in {pred_dir}")
    key = hashlib.sha1(f"{PAIRS_CACHE_VERSION}:{json.dumps(SHIPPED_WORLD.to_dict())}".encode())
    for path in files:
        key.update(path.read_bytes())
        key.update((nat_dir / path.name).read_bytes())
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / f"{name}-{key.hexdigest()[:16]}"
    if (target / "streams.json").is_file():
        return target
    splits = audio_pairs(pred_dir, nat_dir, SHIPPED_WORLD.sample_rate)
    cache.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache))
    try:
        make_pairs(splits, building, SHIPPED_WORLD, progress=progress)
        try:
            os.replace(building, target)
        except OSError:  # another process finished first
            if not (target / "streams.json").is_file():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


# -- datasets ---------------------------------------------------------------------------------


class RandomSegments(Dataset):
    """``length`` random segments of ``segment_frames`` (whole utterances when shorter,
    zero-padded, with a frame mask) drawn from the pairs. Item ``index`` of epoch ``epoch``
    (:meth:`set_epoch`) is drawn from ``(seed, epoch, index)``: the same in every run, worker
    and process, new in every epoch, and a resumed run draws what the killed one would have."""

    def __init__(
        self, pairs: list[FeaturePair], segment_frames: int, length: int, seed: int = 0
    ):
        if not pairs:
            raise ValueError("no training pairs")
        self.pairs, self.segment_frames, self.length = pairs, segment_frames, length
        self.seed, self.epoch = int(seed), 0
        frames = np.array([p.natural.shape[0] for p in pairs], dtype=np.float64)
        self.weights = frames / frames.sum()  # utterances drawn in proportion to their length

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s segments (the training sampler calls it)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        pair = self.pairs[rng.choice(len(self.pairs), p=self.weights)]
        frames = pair.natural.shape[0]
        n = min(self.segment_frames, frames)
        start = int(rng.integers(0, frames - n + 1))
        out = {"predicted": np.zeros((self.segment_frames, pair.natural.shape[1]), np.float32)}
        out["natural"] = out["predicted"].copy()
        out["predicted"][:n] = pair.predicted[start : start + n]
        out["natural"][:n] = pair.natural[start : start + n]
        mask = np.zeros(self.segment_frames, dtype=bool)
        mask[:n] = True
        return {k: torch.from_numpy(v) for k, v in out.items()} | {"mask": torch.from_numpy(mask)}


class Utterances(Dataset):
    """Whole utterances (batch size 1), with their names."""

    def __init__(self, pairs: list[FeaturePair]) -> None:
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        pair = self.pairs[index]
        return {
            "name": pair.name,
            "predicted": torch.from_numpy(pair.predicted),
            "natural": torch.from_numpy(pair.natural),
            "mask": torch.ones(pair.natural.shape[0], dtype=torch.bool),
        }


@dataclass(frozen=True)
class FeatureStatistics:
    """The training features as a post-filter needs them (:meth:`PostFilterDataModule.
    statistics`).

    Attributes:
        layout: the streams and their sizes.
        world: the WORLD settings the features came from (``None``: not WORLD's).
        scaler: per-dimension mean and variance of the natural features.
        global_variance: ``(dims,)`` GV of the natural features, voiced frames where a
            ``vuv`` stream tells them.
    """

    layout: StreamLayout
    world: WorldSettings | None
    scaler: FeatureScaler
    global_variance: np.ndarray


class PostFilterDataModule(ResumableDataModule):
    """(predicted, natural) feature pairs for post-filter training.

    Args:
        data_dir: a pairs folder in the NNSVS layout (module docs), or a shipped set's name
            (``"violin_ddsp"``).
        streams: ``{name: size}`` of the features; default: the folder's ``streams.json``.
        segment_frames: training segment length (256 frames = 1.28 s at 5 ms).
        batch_size: training segments per batch.
        segments_per_epoch: segments per training epoch (default: as many as cover the
            training frames once).
        num_workers: data-loader workers.
        cache_dir: where a shipped set is analysed to (default ``~/.cache/diffx/postfilter``).
        progress: show a progress bar while analysing.
    """

    def __init__(
        self,
        data_dir: str = "violin_ddsp",
        streams: dict[str, int] | None = None,
        segment_frames: int = 256,
        batch_size: int = 8,
        segments_per_epoch: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if segment_frames < 16:
            raise ValueError(f"segment_frames must be >= 16, got {segment_frames}")
        if batch_size < 1 or (segments_per_epoch is not None and segments_per_epoch < 1):
            raise ValueError("batch_size and segments_per_epoch must be >= 1")
        self.data_dir, self.streams = data_dir, streams
        self.segment_frames, self.batch_size = segment_frames, batch_size
        self.segments_per_epoch, self.num_workers = segments_per_epoch, num_workers
        self.cache_dir, self.progress = cache_dir, progress
        self.pairs: dict[str, list[FeaturePair]] = {}
        self.layout: StreamLayout | None = None
        self.world: WorldSettings | None = None
        self.scaler: FeatureScaler | None = None

    def root(self) -> Path:
        if self.data_dir in SHIPPED_PAIRS:
            return shipped_pairs(self.data_dir, self.cache_dir, self.progress)
        root = Path(self.data_dir).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"data_dir {self.data_dir!r} is neither a folder nor a shipped pair set "
                f"({sorted(SHIPPED_PAIRS)})"
            )
        return root

    def prepare_data(self) -> None:
        self.root()  # analyses a shipped set once, on one process

    def setup(self, stage: str | None = None) -> None:
        if self.pairs:
            return
        root = self.root()
        try:
            layout, world = find_layout(root)
        except FileNotFoundError:
            if self.streams is None:
                raise
            layout, world = StreamLayout.from_dict(self.streams), None
        if self.streams is not None and StreamLayout.from_dict(self.streams) != layout:
            raise ValueError(
                f"streams {self.streams} differ from {root}/streams.json's {layout.to_dict()}"
            )
        self.layout, self.world = layout, world
        for split in SPLIT_NAMES:
            folder = split_folder(root, split)
            if folder is not None:
                self.pairs[split] = load_pairs(folder, layout.dims)
        if "train" not in self.pairs:
            raise FileNotFoundError(f"{root}: no training split (train/ or train_no_dev/)")
        self.scaler = FeatureScaler.fit(p.natural for p in self.pairs["train"])

    def statistics(self) -> FeatureStatistics:
        """What a post-filter takes from the training features (set up on first use; what
        :class:`diffx.tasks.GANPostFilter` takes as ``training_statistics``)."""
        self.setup()
        return FeatureStatistics(
            self.layout, self.world, self.scaler, self.natural_global_variance()
        )

    def natural_global_variance(self, voiced_only: bool = True) -> np.ndarray:
        """GV ``(dims,)`` of the natural training features (voiced frames when a ``vuv``
        stream exists and ``voiced_only``)."""
        utterances = [p.natural for p in self.pairs["train"]]
        masks = None
        if voiced_only and "vuv" in self.layout.names:
            masks = [self.layout.voiced(u) for u in utterances]
        return global_variance(utterances, masks)

    def train_dataloader(self) -> DataLoader:
        train = self.pairs["train"]
        length = self.segments_per_epoch or max(
            math.ceil(sum(p.natural.shape[0] for p in train) / self.segment_frames), self.batch_size
        )
        segments = RandomSegments(train, self.segment_frames, length, seed=global_seed())
        return self.train_loader(
            segments, self.batch_size, shuffle=False, drop_last=False, num_workers=self.num_workers
        )

    def _eval_split(self, split: str) -> DataLoader:
        pairs = self.pairs.get(split) or self.pairs.get("valid") or self.pairs["train"]
        return self.eval_loader(
            Utterances(pairs),
            1,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_split("valid")

    def test_dataloader(self) -> DataLoader:
        return self._eval_split("test")

"""Check the files a configured data module will read, before a run creates anything.

``diffx fit/validate/test/predict`` call :func:`check_inputs` on the data module after the
config is parsed and before the trainer runs: the data modules read their audio in ``setup``,
which Lightning calls after the logger has made its run folder and event file and after the
config has been saved there. A user's mistake found then would leave a half-made run behind
and end in a traceback; found here it is one line naming the file and the init argument
(``diffx <cmd>: error: data (AudioPairDataModule): inputs: ...``), and nothing is written.

Every file a user names (a path, or each audio file of a folder) is read once here, in full:
it must exist, decode (libsndfile), hold samples, and hold no NaN or Inf; the shipped demo clips
are known good and only their lengths are read. Then the lengths are checked against what the
module's ``setup`` needs, with the same rule as ``setup`` (so a config that trains today is not
refused): e.g. an :class:`~diffx.data.AudioPairDataModule` needs one clip holding a training
segment, a :class:`~diffx.data.TimbreDataModule` needs every recording long enough to split.
Reading every file costs about what ``setup`` spends reading them again (no resampling here).

The checks live here, keyed by the data module's class, so that the modules stay plain
LightningDataModules for Python users; any other data module can take part by defining a
``check_inputs()`` method that raises ``ValueError`` naming the culprit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import soundfile as sf

from diffx._errors import UserError, one_line
from diffx.data.sources import expand_sources
from diffx.io.audio import demo_audio_files, load_audio

TONE_MIN_CHUNK_SAMPLES = 4096
"""The shortest validation chunk :class:`~diffx.data.ToneDataModule` keeps (its ``setup``)."""


def check_inputs(datamodule) -> None:
    """Read and check every file ``datamodule`` will read (see the module notes).

    Raises:
        UserError: a missing, unreadable, empty, NaN or too short file, or files that do not
            pair up; the message starts with the init argument (``inputs: ...``) and names the
            file.
    """
    for cls, check in _CHECKS.items():
        if isinstance(datamodule, cls):
            check(datamodule)
            return
    custom = getattr(datamodule, "check_inputs", None)
    if callable(custom):
        custom()


# -- helpers ------------------------------------------------------------------------------------


class _Clip:
    """One source file's length, read (and checked) without resampling."""

    def __init__(self, name: str, where: str | Path, samples: int, file_rate: int):
        self.name, self.where, self.samples, self.file_rate = name, where, samples, file_rate

    def samples_at(self, sample_rate: int) -> int:
        """Length at ``sample_rate`` as :func:`diffx.io.load_audio` resamples it."""
        return math.ceil(self.samples * sample_rate / self.file_rate)

    def describe(self, sample_rate: int) -> str:
        return f"{self.where} ({self.samples_at(sample_rate)} samples at {sample_rate} Hz)"


def _clips(arg: str, sources: Sequence[str] | str, silent_ok: bool = True) -> list[_Clip]:
    """Every file of ``sources`` (demo names, files, folders) checked, with its length."""
    try:
        resolved = expand_sources(sources)
    except ValueError as error:
        raise UserError(f"{arg}: {one_line(error)}") from error
    demo = demo_audio_files() if any(isinstance(w, str) for _, w in resolved) else {}
    clips = []
    for name, where in resolved:
        if isinstance(where, str):  # a shipped demo clip: its header is enough
            info = sf.info(str(demo[where]))
            clips.append(_Clip(name, where, int(info.frames), int(info.samplerate)))
            continue
        try:
            audio, rate = load_audio(where)  # exists, decodes, holds samples, all finite
        except (ValueError, FileNotFoundError) as error:
            raise UserError(f"{arg}: {one_line(error)}") from error
        if not silent_ok and not bool(audio.abs().max() > 0):
            raise UserError(f"{arg}: audio file {where} is silent: there is nothing to align")
        clips.append(_Clip(name, where, int(audio.shape[-1]), rate))
    return clips


def _longest(clips: list[_Clip], sample_rate: int) -> str:
    best = max(clips, key=lambda c: c.samples_at(sample_rate))
    return f"the longest, {best.describe(sample_rate)}"


# -- the data modules -------------------------------------------------------------------------


def _check_pairs(dm) -> None:
    """:class:`~diffx.data.AudioPairDataModule`: one clip must hold a training segment after
    the validation share is held out; recorded targets must pair up with the inputs."""
    sr = dm.sample_rate
    inputs = _clips("inputs", dm.inputs)
    need = math.ceil(dm.segment_samples / (1.0 - dm.val_fraction))
    if not any(round(c.samples_at(sr) * (1.0 - dm.val_fraction)) >= dm.segment_samples
               for c in inputs):  # fmt: skip
        raise UserError(
            f"inputs: no file holds one training segment (segment_samples={dm.segment_samples} "
            f"after val_fraction={dm.val_fraction:g} is held out: about {need} samples at "
            f"{sr} Hz); {_longest(inputs, sr)}"
        )
    if dm.targets is None:
        return
    targets = _clips("targets", dm.targets)
    if len(targets) != len(inputs):
        raise UserError(
            f"targets: {len(targets)} files for {len(inputs)} inputs; they must pair up"
        )
    for x, y in zip(inputs, targets):
        if x.samples_at(sr) != y.samples_at(sr):
            raise UserError(
                f"targets: {y.describe(sr)} is not as long as its input {x.describe(sr)}; "
                "recorded pairs must be equally long and aligned"
            )


def _check_tones(dm) -> None:
    """:class:`~diffx.data.ToneDataModule`: one validation clip must fill a chunk."""
    sr = dm.sample_rate
    clips = _clips("val_audio", dm.val_audio)
    if not any(c.samples_at(sr) >= TONE_MIN_CHUNK_SAMPLES for c in clips):
        raise UserError(
            f"val_audio: no file holds {TONE_MIN_CHUNK_SAMPLES} samples at {sr} Hz (the "
            f"shortest validation chunk); {_longest(clips, sr)}"
        )


def _check_style(dm) -> None:
    """:class:`~diffx.data.StyleTransferDataModule`: each split needs one recording whose share
    holds a crop (shorter recordings are left out of a split, with a warning, by ``setup``)."""
    sr, crop = dm.sample_rate, dm.crop_samples
    clips = _clips("sources", dm.sources)
    train_share, val_share = dm.fractions
    bounds = {"train": (0.0, train_share), "val": (train_share, train_share + val_share),
              "test": (train_share + val_share, 1.0)}  # fmt: skip
    for split, (start, stop) in bounds.items():

        def share(clip, start=start, stop=stop) -> int:
            n = clip.samples_at(sr)
            return (n if stop == 1.0 else round(n * stop)) - round(n * start)

        if not any(share(c) >= crop for c in clips):
            fraction = stop - start
            raise UserError(
                f"sources: no file has a {split} share ({fraction:.0%} of it) of at least "
                f"crop_samples={crop} samples at {sr} Hz; {_longest(clips, sr)}"
            )


def _check_alignment(dm) -> None:
    """:class:`~diffx.data.PhaseAlignmentDataModule`: a dry and a wet file, one file each,
    not silent, long enough to measure a phase response, equally long."""
    from diffx.analysis.allpass_fit import MIN_PAIR_SAMPLES

    sr, pair = dm.sample_rate, {}
    for arg, source in (("dry", dm.dry_source), ("wet", dm.wet_source)):
        if source is None or source == "<tensor>":
            continue
        if Path(source).expanduser().is_dir():
            raise UserError(f"{arg}: must be one demo clip or audio file, got folder {source!r}")
        (clip,) = _clips(arg, [source], silent_ok=False)
        if clip.samples_at(sr) < MIN_PAIR_SAMPLES:
            raise UserError(
                f"{arg}: {clip.describe(sr)} is too short to measure a phase response (at "
                f"least {MIN_PAIR_SAMPLES} samples)"
            )
        pair[arg] = clip
    if len(pair) == 2 and pair["dry"].samples_at(sr) != pair["wet"].samples_at(sr):
        raise UserError(
            f"wet: {pair['wet'].describe(sr)} is not as long as the dry "
            f"{pair['dry'].describe(sr)}; a recorded pair must be equally long"
        )


def _check_timbre(dm) -> None:
    """:class:`~diffx.data.TimbreDataModule` with ``audio``: every recording must split into
    training, test and validation frames, and one training part must hold a clip."""
    if dm.audio is None:  # the shipped phrases
        return
    sr = dm.sample_rate
    clips = _clips("audio", dm.audio)
    longest_train = 0
    for clip in clips:
        frames = math.ceil(clip.samples_at(sr) / dm.hop)
        held = max(1, round(frames * dm.holdout_fraction))
        if frames - 2 * held < 1:
            raise UserError(
                f"audio: {clip.describe(sr)} is too short to split into training, test and "
                f"validation frames (holdout_fraction={dm.holdout_fraction:g}, "
                f"{dm.frame_rate_hz} frames a second)"
            )
        longest_train = max(longest_train, frames - 2 * held)
    if longest_train < dm.clip_frames:
        raise UserError(
            f"audio: no recording's training part holds one clip of {dm.clip_frames} frames "
            f"(clip_seconds); {_longest(clips, sr)}: lower clip_seconds or give longer audio"
        )


def _check_postfilter(dm) -> None:
    """:class:`~diffx.data.PostFilterDataModule` on a folder: load its feature pairs (each
    file is read and checked by ``setup``, which names it; a shipped set is made by diffx)."""
    from diffx.data.postfilter import SHIPPED_PAIRS

    if dm.data_dir in SHIPPED_PAIRS:
        return
    try:
        dm.setup()
    except (ValueError, FileNotFoundError) as error:
        raise UserError(f"data_dir: {one_line(error)}") from error


def _registry() -> dict[type, Callable]:
    from diffx.data import (
        AudioPairDataModule,
        PhaseAlignmentDataModule,
        PostFilterDataModule,
        StyleTransferDataModule,
        TimbreDataModule,
        ToneDataModule,
    )

    return {
        AudioPairDataModule: _check_pairs,
        ToneDataModule: _check_tones,
        StyleTransferDataModule: _check_style,
        PhaseAlignmentDataModule: _check_alignment,
        TimbreDataModule: _check_timbre,
        PostFilterDataModule: _check_postfilter,
    }


_CHECKS = _registry()

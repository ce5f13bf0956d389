"""Audio file reading and writing, and the demo audio shipped with diffx.

Files are read and written with ``soundfile`` (libsndfile). Tensors are channels first,
``(channels, samples)``, float32, full scale at +-1.0. Resampling uses
``scipy.signal.resample_poly`` with the exact rational ratio of the two rates (a windowed-sinc
polyphase filter), never linear interpolation.

Every error a user can cause (missing file, corrupt or empty file, NaN samples, audio above
full scale when writing) raises an exception whose message names the file.
"""

from __future__ import annotations

import importlib.resources
import math
import os
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from diffx._validation import check_integer_sample_rate
from diffx.functional.resampling import resample

__all__ = [
    "DEMO_SAMPLE_RATES",
    "demo_audio_files",
    "load_audio",
    "load_demo",
    "save_audio",
]

# Short name -> sample rate (Hz) of the demo files in ``diffx/assets/demo/``. Each file is
# ``<name>.flac``; its source, licence and processing are in that folder's README.md (built by
# scripts/make_demo_audio.py).
DEMO_SAMPLE_RATES: dict[str, int] = {
    "guitar_em9": 44100,
    "guitar_e_fifths": 44100,
    "guitar_e_slide": 44100,
    "guitar_harmonics": 44100,
    "voice": 44100,
    "voice2": 44100,
    "arctic_a0007": 16000,
    "arctic_a0009": 16000,
    "violin": 48000,
    "flute": 48000,
    "trumpet": 48000,
    "guitar_clean": 48000,
    "bass": 48000,
}

# Sample formats written by default, per file extension. 24-bit PCM keeps quantization noise
# near -144 dBFS, far below anything the effects or losses resolve, at 3/4 the size of float.
_DEFAULT_SUBTYPES = {".wav": "PCM_24", ".flac": "PCM_24"}
# Float sample formats can hold values above full scale, so no peak check applies to them.
_FLOAT_SUBTYPES = {"FLOAT", "DOUBLE"}
# More channels than this almost always means a (samples, channels) array passed by mistake.
MAX_CHANNELS = 64



def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    mono: bool = False,
) -> tuple[torch.Tensor, int]:
    """Read an audio file into a float32 tensor.

    Args:
        path: any file libsndfile reads (WAV, FLAC, OGG, AIFF, ...).
        sample_rate: target rate in Hz. When it differs from the file's rate the audio is
            resampled with ``scipy.signal.resample_poly`` by the exact ratio
            ``sample_rate / file_rate`` (reduced by their greatest common divisor); the output
            then has ``ceil(samples * sample_rate / file_rate)`` samples. ``None`` keeps the
            file's rate.
        mono: average all channels into one.

    Returns:
        ``(audio, sample_rate)``: ``audio`` is float32 shaped ``(channels, samples)``
        (``channels`` is 1 when ``mono``), ``sample_rate`` in Hz is the rate of ``audio``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file cannot be decoded, holds no samples, or holds NaN/Inf samples;
            or ``sample_rate`` is not a positive integer. The message names the file.
    """
    path = Path(path)
    if sample_rate is not None:
        sample_rate = check_integer_sample_rate(sample_rate, "sample_rate")
    if not path.exists():
        raise FileNotFoundError(f"audio file not found: {path}")
    if path.is_dir():
        raise ValueError(f"expected an audio file, got a directory: {path}")
    try:
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise ValueError(f"cannot read audio file {path}: {err}") from err
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ValueError(f"audio file {path} holds no samples")
    if not np.isfinite(data).all():
        n_bad = int((~np.isfinite(data)).sum())
        raise ValueError(f"audio file {path} contains {n_bad} NaN or Inf samples")

    audio = data.T  # (channels, samples)
    if mono and audio.shape[0] > 1:
        audio = audio.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)

    out_rate = file_rate
    if sample_rate is not None and sample_rate != file_rate:
        audio = resample(audio, file_rate, sample_rate).astype(np.float32)
        out_rate = sample_rate
    return torch.from_numpy(np.ascontiguousarray(audio)), int(out_rate)




def save_audio(
    path: str | os.PathLike,
    audio: torch.Tensor | np.ndarray,
    sample_rate: int,
    clip: bool = False,
    subtype: str | None = None,
) -> Path:
    """Write audio to a file, creating its parent directories.

    The format follows the extension. ``.wav`` and ``.flac`` are written as 24-bit PCM unless
    ``subtype`` says otherwise (any libsndfile subtype, e.g. ``"PCM_16"``, ``"FLOAT"``); other
    extensions use libsndfile's default subtype for the format.

    Full scale is +-1.0. A PCM file cannot hold more, so when any sample's magnitude exceeds 1.0
    this raises ``ValueError`` (nothing is written) unless ``clip=True``, which clips the samples
    to [-1, 1] and warns how many were clipped. Float subtypes (``"FLOAT"``, ``"DOUBLE"``)
    store values above full scale unchanged and need no clipping. A sample of exactly +1.0
    becomes the largest positive PCM code (1 - 2**-23 for 24 bit).

    Args:
        path: destination file; its extension picks the format.
        audio: ``(channels, samples)`` or ``(samples,)``, any float dtype or device; detached.
        sample_rate: in Hz, a positive integer.
        clip: clip samples outside [-1, 1] instead of raising.
        subtype: libsndfile sample format; ``None`` for the default described above.

    Returns:
        The path written.

    Raises:
        ValueError: NaN/Inf samples, a wrong shape, an unknown extension, an invalid
            ``sample_rate``, or samples above full scale without ``clip``. The message names
            the file.
    """
    path = Path(path)
    sample_rate = check_integer_sample_rate(sample_rate, "sample_rate")
    if isinstance(audio, torch.Tensor):
        array = audio.detach().cpu().to(torch.float64).numpy()
    else:
        array = np.asarray(audio, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(
            f"audio for {path} must be shaped (channels, samples) or (samples,), "
            f"got shape {tuple(array.shape)}"
        )
    channels, samples = array.shape
    if channels == 0 or samples == 0:
        raise ValueError(f"audio for {path} holds no samples (shape {tuple(array.shape)})")
    if channels > MAX_CHANNELS:
        raise ValueError(
            f"audio for {path} has {channels} channels (more than {MAX_CHANNELS}); expected "
            f"(channels, samples); a (samples, channels) array must be transposed"
        )
    if not np.isfinite(array).all():
        n_bad = int((~np.isfinite(array)).sum())
        raise ValueError(f"audio for {path} contains {n_bad} NaN or Inf samples; not written")

    extension = path.suffix.lower()
    fmt = extension.lstrip(".").upper()
    if fmt not in sf.available_formats():
        raise ValueError(
            f"cannot write {path}: unknown audio extension {extension!r} "
            f"(use .wav, .flac, or another format libsndfile knows)"
        )
    if subtype is None:
        subtype = _DEFAULT_SUBTYPES.get(extension, sf.default_subtype(fmt))
    if subtype not in _FLOAT_SUBTYPES:
        n_over = int((np.abs(array) > 1.0).sum())
        if n_over:
            peak = float(np.abs(array).max())
            if not clip:
                raise ValueError(
                    f"audio for {path} exceeds full scale: peak {peak:.4g} "
                    f"({20 * math.log10(peak):+.2f} dBFS) in {n_over} samples; scale it down, "
                    f"pass clip=True, or use subtype='FLOAT'; not written"
                )
            warnings.warn(
                f"clipping {n_over} samples above full scale (peak {peak:.4g}) writing {path}",
                stacklevel=2,
            )
            array = np.clip(array, -1.0, 1.0)

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        sf.write(path, array.T, sample_rate, subtype=subtype, format=fmt)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise ValueError(f"cannot write {path} as {fmt}/{subtype}: {err}") from err
    return path


def _demo_dir() -> Path:
    """The folder of shipped demo audio, located through the installed package."""
    resource = importlib.resources.files("diffx").joinpath("assets").joinpath("demo")
    # Regular (non-zipped) installs and source checkouts give a real directory.
    return Path(str(resource))


def demo_audio_files() -> dict[str, Path]:
    """Map each demo short name (e.g. ``"guitar_em9"``, ``"voice"``, ``"bass"``) to its file.

    The files ship in ``diffx/assets/demo/``; see the README.md there for each file's source,
    licence, sample rate and duration.

    Raises:
        FileNotFoundError: a demo file is missing (e.g. diffx was installed without its package
            data); the message lists the missing files.
    """
    folder = _demo_dir()
    files = {name: folder / f"{name}.flac" for name in DEMO_SAMPLE_RATES}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            "demo audio missing (was diffx installed without its package data?): "
            + ", ".join(missing)
        )
    return files


def load_demo(
    name: str, sample_rate: int | None = None, mono: bool = True
) -> tuple[torch.Tensor, int]:
    """Load one of the demo files shipped with diffx.

    Args:
        name: a key of :func:`demo_audio_files` (``"guitar_em9"``, ``"voice"``, ``"violin"``,
            ``"bass"``, ...).
        sample_rate: target rate in Hz, or ``None`` for the file's own rate (16000, 44100 or
            48000, see ``DEMO_SAMPLE_RATES``).
        mono: average channels (the shipped files are already mono).

    Returns:
        ``(audio, sample_rate)`` as from :func:`load_audio`: float32 ``(channels, samples)``.

    Raises:
        ValueError: ``name`` is not a demo file; the message lists the valid names.
    """
    if name not in DEMO_SAMPLE_RATES:
        raise ValueError(
            f"unknown demo audio {name!r}; available: {', '.join(sorted(DEMO_SAMPLE_RATES))}"
        )
    return load_audio(demo_audio_files()[name], sample_rate=sample_rate, mono=mono)

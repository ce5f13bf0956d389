"""How the ``diffx`` commands report a user's mistake: one line, exit status 2, nothing written.

The convention, for every subcommand of the console script (``fit``, ``validate``, ``test``,
``predict``, ``demo``, ``align``, ``stylize``, ``timbre``, ``postfilter ...``):

* a mistake in what the user gave (a missing, unreadable, empty, NaN or too short file, an
  unknown option or config key, a value out of range, a missing or damaged checkpoint) is
  printed as one line on stderr, ``diffx <command>: error: <message>``, whose message names
  the culprit (the file, the option or the config key), and the command exits with status 2
  (argparse's and jsonargparse's status for usage errors);
* it is found before the command creates any output file, run folder or log;
* anything else is a bug, and raises with its traceback.

Code raises :class:`UserError`, or the ``ValueError`` / ``FileNotFoundError`` that the library's
input checks raise naming the argument (:mod:`diffx._validation`, :func:`diffx.io.load_audio`);
each command's ``main`` catches :data:`USER_ERRORS` at its boundary and calls :func:`report`.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

USER_ERRORS: tuple[type[Exception], ...] = (
    ValueError,  # the library's convention for bad arguments and bad files (UserError too)
    FileNotFoundError,
    FileExistsError,  # an output folder that is a file, ...
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
"""What a command's boundary reports as a user's mistake (one line, exit 2)."""

EXIT_USAGE = 2
"""Exit status of every user's mistake, as argparse's usage errors."""


class UserError(ValueError):
    """A mistake in what the user gave; the message names the culprit (file, option, key).

    A ``ValueError``, so code that already handles the library's input errors handles it too.
    """


def one_line(error: BaseException | str) -> str:
    """The message of ``error`` on one line (whitespace runs, newlines included, collapsed)."""
    text = " ".join(str(error).split())
    if isinstance(error, BaseException) and not text:
        return type(error).__name__
    return text


def report(command: str, error: BaseException | str) -> int:
    """Print ``diffx <command>: error: <message>`` on stderr; return the exit status, 2."""
    print(f"diffx {command}: error: {one_line(error)}", file=sys.stderr)
    return EXIT_USAGE


class CommandParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line (no usage dump), exit 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def check_checkpoint(path: str | Path, option: str = "--ckpt") -> Path:
    """Refuse what cannot be a PyTorch checkpoint, cheaply, naming ``path`` and its ``option``.

    A checkpoint written by ``torch.save`` (Lightning's ``.ckpt``, diffx's ``.pt``) is a zip
    archive with a ``data.pkl`` entry, and its directory sits at the end of the file: an
    empty, truncated or random file fails here without being unpickled (where it would raise
    ``EOFError``, ``OSError`` or a misleading ``UnpicklingError`` that never names the file).
    The contents are not read: a damaged tensor inside an intact archive still fails at load.
    Files in torch's legacy format (a bare pickle, protocol 2) are let through.

    Raises:
        UserError: missing, a folder, unreadable, empty, or not a checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{option} {path}: no such file")
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder, not a checkpoint file")
    try:
        with path.open("rb") as file:
            head = file.read(2)
        if not head:
            raise UserError(f"{option} {path} is empty (0 bytes), not a checkpoint")
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if any(name.endswith("data.pkl") for name in archive.namelist()):
                    return path
            raise UserError(f"{option} {path} is a zip archive but not a PyTorch checkpoint")
    except (OSError, zipfile.BadZipFile) as error:
        raise UserError(f"cannot read {option} {path}: {one_line(error)}") from error
    if head == b"\x80\x02":  # pickle protocol 2: torch's legacy format
        return path
    raise UserError(
        f"{option} {path} is not a PyTorch checkpoint (truncated, damaged or another kind of file)"
    )


def check_output_audio(path: str | Path, option: str = "--out") -> Path:
    """Refuse an output audio path that cannot be written, before any work or any file:
    an extension libsndfile does not know, or a folder where the file should be.

    Raises:
        UserError: naming ``option`` and ``path``.
    """
    import soundfile as sf

    path = Path(path)
    if path.suffix.lstrip(".").upper() not in sf.available_formats():
        raise UserError(
            f"{option} {path}: unknown audio extension {path.suffix or '(none)'!r} "
            "(use .wav, .flac or another format libsndfile writes)"
        )
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{option} {path}: {parent} is a file, not a folder")
            break
    return path


def check_seconds(value: float, option: str, minimum: float = 0.0) -> float:
    """``value`` if it is a finite number of seconds >= ``minimum``, else a :class:`UserError`
    naming ``option``."""
    if not minimum <= value < float("inf"):
        raise UserError(f"{option} must be a number of seconds >= {minimum:g}, got {value}")
    return value


def read_user_audio(
    path: str | Path,
    option: str,
    min_seconds: float = 0.0,
    sample_rate: int | None = None,
    mono: bool = False,
):
    """:func:`diffx.io.load_audio`, with every refusal a :class:`UserError` naming ``option``
    and the file: missing, undecodable, empty, NaN/Inf, or shorter than ``min_seconds``.

    Returns:
        ``(audio (channels, samples), sample_rate)`` as from ``load_audio``.
    """
    from diffx.io.audio import load_audio

    try:
        audio, rate = load_audio(path, sample_rate=sample_rate, mono=mono)
    except (ValueError, FileNotFoundError) as error:
        raise UserError(f"{option}: {one_line(error)}") from error
    if audio.shape[-1] < min_seconds * rate:
        raise UserError(
            f"{option}: {path} is {1000 * audio.shape[-1] / rate:.3g} ms long "
            f"({audio.shape[-1]} samples at {rate} Hz); at least {1000 * min_seconds:g} ms "
            "is needed"
        )
    return audio, rate

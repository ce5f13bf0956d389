"""The front-end convention shared by every ``diffx`` command: one line, exit status 2.

* A mistake in what the user gave (a missing, unreadable, empty, NaN or too short file, an
  unknown option or config key, a value out of range, a missing or damaged checkpoint) is
  printed as one line on stderr, ``diffx <command>: error: <message>``, whose message names
  the culprit (the file, the option or the config key), and the command exits with status 2
  (argparse's and jsonargparse's status for usage errors);
* it is found before the command creates any output file, run folder or log;
* anything else is a bug, and raises with its traceback.

Library code raises :class:`~diffx._errors.UserError`, or the ``ValueError`` /
``FileNotFoundError`` that the library's input checks raise naming the argument; each
command's ``main`` catches :data:`~diffx._errors.USER_ERRORS` at its boundary and calls
:func:`report`. Options are parsed by :class:`CommandParser`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from diffx._errors import EXIT_USAGE, UserError, one_line
from diffx.io.audio import load_audio


def report(command: str, error: BaseException | str) -> int:
    """Print ``diffx <command>: error: <message>`` on stderr; return the exit status, 2."""
    print(f"diffx {command}: error: {one_line(error)}", file=sys.stderr)
    return EXIT_USAGE


class CommandParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line (no usage dump), exit 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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

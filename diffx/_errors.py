"""What a user's mistake is, in every layer: a :class:`UserError` (a ``ValueError``) whose message
names the culprit (the file, the option or the config key).

Library code raises it, or the ``ValueError`` / ``FileNotFoundError`` that the input checks
raise naming the argument (:mod:`diffx._validation`, :func:`diffx.io.load_audio`); the command
front ends catch :data:`USER_ERRORS` and print one line (:mod:`diffx.commands._frontend`, where
the whole convention is written). :func:`check_checkpoint` refuses a file that cannot be a
checkpoint before it is unpickled.
"""

from __future__ import annotations

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



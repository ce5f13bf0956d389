"""Reading a JSON object from a model file, with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path


def read_json_object(path: Path, kind: str) -> dict:
    """Parse ``path`` as a JSON object; ``kind`` (e.g. ``"NAM"``) names the format in errors."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as err:
        raise ValueError(f"cannot read {kind} file {path}: {err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{kind} file {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{kind} file {path} holds a JSON {type(data).__name__}, not an object")
    return data

"""Phase alignments as JSON: a polarity, a delay and an allpass cascade, reusable anywhere.

Layout (``format: "diffx.phase_alignment"``, ``version: 1``)::

    {
      "format": "diffx.phase_alignment", "version": 1,
      "sample_rate": 44100,
      "polarity": 1,                  # +1 or -1
      "delay_samples": 12.37,         # applied after the cascade; negative advances
      "cascade": {
        "kind": "second_order", "stretch": null,
        "params": {"pole_radius": [...], "freq_hz": [...], ...},   # physical units
        "sos": [[b0, b1, b2, a0, a1, a2], ...]                      # scipy's layout
      },
      "report": {...}                 # optional: the parallel-mix test before and after
    }

``diffx align`` writes one such object per channel; with several channels they are listed
under ``{"format": "diffx.phase_alignment.channels", "channels": [...]}``
(:func:`load_alignments` reads both layouts).

The aligned dry is ``polarity * delay(sosfilt(sos, dry), delay_samples)``; :class:`Alignment`
applies it with scipy, so no diffx model or torch is needed to reuse a filter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.signal

from diffx.io._json import read_json_object

FORMAT = "diffx.phase_alignment"
CHANNELS_FORMAT = "diffx.phase_alignment.channels"


@dataclass
class Alignment:
    """A fitted alignment (see the module notes).

    Attributes:
        sample_rate: Hz the filter was fitted at.
        polarity: +1 or -1.
        delay_samples: delay applied after the cascade (negative: the dry is advanced).
        sos: ``(n_rows, 6)`` float64 allpass sections in scipy's layout (no rows: delay only).
        kind, stretch, params: the cascade's structure and parameters in physical units.
        report: free-form results (e.g. the parallel-mix test).
    """

    sample_rate: float
    polarity: int
    delay_samples: float
    sos: np.ndarray
    kind: str = "second_order"
    stretch: int | None = None
    params: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)

    def apply(self, dry: np.ndarray) -> np.ndarray:
        """Align ``(samples,)`` or ``(channels, samples)`` audio (float64 result, same shape).

        The length is kept: a positive delay pushes the end of the signal out, a negative one
        fills the end with zeros.
        """
        from diffx.analysis.phase_alignment import apply_delay

        x = np.asarray(dry, dtype=np.float64)
        y = scipy.signal.sosfilt(self.sos, x, axis=-1) if len(self.sos) else x
        if y.ndim == 1:
            return apply_delay(y, self.delay_samples, self.polarity)
        return np.stack([apply_delay(c, self.delay_samples, self.polarity) for c in y])

    @classmethod
    def from_fit(cls, fit, report: dict | None = None) -> Alignment:
        """The alignment a :class:`diffx.analysis.allpass_fit.PairFit` found (a delay alone
        when its ``fit`` is ``None``)."""
        cascade = fit.fit
        return cls(
            sample_rate=float(fit.sample_rate),
            polarity=int(fit.polarity),
            delay_samples=float(fit.delay_samples),
            sos=fit.sos(),
            kind=cascade.kind if cascade is not None else "none",
            params=cascade.params() if cascade is not None else {},
            report=report or {},
        )

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": 1,
            "sample_rate": self.sample_rate,
            "polarity": int(self.polarity),
            "delay_samples": float(self.delay_samples),
            "cascade": {
                "kind": self.kind,
                "stretch": self.stretch,
                "params": self.params,
                "sos": np.asarray(self.sos, dtype=float).tolist(),
            },
            "report": self.report,
        }


def save_alignment(alignment: Alignment, path: str | Path) -> Path:
    """Write ``alignment`` as JSON (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(alignment.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def save_alignments(alignments: list[Alignment], path: str | Path, **info) -> Path:
    """Write one alignment per channel (what ``diffx align`` writes): a single channel in the
    plain layout, several as ``{"format": "diffx.phase_alignment.channels", "channels": [...]}``
    plus ``info`` (e.g. the input file names)."""
    path = Path(path)
    if len(alignments) == 1:
        data = {**alignments[0].to_dict(), **info}
    else:
        data = {"format": CHANNELS_FORMAT, **info, "channels": [a.to_dict() for a in alignments]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def load_alignments(path: str | Path) -> list[Alignment]:
    """Read every channel's alignment from a file of either layout (one per channel)."""
    path = Path(path)
    data = read_json_object(path, "alignment")
    if data.get("format") == CHANNELS_FORMAT:
        channels = data.get("channels")
        if not isinstance(channels, list) or not channels:
            raise ValueError(f"alignment file {path} lists no channels")
        return [_from_dict(c, path) for c in channels]
    return [_from_dict(data, path)]


def load_alignment(path: str | Path) -> Alignment:
    """Read an alignment written by :func:`save_alignment` (or a one-channel ``diffx align``).

    Raises:
        ValueError: the file is not valid JSON of this format, or holds several channels (use
            :func:`load_alignments`); the message names the file and the malformed field.
    """
    path = Path(path)
    data = read_json_object(path, "alignment")
    if data.get("format") == CHANNELS_FORMAT:
        raise ValueError(
            f"{path} holds {len(data.get('channels', []))} channels; read it with load_alignments"
        )
    return _from_dict(data, path)


def _from_dict(data: dict, path: Path) -> Alignment:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} is not a diffx phase alignment (format {found!r})")
    try:
        cascade = data["cascade"]
        sos = np.asarray(cascade["sos"], dtype=np.float64)
        alignment = Alignment(
            sample_rate=float(data["sample_rate"]),
            polarity=int(data["polarity"]),
            delay_samples=float(data["delay_samples"]),
            sos=sos,
            kind=str(cascade.get("kind", "")),
            stretch=cascade.get("stretch"),
            params=dict(cascade.get("params", {})),
            report=dict(data.get("report", {})),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"alignment file {path} is malformed: {err!r}") from None
    sos = sos.reshape(-1, 6) if sos.size == 0 else sos
    alignment.sos = sos
    if sos.ndim != 2 or sos.shape[1] != 6 or not np.isfinite(sos).all():
        raise ValueError(f"alignment file {path}: sos must be finite rows of 6 numbers")
    if alignment.polarity not in (-1, 1):
        raise ValueError(f"alignment file {path}: polarity must be +1 or -1")
    return alignment

"""Torch-style reduction shared by every loss in :mod:`diffx.losses`."""

from __future__ import annotations

import torch

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str) -> str:
    """Return ``reduction`` if it is one of ``"none"``, ``"mean"`` or ``"sum"``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce per-item loss values, e.g. shaped ``(batch, channels)``, like torch's losses."""
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values

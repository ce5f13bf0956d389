"""Time-domain losses of the virtual-analog literature: error-to-signal ratio and DC error.

Both follow Wright, Damskägg and Välimäki, "Real-time black-box modelling with recurrent neural
networks" (DAFx 2019) and Wright and Välimäki, "Perceptual loss function for neural modelling of
audio systems" (ICASSP 2020): ESR = Σ(y − ŷ)² / Σ y² and DC = (mean(y − ŷ))² / mean(y²), each
computed per item over the samples, optionally after a pre-emphasis filter applied to both.
"""

from __future__ import annotations

import torch
from torch import nn

from diffx._validation import check_audio
from diffx.losses._reduction import check_reduction, reduce

#: Added to the target energy so a silent target gives a large but finite ESR (Σ error² / eps)
#: and finite gradients instead of a division by zero; auraloss uses the same value.
ESR_EPS = 1e-8


def check_pair(pred: torch.Tensor, target: torch.Tensor, min_dim: int = 1) -> None:
    """Raise ``ValueError`` unless ``pred`` and ``target`` are finite and shaped alike."""
    check_audio(pred, "pred", min_dim=min_dim)
    check_audio(target, "target", min_dim=min_dim)
    if pred.shape != target.shape:
        what = "length" if pred.shape[:-1] == target.shape[:-1] else "shape"
        raise ValueError(
            f"pred and target differ in {what}: pred {tuple(pred.shape)}, "
            f"target {tuple(target.shape)}"
        )


def esr(pred: torch.Tensor, target: torch.Tensor, eps: float = ESR_EPS) -> torch.Tensor:
    """Error-to-signal ratio Σ(target − pred)² / (Σ target² + eps) over the last dim (linear).

    Args:
        pred: prediction, shaped ``(..., samples)``.
        target: target of the same shape.
        eps: added to the target energy; see :data:`ESR_EPS`.

    Returns:
        ESR per item, shaped ``(...)``. 0 for a perfect prediction, 1 for a silent one.
    """
    check_pair(pred, target)
    error_energy = (target - pred).square().sum(dim=-1)
    return error_energy / (target.square().sum(dim=-1) + eps)


def dc_error(pred: torch.Tensor, target: torch.Tensor, eps: float = ESR_EPS) -> torch.Tensor:
    """DC error (mean(target − pred))² / (mean(target²) + eps) over the last dim (linear).

    Args:
        pred: prediction, shaped ``(..., samples)``.
        target: target of the same shape.
        eps: added to the target power so a silent target stays finite.

    Returns:
        DC error per item, shaped ``(...)``.
    """
    check_pair(pred, target)
    return (target - pred).mean(dim=-1).square() / (target.square().mean(dim=-1) + eps)


class ESRLoss(nn.Module):
    """Error-to-signal ratio loss with an optional pre-emphasis filter.

    Args:
        pre_emphasis: a module applied to both signals first (e.g.
            :class:`diffx.losses.filters.FirstOrderHighpass` or ``AWeighting``), or ``None``.
        eps: added to the target energy; see :data:`ESR_EPS`.
        reduction: ``"mean"`` or ``"sum"`` over the ``(batch, channels)`` values, or ``"none"``.

    Shapes:
        ``pred`` and ``target``: ``(batch, channels, samples)``; output: a scalar, or
        ``(batch, channels)`` with ``reduction="none"``. Each item's ESR is its own ratio, so
        the mean weighs quiet and loud items alike (a pooled Σ over the whole batch, as some
        reference code computes, lets loud items dominate).
    """

    def __init__(
        self, pre_emphasis: nn.Module | None = None, eps: float = ESR_EPS, reduction: str = "mean"
    ):
        super().__init__()
        self.pre_emphasis = pre_emphasis
        self.eps = float(eps)
        self.reduction = check_reduction(reduction)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_pair(pred, target, min_dim=3)
        if self.pre_emphasis is not None:
            pred, target = self.pre_emphasis(pred), self.pre_emphasis(target)
        return reduce(esr(pred, target, self.eps), self.reduction)


class DCLoss(nn.Module):
    """DC error loss (mean(target − pred))² / mean(target²), per item.

    Args:
        eps: added to the target power so a silent target stays finite.
        reduction: ``"mean"`` or ``"sum"`` over the ``(batch, channels)`` values, or ``"none"``.

    Shapes:
        ``pred`` and ``target``: ``(batch, channels, samples)``; output: a scalar, or
        ``(batch, channels)`` with ``reduction="none"``.
    """

    def __init__(self, eps: float = ESR_EPS, reduction: str = "mean"):
        super().__init__()
        self.eps = float(eps)
        self.reduction = check_reduction(reduction)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_pair(pred, target, min_dim=3)
        return reduce(dc_error(pred, target, self.eps), self.reduction)

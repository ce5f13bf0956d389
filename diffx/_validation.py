"""Input checks shared by every public op.

Errors a user can cause raise ``ValueError`` naming the argument, so a bad call fails at the
boundary instead of deep inside a kernel or as a silent NaN. The finiteness checks read one
scalar back from the device; they run once per call on the inputs, never inside loops.
"""

from __future__ import annotations

import operator

import numpy as np
import torch


def check_audio(x: torch.Tensor, name: str = "x", min_dim: int = 3) -> torch.Tensor:
    """Check that ``x`` is a finite floating-point audio tensor ``(batch, channels, samples)``.

    Args:
        x: the audio tensor.
        name: the argument name used in error messages.
        min_dim: the least number of dimensions accepted (3 for ``(batch, channels, samples)``;
            ops that accept any leading shape pass 1).

    Returns:
        ``x`` unchanged.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < min_dim:
        shape = "(batch, channels, samples)" if min_dim == 3 else f"at least {min_dim} dims"
        raise ValueError(f"{name} must be shaped {shape}, got shape {tuple(x.shape)}")
    if x.shape[-1] == 0:
        raise ValueError(f"{name} has no samples (shape {tuple(x.shape)})")
    check_finite(x, name)
    return x


def has_values(x: torch.Tensor) -> bool:
    """Whether ``x`` holds values to check: a ``meta`` tensor has a shape and a dtype only.

    The value checks of this module pass meta tensors unchecked, so the pure-tensor ops run
    on the meta device for shape and dtype inference (tests/test_devices.py); the shape checks
    still run.
    """
    return x.device.type != "meta"


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Raise ``ValueError`` if ``x`` holds NaN or Inf (never for a meta tensor: no values)."""
    if not has_values(x):
        return x
    # A sum is finite only if every element is (NaN propagates, +Inf + -Inf is NaN), and it is
    # ~1000x faster than torch.isfinite(x).all() on the CPU here. A finite tensor whose sum
    # overflows takes the exact path below and passes it.
    if x.numel() == 0 or bool(torch.isfinite(x.detach().sum())):
        return x
    if not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(f"{name} contains {n_nan} NaN and {n_inf} Inf values")
    return x


def as_param(
    value: torch.Tensor | float,
    name: str,
    batch_size: int,
    like: torch.Tensor,
    low: float | None = None,
    high: float | None = None,
) -> torch.Tensor:
    """Turn a scalar or ``(batch,)`` parameter into a ``(batch,)`` tensor on ``like``'s device.

    Args:
        value: a Python number, a 0-d tensor, or a tensor shaped ``(batch,)`` or ``(1,)``.
        name: the argument name used in error messages.
        batch_size: the batch size of the audio the parameter applies to.
        like: tensor whose dtype and device the result takes.
        low, high: inclusive physical limits; values outside raise ``ValueError``.

    Returns:
        Tensor shaped ``(batch_size,)``; gradients flow back to ``value`` when it is a tensor.
    """
    if isinstance(value, torch.Tensor):
        t = value.to(dtype=like.dtype, device=like.device)
    else:
        t = torch.tensor(float(value), dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        t = t.expand(batch_size)
    elif t.dim() == 1 and t.shape[0] in (1, batch_size):
        t = t.expand(batch_size)
    else:
        raise ValueError(
            f"{name} must be a scalar or shaped (batch,) = ({batch_size},), got shape "
            f"{tuple(t.shape)}"
        )
    check_finite(t.detach(), name)
    if not has_values(t):
        return t
    if low is not None and bool((t < low).any()):
        raise ValueError(f"{name} must be >= {low}, got min {float(t.min()):.6g}")
    if high is not None and bool((t > high).any()):
        raise ValueError(f"{name} must be <= {high}, got max {float(t.max()):.6g}")
    return t


def check_sample_rate(sample_rate: float, name: str = "sample_rate") -> float:
    """Check that the sample rate is a positive finite number (Hz)."""
    try:
        sr = float(sample_rate)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in Hz, got {sample_rate!r}") from None
    if not (sr > 0 and sr < float("inf")):
        raise ValueError(f"{name} must be a positive finite number in Hz, got {sample_rate!r}")
    return sr


def check_integer_sample_rate(sample_rate: object, name: str = "sample_rate") -> int:
    """Return ``sample_rate`` as a Python int > 0 (Hz), or raise ``ValueError`` naming it
    (audio files and polyphase resampling need whole rates)."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise ValueError(f"{name} must be a positive integer (Hz), got {sample_rate!r}")
    if sample_rate <= 0:
        raise ValueError(f"{name} must be a positive integer (Hz), got {sample_rate}")
    return int(sample_rate)


def check_integer(value: int, name: str, minimum: int = 0) -> int:
    """Return ``value`` as a Python int >= ``minimum``, or raise ``ValueError`` naming it.

    ``operator.index`` accepts ints and integer-like types (numpy ints, 0-d integer tensors) and
    refuses floats, so 2.0 and 1.5 are both rejected rather than silently truncated. A bool is
    an int in Python but never a meaningful count.
    """
    message = f"{name} must be an integer >= {minimum}, got {value!r}"
    if isinstance(value, bool):
        raise ValueError(message)
    try:
        result = operator.index(value)
    except TypeError:
        raise ValueError(message) from None
    if result < minimum:
        raise ValueError(message)
    return result


# Device types whose tensors cannot hold float64. Apple's MPS is the one torch has today: its
# kernels (Metal) have no double type, and torch raises a TypeError naming no op when asked.
_NO_FLOAT64_DEVICE_TYPES = frozenset({"mps"})


def supports_float64(device: torch.device | str) -> bool:
    """Whether tensors on ``device`` can hold float64 (all of torch's devices but Apple MPS)."""
    return torch.device(device).type not in _NO_FLOAT64_DEVICE_TYPES


def wide_dtype(device: torch.device | str, what: str) -> torch.dtype:
    """The dtype of diffx's wider-than-audio work on ``device``: always ``torch.float64``.

    Some ops compute part of their work in float64 whatever the audio's dtype, because float32
    is not merely less precise there but wrong: filter designs near the unit circle, the chunk
    states of the parallel IIR scan for poles near z = 1, phase accumulated over seconds. Every
    such cast on a tensor's own device goes through this function, which refuses a device
    without float64 (Apple MPS) with an error naming the op, instead of silently computing in
    float32 (a wrong answer) or letting torch fail with a message that names no op. Work that
    only reads values back for reporting moves them to the CPU first instead.

    Args:
        device: the device of the tensors the work runs on.
        what: the op and the work that needs float64, for the message, e.g.
            ``"sosfilt's filter states"``.

    Returns:
        ``torch.float64``.

    Raises:
        ValueError: ``device`` cannot hold float64; the message names ``what`` and the device
            and says to run the op on the CPU or a CUDA device.
    """
    if not supports_float64(device):
        raise ValueError(
            f"{what} are computed in float64, which the {torch.device(device)} device does not "
            "support (float32 is not accurate enough there); run this op on the CPU or a CUDA "
            "device (move its inputs with .cpu())"
        )
    return torch.float64

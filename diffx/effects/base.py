"""Effects as modules: a functional op plus the description of its parameters.

Networks produce parameters normalized to [0, 1]; an :class:`Effect` maps them to physical
units through its :class:`ParamSpec` s (one mapping, in one place) and calls its functional op.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from diffx._validation import check_audio, check_sample_rate, has_values, wide_dtype

SCALES = ("linear", "log")


@dataclass(frozen=True)
class ParamSpec:
    """One effect parameter: its physical range, default, unit and mapping from [0, 1].

    Attributes:
        name: argument name of the functional op (units in the name, e.g. ``attack_ms``).
        minimum, maximum: physical range, inclusive.
        default: physical default, inside the range.
        unit: unit for display (``"dB"``, ``"Hz"``, ``"ms"``, ``""``).
        scale: ``"linear"`` or ``"log"`` (geometric, for frequencies, times, Q; needs
            ``minimum > 0``): the normalized value 0.5 maps to the geometric mean.
        limits: the range the effect's functional op accepts (its documented, enforced
            range), or ``None`` where it has none; ``minimum..maximum`` (also after
            ``param_ranges`` overrides) must lie inside it.
        limits_open: whether each end of ``limits`` is itself excluded (e.g. 0 Hz and
            Nyquist for a filter's frequency).
    """

    name: str
    minimum: float
    maximum: float
    default: float
    unit: str = ""
    scale: str = "linear"
    limits: tuple[float, float] | None = None
    limits_open: tuple[bool, bool] = (False, False)

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"ParamSpec {self.name!r}: scale must be one of {SCALES}")
        if not self.minimum < self.maximum:
            raise ValueError(
                f"ParamSpec {self.name!r}: minimum {self.minimum} must be below maximum "
                f"{self.maximum}"
            )
        if not self.minimum <= self.default <= self.maximum:
            raise ValueError(
                f"ParamSpec {self.name!r}: default {self.default} outside "
                f"[{self.minimum}, {self.maximum}]"
            )
        if self.scale == "log" and self.minimum <= 0:
            raise ValueError(f"ParamSpec {self.name!r}: a log scale needs minimum > 0")
        if self.limits is not None:
            low, high = self.limits
            low_open, high_open = self.limits_open
            below = self.minimum <= low if low_open else self.minimum < low
            above = self.maximum >= high if high_open else self.maximum > high
            if below or above:
                brackets = "(" if low_open else "[", ")" if high_open else "]"
                raise ValueError(
                    f"ParamSpec {self.name!r}: range [{self.minimum:g}, {self.maximum:g}] "
                    f"{self.unit} leaves the accepted {brackets[0]}{low:g}, {high:g}{brackets[1]}"
                )

    def denormalize(self, normalized: torch.Tensor) -> torch.Tensor:
        """Map values in [0, 1] to physical units (same shape), within [minimum, maximum].

        The exponential of the log scale can round past an end (exp(log(1e-3)) < 1e-3 in
        float32), where the op would refuse it; the result is clipped to the range, with the
        gradient passed straight through the rounding-sized correction.
        """
        if self.scale == "log":
            lo, hi = math.log(self.minimum), math.log(self.maximum)
            value = torch.exp(lo + normalized * (hi - lo))
        else:
            value = self.minimum + normalized * (self.maximum - self.minimum)
        inside = value.detach().clamp(self.minimum, self.maximum)
        return value + (inside - value.detach())

    def normalize(self, value: torch.Tensor | float) -> torch.Tensor:
        """Map physical values to [0, 1] (inverse of :meth:`denormalize`), as float64."""
        # float64, so a physical value survives the round trip (callers cast as needed).
        device = value.device if isinstance(value, torch.Tensor) else "cpu"
        value = torch.as_tensor(value, dtype=wide_dtype(device, "ParamSpec.normalize's values"))
        if self.scale == "log":
            lo, hi = math.log(self.minimum), math.log(self.maximum)
            return (torch.log(value) - lo) / (hi - lo)
        return (value - self.minimum) / (self.maximum - self.minimum)

    def with_range(self, minimum: float, maximum: float, default: float | None = None):
        """A copy with another range; the default is clipped into it unless given."""
        if default is None:
            default = min(max(self.default, minimum), maximum)
        return replace(self, minimum=float(minimum), maximum=float(maximum), default=default)


def frequency_spec(
    name: str, lo: float, hi: float, default: float, sample_rate: float
) -> ParamSpec:
    """A log-scaled frequency parameter (Hz) kept below 0.45 x ``sample_rate``, so every filter
    design stays valid at any rate: the range is cut at that ceiling (and its minimum moved to
    at most half the new maximum), the default clipped into it; ``limits`` are the open
    interval (0, ``sample_rate`` / 2) that the filter designs accept."""
    ceiling = 0.45 * sample_rate
    hi = min(hi, ceiling)
    lo = min(lo, hi / 2)
    return ParamSpec(name, lo, hi, min(max(default, lo), hi), "Hz", "log",
                     limits=(0.0, sample_rate / 2), limits_open=(True, True))  # fmt: skip


def check_normalized(params: torch.Tensor, names: Sequence[str], owner: str) -> None:
    """Raise ``ValueError`` naming the parameter if ``params (batch, n)`` leaves [0, 1] (never
    for a meta tensor, which has no values)."""
    if not has_values(params):
        return
    detached = params.detach()
    if not bool(torch.isfinite(detached).all()):
        raise ValueError(f"{owner}: params contain NaN or Inf")
    bad = (detached < 0) | (detached > 1)
    if bool(bad.any()):
        column = int(bad.any(dim=0).nonzero()[0])
        col = detached[:, column]
        raise ValueError(
            f"{owner}: normalized parameter {names[column]!r} must lie in [0, 1], got "
            f"{float(col.min()):.4g}..{float(col.max()):.4g}"
        )


class Effect(nn.Module):
    """Base class: subclasses set ``PARAMS`` and implement :meth:`process`.

    Args:
        sample_rate: Hz.
        param_ranges: optional overrides ``{name: (minimum, maximum)}`` or
            ``{name: (minimum, maximum, default)}`` of the class's physical ranges (YAML-friendly).

    Call as ``effect(x, params)`` with ``x (batch, channels, samples)`` and normalized
    ``params (batch, parameter_size())`` in [0, 1], or ``params=None`` for the defaults.

    ``CHANNELS`` is the channel count the effect takes (``None``: any; a mono-only effect sets
    1, a stereo one 2); :meth:`forward` refuses other counts, naming the effect. The output
    may have another channel count (a pan turns mono into stereo).
    """

    PARAMS: tuple[ParamSpec, ...] = ()
    CHANNELS: int | None = None

    def __init__(
        self,
        sample_rate: float,
        param_ranges: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        self.sample_rate = check_sample_rate(sample_rate)
        specs = {spec.name: spec for spec in self.PARAMS}
        for name, bounds in (param_ranges or {}).items():
            if name not in specs:
                raise ValueError(
                    f"{type(self).__name__}: unknown parameter {name!r} in param_ranges; "
                    f"known: {sorted(specs)}"
                )
            specs[name] = specs[name].with_range(*bounds)
        self.param_specs: tuple[ParamSpec, ...] = tuple(specs.values())

    # ------------------------------------------------------------------ parameter handling
    @property
    def param_names(self) -> list[str]:
        return [spec.name for spec in self.param_specs]

    def parameter_size(self) -> int:
        """Number of normalized parameters the effect takes (a controller's output size)."""
        return len(self.param_specs)

    def default_parameters(self, batch_size: int = 1, device=None, dtype=None) -> torch.Tensor:
        """Normalized defaults, ``(batch_size, parameter_size())``."""
        values = torch.stack([spec.normalize(spec.default) for spec in self.param_specs])
        return values.to(device=device, dtype=dtype or torch.get_default_dtype()).expand(
            batch_size, -1
        )

    def sample_parameters(
        self, batch_size: int, generator: torch.Generator | None = None, device=None, dtype=None
    ) -> torch.Tensor:
        """Uniform random normalized parameters, ``(batch_size, parameter_size())``.

        Uniform in the normalized domain, so log-scaled parameters are log-uniform.
        """
        values = torch.rand(batch_size, self.parameter_size(), generator=generator)
        return values.to(device=device, dtype=dtype or torch.get_default_dtype())

    def denormalize(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalized ``(batch, parameter_size())`` -> ``{name: (batch,) physical}``."""
        if params.dim() != 2 or params.shape[1] != self.parameter_size():
            raise ValueError(
                f"{type(self).__name__}: params must be shaped (batch, "
                f"{self.parameter_size()}), got {tuple(params.shape)}"
            )
        check_normalized(params, self.param_names, type(self).__name__)
        return {
            spec.name: spec.denormalize(params[:, i]) for i, spec in enumerate(self.param_specs)
        }

    def forward(self, x: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        check_audio(x, "x")
        if self.CHANNELS is not None and x.shape[1] != self.CHANNELS:
            kind = {1: "mono", 2: "stereo"}.get(self.CHANNELS, f"{self.CHANNELS}-channel")
            raise ValueError(
                f"{type(self).__name__} takes {kind} audio shaped (batch, {self.CHANNELS}, "
                f"samples), got {x.shape[1]} channel(s)"
            )
        if params is None:
            params = self.default_parameters(x.shape[0], device=x.device, dtype=x.dtype)
        if params.shape[0] != x.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: params batch size {params.shape[0]} differs from "
                f"x batch size {x.shape[0]}"
            )
        return self.process(x, **self.denormalize(params.to(x.dtype)))

    def process(self, x: torch.Tensor, **physical: torch.Tensor) -> torch.Tensor:
        """Apply the effect with physical parameters, each ``(batch,)``."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"sample_rate={self.sample_rate:g}, params={self.param_names}"


class EffectChain(nn.Module):
    """Effects applied in series; their normalized parameters are concatenated.

    Args:
        effects: the effects in processing order (``class_path`` list in YAML).
        names: optional names used as prefixes in :attr:`param_names` (default: the
            lower-cased class names, numbered when repeated).
    """

    def __init__(self, effects: Sequence[Effect], names: Sequence[str] | None = None) -> None:
        super().__init__()
        if len(effects) == 0:
            raise ValueError("EffectChain needs at least one effect")
        for effect in effects:
            if not isinstance(effect, Effect):
                raise ValueError(f"EffectChain takes Effect modules, got {type(effect).__name__}")
        rates = {effect.sample_rate for effect in effects}
        if len(rates) > 1:
            raise ValueError(f"EffectChain effects disagree on sample_rate: {sorted(rates)}")
        self.effects = nn.ModuleList(effects)
        if names is None:
            names, seen = [], {}
            for effect in effects:
                base = type(effect).__name__.lower()
                seen[base] = seen.get(base, 0) + 1
                names.append(base if seen[base] == 1 else f"{base}{seen[base]}")
        if len(names) != len(effects) or len(set(names)) != len(names):
            raise ValueError("EffectChain names must be unique, one per effect")
        self.names = list(names)
        self.sample_rate = rates.pop()

    @property
    def param_names(self) -> list[str]:
        return [f"{n}.{p}" for n, e in zip(self.names, self.effects) for p in e.param_names]

    @property
    def param_specs(self) -> tuple[ParamSpec, ...]:
        return tuple(spec for effect in self.effects for spec in effect.param_specs)

    def parameter_size(self) -> int:
        return sum(effect.parameter_size() for effect in self.effects)

    def split(self, params: torch.Tensor) -> list[torch.Tensor]:
        """Split ``(batch, parameter_size())`` into one block per effect."""
        if params.dim() != 2 or params.shape[1] != self.parameter_size():
            raise ValueError(
                f"EffectChain: params must be shaped (batch, {self.parameter_size()}), got "
                f"{tuple(params.shape)}"
            )
        return list(torch.split(params, [e.parameter_size() for e in self.effects], dim=1))

    def default_parameters(self, batch_size: int = 1, device=None, dtype=None) -> torch.Tensor:
        return torch.cat(
            [e.default_parameters(batch_size, device, dtype) for e in self.effects], dim=1
        )

    def sample_parameters(
        self, batch_size: int, generator: torch.Generator | None = None, device=None, dtype=None
    ) -> torch.Tensor:
        return torch.cat(
            [e.sample_parameters(batch_size, generator, device, dtype) for e in self.effects], 1
        )

    def denormalize(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"effect.param": (batch,) physical}`` for every parameter of the chain."""
        out = {}
        for name, effect, block in zip(self.names, self.effects, self.split(params)):
            out.update({f"{name}.{k}": v for k, v in effect.denormalize(block).items()})
        return out

    def forward(self, x: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        if params is None:
            params = self.default_parameters(x.shape[0], device=x.device, dtype=x.dtype)
        for effect, block in zip(self.effects, self.split(params)):
            x = effect(x, block)
        return x

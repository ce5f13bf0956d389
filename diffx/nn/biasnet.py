"""BiasNet: an over-parameterized sinusoidal MLP that produces allpass-cascade parameters.

After Bargum et al., "Differentiable Allpass Filters for Phase Response Estimation and
Automatic Signal Alignment" (2023, arXiv:2306.00860). The filter's parameters are not trained
directly: each section has its own small network, fed a constant input, whose output is
squashed by ``tanh`` and mapped into the section's parameter ranges. The networks are far
larger than the handful of numbers they produce; the paper reports that this
over-parameterization makes gradient descent on phase matching far less prone to the local
minima a direct parameterization falls into. The reference networks (code:
github.com/abargum/diff-apf) are: zero input of size 1024, ``Linear`` layers
1024 -> 512 -> 256 -> 128 each followed by ``sin``, and a ``Linear`` to the section's outputs
followed by ``tanh``.

Here the hidden layers are SIREN layers (Sitzmann et al., "Implicit Neural Representations with
Periodic Activation Functions", NeurIPS 2020): ``sin(omega_0 * (W h + b))`` with
``W ~ U(-sqrt(6 / n_in) / omega_0, +sqrt(6 / n_in) / omega_0)``, which keeps every layer's
pre-activations spread over a few periods of the sine however deep the network.

The input is the constant zero vector, so the first layer's weights never receive a gradient
and its output is its bias alone: this module stores that bias (``input_size`` sets its
initial spread as PyTorch's ``Linear(input_size, .)`` would) and skips the 512 x 1024 dead
weights. Forward values and gradients are those of the reference layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from diffx._validation import check_integer, check_sample_rate, wide_dtype
from diffx.functional.allpass import (
    DEFAULT_STRETCH,
    KINDS,
    allpass_cascade,
    allpass_sos,
    first_order_allpass_sos,
    group_delay,
    phase_response,
    second_order_allpass_sos,
)

FREQ_SCALES = ("log", "linear")


class SineMLP(nn.Module):
    """``tanh(W_out · sin(omega_0 (... sin(omega_0 b_1) ...)) + b_out)`` from a constant input.

    Args:
        n_outputs: outputs, each in (-1, 1).
        hidden_sizes: widths of the sine layers; the first is the constant input layer.
        input_size: size of the (zero) input vector the first layer would read: it sets the
            spread of the first layer's bias, ``U(-1/sqrt(input_size), 1/sqrt(input_size))``.
        omega_0: frequency of the sine activations (SIREN's 30).
    """

    def __init__(
        self,
        n_outputs: int,
        hidden_sizes: Sequence[int] = (512, 256, 128),
        input_size: int = 1024,
        omega_0: float = 30.0,
    ):
        super().__init__()
        n_outputs = check_integer(n_outputs, "n_outputs", 1)
        sizes = [check_integer(int(h), "hidden_sizes", 1) for h in hidden_sizes]
        if not sizes:
            raise ValueError("hidden_sizes must name at least one layer width")
        input_size = check_integer(input_size, "input_size", 1)
        if not (omega_0 > 0 and math.isfinite(omega_0)):
            raise ValueError(f"omega_0 must be a positive number, got {omega_0!r}")
        self.omega_0 = float(omega_0)
        bound = 1.0 / math.sqrt(input_size)
        self.input_bias = nn.Parameter(torch.empty(sizes[0]).uniform_(-bound, bound))
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], n_outputs)
        with torch.no_grad():
            for layer in [*self.hidden, self.out]:
                w = math.sqrt(6.0 / layer.in_features) / self.omega_0
                layer.weight.uniform_(-w, w)

    def pre_tanh(self) -> torch.Tensor:
        """``(n_outputs,)`` values before the final ``tanh``."""
        h = torch.sin(self.omega_0 * self.input_bias)
        for layer in self.hidden:
            h = torch.sin(self.omega_0 * layer(h))
        return self.out(h)

    def forward(self) -> torch.Tensor:
        """``(n_outputs,)`` in (-1, 1)."""
        return torch.tanh(self.pre_tanh())


class BiasNet(nn.Module):
    """An allpass cascade whose section parameters come from one :class:`SineMLP` each.

    Sections and the outputs of their networks (``t`` in (-1, 1)):

    - second order: ``R = max_pole_radius (t0 + 1) / 2`` and ``f_c`` in
      ``[min_freq_hz, max_freq_hz]`` (log scale by default: ``f_min (f_max / f_min)^((t1+1)/2)``;
      ``freq_scale="linear"`` is the paper's ``(f_max - f_min)(t1 + 1) / 2 + f_min``), plus a
      warping coefficient ``a_w = max_coeff t2`` when the kind is warped;
    - first order: ``a = max_coeff t0``, plus ``a_w = max_coeff t1`` when warped.

    The paper's ``R = 0.99999 t0`` allows ``R < 0``, which is the same section as ``|R|`` at
    ``fs/2 - f_c``; the map above covers each section once and stays in the ranges of
    :func:`diffx.functional.allpass_cascade` (``R`` in [0, 1), ``|a| < 1``).

    Args:
        sample_rate: Hz.
        kind: one of :data:`diffx.functional.ALLPASS_KINDS`.
        n_second: second-order sections (``"second_order"``, ``"mixed"``, ``"warped"``,
            ``"warped_stretched"``).
        n_first: first-order sections (``"first_order"``, ``"mixed"``, ``"warped"``,
            ``"warped_stretched"``, where they are the stretched ones).
        stretch: delay ``M`` of the stretched sections (``"warped_stretched"``; default 4).
        hidden_sizes, input_size, omega_0: of every section's :class:`SineMLP`.
        min_freq_hz, max_freq_hz: range of the second-order centre frequencies (the upper end
            is capped just below ``sample_rate / 2``).
        freq_scale: ``"log"`` or ``"linear"`` map of ``t1`` onto the frequency range.
        max_pole_radius: upper end of ``R`` (< 1).
        max_coeff: bound on ``|a|`` and ``|a_w|`` (< 1).
        init_freq_hz: initial centre frequencies, one per second-order section; default:
            log-spaced over [100 Hz, min(8 kHz, 0.4 fs)] so the sections start spread over the
            band rather than piled up in its middle.
        init_pole_radius: initial ``R`` of the second-order sections.

    Call the module with no argument to get the parameters, or use :meth:`filter`.
    """

    def __init__(
        self,
        sample_rate: float,
        kind: str = "second_order",
        n_second: int = 4,
        n_first: int = 0,
        stretch: int | None = None,
        hidden_sizes: Sequence[int] = (512, 256, 128),
        input_size: int = 1024,
        omega_0: float = 30.0,
        min_freq_hz: float = 20.0,
        max_freq_hz: float = 20000.0,
        freq_scale: str = "log",
        max_pole_radius: float = 0.99999,
        max_coeff: float = 0.99999,
        init_freq_hz: Sequence[float] | None = None,
        init_pole_radius: float = 0.5,
    ):
        super().__init__()
        self.sample_rate = check_sample_rate(sample_rate)
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.n_second = check_integer(n_second, "n_second", 0)
        self.n_first = check_integer(n_first, "n_first", 0)
        takes_second = kind in ("second_order", "mixed", "warped", "warped_stretched")
        takes_first = kind in ("first_order", "mixed", "warped", "warped_stretched")
        if self.n_second and not takes_second:
            raise ValueError(f"kind={kind!r} has no second-order sections; set n_second=0")
        if self.n_first and not takes_first:
            raise ValueError(f"kind={kind!r} has no first-order sections; set n_first=0")
        if kind in ("second_order", "mixed") and not self.n_second:
            raise ValueError(f"kind={kind!r} needs n_second >= 1")
        if kind in ("first_order", "mixed", "warped_stretched") and not self.n_first:
            raise ValueError(f"kind={kind!r} needs n_first >= 1")
        if kind == "warped" and not (self.n_second or self.n_first):
            raise ValueError("kind='warped' needs n_second >= 1 or n_first >= 1")
        if stretch is not None and kind != "warped_stretched":
            raise ValueError(f"stretch applies to kind='warped_stretched' only, not {kind!r}")
        self.stretch = (
            check_integer(DEFAULT_STRETCH if stretch is None else stretch, "stretch", 1)
            if kind == "warped_stretched"
            else None
        )
        self.warped = kind.startswith("warped")
        nyquist_cap = 0.499 * self.sample_rate
        self.max_freq_hz = float(min(max_freq_hz, nyquist_cap))
        self.min_freq_hz = float(min_freq_hz)
        if not (0 < self.min_freq_hz < self.max_freq_hz):
            raise ValueError(
                f"need 0 < min_freq_hz < max_freq_hz (capped at 0.499 sample_rate), got "
                f"min_freq_hz={min_freq_hz}, max_freq_hz={max_freq_hz}"
            )
        if freq_scale not in FREQ_SCALES:
            raise ValueError(f"freq_scale must be one of {FREQ_SCALES}, got {freq_scale!r}")
        self.freq_scale = freq_scale
        for name, value in (("max_pole_radius", max_pole_radius), ("max_coeff", max_coeff)):
            if not 0 < value < 1:
                raise ValueError(f"{name} must lie in (0, 1), got {value!r}")
        self.max_pole_radius, self.max_coeff = float(max_pole_radius), float(max_coeff)

        self.second = nn.ModuleList(
            SineMLP(3 if self.warped else 2, hidden_sizes, input_size, omega_0)
            for _ in range(self.n_second)
        )
        self.first = nn.ModuleList(
            SineMLP(2 if self.warped else 1, hidden_sizes, input_size, omega_0)
            for _ in range(self.n_first)
        )
        self._init_second(init_freq_hz, init_pole_radius)

    # ----------------------------------------------------------------------------------------
    # normalized <-> physical

    def _freq_from_unit(self, t: torch.Tensor) -> torch.Tensor:
        u = (t + 1) / 2
        if self.freq_scale == "log":
            return self.min_freq_hz * (self.max_freq_hz / self.min_freq_hz) ** u
        return self.min_freq_hz + (self.max_freq_hz - self.min_freq_hz) * u

    def _unit_from_freq(self, freq_hz: float) -> float:
        f = min(max(freq_hz, self.min_freq_hz), self.max_freq_hz)
        if self.freq_scale == "log":
            u = math.log(f / self.min_freq_hz) / math.log(self.max_freq_hz / self.min_freq_hz)
        else:
            u = (f - self.min_freq_hz) / (self.max_freq_hz - self.min_freq_hz)
        return 2 * u - 1

    def _init_second(self, init_freq_hz, init_pole_radius) -> None:
        if not self.n_second:
            return
        if init_freq_hz is None:
            high = min(8000.0, 0.4 * self.sample_rate)
            if self.n_second == 1:
                init_freq_hz = [math.sqrt(100.0 * high)]
            else:
                ratio = (high / 100.0) ** (1 / (self.n_second - 1))
                init_freq_hz = [100.0 * ratio**i for i in range(self.n_second)]
        init_freq_hz = [float(f) for f in init_freq_hz]
        if len(init_freq_hz) != self.n_second:
            raise ValueError(
                f"init_freq_hz needs one frequency per second-order section ({self.n_second}), "
                f"got {len(init_freq_hz)}"
            )
        if not 0 <= init_pole_radius < self.max_pole_radius:
            raise ValueError(
                f"init_pole_radius must lie in [0, max_pole_radius={self.max_pole_radius}), "
                f"got {init_pole_radius!r}"
            )
        t_radius = 2 * init_pole_radius / self.max_pole_radius - 1
        # Clip away from +-1, where atanh diverges and tanh's gradient vanishes.
        clip = 1 - 1e-4
        with torch.no_grad():
            for net, freq in zip(self.second, init_freq_hz):
                # The random part W h of the output layer is small (|W| <= sqrt(6/n)/omega_0);
                # the bias sets where the section starts.
                net.out.bias[0] = math.atanh(max(-clip, min(clip, t_radius)))
                net.out.bias[1] = math.atanh(max(-clip, min(clip, self._unit_from_freq(freq))))
                if self.warped:
                    net.out.bias[2] = 0.0

    @torch.no_grad()
    def set_sections(
        self,
        pole_radius: Sequence[float] = (),
        freq_hz: Sequence[float] = (),
        first_order_coeff: Sequence[float] = (),
    ) -> None:
        """Make the networks produce these sections (e.g. a fit of
        :func:`diffx.analysis.allpass_fit.fit_allpass_phase`): ``pole_radius`` and ``freq_hz``
        for the first ``len(pole_radius)`` second-order sections, ``first_order_coeff`` for the
        first first-order ones (for ``"warped_stretched"``, the coefficient ``k`` of the
        stretched section). Warping is set to 0; sections not given get radius 0 (a 2-sample
        delay) or coefficient 0 (a ``stretch``-sample delay). Values are clipped into the
        network's ranges.

        Only each output layer's bias changes: it is set so that ``bias + W h`` (the network's
        current hidden features ``h``) is the ``atanh`` of the wanted output, so the networks
        keep their weights (and the over-parameterization BiasNet relies on).
        """
        radius, freq, coeff = list(pole_radius), list(freq_hz), list(first_order_coeff)
        if len(radius) != len(freq):
            raise ValueError(f"pole_radius has {len(radius)} values and freq_hz {len(freq)}")
        if len(radius) > self.n_second or len(coeff) > self.n_first:
            raise ValueError(
                f"{len(radius)} second-order and {len(coeff)} first-order sections do not fit a "
                f"cascade of {self.n_second} and {self.n_first}"
            )
        clip = 1 - 1e-6

        def aim(net: SineMLP, targets: list[float]) -> None:
            rest = net.pre_tanh() - net.out.bias  # W h
            t = torch.tensor(targets, dtype=rest.dtype).clamp(-clip, clip)
            net.out.bias.copy_(torch.atanh(t) - rest)

        for i, net in enumerate(self.second):
            r = radius[i] if i < len(radius) else 0.0
            u_r = 2 * min(max(r, 0.0), self.max_pole_radius) / self.max_pole_radius - 1
            u_f = self._unit_from_freq(freq[i]) if i < len(freq) else 0.0
            aim(net, [u_r, u_f] + ([0.0] if self.warped else []))
        for i, net in enumerate(self.first):
            a = coeff[i] if i < len(coeff) else 0.0
            aim(net, [max(-clip, min(clip, a / self.max_coeff))] + ([0.0] if self.warped else []))

    def forward(self) -> dict[str, torch.Tensor]:
        """The cascade's parameters in physical units, as :func:`allpass_cascade` takes them.

        Returns:
            dict with, when present, ``pole_radius`` and ``freq_hz`` ``(1, n_second)``,
            ``first_order_coeff`` ``(1, n_first)`` and ``warp`` ``(1, n_second + n_first)``
            (second-order sections first). float64: the filters are designed in double
            precision whatever the networks' dtype.
        """
        params: dict[str, torch.Tensor] = {}
        warps = []
        what = "the allpass controller's filter designs"
        if self.n_second:
            t = torch.stack([net() for net in self.second])  # (n_second, 2 or 3)
            t = t.to(wide_dtype(t.device, what))
            params["pole_radius"] = (self.max_pole_radius * (t[:, 0] + 1) / 2).unsqueeze(0)
            params["freq_hz"] = self._freq_from_unit(t[:, 1]).unsqueeze(0)
            if self.warped:
                warps.append(self.max_coeff * t[:, 2])
        if self.n_first:
            t = torch.stack([net() for net in self.first])  # (n_first, 1 or 2)
            t = t.to(wide_dtype(t.device, what))
            params["first_order_coeff"] = (self.max_coeff * t[:, 0]).unsqueeze(0)
            if self.warped:
                warps.append(self.max_coeff * t[:, 1])
        if warps:
            params["warp"] = torch.cat(warps).unsqueeze(0)
        return params

    def _stretch_kwargs(self) -> dict:
        return {"stretch": self.stretch} if self.stretch is not None else {}

    # ----------------------------------------------------------------------------------------
    # filtering and responses

    def filter(self, x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        """Filter ``(batch, channels, samples)`` audio through the cascade (same filter for
        every item); returns the same shape and dtype."""
        params = self()
        return allpass_cascade(
            x,
            self.sample_rate,
            self.kind,
            backend=backend,
            **{k: v.expand(x.shape[0], -1) for k, v in params.items()},
            **self._stretch_kwargs(),
        )

    def _response_rows(self) -> tuple[torch.Tensor, list[int]]:
        """Differentiable ``(n_sections, 6)`` rows and each row's stretch (unfactored)."""
        p = self()
        rows, stretches = [], []
        warp = p.get("warp")
        if self.n_second:
            w = None if warp is None else warp[:, : self.n_second]
            rows.append(second_order_allpass_sos(p["pole_radius"], p["freq_hz"],
                                                 self.sample_rate, w)[0])  # fmt: skip
            stretches += [1] * self.n_second
        if self.n_first:
            w = None if warp is None else warp[:, self.n_second :]
            rows.append(first_order_allpass_sos(p["first_order_coeff"], w)[0])
            stretches += [self.stretch or 1] * self.n_first
        return torch.cat(rows), stretches

    def phase_response(self, freqs_hz: torch.Tensor | Sequence[float]) -> torch.Tensor:
        """``(n_freqs,)`` unwrapped phase in radians, differentiable."""
        rows, stretches = self._response_rows()
        return phase_response(rows, freqs_hz, self.sample_rate, stretch=stretches)

    def group_delay(self, freqs_hz: torch.Tensor | Sequence[float]) -> torch.Tensor:
        """``(n_freqs,)`` group delay in samples, differentiable."""
        rows, stretches = self._response_rows()
        return group_delay(rows, freqs_hz, self.sample_rate, stretch=stretches)

    def sos(self) -> torch.Tensor:
        """``(n_rows, 6)`` float64 sections in scipy's layout (stretched sections factored)."""
        with torch.no_grad():
            params = self()
            return allpass_sos(self.sample_rate, self.kind, **params, **self._stretch_kwargs())[0]

    def to_dict(self) -> dict:
        """The cascade as plain data (the ``"cascade"`` entry of :mod:`diffx.io.phase_alignment`):
        ``kind``, ``stretch``, ``params`` in physical units and ``sos`` rows."""
        with torch.no_grad():
            params = {k: v[0].tolist() for k, v in self().items()}
        return {
            "kind": self.kind,
            "stretch": self.stretch,
            "params": params,
            "sos": self.sos().tolist(),
        }

"""Fitting an allpass cascade to a measured phase response, globally and fast.

Gradient descent on a cascade's section parameters (what :class:`diffx.nn.BiasNet` does, in
the manner of Bargum et al., 2023) starts somewhere and follows the slope of a phase loss that
has a local minimum wherever a section sits on the wrong side of another's resonance. The
fitter here does not start anywhere: it designs the whole allpass from the measurement.

1. **Equation-error design** (the least-squares allpass phase design of Lang and Laakso,
   "Simple and robust method for the design of allpass filters using least-squares phase
   error criterion", IEEE TCAS-II 41(1), 1994). An allpass of order ``N`` with denominator
   ``A(z) = 1 + a_1 z^-1 + ... + a_N z^-N`` has the phase ``phi(w) = -N w - 2 arg A(e^jw)``.
   Asking for the phase ``phi_t`` means asking that ``A(e^jw) e^(-j beta)`` be real, with
   ``beta = -(phi_t + N w) / 2``: one equation per frequency, *linear* in the ``a_k``,

       sum_k a_k sin(k w + beta(w)) = -sin(beta(w)),

   solved by weighted least squares. Its residual is ``|A| sin((phi - phi_t) / 2)``, so
   re-weighting by ``1 / |A|^2`` (a few iterations, as Steiglitz-McBride does for magnitude)
   turns it into the wrapped phase error ``sum w (1 - cos(phi - phi_t)) / 2`` itself. The
   equation is unchanged when ``phi_t`` moves by a whole turn (``beta`` moves by ``pi``), so
   the measured phase is never unwrapped, and it is convex in ``a``: each order has one
   answer, found without a starting point.
2. **Candidates**: that design for every order from 1 to ``max_poles``, both polarities,
   residual delays in half samples around the bulk lag, and five frequency warpings: the
   design is also made on the axis ``nu(w)`` that ``z^-1 -> (z^-1 - a) / (1 - a z^-1)`` maps
   ``w`` to, and its poles mapped back (``q = (p + a) / (1 + a p)``, exact for the phase).
   Poles of real filters crowd at low frequencies, where on the plain axis their roots are
   ill-conditioned (a measured phase a degree off sends them to the unit circle); ``a = 0.6``
   spreads the bottom of the band fourfold. All cheap: a least-squares problem of at most
   1024 rows and a few dozen columns each.
3. **Refinement** of the best candidates: their roots become sections (conjugate pairs ->
   second order, real roots -> first order, any root outside the unit circle reflected in),
   and Levenberg-Marquardt (``scipy.optimize.least_squares``, analytic Jacobian) minimizes the
   wrapped phase error over pole radii, pole angles and a fractional residual delay, with the
   radii bounded below 1 (stable by construction).
4. **Order selection**: the fewest poles whose error is within ``order_tolerance`` of the
   best (sections are added only while they pay); poles at the origin become delay.

For a recorded pair (:func:`fit_pair`) the phase is measured by Welch's method after a bulk
lag (three are tried), fitted, and measured again through the first fit: Welch's estimate is
biased where the group delay is a sizeable part of its segment, and what the first fit leaves
is short, so the second fit sees a better measurement.

The error minimized is ``J = sum_f w_f (1 - cos(phi_model(f) - phi_measured(f))) / sum_f w_f``
(0 for a perfect fit; about half the mean squared error in rad^2). With the weights the
measurement's coherence gives (:func:`response_weights`), each frequency counts by how well
its phase is known.

Conventions: a second-order section with pole radius ``R`` at ``f_c`` and a first-order
section with coefficient ``a`` are those of :mod:`diffx.functional.allpass`, so a fit turns
straight into :func:`diffx.functional.allpass_sos` parameters and an :class:`Alignment`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.ndimage
import scipy.optimize
import scipy.signal

from diffx._validation import check_sample_rate
from diffx.analysis.phase_alignment import (
    _pair,
    apply_delay,
    comb_loss_db,
    estimate_response,
    fractional_delay_estimate,
    integer_delay,
)

WEIGHTINGS = ("coherence", "cross_power", "uniform")
DESIGN_DELAYS = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0)
"""Residual delays (samples) the designs start from (:func:`fit_allpass_phase`)."""
MAX_POLE_RADIUS = 0.9999
"""Largest pole radius a fit may use (stable with margin in float64 filtering)."""
COHERENCE_CAP = 0.9999
"""Coherence above this counts as this: it caps the inverse-variance weight at 1e4, so a few
bins measured nearly without noise cannot outweigh the rest."""
SAME_MIX_DB = 1e-5
"""Fits whose comb-filter losses differ by less than this (dB) sum alike (the fewer poles
win). Small: the loss of an exact fit is about 1e-10 dB, and a fit 0.0002 dB short of
another can still be tens of degrees off where the signal is quiet."""
PERFECT_MIX_DB = 1e-3
"""A mix this close to 0 dB comb-filter loss leaves nothing for another weighting to gain."""
MIN_PAIR_SAMPLES = 1024
"""Shortest pair :func:`fit_pair` measures (23 ms at 44.1 kHz: four Welch segments of 256)."""
MIN_COHERENCE = 0.05
"""Frequencies measured with less coherence than this get no weight."""


# --------------------------------------------------------------------------------------------
# the phase of a pole set


def _pole_phase(r: np.ndarray, theta: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """Phase of ``prod (z^-1 - conj p) / (1 - p z^-1)`` over poles ``p = r e^(j theta)``.

    ``r``, ``theta`` ``(n,)``; ``omega`` ``(F,)`` rad/sample; returns ``(F,)``, unwrapped (0 at
    0 rad/sample for real pole sets).
    """
    if r.size == 0:
        return np.zeros_like(omega)
    e = omega[None, :] - theta[:, None]
    g = np.arctan2(r[:, None] * np.sin(e), 1 - r[:, None] * np.cos(e))
    return (-omega[None, :] - 2 * g).sum(0)


@dataclass(frozen=True)
class PoleSet:
    """An allpass cascade as poles: ``n_pairs`` conjugate pairs and ``n_real`` real poles.

    Attributes:
        pair_radius: ``(n_pairs,)`` radii in [0, 1).
        pair_angle: ``(n_pairs,)`` angles in [0, pi], rad/sample.
        real: ``(n_real,)`` real poles in (-1, 1).
    """

    pair_radius: np.ndarray
    pair_angle: np.ndarray
    real: np.ndarray

    @property
    def n_poles(self) -> int:
        return 2 * self.pair_radius.size + self.real.size

    def phase(self, omega: np.ndarray) -> np.ndarray:
        """``(F,)`` unwrapped phase at ``omega`` rad/sample."""
        r = np.concatenate([self.pair_radius, self.pair_radius, np.abs(self.real)])
        theta = np.concatenate([self.pair_angle, -self.pair_angle,
                                np.where(self.real < 0, math.pi, 0.0)])  # fmt: skip
        return _pole_phase(r, theta, omega)

    @classmethod
    def from_roots(cls, roots: np.ndarray, max_radius: float = MAX_POLE_RADIUS) -> PoleSet:
        """Sections from the roots of a real polynomial: roots outside the unit circle are
        reflected in (``1 / conj p``), radii capped at ``max_radius``; roots with an imaginary
        part below 1e-9 count as real."""
        roots = np.asarray(roots, dtype=complex)
        mag = np.abs(roots)
        outside = mag > 1
        roots = np.where(outside, 1 / np.conj(np.where(outside, roots, 1)), roots)
        mag = np.minimum(np.abs(roots), max_radius)
        angle = np.angle(roots)
        is_real = np.abs(roots.imag) <= 1e-9 * np.maximum(1, mag)
        real = np.where(np.cos(angle[is_real]) < 0, -mag[is_real], mag[is_real])
        upper = ~is_real & (angle > 0)
        return cls(mag[upper].copy(), angle[upper].copy(), np.sort(real))


    def constrained(self, max_pairs: int | None, max_real: int | None) -> PoleSet:
        """The nearest pole set with at most ``max_pairs`` conjugate pairs and ``max_real``
        real poles (``None``: no limit), for cascades of a fixed structure: surplus real poles
        are joined two by two (the closest first) into a pair at angle 0 or pi, surplus pairs
        split into two real poles where there is room, and what still does not fit is dropped
        (the weakest first). A starting point for refinement, not a fit of its own."""
        pairs = list(zip(self.pair_radius.tolist(), self.pair_angle.tolist()))
        real = sorted(self.real.tolist())
        max_pairs = len(pairs) + len(real) if max_pairs is None else int(max_pairs)
        max_real = len(real) + 2 * len(pairs) if max_real is None else int(max_real)
        while len(real) > max_real and len(real) >= 2:
            i = int(np.argmin(np.diff(real)))
            q1, q2 = real.pop(i), real.pop(i)
            pairs.append((math.sqrt(abs(q1 * q2)), 0.0 if q1 + q2 >= 0 else math.pi))
        if len(real) > max_real:  # one left and no room: a pair of it
            q = real.pop()
            pairs.append((abs(q), 0.0 if q >= 0 else math.pi))
        while len(pairs) > max_pairs and len(real) + 2 <= max_real:
            # the pair nearest the real axis splits with least change
            i = int(np.argmin([min(th, math.pi - th) for _, th in pairs]))
            r, th = pairs.pop(i)
            real += [r * math.copysign(1.0, math.cos(th))] * 2
        pairs = sorted(pairs, key=lambda p: -p[0])[:max_pairs]
        real = sorted(real, key=lambda q: -abs(q))[:max_real]
        return PoleSet(
            np.array([p[0] for p in pairs], float),
            np.array([p[1] for p in pairs], float),
            np.sort(np.array(real, float)),
        )


# --------------------------------------------------------------------------------------------
# the fit


@dataclass(frozen=True)
class AllpassFit:
    """A fitted alignment filter: ``polarity * delay(cascade(dry), delay_samples)``.

    Attributes:
        sample_rate: Hz.
        poles: the cascade (:class:`PoleSet`).
        delay_samples: residual delay after the cascade, samples (negative: an advance).
        polarity: +1 or -1.
        objective: the wrapped phase error ``J`` (module notes) on the fitted band.
        phase_error_deg: weighted RMS of the wrapped phase error, degrees.
        candidates: how many designs were compared.
    """

    sample_rate: float
    poles: PoleSet
    delay_samples: float
    polarity: int
    objective: float
    phase_error_deg: float
    candidates: int = 0
    history: list = field(default_factory=list, compare=False, repr=False)

    @property
    def n_second(self) -> int:
        return self.poles.pair_radius.size

    @property
    def n_first(self) -> int:
        return self.poles.real.size

    @property
    def kind(self) -> str:
        """The :data:`diffx.functional.ALLPASS_KINDS` entry that holds these sections, or
        ``"none"`` for a delay alone."""
        if self.n_second and self.n_first:
            return "mixed"
        return "second_order" if self.n_second else "first_order" if self.n_first else "none"

    def params(self) -> dict[str, list[float]]:
        """Section parameters in :func:`diffx.functional.allpass_sos`'s units."""
        out: dict[str, list[float]] = {}
        if self.n_second:
            out["pole_radius"] = self.poles.pair_radius.tolist()
            out["freq_hz"] = (self.poles.pair_angle * self.sample_rate / (2 * math.pi)).tolist()
        if self.n_first:
            # (a + z^-1) / (1 + a z^-1) has its pole at -a.
            out["first_order_coeff"] = (-self.poles.real).tolist()
        return out

    def sos(self) -> np.ndarray:
        """``(n_sections, 6)`` float64 rows in scipy's layout (second order first)."""
        rows = []
        for r, th in zip(self.poles.pair_radius, self.poles.pair_angle):
            c, d = r * r, -2 * r * math.cos(th)
            rows.append([c, d, 1.0, 1.0, d, c])
        for q in self.poles.real:
            rows.append([-q, 1.0, 0.0, 1.0, -q, 0.0])
        return np.asarray(rows, dtype=np.float64).reshape(-1, 6)

    def phase_rad(self, freqs_hz: np.ndarray) -> np.ndarray:
        """``(F,)`` phase of the whole alignment (cascade, delay, polarity), radians."""
        omega = 2 * math.pi * np.asarray(freqs_hz, float) / self.sample_rate
        return _model_phase(self.poles, self.delay_samples, self.polarity, omega)


def _model_phase(poles: PoleSet, delay: float, polarity: int, omega: np.ndarray) -> np.ndarray:
    return poles.phase(omega) - delay * omega + (math.pi if polarity < 0 else 0.0)


def wrapped_error(phase: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``phase - target`` wrapped into (-pi, pi]."""
    return np.angle(np.exp(1j * (phase - target)))


def objective(phase: np.ndarray, target: np.ndarray, weight: np.ndarray) -> float:
    """``sum w (1 - cos(phase - target)) / sum w``."""
    return float(np.sum(weight * (1 - np.cos(phase - target))) / np.sum(weight))


def _ls_allpass(
    powers: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray,
    order: int,
    iterations: int,
) -> np.ndarray:
    """Denominator ``[1, a_1, ..., a_N]`` of the order-``N`` allpass whose phase best matches
    ``target`` (equation error re-weighted towards the wrapped phase error; module notes).

    ``powers``: ``(F, >= N)`` ``e^(j k nu)`` for ``k = 1, 2, ...`` on the design grid ``nu``
    (shared by every design on that grid). The normal equations are solved (with a ridge of
    1e-12 of their scale): the designs are starting points, and this is several times faster
    than an SVD for the few dozen unknowns at most.
    """
    e_k = powers[:, :order]
    rotation = np.exp(-0.5j * (target + order * np.angle(powers[:, 0])))  # e^(j beta)
    basis = (e_k * rotation[:, None]).imag  # sin(k nu + beta)
    rhs = -rotation.imag
    w = weight
    a = np.zeros(order)
    for it in range(iterations):
        xw = basis * w[:, None]
        gram = basis.T @ xw
        ridge = 1e-12 * np.trace(gram) / order
        a = np.linalg.solve(gram + ridge * np.eye(order), xw.T @ rhs)
        if it + 1 < iterations:
            mag2 = np.abs(1 + np.conj(e_k) @ a) ** 2
            # |A|^2 -> 0 only near a root on the unit circle; bound the re-weighting there.
            w = weight / np.maximum(mag2, 1e-4 * mag2.max())
    return np.concatenate([[1.0], a])


def warped_frequency(omega: np.ndarray, warp: float) -> np.ndarray:
    """The frequency ``nu`` that ``z^-1 -> (z^-1 - warp) / (1 - warp z^-1)`` maps ``omega``
    to (rad/sample; ``warp > 0`` stretches the low frequencies by ``(1 + warp) / (1 - warp)``)."""
    if warp == 0:
        return omega
    z = np.exp(-1j * omega)
    return -np.angle((z - warp) / (1 - warp * z))


def unwarp_poles(roots: np.ndarray, warp: float) -> np.ndarray:
    """Poles in ``z`` of an allpass designed on the warped axis (:func:`warped_frequency`):
    ``q = (p + warp) / (1 + warp p)``, a map of the unit disc onto itself. A conjugate pair
    keeps its phase exactly; so does a real pole."""
    if warp == 0:
        return roots
    # A root at exactly -1 / warp (outside the circle) maps to infinity; keep it finite (far
    # out: it is reflected in and capped like any root outside).
    den = 1 + warp * roots
    den = np.where(np.abs(den) < 1e-12, 1e-12, den)
    return (roots + warp) / den


ORIGIN_RADIUS = 1e-4
"""Poles closer to 0 than this are pure delays (a pole at 0 is ``z^-1``; at 1e-4 its phase
differs from a delay's by 0.01 degrees at most) and are written as such."""


def _poles_at_origin_to_delay(poles: PoleSet, delay: float) -> tuple[PoleSet, float]:
    pairs = poles.pair_radius >= ORIGIN_RADIUS
    real = np.abs(poles.real) >= ORIGIN_RADIUS
    extra = 2 * int((~pairs).sum()) + int((~real).sum())
    if not extra:
        return poles, delay
    return PoleSet(poles.pair_radius[pairs], poles.pair_angle[pairs], poles.real[real]), (
        delay + extra
    )


def _pack(poles: PoleSet, delay: float) -> np.ndarray:
    return np.concatenate([poles.pair_radius, poles.pair_angle, poles.real, [delay]])


def _unpack(x: np.ndarray, n_pairs: int, n_real: int) -> tuple[PoleSet, float]:
    return (
        PoleSet(x[:n_pairs], x[n_pairs : 2 * n_pairs], x[2 * n_pairs : 2 * n_pairs + n_real]),
        float(x[-1]),
    )


def _refine(
    poles: PoleSet,
    delay: float,
    polarity: int,
    omega: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray,
    max_delay_change: float,
    max_radius: float,
    max_evaluations: int,
) -> tuple[PoleSet, float]:
    """Levenberg-Marquardt (trust region, bounded) on the wrapped phase error."""
    n_pairs, n_real = poles.pair_radius.size, poles.real.size
    sw = np.sqrt(2 * weight / weight.sum())
    offset = math.pi if polarity < 0 else 0.0

    cache: dict[bytes, np.ndarray] = {}

    def error(x):
        # The solver asks for the residual and then the Jacobian at the same point.
        key = x.tobytes()
        if key not in cache:
            cache.clear()
            p, d = _unpack(x, n_pairs, n_real)
            cache[key] = p.phase(omega) - d * omega + offset - target
        return cache[key]

    def residual(x):
        return sw * np.sin(error(x) / 2)

    def jacobian(x):
        p, _ = _unpack(x, n_pairs, n_real)
        e = error(x)
        scale = (sw * np.cos(e / 2) / 2)[:, None]
        cols = []
        r, th = p.pair_radius[:, None], p.pair_angle[:, None]
        if n_pairs:
            e1, e2 = omega[None, :] - th, omega[None, :] + th
            den1 = 1 - 2 * r * np.cos(e1) + r * r
            den2 = 1 - 2 * r * np.cos(e2) + r * r
            d_r = -2 * np.sin(e1) / den1 - 2 * np.sin(e2) / den2
            d_th = 2 * (r * np.cos(e1) - r * r) / den1 - 2 * (r * np.cos(e2) - r * r) / den2
            cols += [d_r.T, d_th.T]
        if n_real:
            q = p.real[:, None]
            den = 1 - 2 * q * np.cos(omega[None, :]) + q * q
            cols.append((-2 * np.sin(omega[None, :]) / den).T)
        cols.append(-omega[:, None])
        return scale * np.concatenate(cols, axis=1)

    lo = np.concatenate([np.zeros(n_pairs), np.zeros(n_pairs), -max_radius * np.ones(n_real),
                         [delay - max_delay_change]])  # fmt: skip
    hi = np.concatenate([max_radius * np.ones(n_pairs), math.pi * np.ones(n_pairs),
                         max_radius * np.ones(n_real), [delay + max_delay_change]])  # fmt: skip
    x0 = np.clip(_pack(poles, delay), lo, hi)
    result = scipy.optimize.least_squares(
        residual, x0, jac=jacobian, bounds=(lo, hi), method="trf", x_scale="jac",
        max_nfev=max_evaluations, xtol=1e-10, ftol=1e-12, gtol=1e-12,
    )  # fmt: skip
    return _unpack(result.x, n_pairs, n_real)


def fit_allpass_phase(
    freqs_hz: np.ndarray,
    phase_rad: np.ndarray,
    weight: np.ndarray,
    sample_rate: float,
    max_poles: int = 16,
    delays: tuple[float, ...] = DESIGN_DELAYS,
    polarities: tuple[int, ...] = (1, -1),
    min_poles: int = 1,
    warps: tuple[float, ...] = (0.0, 0.3, 0.6, 0.8, -0.5),
    max_pairs: int | None = None,
    max_real: int | None = None,
    starts: tuple[AllpassFit, ...] = (),
    refine_top: int = 6,
    keep_top: int = 2,
    order_tolerance: float = 0.05,
    min_objective: float = 2e-5,
    ls_iterations: int = 3,
    design_bins: int = 1024,
    max_evaluations: int = 200,
    max_radius: float = MAX_POLE_RADIUS,
) -> AllpassFit:
    """Fit ``polarity * z^-delay * A(z)`` (``A`` an allpass of at most ``max_poles`` poles) to a
    measured phase response (module notes).

    Args:
        freqs_hz: ``(F,)`` frequencies of the measurement, Hz (0 < f < sample_rate / 2).
        phase_rad: ``(F,)`` measured phase, radians, wrapped or not.
        weight: ``(F,)`` >= 0, how much each frequency counts (:func:`response_weights`).
        sample_rate: Hz.
        max_poles: most poles of the cascade (a second-order section has two).
        delays: residual delays (samples) the designs start from; refinement moves each by
            up to one sample. Negative values are advances, which an allpass alone cannot
            produce; half samples matter for plug-ins with a fractional latency.
        polarities: which polarities to consider.
        min_poles: fewest poles designed (with ``max_poles``: the orders tried).
        warps: frequency warpings of the designs (module notes): 0 designs on the plain
            frequency axis, ``0 < warp < 1`` spreads the low frequencies (where poles of
            real filters crowd), ``warp < 0`` the high ones.
        max_pairs, max_real: fit a cascade of at most this many second-order sections
            (conjugate pairs) and first-order sections (real poles), e.g. a
            :class:`diffx.nn.BiasNet` of a given structure (:meth:`PoleSet.constrained`);
            ``None``: any mix within ``max_poles``.
        starts: earlier fits to refine as well (e.g. of a first pass).
        refine_top: how many of the best designs are refined briefly (a tenth of
            ``max_evaluations``); the ``keep_top`` best of those are refined to the end.
        order_tolerance: the fewest poles whose refined error is within
            ``(1 + order_tolerance)`` times the best error (or within ``min_objective`` of
            it) win.
        min_objective: an error this small is at the measurement's noise floor (``J = 2e-5``
            is about 0.36 degrees RMS).
        ls_iterations: re-weighting iterations of each least-squares design.
        design_bins: the designs use at most this many of the frequencies (evenly spread;
            refinement uses all of them).
        max_evaluations: of each refinement.
        max_radius: largest pole radius (< 1).

    Returns:
        the :class:`AllpassFit`.
    """
    sr = check_sample_rate(sample_rate)
    f = np.asarray(freqs_hz, dtype=float)
    target = np.asarray(phase_rad, dtype=float)
    w = np.asarray(weight, dtype=float)
    if not (f.ndim == 1 and f.shape == target.shape == w.shape):
        raise ValueError(
            f"freqs_hz, phase_rad and weight must be equally long 1-D arrays, got shapes "
            f"{f.shape}, {target.shape}, {w.shape}"
        )
    for name, a in (("freqs_hz", f), ("phase_rad", target), ("weight", w)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or Inf")
    if (w < 0).any() or not w.sum() > 0:
        raise ValueError("weight must be >= 0 with a positive sum (no frequency to fit)")
    if ((f <= 0) | (f >= sr / 2)).any():
        raise ValueError(f"freqs_hz must lie strictly between 0 and sample_rate / 2 = {sr / 2}")
    if not 0 < max_radius < 1:
        raise ValueError(f"max_radius must lie in (0, 1), got {max_radius!r}")
    if int(max_poles) < 1:
        raise ValueError(f"max_poles must be >= 1, got {max_poles!r}")
    if not polarities or any(p not in (-1, 1) for p in polarities):
        raise ValueError(f"polarities must be a non-empty subset of (1, -1), got {polarities!r}")
    if max_pairs is not None or max_real is not None:
        capacity = 2 * (max_pairs if max_pairs is not None else max_poles) + (
            max_real if max_real is not None else max_poles
        )
        max_poles = min(int(max_poles), capacity)
        if max_poles < 1:
            raise ValueError("max_pairs and max_real leave no pole to fit")
    keep = w > 0
    f, target, w = f[keep], target[keep], w[keep] / w[keep].sum()
    omega = 2 * math.pi * f / sr

    # 1-2: designs for every polarity, integer delay, warping and order, on a thinned grid
    # (a start needs no more), judged on the whole one.
    pick = np.unique(np.linspace(0, omega.size - 1, min(omega.size, int(design_bins))).round())
    pick = pick.astype(int)
    o_d, t_d, w_d = omega[pick], target[pick], w[pick] / w[pick].sum()
    k = np.arange(1, int(max_poles) + 1)
    grids = [np.exp(1j * k[None, :] * warped_frequency(o_d, warp)[:, None]) for warp in warps]
    designs = []
    for start in starts:
        j = objective(_model_phase(start.poles, start.delay_samples, start.polarity, omega),
                      target, w)  # fmt: skip
        designs.append((j, start.poles.n_poles, start.polarity, start.delay_samples, start.poles))
    n_starts = len(designs)
    for polarity in polarities:
        for delay in delays:
            # The allpass must supply the measured phase plus what the delay takes away.
            t = t_d + delay * o_d - (math.pi if polarity < 0 else 0.0)
            for warp, powers in zip(warps, grids):
                for order in range(max(1, int(min_poles)), int(max_poles) + 1):
                    roots = np.roots(_ls_allpass(powers, t, w_d, order, ls_iterations))
                    poles = PoleSet.from_roots(unwarp_poles(roots, warp), max_radius)
                    if max_pairs is not None or max_real is not None:
                        poles = poles.constrained(max_pairs, max_real)
                    j = objective(_model_phase(poles, delay, polarity, o_d), t_d, w_d)
                    designs.append((j, poles.n_poles, polarity, float(delay), poles))
    # The best design of each order (over polarities and delays) goes on to refinement, the
    # best orders first.
    best_per_order: dict[int, tuple] = {}
    for d in designs[n_starts:]:
        if d[1] not in best_per_order or d[0] < best_per_order[d[1]][0]:
            best_per_order[d[1]] = d
    ranked = designs[:n_starts] + sorted(best_per_order.values(), key=lambda d: d[0])[
        : max(1, int(refine_top))
    ]

    # 3: refinement, briefly for every candidate, to the end for the best few.
    def refine(candidates, evaluations, o, t, wt):
        out = []
        for _, _, polarity, delay, poles in candidates:
            poles, d = _refine(poles, delay, polarity, o, t, wt, 1.0, max_radius, evaluations)
            phase = _model_phase(poles, d, polarity, omega)
            out.append((objective(phase, target, w), poles.n_poles, polarity, d, poles))
        return out

    brief = refine(ranked, max(5, int(max_evaluations) // 10), o_d, t_d, w_d)
    finalists = sorted(brief, key=lambda r: r[0])[: max(1, int(keep_top))]
    refined = refine(finalists, int(max_evaluations), omega, target, w) + [
        r for r in brief if not any(r is f for f in finalists)
    ]

    # 4: the fewest poles within tolerance of the best.
    j_best = min(r[0] for r in refined)
    good = [r for r in refined
            if r[0] <= j_best * (1 + order_tolerance) or r[0] <= j_best + min_objective]
    j, _, polarity, delay, poles = min(good, key=lambda r: (r[1], r[0]))
    poles, delay = _poles_at_origin_to_delay(poles, delay)
    phase = _model_phase(poles, delay, polarity, omega)
    j, err = objective(phase, target, w), wrapped_error(phase, target)
    return AllpassFit(
        sample_rate=sr,
        poles=poles,
        delay_samples=delay,
        polarity=int(polarity),
        objective=j,
        phase_error_deg=math.degrees(math.sqrt(float(np.sum(w * err**2)))),
        candidates=len(designs),
        history=[(r[1], r[0]) for r in sorted(refined, key=lambda r: r[1])],
    )


def response_weights(response, weighting: str = "coherence") -> np.ndarray:
    """How much each frequency of a :class:`diffx.analysis.phase_alignment.ResponseEstimate` counts.

    ``"coherence"``: the inverse variance of the measured phase, ``g / (1 - g)`` with ``g``
    the magnitude-squared coherence (capped at :data:`COHERENCE_CAP`): each frequency counts
    by how well its phase is known, whatever its level. ``"cross_power"``: ``|S_xy|``, how
    much each frequency contributes to the sum of dry and wet (what the parallel-mix test and
    the correlation at lag 0 measure). ``"uniform"``: 1. Frequencies with coherence below
    :data:`MIN_COHERENCE` get 0 in every weighting.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    g = np.clip(response.coherence, 0.0, COHERENCE_CAP)
    if weighting == "coherence":
        w = g / (1 - g)
    elif weighting == "cross_power":
        w = np.asarray(response.cross_power, float).copy()
    else:
        w = np.ones_like(g)
    return np.where(g >= MIN_COHERENCE, w, 0.0)


# --------------------------------------------------------------------------------------------
# a dry/wet pair


@dataclass(frozen=True)
class PairFit:
    """The alignment :func:`fit_pair` found for one dry/wet pair.

    The aligned dry is ``polarity * delay(cascade(dry), delay_samples)``, with the cascade
    empty when ``fit`` is ``None`` (a delay alone summed best).

    Attributes:
        sample_rate: Hz.
        delay_samples: total delay applied after the cascade (bulk lag plus the fitted
            residual), samples; negative: an advance.
        polarity: +1 or -1.
        fit: the fitted cascade (its ``delay_samples`` is the residual after ``bulk_samples``),
            or ``None`` for the delay alone.
        bulk_samples: the integer lag the cascade was fitted from.
        comb_loss_db: comb-filter loss of the aligned dry summed with the wet.
        delay_only_comb_loss_db: the same for the best fractional delay alone.
        fallback: True when the delay alone won (an effect whose phase leads: an allpass can
            only lag).
        n_fft: the frequency resolution the response was measured with.
    """

    sample_rate: float
    delay_samples: float
    polarity: int
    fit: AllpassFit | None
    bulk_samples: int
    comb_loss_db: float
    delay_only_comb_loss_db: float
    fallback: bool
    n_fft: int

    def sos(self) -> np.ndarray:
        """``(n_sections, 6)`` rows (none for a delay alone)."""
        return self.fit.sos() if self.fit is not None else np.zeros((0, 6))

    def apply(self, dry: np.ndarray) -> np.ndarray:
        """Align ``(samples,)`` float audio (float64 result, same length)."""
        x = np.asarray(dry, dtype=np.float64)
        sos = self.sos()
        y = scipy.signal.sosfilt(sos, x) if len(sos) else x
        return apply_delay(y, self.delay_samples, self.polarity)


def onset_lag(response, quantile: float = 0.02, min_coherence: float = 0.5) -> int:
    """The low end of the measured group delay, in whole samples (rounded down): for a latency
    followed by an allpass cascade, about the latency (every section adds delay at every
    frequency, least far from its resonance).

    The group delay is taken bin to bin from the wrapped phase over frequencies measured with
    at least ``min_coherence``, smoothed by a running median over 1/32 of the band (its noise
    would otherwise make the low end far too low), and its ``quantile`` is returned (each
    frequency counted alike: those far from every resonance are often quiet). 0 when too
    little is coherent.
    """
    good = response.coherence >= min_coherence
    pairs = good[1:] & good[:-1]
    if pairs.sum() < 16:
        return 0
    omega = 2 * math.pi * response.freqs_hz / response.sample_rate
    step = np.angle(np.exp(1j * np.diff(response.phase_rad)))
    delay = (-step / np.diff(omega))[pairs]
    smooth = scipy.ndimage.median_filter(delay, size=max(15, delay.size // 32), mode="nearest")
    return int(math.floor(np.quantile(smooth, quantile)))


def response_n_fft(n_samples: int, sample_rate: float) -> int:
    """The Welch segment length used for a pair of ``n_samples``: about 93 ms at 44.1 kHz
    (4096 samples), scaled with the rate, at most an eighth of the signal, at least 256.

    Long enough that the group delay of resonant sections (a pole of radius 0.99 delays its
    frequencies by about 200 samples) stays well inside a segment, short enough that a few
    seconds of audio give dozens of averaged segments (a steady coherence estimate).
    """
    target = 4096 * sample_rate / 44100
    size = 2 ** int(round(math.log2(target)))
    while size > 256 and size > n_samples / 8:
        size //= 2
    return int(size)


def fit_pair(
    dry: np.ndarray,
    wet: np.ndarray,
    sample_rate: float,
    max_sections: int = 8,
    weighting: str = "auto",
    max_delay_samples: int | None = None,
    min_freq_hz: float = 0.0,
    max_freq_hz: float | None = None,
    n_fft: int | None = None,
    fallback_to_delay: bool = True,
    **fit_kwargs,
) -> PairFit:
    """Align a dry recording to a processed copy of it with an allpass cascade and a delay.

    The cascade is fitted (:func:`fit_allpass_phase`) to the response measured after up to
    three bulk lags: the peak of the cross-correlation, the onset of the measured group delay
    (:func:`onset_lag`) and no lag at all. (An allpass with a large group delay at low
    frequencies correlates best with its input several samples late, a lag from which the
    phase left to fit is an advance; from the onset, or from lag 0 when there is no latency,
    it has no such problem.) The fit whose aligned dry sums with the wet with the least
    comb-filter loss is refined by a second pass (module notes) and kept, and, with
    ``fallback_to_delay``, replaced by the best fractional delay alone when that sums better
    (an effect whose phase leads).

    Args:
        dry, wet: ``(samples,)`` one channel each, equally long, finite, not silent.
        sample_rate: Hz.
        max_sections: most second-order sections (``2 * max_sections`` poles; first-order
            sections count one pole each).
        weighting: of the phase fit (:func:`response_weights`), or ``"auto"``: coherence,
            and when that leaves the mix short of perfect (more than :data:`PERFECT_MIX_DB`
            lost) also cross-power, the better mix kept.
        max_delay_samples: search the bulk lag within +-this (default: the whole signal).
        min_freq_hz, max_freq_hz: band of the fit (default: every measured frequency above
            0 Hz and below Nyquist).
        n_fft: Welch segment length (default :func:`response_n_fft`).
        fallback_to_delay: allow the delay-alone answer.
        fit_kwargs: passed to :func:`fit_allpass_phase`.
    """
    sr = check_sample_rate(sample_rate)
    x, y = _pair(dry, wet)
    for name, a in (("dry", x), ("wet", y)):
        if not np.any(a):
            raise ValueError(f"{name} is silent: there is nothing to align")
    if int(max_sections) < 1:
        raise ValueError(f"max_sections must be >= 1, got {max_sections!r}")
    if x.size < MIN_PAIR_SAMPLES:
        raise ValueError(
            f"dry and wet have {x.size} samples: too short to measure a phase response "
            f"(at least {MIN_PAIR_SAMPLES})"
        )
    n_fft = response_n_fft(x.size, sr) if n_fft is None else int(n_fft)
    hi = 0.5 * sr if max_freq_hz is None else min(float(max_freq_hz), 0.5 * sr)
    if weighting not in WEIGHTINGS + ("auto",):
        raise ValueError(f"weighting must be 'auto' or one of {WEIGHTINGS}, got {weighting!r}")
    peak = integer_delay(x, y, max_delay_samples=max_delay_samples)
    max_poles = 2 * int(max_sections)
    measured: dict[int, tuple[np.ndarray, object]] = {}

    def measure(bulk: int):
        if bulk not in measured:
            shifted = apply_delay(x, bulk)
            measured[bulk] = (shifted, estimate_response(shifted, y, sr, n_fft=n_fft))
        return measured[bulk]

    # Three bulk lags. The onset: a cascade delays every frequency, so its group delay never
    # falls below the latency before it, and the low end of the measured group delay is a lag
    # to start from (the cross-correlation peak may lie deep in the cascade's resonance, lag 0
    # far before a real latency).
    onset = int(peak.delay_samples) + onset_lag(measure(int(peak.delay_samples))[1])
    if max_delay_samples is not None and abs(onset) > max_delay_samples:
        onset = int(peak.delay_samples)
    bulks = list(dict.fromkeys([int(peak.delay_samples), onset, 0]))

    def aligned_by(fit: AllpassFit, shifted: np.ndarray) -> np.ndarray:
        sos = fit.sos()
        y_fit = scipy.signal.sosfilt(sos, shifted) if len(sos) else shifted
        return apply_delay(y_fit, fit.delay_samples, fit.polarity)

    def attempt(weights: str, lags: list[int]) -> tuple[float, int, AllpassFit] | None:
        # First pass from each bulk lag; the one whose aligned dry sums best goes on (the one
        # with fewer poles when they sum alike: from lag 0, a latency takes poles to imitate).
        firsts = []
        for bulk in lags:
            shifted, response = measure(bulk)
            f = response.freqs_hz
            band = (f > max(min_freq_hz, 0.0)) & (f < hi)
            w = response_weights(response, weights)[band]
            if not w.sum() > 0:
                continue
            fit = fit_allpass_phase(f[band], response.phase_rad[band], w, sr,
                                    max_poles=max_poles, **fit_kwargs)  # fmt: skip
            firsts.append((comb_loss_db(aligned_by(fit, shifted), y), bulk, fit, f[band]))
        if not firsts:
            return None
        top = max(c[0] for c in firsts)
        alike = [c for c in firsts if c[0] >= top - SAME_MIX_DB]
        loss, bulk, fit, freqs = min(alike, key=lambda c: (c[2].poles.n_poles, -c[0]))
        shifted = measure(bulk)[0]
        # Second pass: Welch's estimate is biased where the group delay is a sizeable part of
        # its segment. What the first fit leaves is short, so its estimate is not; the first
        # fit's phase plus that remainder is the better measurement, fitted again from the
        # first fit and from designs of nearby orders.
        residual = estimate_response(aligned_by(fit, shifted), y, sr, n_fft=n_fft)
        band = (residual.freqs_hz > max(min_freq_hz, 0.0)) & (residual.freqs_hz < hi)
        w2 = response_weights(residual, weights)[band]
        if w2.sum() > 0:
            n = fit.poles.n_poles
            second = fit_allpass_phase(
                freqs, fit.phase_rad(freqs) + residual.phase_rad[band], w2, sr,
                min_poles=max(1, n - 2), max_poles=min(max_poles, n + 2),
                delays=(fit.delay_samples,), polarities=(fit.polarity,), starts=(fit,),
                **fit_kwargs,
            )  # fmt: skip
            second_loss = comb_loss_db(aligned_by(second, shifted), y)
            if second_loss >= loss:
                loss, fit = second_loss, second
        return loss, bulk, fit

    # "auto": each frequency by how well its phase is known (the whole phase response, what a
    # cascade that is the effect needs); when that leaves the mix short of perfect (an effect
    # that is no allpass), also by its share of the sum, and the better mix wins.
    # The second weighting starts from the bulk lag the first found best (it changes how the
    # phase is fitted, not where the cascade starts).
    best = None
    for weights in ("coherence", "cross_power") if weighting == "auto" else (weighting,):
        if best is not None and best[0] >= -PERFECT_MIX_DB:
            break
        result = attempt(weights, bulks if best is None else [best[1]])
        if result is not None and (best is None or result[0] > best[0]):
            best = result
    if best is None:
        raise ValueError(
            "the dry and wet share no coherent energy: is the wet a processed copy of the dry?"
        )
    loss, bulk, fit = best
    delay = fractional_delay_estimate(x, y, max_delay_samples=max_delay_samples)
    delay_loss = comb_loss_db(apply_delay(x, delay.delay_samples, delay.polarity), y)
    if fallback_to_delay and delay_loss > loss:
        return PairFit(sr, delay.delay_samples, delay.polarity, None, bulk, delay_loss,
                       delay_loss, True, n_fft)  # fmt: skip
    return PairFit(sr, bulk + fit.delay_samples, fit.polarity, fit, bulk, loss, delay_loss, False,
                   n_fft)  # fmt: skip

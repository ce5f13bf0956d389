"""Gradients for black-box effects by simultaneous perturbation stochastic approximation.

SPSA (Spall, 1992) estimates the gradient of a scalar with respect to all P parameters from
two evaluations, whatever P. DeepAFx-ST (Steinmetz et al., JAES 2022, spsa/channel.py) uses it
to train a controller through effects that autograd cannot see: the effect runs forward as
is, and in the backward pass the vector-Jacobian product ``grad_output^T dy/dp`` is estimated
per batch item from two more evaluations at randomly perturbed parameters.

The estimator, per batch item, with ``J(p) = sum(grad_output * f(x, p))``::

    delta ~ Rademacher{-1, +1}^P
    p+ = clip(p + epsilon * delta, 0, 1),    p- = clip(p - epsilon * delta, 0, 1)
    g_i = (J(p+) - J(p-)) / (p+_i - p-_i)

Dividing by the clipped difference (rather than ``2 epsilon delta_i``, as DeepAFx-ST does)
changes nothing away from the bounds and keeps the estimate unbiased for an ``f`` linear in
``p`` everywhere in [0, 1]^P: DeepAFx-ST's formula halves a coordinate's contribution when it
sits on a bound. ``p+_i - p-_i`` is ``delta_i`` times a number in [epsilon, 2 epsilon], never
zero. For a linear ``f`` with ``J(p) = c . p`` the estimate is
``c_i + sum_{j != i} c_j delta_j delta_i (s_j / s_i)`` (``s`` the clipped step sizes): mean
``c_i``, variance ``sum_{j != i} c_j^2`` away from the bounds; averaging K draws divides the
variance by K.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from diffx._validation import check_audio, check_integer, wide_dtype
from diffx.effects.base import Effect, EffectChain, ParamSpec, check_normalized

DEFAULT_EPSILON = 5e-4  # DeepAFx-ST's perturbation size, in normalized parameter units

Evaluate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_epsilon(epsilon: float) -> float:
    try:
        eps = float(epsilon)
    except (TypeError, ValueError):
        raise ValueError(f"epsilon must be a number, got {epsilon!r}") from None
    # Below 0.5, p + eps and p - eps can never both clip onto one bound.
    if not (0.0 < eps < 0.5):
        raise ValueError(f"epsilon must lie in (0, 0.5) (normalized units), got {epsilon!r}")
    return eps


def spsa_gradient(
    evaluate: Evaluate,
    x: torch.Tensor,
    params: torch.Tensor,
    grad_output: torch.Tensor,
    epsilon: float = DEFAULT_EPSILON,
    n_perturbations: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SPSA estimate of the vector-Jacobian product ``grad_output^T d evaluate(x, p) / dp``.

    Args:
        evaluate: the black box, ``(x (n, C, T), params (n, P)) -> (n, C', T')``; called with
            ``n = 2 * batch`` (every item at ``p+`` then every item at ``p-``), once per
            perturbation, without gradients.
        x: ``(batch, C, T)`` input audio (data: it gets no gradient).
        params: ``(batch, P)`` normalized parameters in [0, 1].
        grad_output: gradient of the loss with respect to ``evaluate(x, params)``.
        epsilon: perturbation size in normalized units, in (0, 0.5).
        n_perturbations: K; the K independent estimates are averaged (variance / K).
        generator: CPU random generator for the Rademacher draws (default: torch's global).

    Returns:
        ``(batch, P)`` gradient estimate, in ``params``' dtype and device. The differences
        of the outputs are accumulated in float64 so that the small steps do not lose the
        digits float32 audio still carries.
    """
    eps = _check_epsilon(epsilon)
    K = check_integer(n_perturbations, "n_perturbations", minimum=1)
    B, P = params.shape  # batch, parameters
    params = params.detach()
    x = x.detach()
    x2 = torch.cat([x, x])
    wide = wide_dtype(params.device, "SPSA's output differences")
    g = grad_output.detach().to(wide).flatten(1)
    total = torch.zeros(B, P, dtype=wide, device=params.device)
    for _ in range(K):
        delta = torch.randint(0, 2, (B, P), generator=generator).to(params) * 2 - 1
        p_plus = (params + eps * delta).clamp(0.0, 1.0)
        p_minus = (params - eps * delta).clamp(0.0, 1.0)
        with torch.no_grad():
            y = evaluate(x2, torch.cat([p_plus, p_minus]))
        y = y.to(wide).flatten(1)
        dj = (g * (y[:B] - y[B:])).sum(dim=1)  # J(p+) - J(p-), (batch,)
        total += dj[:, None] / (p_plus - p_minus).to(wide)
    return (total / K).to(params.dtype)


class _SPSAFunction(torch.autograd.Function):
    """``y = evaluate(x, params)``; SPSA gradient to ``params``, none to ``x``."""

    @staticmethod
    def forward(params, x, evaluate, epsilon, n_perturbations, generator):
        y = evaluate(x, params)
        # autograd needs an output that is a new tensor, not an input passed through.
        return y.clone() if (y is x or y is params) else y

    @staticmethod
    def setup_context(ctx, inputs, output):
        params, x, evaluate, epsilon, n_perturbations, generator = inputs
        ctx.save_for_backward(params, x)
        ctx.evaluate = evaluate
        ctx.epsilon = epsilon
        ctx.n_perturbations = n_perturbations
        ctx.generator = generator

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        params, x = ctx.saved_tensors
        grad_params = None
        if ctx.needs_input_grad[0]:
            grad_params = spsa_gradient(
                ctx.evaluate, x, params, grad_output, ctx.epsilon, ctx.n_perturbations,
                ctx.generator,
            )  # fmt: skip
        return grad_params, None, None, None, None, None


def spsa(
    evaluate: Evaluate,
    x: torch.Tensor,
    params: torch.Tensor,
    epsilon: float = DEFAULT_EPSILON,
    n_perturbations: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``evaluate(x, params)`` with SPSA gradients to ``params`` (see :func:`spsa_gradient`).

    The forward pass calls ``evaluate`` once without gradients; the backward pass calls it
    ``n_perturbations`` times on ``2 * batch`` items. ``x`` gets no gradient: the black box's
    input is data (an upstream differentiable effect feeding ``x`` receives none either).
    """
    _check_epsilon(epsilon)
    check_integer(n_perturbations, "n_perturbations", minimum=1)
    return _SPSAFunction.apply(params, x.detach(), evaluate, epsilon, n_perturbations, generator)


class SPSAChain(nn.Module):
    """An effect chain treated as one black box, trained by SPSA gradients.

    Args:
        chain: an :class:`~diffx.effects.base.EffectChain` or a single
            :class:`~diffx.effects.base.Effect`; pedalboard effects, diffx effects (run under
            ``torch.no_grad``, so SPSA can be compared with autodiff on the same chain), or
            both.
        epsilon: perturbation size in normalized units, in (0, 0.5); DeepAFx-ST's 5e-4 by
            default. Settable at run time (DeepAFx-ST halves it on plateaus). It is not part of
            the ``state_dict`` (which stays the wrapped chain's), so a task that changes it saves
            it with its checkpoint.
        n_perturbations: K independent estimates averaged per backward pass.
        num_workers: 0 evaluates each call as one batch; ``n > 0`` splits the items into
            ``n`` blocks evaluated in a pool of ``n`` threads (pedalboard releases the GIL
            while processing; so do torch's kernels).

    ``forward(x, params)`` takes ``x (batch, channels, samples)`` and normalized ``params
    (batch, parameter_size())`` and returns the chain's output. When grad mode is on and
    ``params`` requires grad, the backward pass gives ``params`` an SPSA gradient; ``x``
    never gets one. The generator used for the perturbations is :attr:`generator` (``None``:
    torch's global one).
    """

    def __init__(
        self,
        chain: EffectChain | Effect,
        epsilon: float = DEFAULT_EPSILON,
        n_perturbations: int = 1,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(chain, (EffectChain, Effect)):
            raise ValueError(
                f"SPSAChain wraps an EffectChain or an Effect, got {type(chain).__name__}"
            )
        self.chain = chain
        self.epsilon = epsilon
        self.n_perturbations = check_integer(n_perturbations, "n_perturbations", minimum=1)
        self.num_workers = check_integer(num_workers, "num_workers", minimum=0)
        self.generator: torch.Generator | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    # ------------------------------------------------------------------ settings
    @property
    def epsilon(self) -> float:
        return self._epsilon

    @epsilon.setter
    def epsilon(self, value: float) -> None:
        self._epsilon = _check_epsilon(value)

    def __getstate__(self):
        state = super().__getstate__()
        state["_executor"] = None  # threads cannot be copied; a copy starts its own pool
        state.pop("_executor_lock", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._executor_lock = threading.Lock()

    # ------------------------------------------------------------------ the chain's interface
    @property
    def sample_rate(self) -> float:
        return self.chain.sample_rate

    @property
    def param_names(self) -> list[str]:
        return self.chain.param_names

    @property
    def param_specs(self) -> tuple[ParamSpec, ...]:
        return tuple(self.chain.param_specs)

    def parameter_size(self) -> int:
        return self.chain.parameter_size()

    def denormalize(self, params: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.chain.denormalize(params)

    def default_parameters(self, batch_size: int = 1, device=None, dtype=None) -> torch.Tensor:
        return self.chain.default_parameters(batch_size, device, dtype)

    def sample_parameters(
        self, batch_size: int, generator: torch.Generator | None = None, device=None, dtype=None
    ) -> torch.Tensor:
        return self.chain.sample_parameters(batch_size, generator, device, dtype)

    def evaluations_per_step(self, batch_size: int) -> int:
        """Single-item black-box evaluations of one forward + backward: ``B (1 + 2K)``."""
        return check_integer(batch_size, "batch_size") * (1 + 2 * self.n_perturbations)

    # ------------------------------------------------------------------ evaluation
    def _pool(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.num_workers, "diffx-spsa")
            return self._executor

    def _run(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # grad mode is per thread
            return self.chain(x, params)

    def _evaluate(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """The chain on ``(n, C, T)`` audio and ``(n, P)`` parameters, without gradients.

        With workers, the items are split into one contiguous block per worker rather than
        submitted one by one: the Python work around each chain call holds the GIL (about
        0.3 ms for the pedalboard EQ + compressor chain, against 0.8 ms of GIL-free pedalboard
        processing of 36000 samples), so fewer, larger calls parallelize better.
        """
        x, params = x.detach(), params.detach()
        n = x.shape[0]
        if self.num_workers == 0 or n == 1:
            return self._run(x, params)
        pool = self._pool()
        blocks = min(self.num_workers, n)
        futures = [
            pool.submit(self._run, xb, pb)
            for xb, pb in zip(torch.tensor_split(x, blocks), torch.tensor_split(params, blocks))
        ]
        return torch.cat([future.result() for future in futures])

    def forward(self, x: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """Process ``x (batch, channels, samples)`` with normalized ``params (batch, P)``."""
        check_audio(x, "x")
        B = x.shape[0]
        P = self.parameter_size()
        if params is None:
            params = self.default_parameters(B, device=x.device, dtype=x.dtype)
        if params.dim() != 2 or params.shape != (B, P):
            raise ValueError(
                f"SPSAChain: params must be shaped (batch, {P}) = ({B}, {P}), got "
                f"{tuple(params.shape)}"
            )
        check_normalized(params, self.param_names, "SPSAChain")
        if not (torch.is_grad_enabled() and params.requires_grad):
            return self._evaluate(x, params)
        return spsa(self._evaluate, x, params, self.epsilon, self.n_perturbations, self.generator)

    def extra_repr(self) -> str:
        return (
            f"epsilon={self.epsilon:g}, n_perturbations={self.n_perturbations}, "
            f"num_workers={self.num_workers}"
        )


__all__ = ["DEFAULT_EPSILON", "SPSAChain", "spsa", "spsa_gradient"]

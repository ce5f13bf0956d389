"""SPSA gradients: unbiased with the variance the estimator's algebra predicts (oracle:
autograd through a differentiable effect), close to autodiff on diffx's EQ + compressor, and a
descent direction through pedalboard."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as TF

from diffx.effects import (
    Compressor,
    Effect,
    EffectChain,
    Gain,
    ParametricEQ,
    ParamSpec,
    PedalboardCompressor,
    SPSAChain,
)
from diffx.effects.spsa import DEFAULT_EPSILON, spsa_gradient
from diffx.io import load_demo
from tests.conftest import requires_pedalboard

SR = 24000.0
EPS = DEFAULT_EPSILON


class Taps(Effect):
    """``y[t] = sum_j a_j x[t - j]``: an FIR filter linear in its taps ``a_j`` (the normalized
    parameters themselves, ranges [0, 1]), so ``J(p) = sum(g * y)`` is exactly ``c . p``."""

    def __init__(self, sample_rate: float = SR, n_taps: int = 6) -> None:
        self.PARAMS = tuple(ParamSpec(f"tap{j}", 0.0, 1.0, 0.5) for j in range(n_taps))
        super().__init__(sample_rate)
        self.seen: list[torch.Tensor] = []  # the parameters of every call, for spying

    def process(self, x, **taps):
        self.seen.append(torch.stack([taps[n] for n in self.param_names], 1).detach().clone())
        T = x.shape[-1]
        return sum(
            taps[name][:, None, None] * TF.pad(x, (j, 0))[..., :T]
            for j, name in enumerate(self.param_names)
        )


def _autodiff_vjp(effect, x, p, g) -> torch.Tensor:
    """The oracle: autograd's ``g^T dy/dp`` for one item."""
    p = p.clone().requires_grad_()
    (g * effect(x, p)).sum().backward()
    return p.grad[0]


def _clipped_steps(p: torch.Tensor, eps: float) -> torch.Tensor:
    """|p+ - p-| per parameter: 2 eps inside, less within eps of a bound."""
    return (p + eps).clamp(max=1.0) - (p - eps).clamp(min=0.0)


def _linear_case(p_values, n_taps=6, samples=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 1, samples, generator=g, dtype=torch.float64)
    grad_out = torch.randn(1, 1, samples, generator=g, dtype=torch.float64)
    p = torch.tensor([p_values], dtype=torch.float64)
    effect = Taps(n_taps=n_taps)
    return effect, x, p, grad_out, _autodiff_vjp(effect, x, p, grad_out)


def _spsa_draws(effect, x, p, grad_out, n, k=1, seed=1) -> torch.Tensor:
    """``n`` independent SPSA estimates through SPSAChain: one per copy of the item."""
    torch.manual_seed(seed)
    chain = SPSAChain(effect, epsilon=EPS, n_perturbations=k)
    params = p.expand(n, -1).clone().requires_grad_()
    (grad_out * chain(x.expand(n, -1, -1), params)).sum().backward()
    return params.grad


def test_mean_estimate_is_the_autodiff_gradient_also_at_the_bounds():
    # Parameters inside, on both bounds and within epsilon of them. With J = c . p the
    # estimate is g_i = c_i + sum_{j != i} c_j (d_j / d_i) delta_j delta_i exactly (d the
    # clipped steps): mean c_i, variance sum_{j != i} (c_j d_j / d_i)^2. Dividing by
    # 2 eps delta_i instead (DeepAFx-ST) would make the mean c_i d_i / (2 eps) on the bounds.
    effect, x, p, grad_out, c = _linear_case([0.0, 1.0, 0.3, 1e-4, 0.5, 1.0 - 2e-4])
    n = 4000
    draws = _spsa_draws(effect, x, p, grad_out, n)
    d = _clipped_steps(p[0], EPS)
    ratio2 = (d[None, :] / d[:, None]) ** 2  # [i, j] = (d_j / d_i)^2
    var = (ratio2 * c[None, :] ** 2).sum(1) - c**2  # drop j = i
    tolerance = 5 * torch.sqrt(var / n)  # 5 standard errors of the mean
    assert torch.all((draws.mean(0) - c).abs() < tolerance), (draws.mean(0), c, tolerance)


@pytest.mark.parametrize("k", [1, 4])
def test_variance_is_the_predicted_one_and_falls_as_one_over_k(k):
    # Inside [eps, 1 - eps] the error of one estimate of component i is
    # D = sum_{j != i} c_j r_j with r_j iid Rademacher: E D^2 = s2 = sum c_j^2 and
    # E D^4 = 3 s2^2 - 2 sum c_j^4. The mean of k draws has E D_k^2 = s2 / k and
    # E D_k^4 = (k E D^4 + 3 k (k - 1) s2^2) / k^4, which bounds the sampling error.
    effect, x, p, grad_out, c = _linear_case([0.2, 0.35, 0.5, 0.65, 0.8, 0.95], seed=2)
    n = 3000
    draws = _spsa_draws(effect, x, p, grad_out, n, k=k, seed=3)
    s2 = (c**2).sum() - c**2
    m4 = 3 * s2**2 - 2 * ((c**4).sum() - c**4)
    m4_k = (k * m4 + 3 * k * (k - 1) * s2**2) / k**4
    var_of_square = m4_k - (s2 / k) ** 2
    mean_square = ((draws - c) ** 2).mean(0)
    tolerance = 5 * torch.sqrt(var_of_square / n)
    assert torch.all((mean_square - s2 / k).abs() < tolerance), (mean_square, s2 / k)


def _demo_clip(samples: int) -> torch.Tensor:
    audio, _ = load_demo("guitar_clean", sample_rate=int(SR), mono=True)
    return audio[None, :, 2000 : 2000 + samples].float()


def test_eq_and_compressor_chain_estimate_points_along_autodiff():
    chain = EffectChain([ParametricEQ(SR), Compressor(SR)])
    x = _demo_clip(4096)
    g = torch.Generator().manual_seed(0)
    p = 0.1 + 0.8 * chain.sample_parameters(1, generator=g)
    target_p = 0.1 + 0.8 * chain.sample_parameters(1, generator=g)
    with torch.no_grad():
        target = chain(x, target_p)

    def loss_per_item(y):
        return (y - target).square().mean(dim=(1, 2))

    pp = p.clone().requires_grad_()
    loss_per_item(chain(x, pp)).sum().backward()
    reference = pp.grad[0]

    n = 512
    torch.manual_seed(4)
    params = p.expand(n, -1).clone().requires_grad_()
    loss_per_item(SPSAChain(chain)(x.expand(n, -1, -1), params)).sum().backward()
    # Unbiased draws of error variance ~ |c|^2 each predict a cosine of about
    # 1 / sqrt(1 + (P - 1) / n) = 0.98 for P = 24.
    cosine = TF.cosine_similarity(params.grad.mean(0).double(), reference.double(), dim=0)
    assert cosine > 0.9


@pytest.mark.parametrize("corner", [0.0, 1.0])
def test_estimates_are_finite_on_the_bounds(corner):
    chain = SPSAChain(EffectChain([ParametricEQ(SR), Compressor(SR)]))
    x = _demo_clip(2048).expand(2, -1, -1)
    params = torch.full((2, chain.parameter_size()), corner, requires_grad=True)
    chain(x, params).square().mean().backward()
    assert torch.isfinite(params.grad).all()
    assert params.grad.abs().sum() > 0


def test_x_gets_no_gradient_and_no_grad_mode_is_plain_evaluation():
    effect = Taps()
    spsa_chain = SPSAChain(effect)
    x = torch.randn(2, 1, 64, requires_grad=True)
    params = torch.rand(2, 6, requires_grad=True)
    y = spsa_chain(x, params)
    y.sum().backward()
    assert x.grad is None
    assert params.grad is not None and params.grad.shape == (2, 6)
    with torch.no_grad():
        plain = spsa_chain(x, params)
    assert not plain.requires_grad
    torch.testing.assert_close(plain, effect(x.detach(), params.detach()))
    torch.testing.assert_close(spsa_chain(x, params.detach()), plain)


def test_perturbations_are_rademacher_steps_of_epsilon_clipped_to_the_cube():
    effect = Taps()
    spsa_chain = SPSAChain(effect, n_perturbations=3)
    spsa_chain.epsilon = 0.01  # settable while training
    params = torch.tensor([[0.0, 1.0, 0.005, 0.5, 0.3, 0.999]] * 4, requires_grad=True)
    spsa_chain(torch.randn(4, 1, 16), params).sum().backward()
    assert len(effect.seen) == 1 + 3  # the forward pass, then one call per perturbation
    p = params.detach()
    for seen in effect.seen[1:]:
        plus, minus = seen[:4], seen[4:]
        delta = torch.sign(plus - minus)
        assert torch.all(delta.abs() == 1)
        torch.testing.assert_close(plus, (p + 0.01 * delta).clamp(0, 1))
        torch.testing.assert_close(minus, (p - 0.01 * delta).clamp(0, 1))


def test_evaluation_count_and_threads_agree_with_serial():
    calls: list[int] = []

    class CountingGain(Gain):
        def process(self, x, gain_db):
            calls.append(x.shape[0])  # list.append is atomic across threads
            return super().process(x, gain_db)

    batch, k = 3, 2
    x = torch.randn(batch, 1, 128)
    grads = []
    for workers in (0, 2):
        calls.clear()
        spsa_chain = SPSAChain(EffectChain([CountingGain(SR)]), n_perturbations=k,
                               num_workers=workers)  # fmt: skip
        spsa_chain.generator = torch.Generator().manual_seed(5)
        params = torch.full((batch, 1), 0.4, requires_grad=True)
        spsa_chain(x, params).square().sum().backward()
        assert sum(calls) == spsa_chain.evaluations_per_step(batch) == batch * (1 + 2 * k)
        grads.append(params.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_delegates_the_chain_interface_and_copies():
    chain = EffectChain([ParametricEQ(SR), Compressor(SR)])
    spsa_chain = SPSAChain(chain, num_workers=2)
    assert spsa_chain.param_names == chain.param_names
    assert spsa_chain.param_specs == chain.param_specs
    assert spsa_chain.parameter_size() == chain.parameter_size() == 24
    assert spsa_chain.sample_rate == SR
    torch.testing.assert_close(spsa_chain.default_parameters(2), chain.default_parameters(2))
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    torch.testing.assert_close(
        spsa_chain.sample_parameters(3, generator=g1), chain.sample_parameters(3, generator=g2)
    )
    params = chain.sample_parameters(2)
    assert spsa_chain.denormalize(params).keys() == chain.denormalize(params).keys()
    x = torch.randn(2, 1, 256)
    spsa_chain(x, params)  # starts the thread pool, which a copy must not share
    clone = copy.deepcopy(spsa_chain)
    torch.testing.assert_close(clone(x, params), spsa_chain(x, params))
    # The state_dict is the chain's, so weights move between autodiff and SPSA models.
    assert spsa_chain.state_dict().keys() == {f"chain.{k}" for k in chain.state_dict()}


def test_rejects_bad_settings_and_inputs():
    chain = SPSAChain(Taps())
    for bad in (0.0, 0.5, -1e-3, "small"):
        with pytest.raises(ValueError, match="epsilon"):
            chain.epsilon = bad
    with pytest.raises(ValueError, match="epsilon"):
        SPSAChain(Taps(), epsilon=0.7)
    with pytest.raises(ValueError, match="n_perturbations"):
        SPSAChain(Taps(), n_perturbations=0)
    with pytest.raises(ValueError, match="num_workers"):
        SPSAChain(Taps(), num_workers=1.5)
    with pytest.raises(ValueError, match="EffectChain or an Effect"):
        SPSAChain(torch.nn.Identity())
    x = torch.randn(2, 1, 32)
    with pytest.raises(ValueError, match=r"params must be shaped \(batch, 6\)"):
        chain(x, torch.rand(2, 5))
    with pytest.raises(ValueError, match="'tap2' must lie in"):
        chain(x, torch.tensor([[0.5, 0.5, 1.5, 0.5, 0.5, 0.5]] * 2))
    with pytest.raises(ValueError, match="x contains"):
        chain(x * float("nan"), torch.rand(2, 6))
    with pytest.raises(ValueError, match="n_perturbations"):
        spsa_gradient(Taps(), x, torch.rand(2, 6), torch.ones_like(x), n_perturbations=0)


@requires_pedalboard
def test_spsa_through_pedalboard_compressor_descends():
    comp = PedalboardCompressor(SR)
    spsa_chain = SPSAChain(comp)
    x = _demo_clip(12000)
    with torch.no_grad():
        target = spsa_chain(x, torch.tensor([[0.55, 0.6, 0.3, 0.5, 0.7]]))
    torch.manual_seed(0)
    params = comp.default_parameters(1).clone().requires_grad_()
    optimizer = torch.optim.SGD([params], lr=0.05)
    losses = []
    for _ in range(300):
        loss = (spsa_chain(x, params) - target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            params.clamp_(0.0, 1.0)  # projected SGD: the black box takes [0, 1] only
        losses.append(loss.item())
    assert math.isfinite(losses[-1])
    assert min(losses[-20:]) < 0.1 * losses[0], (losses[0], losses[-20:])

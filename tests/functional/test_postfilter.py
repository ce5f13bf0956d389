"""Variance scaling and the moving average, against numpy and scipy."""

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter1d

from diffx.functional import moving_average, variance_scaling


def _utterance(seed=0, frames=300, dims=6):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.normal(size=(frames, dims)).cumsum(0) * 0.1 + 2.0)


def test_strength_one_reaches_the_global_variance():
    x = _utterance()
    gv = torch.tensor([0.5, 1.0, 2.0, 0.1, 3.0, 0.7], dtype=torch.float64)
    y = variance_scaling(x, gv, strength=1.0).numpy()
    np.testing.assert_allclose(y.var(0), gv.numpy(), rtol=1e-10)
    np.testing.assert_allclose(y.mean(0), x.numpy().mean(0), atol=1e-10)  # means kept


def test_half_strength_is_the_geometric_mean_and_offset_dims_pass():
    x = _utterance(1)
    gv = torch.full((6,), 4.0, dtype=torch.float64)
    y = variance_scaling(x, gv, strength=0.5, offset=2).numpy()
    var_x = x.numpy().var(0)
    np.testing.assert_allclose(y.var(0)[2:], np.sqrt(var_x[2:] * 4.0), rtol=1e-10)
    np.testing.assert_array_equal(y[:, :2], x.numpy()[:, :2])
    np.testing.assert_allclose(variance_scaling(x, gv, strength=0.0).numpy(), x.numpy(), atol=1e-12)


def test_masked_frames_set_the_statistics_and_are_the_only_ones_changed():
    x = _utterance(2)
    mask = torch.zeros(300, dtype=torch.bool)
    mask[50:250] = True
    gv = torch.full((6,), 2.0, dtype=torch.float64)
    y = variance_scaling(x, gv, frame_mask=mask).numpy()
    np.testing.assert_allclose(y[50:250].var(0), 2.0, rtol=1e-10)
    np.testing.assert_array_equal(y[~mask.numpy()], x.numpy()[~mask.numpy()])


def test_batches_flat_trajectories_gradients_and_errors():
    x = torch.stack([_utterance(3), _utterance(4)])
    x[1, :, 0] = 5.0  # flat: nothing to scale, no division by zero
    gv = torch.full((6,), 1.5, dtype=torch.float64)
    y = variance_scaling(x, gv)
    assert torch.all(y[1, :, 0] == 5.0)
    np.testing.assert_allclose(y[0].numpy().var(0), 1.5, rtol=1e-10)
    small = _utterance(5, frames=20, dims=3).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda t: variance_scaling(t, torch.ones(3, dtype=torch.float64), 0.7), (small,)
    )
    with pytest.raises(ValueError, match="dims"):
        variance_scaling(x, torch.ones(5))
    with pytest.raises(ValueError, match="strength"):
        variance_scaling(x, gv, strength=-1.0)
    with pytest.raises(ValueError, match="frame_mask"):
        variance_scaling(x, gv, frame_mask=torch.ones(3, dtype=torch.bool))


@pytest.mark.parametrize("width", [1, 3, 5, 100])
def test_moving_average_matches_scipy(width):
    x = np.random.default_rng(6).normal(size=(2, 3, 250))
    got = moving_average(torch.from_numpy(x), width).numpy()
    # scipy centres an even window one sample later than diffx: shift its origin to match
    origin = 0 if width % 2 else -1
    expected = uniform_filter1d(x, width, axis=-1, mode="nearest", origin=origin)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    constant = torch.full((1, 40), 3.0)
    torch.testing.assert_close(moving_average(constant, width), constant)


def test_zero_global_variance_flattens_with_a_finite_gradient():
    # (gv / var) ** (s / 2) at gv = 0 has an infinite derivative; 0 x inf was a NaN gradient.
    x = torch.randn(2, 30, 3, dtype=torch.float64, requires_grad=True)
    gv = torch.tensor([0.0, 1.0, 4.0], dtype=torch.float64)
    y = variance_scaling(x, gv, strength=1.0)
    torch.testing.assert_close(y[..., 0], x[..., 0].mean(-1, keepdim=True).expand(2, 30))
    torch.testing.assert_close(y[..., 1:].var(-2, unbiased=False), gv[1:].expand(2, 2))
    y.sum().backward()
    assert bool(torch.isfinite(x.grad).all())

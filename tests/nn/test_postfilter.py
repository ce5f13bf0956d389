"""Post-filter networks and the GV / multi-stream post-filters."""

import copy

import numpy as np
import pytest
import torch

from diffx.analysis.acoustic import gv_ratio_db
from diffx.functional import moving_average
from diffx.functional.postfilter import StreamLayout
from diffx.nn import Conv2dDiscriminator, Conv2dPostFilter, GVPostFilter, MultiStreamPostFilter
from diffx.nn.postfilter import merge_postfilters

LAYOUT = StreamLayout(("mgc", "lf0", "vuv", "bap"), (10, 1, 1, 2))


def test_generator_is_residual_and_keeps_the_shape():
    torch.manual_seed(0)
    g = Conv2dPostFilter(8, channels=4, kernel_size=(5, 3))
    x = torch.randn(2, 30, 8)
    assert g(x).shape == x.shape
    torch.nn.init.zeros_(g.conv4.weight)
    torch.nn.init.zeros_(g.conv4.bias)
    torch.testing.assert_close(g(x), x)  # a zero last layer: the identity
    with pytest.raises(ValueError, match="8"):
        g(torch.randn(2, 30, 7))
    with pytest.raises(ValueError, match="odd"):
        Conv2dPostFilter(8, kernel_size=(4, 3))


@pytest.mark.parametrize("noise_type", ["frame_wise", "bin_wise"])
def test_inference_noise_is_the_smoothed_training_noise(noise_type):
    g = Conv2dPostFilter(6, channels=2, noise_type=noise_type, smoothed_width=7)
    x = torch.zeros(1, 40, 6)
    g.train()
    raw = g.noise(x, torch.Generator().manual_seed(3))[0, 0]
    g.eval()
    smooth = g.noise(x, torch.Generator().manual_seed(3))[0, 0]
    if noise_type == "frame_wise":
        z = torch.randn(1, 40, generator=torch.Generator().manual_seed(3))
        expected = g.noise_map(moving_average(z, 7)[0][:, None])
        torch.testing.assert_close(raw, g.noise_map(z[0][:, None]))
    else:
        z = torch.randn(1, 6, 40, generator=torch.Generator().manual_seed(3))
        expected = moving_average(z, 7)[0].T
        torch.testing.assert_close(raw, z[0].T)
    torch.testing.assert_close(smooth, expected)


def test_discriminator_maps_and_one_dimensional_streams():
    d = Conv2dDiscriminator(channels=4, kernel_size=(7, 3))
    maps = d(torch.randn(3, 64, 58))
    assert [tuple(m.shape) for m in maps] == [
        (3, 4, 64, 58),
        (3, 8, 32, 58),
        (3, 16, 16, 58),
        (3, 8, 8, 58),
        (3, 1, 8, 58),
    ]
    assert d(torch.randn(2, 64, 1))[-1].shape == (2, 1, 8, 1)
    # NNSVS's mgc recipe: no padding, every convolution trims 6 frames and 2 dims
    recipe = Conv2dDiscriminator(channels=4, kernel_size=(7, 3), padding=(0, 0))
    maps = recipe(torch.randn(1, 256, 58))
    assert [tuple(m.shape[-2:]) for m in maps] == [
        (250, 56),
        (122, 54),
        (58, 52),
        (26, 50),
        (20, 48),
    ]
    assert recipe.output_size(256, 58) == (20, 48)
    with pytest.raises(ValueError, match="too small"):
        recipe(torch.randn(1, 96, 58))  # 97 frames is the least that leaves a score
    assert recipe(torch.randn(1, 97, 58))[-1].shape[-2] == 1


@pytest.mark.parametrize("kernel_size", [(5, 5), (5, 1)])
def test_channels_last_networks_compute_the_same_function(kernel_size):
    """Channels-last weights: convolutions in that format and the generator's input plane
    convolved apart; the same outputs and gradients up to float32 rounding."""
    torch.manual_seed(0)
    g = Conv2dPostFilter(9, channels=16, kernel_size=kernel_size)
    torch.nn.init.normal_(g.conv4.weight, std=0.1)  # not the identity
    d = Conv2dDiscriminator(channels=8, kernel_size=(7, 3))
    g_cl = copy.deepcopy(g).to(memory_format=torch.channels_last)
    d_cl = copy.deepcopy(d).to(memory_format=torch.channels_last)
    w = g_cl.conv2.weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    x = torch.randn(2, 40, 9)
    results = []
    for gen, disc in ((g, d), (g_cl, d_cl)):
        torch.manual_seed(1)
        y = gen(x)
        maps = disc(y)
        (maps[-1].square().mean() + maps[1].abs().mean()).backward()
        grads = [p.grad for p in (*gen.parameters(), *disc.parameters())]
        results.append((y, maps, grads))
    (y, maps, grads), (y_cl, maps_cl, grads_cl) = results
    assert maps_cl[1].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_cl, y, rtol=1e-5, atol=1e-5)
    for a, b in zip(maps_cl, maps):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads_cl, grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    g_cl.eval()  # inference (smoothed noise, no grad) too
    g.eval()
    with torch.no_grad():
        gen_a, gen_b = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
        torch.testing.assert_close(g_cl(x, gen_a), g(x, gen_b), rtol=1e-5, atol=1e-5)


def _utterances(n=4, frames=200, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        u = rng.normal(size=(frames, LAYOUT.dims)).cumsum(0) * 0.2
        u[:, LAYOUT.span("vuv")] = (rng.random((frames, 1)) > 0.2).astype(float)
        out.append(u.astype(np.float32))
    return out


def test_gv_post_filter_restores_the_natural_gv_of_over_smoothed_features(tmp_path):
    natural = _utterances()
    mgc = LAYOUT.span("mgc")
    smoothed = []
    for u in natural:  # over-smoothing: halve every mgc trajectory about its mean
        s = u.copy()
        s[:, mgc] = 0.5 * (u[:, mgc] - u[:, mgc].mean(0)) + u[:, mgc].mean(0)
        smoothed.append(s)
    gv = GVPostFilter.from_utterances(natural, LAYOUT, {"mgc": 2}, voiced_only=False)
    enhanced = [gv(torch.from_numpy(s)).numpy() for s in smoothed]
    before = gv_ratio_db([s[:, mgc] for s in smoothed], [u[:, mgc] for u in natural])
    after = gv_ratio_db([e[:, mgc] for e in enhanced], [u[:, mgc] for u in natural])
    np.testing.assert_allclose(before, 20 * np.log10(0.5), atol=1e-4)
    np.testing.assert_allclose(after[2:], 0.0, atol=1e-4)  # the mean GV is reached exactly
    np.testing.assert_array_equal(np.stack(enhanced)[..., :2], np.stack(smoothed)[..., :2])
    np.testing.assert_array_equal(np.stack(enhanced)[..., 10:], np.stack(smoothed)[..., 10:])
    gv.save(tmp_path / "gv.npz")
    loaded = GVPostFilter.load(tmp_path / "gv.npz", strength=0.5)
    assert loaded.strength == 0.5 and loaded.streams == {"mgc": 2}
    torch.testing.assert_close(loaded.global_variance, gv.global_variance)
    with pytest.raises(ValueError, match="not a GV"):
        GVPostFilter.load(tmp_path / "missing.npz")


def test_gv_post_filter_voiced_frames_only():
    natural = _utterances(seed=1)
    gv = GVPostFilter.from_utterances(natural, LAYOUT, {"mgc": 0, "bap": 0})
    x = torch.from_numpy(natural[0] * 0.3)
    x[:, LAYOUT.span("vuv")] = torch.from_numpy(natural[0][:, LAYOUT.span("vuv")])
    y = gv(x)
    unvoiced = x[:, LAYOUT.span("vuv")][:, 0] < 0.5
    torch.testing.assert_close(y[unvoiced], x[unvoiced])
    np.testing.assert_allclose(
        y[~unvoiced][:, :10].numpy().var(0), gv.global_variance[:10].numpy(), rtol=1e-4
    )
    with pytest.raises(ValueError, match="unknown stream"):
        GVPostFilter(gv.global_variance, LAYOUT, {"sp": 0})


def _multi(stream, seed, mean=None, variance=None):
    torch.manual_seed(seed)
    size = LAYOUT.sizes[LAYOUT.names.index(stream)]
    offset = 2 if stream == "mgc" else 0
    g = Conv2dPostFilter(size - offset, channels=3, kernel_size=(3, 1))
    mean = torch.arange(LAYOUT.dims, dtype=torch.float32) if mean is None else mean
    variance = torch.full((LAYOUT.dims,), 4.0) if variance is None else variance
    return MultiStreamPostFilter(LAYOUT, {stream: g}, {stream: offset}, mean, variance).eval()


def test_multi_stream_filter_normalizes_filters_and_restores_the_scale():
    model = _multi("mgc", 0)
    g = model.filters["mgc"]
    x = torch.randn(1, 50, LAYOUT.dims) * 2 + torch.arange(LAYOUT.dims)
    out = model(x, torch.Generator().manual_seed(0))
    expected = g((x[..., 2:10] - torch.arange(2, 10)) / 2, torch.Generator().manual_seed(0)) * 2
    torch.testing.assert_close(out[..., 2:10], expected + torch.arange(2, 10), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[..., :2], x[..., :2])
    torch.testing.assert_close(out[..., 10:], x[..., 10:])
    rebuilt = MultiStreamPostFilter.from_state(model.state()).eval()
    torch.testing.assert_close(rebuilt(x, torch.Generator().manual_seed(0)), out)


def test_merge_applies_each_stream_filter_and_refuses_mismatches():
    mgc, bap = _multi("mgc", 0), _multi("bap", 1)
    merged = merge_postfilters([mgc, bap]).eval()
    x = torch.randn(1, 40, LAYOUT.dims)
    out = merged(x, torch.Generator().manual_seed(5))
    torch.testing.assert_close(out[..., :10], mgc(x, torch.Generator().manual_seed(5))[..., :10])
    # the bap filter drew its noise after the mgc filter's: replay both draws
    gen = torch.Generator().manual_seed(5)
    mgc(x, gen)
    torch.testing.assert_close(out[..., 12:], bap(x, gen)[..., 12:])
    with pytest.raises(ValueError, match="more than one"):
        merge_postfilters([mgc, _multi("mgc", 2)])
    with pytest.raises(ValueError, match="scalers"):
        merge_postfilters([mgc, _multi("bap", 1, variance=torch.full((LAYOUT.dims,), 9.0))])


def test_silence_and_flat_features_stay_finite():
    natural = _utterances(seed=2)
    gv = GVPostFilter.from_utterances(natural, LAYOUT, {"mgc": 2, "bap": 0})
    silent = torch.zeros(1, 80, LAYOUT.dims)  # no voiced frame, every trajectory flat
    torch.testing.assert_close(gv(silent), silent)
    voiced_flat = silent.clone()
    voiced_flat[..., LAYOUT.span("vuv")] = 1.0
    torch.testing.assert_close(gv(voiced_flat), voiced_flat)  # flat: nothing to scale
    g = Conv2dPostFilter(8, channels=3)
    torch.nn.init.normal_(g.conv4.weight)
    d = Conv2dDiscriminator(channels=3)
    x = torch.zeros(2, 64, 8, requires_grad=True)
    score = d(g(x))[-1]
    score.square().mean().backward()
    assert torch.isfinite(score).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in g.parameters() if p.grad is not None)

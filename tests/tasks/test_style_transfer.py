"""StyleTransfer and ProxyTraining: forward, the three gradient methods, metrics, errors."""

import pytest
import pytorch_lightning as pl
import torch

from diffx.data import StyleTransferDataModule
from diffx.effects import Compressor, EffectChain, Gain, ParametricEQ
from diffx.effects.proxy import NeuralProxy, ProxyChain, load_proxy, save_proxy
from diffx.nn import SpectralEncoder
from diffx.tasks import ProxyTraining, StyleTransfer
from tests.conftest import requires_pedalboard

SR = 16000


def small_encoder():
    return SpectralEncoder(SR, n_fft=256, hop_length=128, channels=(4, 8), embed_dim=16)


def make_model(**kwargs):
    kwargs.setdefault("chain", EffectChain([ParametricEQ(SR), Compressor(SR)]))
    return StyleTransfer(encoder=small_encoder(), sample_rate=SR, controller_hidden=32, **kwargs)


def batch_from(chain, n=2, samples=8000, seed=0, process_input=False):
    dm = StyleTransferDataModule(
        sample_rate=SR, sources=["guitar_em9", "violin"], chain=chain, crop_samples=samples,
        train_examples=n, val_examples=n, test_examples=n, batch_size=n, seed=seed,
        process_input=process_input,
    )  # fmt: skip
    dm.setup("fit")
    return dm, dm.fixed["val"][0]


def test_forward_applies_the_chain_with_the_predicted_parameters():
    model = make_model().eval()
    _, batch = batch_from(model.chain)
    with torch.no_grad():
        out, params = model(batch["input"], batch["reference"])
        params_direct = model.predict_parameters(batch["input"], batch["reference"])
        expected = model.chain(batch["input"], params_direct)
    torch.testing.assert_close(out, expected)
    assert params.shape == (2, model.chain.parameter_size())
    assert bool(((params > 0) & (params < 1)).all())
    physical = model.physical_parameters(params)
    assert set(physical) == set(model.chain.param_names)
    assert float(physical["compressor.ratio"].min()) >= 1.0


def test_autodiff_learns_a_fixed_batch():
    torch.manual_seed(0)
    model = make_model(learning_rate=3e-3)
    _, batch = batch_from(model.chain)
    optimizer = model.configure_optimizers()
    losses = []
    for _ in range(40):
        pred, _ = model(batch["input"], batch["reference"])
        loss = model.loss(pred, batch["target"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0]


def controller_gradient(model, batch):
    model.zero_grad()
    pred, _ = model(batch["input"], batch["reference"])
    model.loss(pred, batch["target"]).backward()
    return torch.cat([p.grad.flatten() for p in model.controller.parameters()])


def test_spsa_gradient_points_where_autodiff_does():
    chain = EffectChain([ParametricEQ(SR), Compressor(SR)])
    torch.manual_seed(1)
    autodiff = make_model(chain=chain, losses={"l1": 1.0}).double()
    spsa = make_model(chain=chain, gradient="spsa", spsa_epsilon=1e-3, spsa_perturbations=400,
                      losses={"l1": 1.0}).double()  # fmt: skip
    spsa.load_state_dict(autodiff.state_dict())
    autodiff.eval(), spsa.eval()  # same BatchNorm statistics in both
    _, batch = batch_from(chain)
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    torch.manual_seed(2)
    exact = controller_gradient(autodiff, batch)
    estimate = controller_gradient(spsa, batch)
    cosine = torch.nn.functional.cosine_similarity(exact, estimate, dim=0)
    assert float(cosine) > 0.8


def test_proxy_chain_straight_through_keeps_the_real_audio_and_the_proxy_gradient():
    chain = EffectChain([Gain(SR), Compressor(SR)])
    torch.manual_seed(0)
    proxies = [
        NeuralProxy.for_effect(e, n_blocks=2, channels=4, kernel_size=3) for e in chain.effects
    ]
    through = ProxyChain(chain, proxies, mode="straight_through")
    imitation = ProxyChain(chain, proxies, mode="proxy")
    x = 0.3 * torch.randn(2, 1, 2000, dtype=torch.float64)
    through.double(), imitation.double()
    params = torch.rand(2, chain.parameter_size(), dtype=torch.float64, requires_grad=True)
    y = through(x, params)
    torch.testing.assert_close(y, chain(x, params).detach())
    (g_through,) = torch.autograd.grad(y.square().sum(), params)
    # The straight-through gradient at each stage is the proxy's Jacobian evaluated at the
    # real signal; for the first stage that is exactly the proxy's own gradient.
    p0 = params[:, :1].detach().requires_grad_()
    first = proxies[0](x, p0)
    real_mid = chain.effects[0](x, params[:, :1]).detach()
    second_in = real_mid + (first - first.detach())
    out = chain.effects[1](real_mid, params[:, 1:].detach()).detach() + (
        proxies[1](second_in, params[:, 1:].detach())
        - proxies[1](second_in, params[:, 1:].detach()).detach()
    )
    (g_first,) = torch.autograd.grad(out.square().sum(), p0)
    torch.testing.assert_close(g_through[:, :1], g_first)
    assert torch.isfinite(imitation(x, params)).all()


def test_proxy_files_round_trip_and_mismatches_are_named(tmp_path):
    effect = Compressor(SR)
    proxy = NeuralProxy.for_effect(effect, n_blocks=2, channels=4, kernel_size=3).eval()
    path = save_proxy(proxy, tmp_path / "p.pt")
    loaded = load_proxy(path)
    x, params = 0.1 * torch.randn(1, 1, 500), torch.rand(1, effect.parameter_size())
    torch.testing.assert_close(loaded(x, params), proxy(x, params))
    assert loaded.param_names == effect.param_names
    with pytest.raises(ValueError, match="imitates parameters"):
        ProxyChain(EffectChain([Gain(SR)]), [path])
    with pytest.raises(ValueError, match="one proxy entry per effect"):
        ProxyChain(EffectChain([Gain(SR), effect]), [path])
    with pytest.raises(ValueError, match="does not exist"):
        load_proxy(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a proxy")
    with pytest.raises(ValueError, match="cannot read proxy"):
        load_proxy(tmp_path / "junk.pt")


def test_true_parameters_are_renormalized_to_the_model_ranges():
    data_chain = EffectChain([Gain(SR, param_ranges={"gain_db": (-6.0, 6.0)})])
    model = make_model(chain=EffectChain([Gain(SR)]))  # -24..24 dB
    _, batch = batch_from(data_chain)
    truth = model.true_parameters(batch, data_chain)
    gain_db = -6.0 + 12.0 * batch["params"][:, 0].double()
    torch.testing.assert_close(truth[:, 0], (gain_db + 24.0) / 48.0)


def test_spsa_epsilon_halves_on_plateaus_and_survives_checkpoints():
    model = make_model(gradient="spsa", spsa_epsilon=4e-3, spsa_patience=2)
    for loss in (1.0, 1.1, 1.2):  # a best, then two without improvement
        model._spsa_schedule(loss)
    assert model.processor.epsilon == pytest.approx(2e-3)
    checkpoint = {}
    model.on_save_checkpoint(checkpoint)
    other = make_model(gradient="spsa", spsa_epsilon=4e-3, spsa_patience=2)
    other.on_load_checkpoint(checkpoint)
    assert other.processor.epsilon == pytest.approx(2e-3)


def test_cosine_decay_follows_the_closed_form(tmp_path):
    """lr(k) = final + (lr0 - final) (1 + cos(pi k / K)) / 2 after k of K steps."""
    import math

    import pytorch_lightning as pl

    lr0, final, max_steps = 1e-3, 1e-4, 5
    seen = []

    class RecordRate(pl.Callback):
        def on_train_batch_start(self, trainer, *args):
            seen.append((trainer.global_step, trainer.optimizers[0].param_groups[0]["lr"]))

    model = make_model(learning_rate=lr0, final_learning_rate=final)
    dm, _ = batch_from(model.chain)
    trainer = pl.Trainer(
        max_steps=max_steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[RecordRate()],
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert [step for step, _ in seen] == list(range(max_steps))
    for step, lr in seen:
        expected = final + (lr0 - final) * (1 + math.cos(math.pi * step / max_steps)) / 2
        assert lr == pytest.approx(expected, rel=1e-9)
    endless = pl.Trainer(
        max_epochs=1, max_steps=-1, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, default_root_dir=tmp_path,
    )  # fmt: skip
    with pytest.raises(ValueError, match="trainer.max_steps"):
        endless.fit(make_model(final_learning_rate=1e-5), datamodule=dm)


def test_loudness_match_reaches_the_reference_loudness_plus_the_correction():
    import pyloudnorm

    torch.manual_seed(0)
    model = make_model(loudness_match=True, loudness_correction_db=2.0).double().eval()
    assert model.controller.n_params == model.chain.parameter_size() + 1
    dm, batch = batch_from(model.chain, process_input=True)
    x, reference = batch["input"].double(), batch["reference"].double()
    with torch.no_grad():
        params, correction_db = model.predict(x, reference)
        y, same_params = model(x, reference)
        unmatched = model.chain(x, params)
    assert params.shape == (2, model.chain.parameter_size())
    torch.testing.assert_close(same_params, params)
    assert correction_db.shape == (2,) and (correction_db.abs() <= 2.0).all()
    meter = pyloudnorm.Meter(SR)
    for b in range(2):
        # The stage is a gain: y is the chain's output scaled.
        ratio = y[b, 0] / unmatched[b, 0]
        gain = ratio[unmatched[b, 0].abs() > 1e-3]
        torch.testing.assert_close(gain, gain[:1].expand_as(gain))
        # Oracle: pyloudnorm's (hard-gated) BS.1770 loudness. The soft gates differ from the
        # hard ones by well under 0.1 LU on program material.
        target_lufs = meter.integrated_loudness(reference[b, 0].numpy()) + float(correction_db[b])
        assert meter.integrated_loudness(y[b, 0].numpy()) == pytest.approx(target_lufs, abs=0.1)
    # Bounded at silence: a silent output is not amplified by a hundred dB, and a silent
    # reference mutes the output by at most MAX_MATCH_GAIN_DB plus the correction.
    from diffx.tasks.style_transfer import MAX_MATCH_GAIN_DB

    silent = torch.zeros_like(x)
    with torch.no_grad():
        muted = model.match_loudness(x, silent, torch.zeros(2, dtype=x.dtype))
    torch.testing.assert_close(muted, x * 10 ** (-MAX_MATCH_GAIN_DB / 20))
    with pytest.raises(ValueError, match="400 ms of reference"):
        model.match_loudness(x, reference[..., :1000], correction_db)


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="gradient must be one of"):
        make_model(gradient="finite_differences")
    with pytest.raises(ValueError, match="needs proxies"):
        make_model(gradient="proxy")
    with pytest.raises(ValueError, match="only with gradient: proxy"):
        make_model(proxies=["a.pt", "b.pt"])
    with pytest.raises(ValueError, match="unknown loss"):
        make_model(losses={"l2": 1.0})
    with pytest.raises(ValueError, match="loudness_correction_db must lie in"):
        make_model(loudness_match=True, loudness_correction_db=-1.0)
    with pytest.raises(ValueError, match="loudness_match must be true or false"):
        make_model(loudness_match="yes")
    with pytest.raises(ValueError, match="final_learning_rate must lie in"):
        make_model(learning_rate=1e-4, final_learning_rate=1e-3)
    with pytest.raises(ValueError, match="chain runs at sample_rate"):
        make_model(chain=EffectChain([Gain(44100)]))
    with pytest.raises(ValueError, match="embed_dim"):
        StyleTransfer(encoder=torch.nn.Identity(), sample_rate=SR)
    with pytest.raises(ValueError, match="compile must be true or false"):
        make_model(compile="yes")
    with pytest.raises(ValueError, match="fast_loss_backward must be true or false"):
        make_model(fast_loss_backward=1)


@pytest.mark.slow
def test_speed_options_give_the_default_loss_and_gradients_to_rounding():
    chain = EffectChain([ParametricEQ(SR), Compressor(SR)])
    _, batch = batch_from(chain)
    results = {}
    for name, options in [("default", {}), ("fast", dict(fast_loss_backward=True)),
                          ("both", dict(compile=True, fast_loss_backward=True))]:  # fmt: skip
        torch.manual_seed(0)
        model = make_model(chain=chain, losses={"mrstft": 1.0, "mel_stft": 1.0, "l1": 100.0},
                           **options)  # fmt: skip
        pred, _ = model(batch["input"], batch["reference"])
        loss = model.loss(pred, batch["target"])
        loss.backward()
        results[name] = (loss.detach(), model.encoder.cnn[0].weight.grad)
    loss, grad = results["default"]
    assert torch.equal(results["fast"][0], loss)  # the fast backward keeps the value
    torch.testing.assert_close(results["both"][0], loss, rtol=1e-5, atol=0)
    for name in ("fast", "both"):
        scale = grad.abs().max()
        torch.testing.assert_close(results[name][1] / scale, grad / scale, rtol=0, atol=1e-4)


@requires_pedalboard
def test_autodiff_refuses_effects_without_gradients():
    from diffx.effects import PedalboardCompressor

    with pytest.raises(ValueError, match="no gradient"):
        make_model(chain=EffectChain([PedalboardCompressor(SR)]))
    make_model(chain=EffectChain([PedalboardCompressor(SR)]), gradient="spsa")


def test_evaluation_reports_model_and_input_metrics():
    model = make_model().eval()
    dm, batch = batch_from(model.chain, process_input=True)
    metrics = model.evaluate(batch, dm.chain)
    for name in ("loss", "mrstft", "lufs_error_lu", "input_mrstft", "param_error"):
        assert metrics[name].shape == (2,) and torch.isfinite(metrics[name]).all(), name
    # The input's own metrics are those of the input against the target, computed directly.
    from diffx.analysis.style_transfer import style_metrics

    direct = style_metrics(batch["input"], batch["target"], SR)
    torch.testing.assert_close(metrics["input_mrstft"], direct["mrstft"])


def test_proxy_training_lowers_the_error_on_a_fixed_batch():
    torch.manual_seed(0)
    effect = Gain(SR)
    task = ProxyTraining(effect, sample_rate=SR, n_blocks=2, channels=8, kernel_size=3,
                         learning_rate=1e-2, losses={"l1": 1.0})  # fmt: skip
    _, batch = batch_from(EffectChain([Gain(SR)]), samples=8000)
    optimizer = task.configure_optimizers()
    generator = torch.Generator().manual_seed(0)
    x, params, target = task._pair(batch, generator)
    torch.testing.assert_close(target, effect(x, params))  # the oracle is the effect itself
    first = None
    for _ in range(60):
        loss = task.loss(task(x, params), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = float(loss.detach()) if first is None else first
    assert float(loss.detach()) < 0.5 * first


@pytest.mark.parametrize("level", [0.0, 1.0], ids=["silence", "full_scale"])
@pytest.mark.parametrize("gradient", ["autodiff", "spsa", "proxy", "autodiff_loudness_match"])
def test_silence_and_full_scale_give_finite_losses_and_gradients(level, gradient):
    torch.manual_seed(0)
    chain = EffectChain([ParametricEQ(SR), Compressor(SR)])
    kwargs = {}
    if gradient == "proxy":
        kwargs["proxies"] = [
            NeuralProxy.for_effect(e, n_blocks=2, channels=4, kernel_size=3) for e in chain.effects
        ]
    if gradient == "autodiff_loudness_match":
        gradient, kwargs["loudness_match"] = "autodiff", True
    model = make_model(chain=chain, gradient=gradient, **kwargs)
    n = 8000
    square = torch.sign(torch.sin(torch.arange(n) * 2 * torch.pi * 220 / SR)).reshape(1, 1, n)
    x = (level * square).expand(2, 1, n).contiguous()
    pred, params = model(x, x)
    loss = model.loss(pred, x)
    loss.backward()
    assert torch.isfinite(pred).all() and torch.isfinite(loss)
    grads = [p.grad for p in model.controller.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # Extreme predicted settings (every parameter at an end of its range) stay finite too.
    for end in (0.0, 1.0):
        corner = torch.full_like(params, end, requires_grad=True)
        y = model.processor(x, corner)
        (g,) = torch.autograd.grad(y.square().mean(), corner)
        assert torch.isfinite(y).all() and torch.isfinite(g).all()


def test_no_logger_means_no_run_folder_so_nothing_is_exported(tmp_path):
    """Lightning's log_dir falls back to default_root_dir without a logger; exports must not
    land there unasked (a notebook's folder)."""
    from pytorch_lightning.loggers import CSVLogger

    task = ProxyTraining(Gain(SR), sample_rate=SR, n_blocks=2, channels=8, kernel_size=3)
    task.trainer = pl.Trainer(logger=False, default_root_dir=tmp_path, enable_progress_bar=False)
    assert task.run_dir() is None
    assert task.export_model(task.proxy, "proxy", "the proxy") is None
    assert not list(tmp_path.iterdir())
    task.trainer = pl.Trainer(logger=CSVLogger(tmp_path / "logs"), enable_progress_bar=False)
    assert task.run_dir() == tmp_path / "logs" / "lightning_logs" / "version_0"


def test_stereo_model_hears_the_references_width_and_scores_a_stereo_chain():
    """A chain that ends in stereo: with ``stereo`` the encoder hears mid and side, so a
    reference that differs only in width (same mid) changes the predicted parameters; without
    it the reference's width is inaudible to the model."""
    from diffx.effects import Pan, StereoWidth

    chain = EffectChain([Gain(SR), Pan(SR), StereoWidth(SR)])
    dm, batch = batch_from(chain)
    assert batch["input"].shape[1] == 1 and batch["target"].shape[1] == 2
    side_scaled = batch["target"].clone()
    mid = side_scaled.mean(1, keepdim=True)
    side_scaled = mid + (side_scaled - mid) * 0.25  # same mid, a quarter of the side
    torch.manual_seed(0)
    for stereo in (False, True):
        model = make_model(chain=chain, stereo=stereo, losses={"mrstft": 1.0, "sum_diff": 1.0})
        model.eval()
        with torch.no_grad():
            p_wide = model.predict_parameters(batch["input"], batch["target"])
            p_narrow = model.predict_parameters(batch["input"], side_scaled)
            metrics = model.evaluate(batch, dm.chain)
        changed = float((p_wide - p_narrow).abs().max())
        assert (changed > 1e-4) if stereo else (changed < 1e-6), (stereo, changed)
        assert metrics["input_mrstft"].shape == (2,) and bool(torch.isfinite(metrics["loss"]).all())
    with pytest.raises(ValueError, match="3 channels"):
        model.predict_parameters(batch["input"], torch.zeros(2, 3, 8000))

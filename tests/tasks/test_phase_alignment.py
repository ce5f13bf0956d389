"""Phase alignment end to end on real audio, against known filters and scipy."""

import numpy as np
import pytest
import scipy.signal
import torch

from diffx.analysis.phase_alignment import apply_delay, parallel_mix
from diffx.data import PhaseAlignmentDataModule
from diffx.functional import allpass_cascade, allpass_sos
from diffx.io import load_demo
from diffx.nn import BiasNet
from diffx.tasks import PhaseAlignment
from diffx.tasks.phase_alignment import fit_channel, shift

SR = 44100
TRUE = dict(pole_radius=torch.tensor([0.9, 0.8, 0.95, 0.7]),
            freq_hz=torch.tensor([150.0, 900.0, 3000.0, 7000.0]))  # fmt: skip


@pytest.fixture(scope="module")
def guitar():
    x, _ = load_demo("guitar_clean", sample_rate=SR)
    return x[0, : 6 * SR].double()


@pytest.mark.slow
def test_known_allpass_phase_is_recovered_within_5_degrees(guitar):
    wet = allpass_cascade(guitar[None, None], SR, "second_order", **TRUE)[0, 0]
    alignment, task = fit_channel(guitar, wet, SR, n_second=4, steps=1500, weighting="coherence",
                                  progress=False)  # fmt: skip
    freqs = np.geomspace(50, 10000, 500)
    true_sos = allpass_sos(SR, "second_order", **TRUE)[0].numpy()
    _, h_true = scipy.signal.sosfreqz(true_sos, worN=freqs, fs=SR)
    _, h_fit = scipy.signal.sosfreqz(alignment.sos, worN=freqs, fs=SR)
    h_fit = alignment.polarity * h_fit * np.exp(-2j * np.pi * freqs / SR * alignment.delay_samples)
    error_deg = np.degrees(np.abs(np.angle(h_fit / h_true)))
    assert error_deg.max() < 5.0
    # and the mix: the aligned dry sums with the wet almost without loss
    before = parallel_mix(guitar, wet)
    after = parallel_mix(alignment.apply(guitar.numpy()), wet)
    assert before.comb_loss_db < -3.0
    assert after.comb_loss_db > -0.05


def test_exported_alignment_reproduces_the_task_with_scipy(guitar):
    # Faded ends: the fractional delay's sinc interpolation then sees no abrupt end, where the
    # task (which cuts the bulk-shifted dry) and the export (which shifts the whole) differ.
    x = guitar[:SR] * torch.from_numpy(scipy.signal.windows.tukey(SR, 0.2))
    y = torch.from_numpy(scipy.signal.lfilter([0.5, 0.5], [1.0], x.numpy()))  # a gentle low-pass
    data = PhaseAlignmentDataModule.from_tensors(x[None].float(), y[None].float(), SR,
                                                 bulk_delay_samples=3, polarity=-1)  # fmt: skip
    task = PhaseAlignment(SR, BiasNet(SR, "mixed", n_second=2, n_first=1, hidden_sizes=(16, 8)))
    data.setup("fit")
    task.set_target(data.response, data.bulk.delay_samples, data.bulk.polarity)
    with torch.no_grad():
        task.delay.fill_(-1.3)
        ours = task(data.dry_aligned[None].double())[0, 0].numpy()
    alignment = task.alignment()
    assert alignment.delay_samples == pytest.approx(3 - 1.3)
    assert alignment.polarity == -1
    theirs = alignment.apply(x.float().double().numpy())
    # The task filters the bulk-shifted dry (float32); the export applies everything to the raw
    # dry in float64; the bulk shift of 3 samples drops the dry's last 3 samples.
    np.testing.assert_allclose(ours[:-3], theirs[:-3], atol=1e-6)


def test_shift_matches_apply_delay():
    x = torch.randn(1, 1, 2000, dtype=torch.float64)
    for delay in (0.0, 2.5, -3.25, 7.0):
        y = shift(x, torch.tensor(delay, dtype=torch.float64))[0, 0].numpy()
        expected = apply_delay(x[0, 0].numpy(), delay)
        np.testing.assert_allclose(y, expected, atol=1e-9)


def test_delay_gradient_matches_finite_differences():
    x = torch.randn(1, 1, 1000, dtype=torch.float64)
    target = torch.randn(1, 1, 1000, dtype=torch.float64)
    d = torch.tensor(0.37, dtype=torch.float64, requires_grad=True)
    loss = (shift(x, d) * target).sum()
    (grad,) = torch.autograd.grad(loss, d)
    h = 1e-6
    plus = (shift(x, torch.tensor(0.37 + h, dtype=torch.float64)) * target).sum()
    minus = (shift(x, torch.tensor(0.37 - h, dtype=torch.float64)) * target).sum()
    assert float(grad) == pytest.approx(float(plus - minus) / (2 * h), rel=1e-5)


@pytest.mark.parametrize("losses", [{"ncc": 1.0}, {"esr": 1.0, "complex_stft": 0.1},
                                    {"parallel_mix": 1.0, "l1": 1.0}, {"group_delay": 1.0}])
def test_every_loss_trains(guitar, losses):
    import pytorch_lightning as pl

    x = guitar[: 2 * SR].float()
    y = torch.from_numpy(scipy.signal.lfilter([0.7, 0.3], [1.0], x.numpy())).float()
    data = PhaseAlignmentDataModule.from_tensors(x[None], y[None], SR, crop_samples=4096,
                                                 batch_size=2, steps_per_epoch=3)  # fmt: skip
    task = PhaseAlignment(SR, BiasNet(SR, n_second=2, hidden_sizes=(16, 8)), losses=losses,
                          export_stem=None, measurement=data.measurement)  # fmt: skip
    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0)  # fmt: skip
    trainer.fit(task, datamodule=data)
    assert trainer.global_step == 3
    for name in losses:
        assert torch.isfinite(trainer.callback_metrics[f"train/{name}"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(losses={"phasey": 1.0}), "unknown loss"),
        (dict(losses={"phase": -1.0}), "weights >= 0"),
        (dict(weighting="loud"), "weighting must be one of"),
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(cascade=BiasNet(48000)), "cascade.sample_rate"),
    ],
)
def test_bad_task_configuration_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PhaseAlignment(SR, **kwargs)


@pytest.mark.parametrize(
    "dry, wet, message",
    [
        (torch.zeros(1, 1000), torch.ones(1, 1000), "dry is silent"),
        (torch.ones(1, 1000), torch.ones(1, 900), "differ in length"),
        (torch.ones(1, 1000), torch.full((1, 1000), float("nan")), "wet contains NaN"),
        (torch.ones(2, 1000), torch.ones(2, 1000), "one channel"),
    ],
)
def test_bad_pairs_are_refused_by_name(dry, wet, message):
    with pytest.raises(ValueError, match=message):
        PhaseAlignmentDataModule.from_tensors(dry, wet, SR)


def test_data_module_needs_exactly_one_wet_source():
    with pytest.raises(ValueError, match="exactly one of wet"):
        PhaseAlignmentDataModule(SR, dry="guitar_clean")
    with pytest.raises(ValueError, match="is neither a demo clip"):
        PhaseAlignmentDataModule(SR, dry="guitar_clean", wet="no_such_file.wav").setup()


def test_fit_resumes_from_the_last_checkpoint(tmp_path):
    from pathlib import Path

    from diffx.commands.train import build_cli

    config = Path(__file__).resolve().parents[2] / "configs/phase_alignment/quickstart.yaml"
    common = [
        f"--config={config}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
        "--trainer.check_val_every_n_epoch=1",
        "--data.init_args.steps_per_epoch=3",
    ]
    build_cli(["fit", *common, "--trainer.max_steps=6"])
    last = tmp_path / "quickstart" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert saved["global_step"] == 6
    # Another seed: a fresh start would make other weights; a resumed run at its step limit
    # holds exactly the saved ones.
    resumed = build_cli(["fit", *common, "--seed_everything=1", "--trainer.max_steps=6",
                          "--ckpt_path=last"])  # fmt: skip
    assert resumed.trainer.global_step == 6
    for name, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, saved["state_dict"][name], msg=name)
    fresh = build_cli(["fit", *common, "--seed_everything=1", "--trainer.max_steps=1",
                        f"--trainer.logger.init_args.save_dir={tmp_path / 'fresh'}"])  # fmt: skip
    net = "cascade.second.0.input_bias"
    assert not torch.equal(fresh.model.state_dict()[net], saved["state_dict"][net])


@pytest.mark.parametrize("kind, extra", [("second_order", {}),
                                         ("warped_stretched", {"n_first": 1})])
def test_fit_start_is_the_known_cascade_before_any_training(guitar, kind, extra):
    x = guitar[: 3 * SR]
    wet = allpass_cascade(x[None, None], SR, "second_order", **TRUE)[0, 0]
    data = PhaseAlignmentDataModule.from_tensors(x[None].float(), wet[None].float(), SR)
    task = PhaseAlignment(SR, BiasNet(SR, kind, n_second=5, hidden_sizes=(32, 16), **extra))
    data.setup("fit")
    task.set_target(data.response, data.bulk.delay_samples, data.bulk.polarity)
    assert task.phase_error_deg() > 30  # the networks' own start is far off
    task.initialize_from_fit()
    assert task.phase_error_deg() < 1.0
    alignment = task.alignment()
    freqs = np.geomspace(50, 15000, 300)
    true_sos = allpass_sos(SR, "second_order", **TRUE)[0].numpy()
    _, h_true = scipy.signal.sosfreqz(true_sos, worN=freqs, fs=SR)
    _, h_fit = scipy.signal.sosfreqz(alignment.sos, worN=freqs, fs=SR)
    h_fit = alignment.polarity * h_fit * np.exp(-2j * np.pi * freqs / SR * alignment.delay_samples)
    assert np.degrees(np.abs(np.angle(h_fit / h_true))).max() < 5.0
    assert parallel_mix(alignment.apply(x.numpy()), wet).comb_loss_db > -0.01


def test_unknown_init_is_named():
    with pytest.raises(ValueError, match="init must be one of"):
        PhaseAlignment(SR, init="zeros")

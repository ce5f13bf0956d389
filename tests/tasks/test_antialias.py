"""Anti-aliasing fine-tuning: teacher frozen, student learns the bandlimited target."""

import math

import pytest
import pytorch_lightning as pl
import torch

from diffx.analysis import aliasing_metrics, bandlimit, chromatic_test_set
from diffx.data import ToneDataModule
from diffx.io import load_model
from diffx.losses import NMRLoss
from diffx.losses.filters import AntialiasLowpass
from diffx.tasks import AntiAliasFineTuning
from diffx.tasks.base import tbptt_frames


def _trainer(tmp_path, max_steps, **kwargs):
    return pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=pl.loggers.TensorBoardLogger(tmp_path / "logs", name="run", version=""),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def _data(**kwargs):
    defaults = dict(
        num_tones=64,
        duration_s=0.3,
        batch_size=4,
        val_audio=["voice2"],
        midi_low=60,
        midi_high=108,
    )
    defaults.update(kwargs)
    return ToneDataModule(**defaults)


def test_tbptt_frames_cover_the_signal_and_merge_a_short_tail():
    assert tbptt_frames(100, 20, 30) == [(20, 50), (50, 80), (80, 100)]
    assert tbptt_frames(100, 20, 30, min_frame=25) == [(20, 50), (50, 100)]
    with pytest.raises(ValueError, match="no samples"):
        tbptt_frames(10, 10, 5)


def test_first_step_loss_matches_an_independent_computation(lstm_teacher_path, tmp_path):
    """With a vanishing step size the student stays the teacher, so the logged loss is the
    teacher's own aliasing measured against its bandlimited output, frame by frame."""
    task = AntiAliasFineTuning(str(lstm_teacher_path), learning_rate=1e-30, val_midi_step=22)
    # two tones in one batch: the batch holds both whatever the shuffle
    data = _data(num_tones=2, batch_size=2, duration_s=0.3)
    trainer = _trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(task, datamodule=data)
    batch = next(iter(data.train_dataloader()))
    x, f0 = batch["input"], batch["f0_hz"]
    teacher = load_model(lstm_teacher_path)
    with torch.no_grad():
        y = teacher(x)
    n = x.shape[-1]
    warmup = round(0.2 * n) + (n - round(0.2 * n)) % 2
    target, _ = bandlimit(y[..., warmup:], f0, 44100)
    lowpass, nmr = AntialiasLowpass(44100), NMRLoss(44100, output="db")
    expected = []
    for start, stop in tbptt_frames(n, warmup, max(round(0.1 * n), 4096), 4096):
        pred_e = lowpass(y[..., start:stop])
        target_e = lowpass(target[..., start - warmup : stop - warmup])
        err = ((pred_e - target_e) ** 2).sum(-1) / (target_e**2).sum(-1)
        expected.append(err.mean() + 10 ** (nmr(pred_e, target_e) / 10))
    logged = trainer.callback_metrics["train/loss_epoch"]
    torch.testing.assert_close(logged, torch.stack(expected).mean(), rtol=1e-4, atol=1e-7)


def test_fine_tuning_reduces_aliasing_and_keeps_the_teacher(lstm_teacher_path, tmp_path):
    # With a cosine decay to 2e-4, 60 steps cut the NMR-S by 1.2 to 2.7 dB over six seeds of
    # the tones (0-5); a constant 5e-3 (this test before issue 20) ranged from -4.0 to +0.7 dB
    # (worse) with the seed and passed its -3 dB check by the luck of one draw.
    task = AntiAliasFineTuning(
        str(lstm_teacher_path), learning_rate=5e-3, final_learning_rate=2e-4,
        val_levels_dbfs=[-6.0], val_midi_step=8,
    )  # fmt: skip
    teacher_before = {k: v.clone() for k, v in task.teacher.state_dict().items()}
    trainer = _trainer(tmp_path, max_steps=60, limit_val_batches=1, val_check_interval=10)
    trainer.fit(task, datamodule=_data())
    for key, value in task.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    tones = chromatic_test_set(44100, levels_dbfs=[-6.0], midi_low=60, midi_high=108)
    before = aliasing_metrics(task.teacher, 44100, tones, progress=False).means_db()["nmr_s"]
    after = aliasing_metrics(task.student, 44100, tones, progress=False).means_db()["nmr_s"]
    assert after < before - 1.0, (before, after)
    assert (
        trainer.callback_metrics["val/teacher_nmr_s_db"] > trainer.callback_metrics["val/nmr_s_db"]
    )
    # the exported student is the trained one
    exported = load_model(tmp_path / "logs" / "run" / "student.json")
    for key, value in task.student.state_dict().items():
        torch.testing.assert_close(exported.state_dict()[key], value)


def test_the_best_student_on_validation_is_exported(lstm_teacher_path, tmp_path):
    """With a ModelCheckpoint on val/loss the export holds that checkpoint's weights (read
    back from the .ckpt file), also when a non-monitoring checkpoint callback comes first."""
    # With a cosine decay to 2e-4, 60 steps cut the NMR-S by 1.2 to 2.7 dB over six seeds of
    # the tones (0-5); a constant 5e-3 (this test before issue 20) ranged from -4.0 to +0.7 dB
    # (worse) with the seed and passed its -3 dB check by the luck of one draw.
    task = AntiAliasFineTuning(
        str(lstm_teacher_path), learning_rate=5e-3, final_learning_rate=2e-4,
        val_levels_dbfs=[-6.0], val_midi_step=8,
    )  # fmt: skip
    keep_last = pl.callbacks.ModelCheckpoint(tmp_path / "ckpt", save_last=True)
    best = pl.callbacks.ModelCheckpoint(
        tmp_path / "ckpt", monitor="val/loss", filename="best-{step}", save_top_k=1
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=12,
        logger=pl.loggers.TensorBoardLogger(tmp_path / "logs", name="run", version=""),
        callbacks=[keep_last, best],
        limit_val_batches=1,
        val_check_interval=2,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(task, datamodule=_data())
    assert "best-step=" in best.best_model_path
    state = torch.load(best.best_model_path, weights_only=False)["state_dict"]
    exported = load_model(tmp_path / "logs" / "run" / "student.json").state_dict()
    for key, value in exported.items():
        torch.testing.assert_close(value, state[f"student.{key}"].float())


def test_wavenet_student_trains_over_frames(wavenet_teacher_path, tmp_path):
    task = AntiAliasFineTuning(str(wavenet_teacher_path), learning_rate=1e-3, val_midi_step=22)
    trainer = _trainer(tmp_path, max_steps=4, limit_val_batches=1, val_check_interval=1)
    trainer.fit(task, datamodule=_data(duration_s=0.5))
    assert trainer.global_step == 4
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    assert (tmp_path / "logs" / "run" / "student.nam").is_file()


def test_cosine_decay_follows_the_closed_form(lstm_teacher_path, tmp_path):
    """lr(k) = final + (lr0 - final) (1 + cos(pi k / K)) / 2 after k of K optimizer steps."""
    lr0, final, max_steps = 1e-3, 1e-4, 6
    seen = []

    class RecordRate(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            seen.append((trainer.global_step, trainer.optimizers[0].param_groups[0]["lr"]))

    task = AntiAliasFineTuning(
        str(lstm_teacher_path), learning_rate=lr0, final_learning_rate=final, val_midi_step=22
    )
    trainer = _trainer(tmp_path, max_steps, limit_val_batches=0, callbacks=[RecordRate()])
    trainer.fit(task, datamodule=_data())
    assert trainer.global_step == max_steps and len(seen) > 1  # several frames per batch
    for step, lr in seen:
        expected = final + (lr0 - final) * (1 + math.cos(math.pi * step / max_steps)) / 2
        assert lr == pytest.approx(expected, rel=1e-9)


def test_cosine_decay_without_max_steps_is_refused(lstm_teacher_path, tmp_path):
    task = AntiAliasFineTuning(str(lstm_teacher_path), learning_rate=1e-3, final_learning_rate=1e-4)
    trainer = _trainer(tmp_path, max_steps=-1, max_epochs=1, limit_val_batches=0)
    with pytest.raises(ValueError, match="trainer.max_steps"):
        trainer.fit(task, datamodule=_data())


def test_bad_arguments(lstm_teacher_path, tmp_path):
    with pytest.raises(ValueError, match="48000"):
        AntiAliasFineTuning(str(lstm_teacher_path), sample_rate=48000)
    with pytest.raises(ValueError, match="nmr_weight"):
        AntiAliasFineTuning(str(lstm_teacher_path), nmr_weight=-1.0)
    with pytest.raises(ValueError, match="warmup_fraction"):
        AntiAliasFineTuning(str(lstm_teacher_path), warmup_fraction=1.0)
    with pytest.raises(ValueError, match="missing.json"):
        AntiAliasFineTuning(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="final_learning_rate"):
        AntiAliasFineTuning(str(lstm_teacher_path), learning_rate=1e-4, final_learning_rate=1e-3)

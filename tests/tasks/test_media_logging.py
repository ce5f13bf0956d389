"""AudioTask.log_audio / log_figure reach every Lightning logger: TensorBoard summaries, W&B
media, and files in the run folder for loggers without media (CSV)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch
from matplotlib.figure import Figure
from PIL import Image

from diffx.tasks.base import AudioTask

SR = 8000
SAMPLES = 4000
FIGURE_PX = (100, 75)  # width, height: 2 x 1.5 inches at 50 dpi
STEPS = 2  # validation runs once, after both training steps


def sine() -> torch.Tensor:
    """Half-scale 440 Hz, ``(samples,)`` float32."""
    n = torch.arange(SAMPLES, dtype=torch.float64)
    return (0.5 * torch.sin(2 * math.pi * 440.0 * n / SR)).float()


class MediaTask(AudioTask):
    """Trains one weight; its validation logs a sine and a figure."""

    def __init__(self):
        super().__init__()
        self.sample_rate = SR
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def training_step(self, batch, batch_idx):
        return (self.weight - batch.mean()) ** 2

    def validation_step(self, batch, batch_idx):
        self.log_audio("val/sine", sine())
        figure = Figure(figsize=(2, 1.5), dpi=50)
        figure.add_subplot().plot(sine()[:100].numpy())
        self.log_figure("val/figure", figure)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(loggers) -> MediaTask:
    task = MediaTask()
    batches = torch.utils.data.DataLoader(torch.ones(STEPS, 3), batch_size=1)
    trainer = pl.Trainer(
        max_steps=STEPS, logger=loggers, accelerator="cpu", enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=1,
    )  # fmt: skip
    trainer.fit(task, train_dataloaders=batches, val_dataloaders=batches)
    assert trainer.global_step == STEPS
    return task


def check_png(data: bytes) -> None:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == FIGURE_PX


def test_tensorboard_gets_summaries_and_csv_gets_files(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator

    tensorboard = pl.loggers.TensorBoardLogger(tmp_path, name="tb", version="")
    csv = pl.loggers.CSVLogger(tmp_path, name="csv", version="")
    fit([tensorboard, csv])

    events = event_accumulator.EventAccumulator(
        tensorboard.log_dir, size_guidance={event_accumulator.AUDIO: 0, event_accumulator.IMAGES: 0}
    )
    events.Reload()
    (audio,) = events.Audio("val/sine")
    assert (audio.step, audio.sample_rate, audio.length_frames) == (STEPS, SR, SAMPLES)
    decoded, rate = sf.read(io.BytesIO(audio.encoded_audio_string), dtype="float32")
    assert rate == SR
    # 16-bit PCM as TensorBoard writes it (scaled by 2^15 - 1, truncated)
    pcm = (sine().numpy() * (2**15 - 1)).astype(np.int16)
    np.testing.assert_array_equal(decoded, pcm / np.float32(2**15))
    (image,) = events.Images("val/figure")
    assert (image.step, image.width, image.height) == (STEPS, *FIGURE_PX)

    media = tmp_path / "csv" / "media" / "val"
    written, rate = sf.read(media / "sine" / f"step_{STEPS}.wav", dtype="float32")
    assert rate == SR
    np.testing.assert_array_equal(written, sine().numpy())  # float WAV: exact
    check_png((media / "figure" / f"step_{STEPS}.png").read_bytes())
    # TensorBoard took the media itself: no files beside its events
    assert not (tmp_path / "tb" / "media").exists()


def test_wandb_offline_run_holds_the_media(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = pl.loggers.WandbLogger(offline=True, save_dir=str(tmp_path), project="diffx-test")
    try:
        fit([logger])
    finally:
        logger.experiment.finish()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    (wav,) = (run / "files" / "media" / "audio").rglob("*.wav")
    written, rate = sf.read(wav, dtype="float32")
    assert rate == SR
    np.testing.assert_allclose(written, sine().numpy(), atol=1 / 2**15)
    (png,) = (run / "files" / "media" / "images").rglob("*.png")
    check_png(png.read_bytes())


def test_without_a_logger_nothing_is_logged_and_nothing_fails(tmp_path):
    task = fit(False)
    assert not task.has_media_logger()
    task.log_audio("val/sine", sine())  # no trainer attached to a logger: a no-op

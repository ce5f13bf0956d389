"""`diffx fit` / `test` / `timbre` for timbre transfer: a short run through the CLI, then the
checkpoint plays a real voice clip."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from diffx.analysis.features import (
    detect_notes,
    loudness_quantiles,
    map_quantiles,
)
from diffx.commands.main import main
from diffx.commands.train import build_cli
from diffx.io.audio import demo_audio_files, load_audio
from diffx.tasks.runs import load_timbre_model
from diffx.tasks.timbre_transfer import transfer_timbre
from tests.test_cli import quick_overrides

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "timbre_transfer" / "quickstart.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("timbre")
    cache = tmp_path_factory.getbasetemp() / "timbre_features"
    cli = build_cli(["fit", f"--config={CONFIG}", *quick_overrides(CONFIG, tmp_path, {}, cache)])
    return cli, Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"


def test_fit_keeps_the_training_statistics_and_test_reports_the_metrics(run):
    cli, checkpoint = run
    stats = cli.datamodule.statistics()
    model = load_timbre_model(checkpoint)
    assert model.crepe_model == "tiny" and model.decoder.gru.hidden_size == 16
    assert float(model.mean_pitch_midi) == pytest.approx(stats["mean_pitch_midi"], abs=1e-4)
    np.testing.assert_allclose(model.loudness_quantiles_db.numpy(),
                               stats["loudness_quantiles_db"], atol=1e-4)  # fmt: skip
    # The violin phrases sit between G3 and A6 (MIDI 55-93).
    assert 55 < stats["mean_pitch_midi"] < 93
    for name in ("spectral_loss", "loudness_error_db", "f0_error_cents", "f0_within_50_cents"):
        assert np.isfinite(float(cli.trainer.callback_metrics[f"val/{name}"]))

    test = build_cli(["test", f"--config={checkpoint.parent / 'config.yaml'}",
                       f"--ckpt_path={checkpoint}", "--trainer.enable_progress_bar=false",
                       "--trainer.limit_test_batches=1"])  # fmt: skip
    assert np.isfinite(float(test.trainer.callback_metrics["test/spectral_loss"]))


def test_timbre_command_writes_the_transfer_and_plot(run, tmp_path, capsys):
    _, checkpoint = run
    voice = demo_audio_files()["voice"]
    out, plot = tmp_path / "out.wav", tmp_path / "out.png"
    args = ["timbre", "--input", str(voice), "--ckpt", str(checkpoint), "--out", str(out),
            "--pitch-shift", "auto", "--loudness-shift", "-3", "--plot", str(plot)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "notes detected" in printed and "suggests" in printed
    written, rate = sf.read(out, dtype="float32")
    assert rate == 16000 and plot.stat().st_size > 10_000
    assert written.size == round(sf.info(voice).duration * 16000)
    # The file is what transfer_timbre returns for the same settings (same noise seed).
    model = load_timbre_model(checkpoint)
    audio, _ = load_audio(voice, sample_rate=16000, mono=True)
    expected = transfer_timbre(model, audio[0], "auto", -3.0).audio
    np.testing.assert_allclose(written, expected, atol=1e-4)  # 16-bit rounding


def test_frames_without_notes_are_turned_down(run):
    _, checkpoint = run
    model = load_timbre_model(checkpoint)
    audio, _ = load_audio(demo_audio_files()["voice"], sample_rate=16000, mono=True)
    result = transfer_timbre(model, audio[0])
    mask, strength = detect_notes(result.loudness_db, result.confidence)
    mapped = map_quantiles(result.loudness_db, loudness_quantiles(result.loudness_db[mask]),
                           model.loudness_quantiles_db.numpy())  # fmt: skip
    np.testing.assert_allclose(result.loudness_control_db, np.maximum(
        mapped - 20.0 * (1 - strength), -120.0), atol=1e-6)  # fmt: skip


def test_timbre_command_names_bad_input(run, tmp_path, capsys):
    _, checkpoint = run
    voice = str(demo_audio_files()["voice"])
    out = str(tmp_path / "o.wav")
    assert main(["timbre", "--input", voice, "--ckpt", str(tmp_path / "no.ckpt"),
                 "--out", out]) == 2  # fmt: skip
    assert "no.ckpt" in capsys.readouterr().err
    assert main(["timbre", "--input", str(tmp_path / "missing.wav"), "--ckpt",
                 str(checkpoint), "--out", out]) == 2  # fmt: skip
    assert "missing.wav" in capsys.readouterr().err
    assert main(["timbre", "--input", voice, "--ckpt", str(checkpoint), "--out", out,
                 "--pitch-shift", "high"]) == 2  # fmt: skip
    assert "high" in capsys.readouterr().err
    nan_file = tmp_path / "nan.wav"
    sf.write(nan_file, np.full(1600, np.nan), 16000, subtype="FLOAT")
    assert main(["timbre", "--input", str(nan_file), "--ckpt", str(checkpoint),
                 "--out", out]) == 2  # fmt: skip
    assert "NaN" in capsys.readouterr().err
    wrong = tmp_path / "wrong.ckpt"
    torch.save({"state_dict": {}}, wrong)
    assert main(["timbre", "--input", voice, "--ckpt", str(wrong), "--out", out]) == 2
    assert "TimbreTransfer" in capsys.readouterr().err


def test_silence_in_drives_the_model_at_the_loudness_floor(run, tmp_path, capsys):
    # What the instrument plays at -120 dB is the trained model's business (a 2-step model
    # has learnt nothing); the pipeline must hand it the floor and stay finite.
    _, checkpoint = run
    model = load_timbre_model(checkpoint)
    result = transfer_timbre(model, torch.zeros(8000))
    assert not result.note_mask.any()
    assert np.all(result.loudness_control_db == -120.0)
    assert np.isfinite(result.audio).all() and np.isfinite(result.f0_control_hz).all()
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000), 16000)
    with pytest.warns(UserWarning, match="no note"):
        assert main(["timbre", "--input", str(silent), "--ckpt", str(checkpoint),
                     "--out", str(tmp_path / "o.wav")]) == 0  # fmt: skip

"""`diffx stylize`: a trained checkpoint processes a file in a reference's style."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from diffx.commands.main import main
from diffx.commands.train import build_cli
from diffx.io.audio import demo_audio_files, load_audio
from diffx.tasks.runs import load_style_model
from tests.test_cli import quick_overrides

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("stylize")
    config = ROOT / "configs" / "style_transfer" / "quickstart.yaml"
    cli = build_cli(["fit", f"--config={config}", *quick_overrides(config, tmp_path, {})])
    return Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"


def test_stylize_writes_the_processed_input_and_prints_parameters(checkpoint, tmp_path, capsys):
    files = demo_audio_files()
    out = tmp_path / "out.wav"
    args = ["stylize", "--input", str(files["guitar_em9"]), "--reference",
            str(files["violin"]), "--ckpt", str(checkpoint), "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "compressor.threshold_db" in printed and " dB" in printed and " Hz" in printed
    written, rate = sf.read(out, dtype="float64")
    assert rate == sf.info(files["guitar_em9"]).samplerate  # the input's own rate

    # Oracle: the chain run directly with the model's parameters, at the model's rate, then
    # resampled to the input's rate.
    model = load_style_model(checkpoint)
    x, _ = load_audio(files["guitar_em9"], sample_rate=model.sample_rate, mono=True)
    reference, _ = load_audio(files["violin"], sample_rate=model.sample_rate, mono=True)
    with torch.no_grad():
        params, correction_db = model.predict(x[None], reference[None])
        y = model.chain(x[None], params)[0, 0].double().numpy()
    g = np.gcd(rate, model.sample_rate)
    expected = resample_poly(y, rate // g, model.sample_rate // g)
    assert written.shape == expected.shape
    if model.loudness_match:
        # The quickstart ends with the reference-loudness stage: a gain that brings the chain's
        # output to the reference's loudness plus the predicted correction. Oracle: pyloudnorm
        # (hard gates; the model's soft gates differ by well under 0.1 LU).
        import pyloudnorm

        meter = pyloudnorm.Meter(model.sample_rate)
        gain_db = (
            meter.integrated_loudness(reference[0].double().numpy())
            + float(correction_db[0])
            - meter.integrated_loudness(y)
        )
        loud = np.abs(expected) > 1e-3
        measured_db = 20 * np.log10(np.abs(written[loud] / expected[loud]))
        np.testing.assert_allclose(measured_db, np.median(measured_db), atol=1e-3)  # one gain
        assert np.median(measured_db) == pytest.approx(gain_db, abs=0.1)
        expected = expected * 10 ** (np.median(measured_db) / 20)
    np.testing.assert_allclose(written, expected, atol=1e-5)
    # The printed values are the model's parameters in physical units.
    threshold = float(model.physical_parameters(params)["compressor.threshold_db"][0])
    assert f"{threshold:10.4g}" in printed


def test_stylize_refuses_bad_input_by_name(checkpoint, tmp_path, capsys):
    files = demo_audio_files()
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(48000), 48000)
    base = ["stylize", "--input", str(files["bass"]), "--ckpt", str(checkpoint),
            "--out", str(tmp_path / "o.wav")]  # fmt: skip
    assert main([*base, "--reference", str(silent)]) == 2
    assert "silent" in capsys.readouterr().err
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio")
    assert main([*base, "--reference", str(junk)]) == 2
    assert "junk.wav" in capsys.readouterr().err
    lonely = tmp_path / "lonely" / "model.ckpt"
    lonely.parent.mkdir()
    shutil.copy(checkpoint, lonely)
    args = ["stylize", "--input", str(files["bass"]), "--reference", str(files["violin"]),
            "--ckpt", str(lonely), "--out", str(tmp_path / "o.wav")]  # fmt: skip
    assert main(args) == 2
    assert "config.yaml" in capsys.readouterr().err

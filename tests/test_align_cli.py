"""``diffx align`` on files: outputs, reuse of the exported filter, and bad input."""

import numpy as np
import pytest
import soundfile as sf
import torch

from diffx.analysis.phase_alignment import apply_delay, parallel_mix
from diffx.commands.main import main
from diffx.functional import allpass_cascade
from diffx.io import load_alignment, load_alignments, load_demo

SR = 44100


@pytest.fixture(scope="module")
def dry():
    x, _ = load_demo("guitar_clean", sample_rate=SR)
    return x[0, : 3 * SR].double().numpy() * 0.8


def _wet(dry, latency=12):
    y = allpass_cascade(torch.from_numpy(dry)[None, None], SR, "second_order",
                        pole_radius=torch.tensor([0.9, 0.7]),
                        freq_hz=torch.tensor([300.0, 2500.0]))[0, 0].numpy()  # fmt: skip
    return apply_delay(y, float(latency))


def _write(path, audio, rate=SR):
    sf.write(path, np.asarray(audio).T, rate, subtype="FLOAT")
    return str(path)


def _run(tmp_path, dry_path, wet_path, *extra):
    out = tmp_path / "aligned.wav"
    code = main(["align", "--dry", dry_path, "--wet", wet_path, "--out", str(out),
                 "--sections", "2", "--steps", "400", *extra])  # fmt: skip
    return code, out


@pytest.mark.slow
def test_align_writes_audio_filter_and_figure(tmp_path, dry, capsys):
    wet = _wet(dry)
    code, out = _run(tmp_path, _write(tmp_path / "dry.wav", dry),
                     _write(tmp_path / "wet.wav", wet))  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "as recorded" in printed and "allpass alignment" in printed
    assert out.with_suffix(".png").stat().st_size > 10_000
    aligned, rate = sf.read(out)
    assert rate == SR and aligned.shape == dry.shape
    # The written audio is the exported filter applied with scipy (24-bit file: 1e-6).
    alignment = load_alignment(out.with_suffix(".json"))
    np.testing.assert_allclose(aligned, alignment.apply(dry.astype(np.float32)), atol=2e-6)
    before, after = parallel_mix(dry, wet), parallel_mix(aligned, wet)
    assert before.comb_loss_db < -3.0
    assert after.comb_loss_db > -0.1
    assert alignment.report["allpass_alignment"]["comb_loss_db"] == pytest.approx(
        after.comb_loss_db, abs=0.01
    )


@pytest.mark.slow
def test_mono_dry_is_aligned_to_each_wet_channel_and_rates_are_matched(tmp_path, dry, capsys):
    wet = np.stack([_wet(dry, 5), -_wet(dry, 40)])
    wet_48k = np.stack([np.interp(np.arange(0, dry.size, SR / 48000), np.arange(dry.size), c)
                        for c in wet])  # fmt: skip
    code, out = _run(tmp_path, _write(tmp_path / "dry.wav", dry),
                     _write(tmp_path / "wet.wav", wet_48k, 48000))  # fmt: skip
    assert code == 0
    assert "resampling the wet from 48000 Hz" in capsys.readouterr().out
    channels = load_alignments(out.with_suffix(".json"))
    assert [a.polarity for a in channels] == [1, -1]
    aligned, _ = sf.read(out)
    assert aligned.shape == (dry.size, 2)
    with pytest.raises(ValueError, match="holds 2 channels"):
        load_alignment(out.with_suffix(".json"))


@pytest.mark.parametrize(
    "make_wet, message",
    [
        (lambda d: np.zeros_like(d), "is silent"),
        (lambda d: np.concatenate([d, np.zeros(SR)]), "more than --max-length-diff-ms"),
        (lambda d: np.stack([d, d, d]), "give equal channel counts"),
    ],
)
def test_bad_input_is_refused_by_name(tmp_path, dry, make_wet, message, capsys):
    dry_path = _write(tmp_path / "dry.wav", np.stack([dry, dry]))
    code, out = _run(tmp_path, dry_path, _write(tmp_path / "wet.wav", make_wet(dry)))
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_too_short_files_are_refused_by_name(tmp_path, dry, capsys):
    path = _write(tmp_path / "short.wav", dry[SR : SR + 10])
    assert _run(tmp_path, path, path)[0] == 2
    assert "short.wav has 10 samples: too short" in capsys.readouterr().err


def test_unreadable_file_is_named(tmp_path, dry, capsys):
    bad = tmp_path / "wet.wav"
    bad.write_text("not audio")
    assert _run(tmp_path, _write(tmp_path / "dry.wav", dry), str(bad))[0] == 2
    assert f"diffx align: error: --wet: cannot read audio file {bad}" in capsys.readouterr().err


@pytest.mark.slow
def test_clipped_input_is_aligned_with_a_warning(tmp_path, dry, capsys):
    wet = np.clip(_wet(dry) * 4, -1, 1)
    code, _ = _run(tmp_path, _write(tmp_path / "dry.wav", dry), _write(tmp_path / "wet.wav", wet))
    assert code == 0
    assert "is clipped" in capsys.readouterr().out


def test_default_fit_is_deterministic_and_finds_the_cascade(tmp_path, dry):
    wet = _wet(dry)
    dry_path, wet_path = _write(tmp_path / "dry.wav", dry), _write(tmp_path / "wet.wav", wet)
    filters = []
    for run in ("a", "b"):
        out = tmp_path / run / "aligned.wav"
        out.parent.mkdir()
        assert main(["align", "--dry", dry_path, "--wet", wet_path, "--out", str(out)]) == 0
        filters.append(load_alignment(out.with_suffix(".json")))
    np.testing.assert_array_equal(filters[0].sos, filters[1].sos)
    assert filters[0].delay_samples == filters[1].delay_samples
    # the true cascade: two second-order sections after 12 samples of latency
    a = filters[0]
    assert a.kind == "second_order" and len(a.sos) == 2
    assert a.delay_samples == pytest.approx(12.0, abs=0.01)
    radii = sorted(a.params["pole_radius"])
    np.testing.assert_allclose(radii, [0.7, 0.9], atol=1e-3)


@pytest.mark.slow
def test_biasnet_method_still_runs(tmp_path, dry, capsys):
    wet = _wet(dry)
    code, out = _run(tmp_path, _write(tmp_path / "dry.wav", dry),
                     _write(tmp_path / "wet.wav", wet), "--method", "biasnet", "--steps", "30",
                     "--no-first-order-try")  # fmt: skip
    assert code == 0
    assert load_alignment(out.with_suffix(".json")).kind in ("second_order", "none")


def test_bad_method_arguments_are_refused(tmp_path, dry):
    path = _write(tmp_path / "dry.wav", dry)
    with pytest.raises(SystemExit) as err:
        main(["align", "--dry", path, "--wet", path, "--out", str(tmp_path / "o.wav"),
              "--method", "fit", "--sections", "0"])  # fmt: skip
    assert err.value.code == 2

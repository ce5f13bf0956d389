"""Tests for scripts/antialias_report.py on tiny random models, short tones and short clips.

Oracles: identities of the metrics (a model against itself: HESR-T = -inf dB, ESR-T = ESR-S,
G+B ESR 0), an independently computed ESR of the student's and the teacher's outputs on the
same audio clips, the per-tone CSVs against the table (10 log10 of their mean), and the exported
file read back.
"""

from __future__ import annotations

import copy
import csv
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from diffx.io.audio import load_demo
from diffx.io.models import load_model, save_model
from diffx.nn.lstm import LSTMAmp
from diffx.nn.wavenet import WaveNet

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "antialias_report.py"
SAMPLE_RATE = 44100
CLIP_S = 0.3
# Short tones keep the test fast: 0.4 s with 0.1 s discarded leaves 13230 analysed samples,
# enough to resolve the harmonics of the lowest note (27.5 Hz).
FAST = ["--tones", "3", "--levels-dbfs", "-6", "--tone-duration-s", "0.4"]
FAST += ["--tone-discard-s", "0.1", "--no-progress"]


def _load_script():
    spec = importlib.util.spec_from_file_location("antialias_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report_script = _load_script()


def _lstm(seed: int) -> LSTMAmp:
    torch.manual_seed(seed)
    model = LSTMAmp(hidden_size=4, sample_rate=SAMPLE_RATE)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))  # strong enough to distort (and alias)
    return model


def _read_table(path: Path) -> dict[str, dict[str, float]]:
    with open(path) as f:
        return {r.pop("row"): {k: float(v) for k, v in r.items()} for r in csv.DictReader(f)}


def _column(path: Path, name: str) -> np.ndarray:
    with open(path) as f:
        return np.array([float(r[name]) for r in csv.DictReader(f)])


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lstm")
    teacher, student = _lstm(0), _lstm(1)
    save_model(teacher, tmp / "teacher.json")
    save_model(student, tmp / "student.json")
    out = tmp / "report"
    argv = ["--teacher", str(tmp / "teacher.json"), "--student", str(tmp / "student.json")]
    argv += ["--out", str(out), "--student-oversampled", "--export", str(tmp / "export.json")]
    argv += ["--audio", "guitar_em9", "bass", "--audio-seconds", str(CLIP_S), *FAST]
    assert report_script.main(argv) == 0
    return out, teacher, student, tmp


def test_writes_every_output_file(lstm_run):
    out, *_ = lstm_run
    rows = ["teacher", "teacher_2x", "student", "student_2x"]
    expected = ["table.md", "table.csv", "nmr_vs_f0.png", "spectrum_2394Hz.png"]
    expected += [f"metrics_{r}.csv" for r in rows]
    for name in expected:
        assert (out / name).stat().st_size > 0, name
    table = _read_table(out / "table.csv")
    assert list(table) == rows
    tone_cols = ["nmr_s_db", "esr_s_db", "nmr_t_db", "esr_t_db", "hesr_t_db"]
    audio_cols = ["audio_esr_t_pct", "audio_esr_t_db", "audio_mrstft_t"]
    assert list(table["teacher"]) == tone_cols + audio_cols
    text = (out / "table.md").read_text()
    for title in ("NMR-S (dB)", "ESR-S (dB)", "HESR-T (dB)", "G+B ESR-T (%)", "G+B MR-STFT-T"):
        assert title in text
    for row in rows:
        assert f"| {row} |" in text


def test_teacher_against_itself(lstm_run):
    out, *_ = lstm_run
    teacher = _read_table(out / "table.csv")["teacher"]
    assert teacher["hesr_t_db"] == -math.inf  # identical harmonics
    # ESR(y, bl(T)) with y = T is the model's own aliasing ratio ESR(y, bl(y)).
    assert teacher["esr_t_db"] == teacher["esr_s_db"]
    assert teacher["nmr_t_db"] == teacher["nmr_s_db"]
    assert teacher["audio_esr_t_pct"] == 0.0 and teacher["audio_esr_t_db"] == -math.inf
    assert teacher["audio_mrstft_t"] == pytest.approx(0.0, abs=1e-12)


def test_student_audio_esr_matches_an_independent_computation(lstm_run):
    out, teacher, student, _ = lstm_run
    outputs = {}
    for name, model in (("teacher", teacher), ("student", student)):
        model = copy.deepcopy(model).double()
        parts = []
        for clip in ("guitar_em9", "bass"):
            audio, _ = load_demo(clip, sample_rate=SAMPLE_RATE)
            x = audio[:, : round(CLIP_S * SAMPLE_RATE)].double()[None]
            with torch.no_grad():
                parts.append(model(x)[0, 0].numpy())
        outputs[name] = np.concatenate(parts)
    expected = np.sum((outputs["student"] - outputs["teacher"]) ** 2) / np.sum(
        outputs["teacher"] ** 2
    )
    student_row = _read_table(out / "table.csv")["student"]
    assert math.isfinite(student_row["audio_esr_t_db"])
    assert student_row["audio_esr_t_pct"] / 100 == pytest.approx(expected, rel=1e-9)
    assert student_row["audio_esr_t_db"] == pytest.approx(10 * math.log10(expected), abs=1e-8)
    assert student_row["audio_mrstft_t"] > 0


def test_table_is_the_db_mean_of_the_per_tone_metrics(lstm_run):
    out, *_ = lstm_run
    table = _read_table(out / "table.csv")
    for row in table:
        per_tone = out / f"metrics_{row}.csv"
        assert len(_column(per_tone, "f0_hz")) == 3
        for metric in ("nmr_s", "esr_s", "esr_t"):
            mean = _column(per_tone, metric).mean()
            assert table[row][f"{metric}_db"] == pytest.approx(10 * np.log10(mean), abs=1e-9)
    # The random LSTM distorts: it aliases, and oversampling changes that measurably.
    assert table["teacher"]["nmr_s_db"] > -100
    assert table["teacher_2x"]["nmr_s_db"] != pytest.approx(table["teacher"]["nmr_s_db"])


def test_export_round_trips(lstm_run):
    _, _, student, tmp = lstm_run
    exported = load_model(tmp / "export.json")
    assert exported.sample_rate == SAMPLE_RATE
    for (name, a), (_, b) in zip(student.state_dict().items(), exported.state_dict().items()):
        assert torch.equal(a, b), name


TINY_WAVENET = [
    dict(input_size=1, condition_size=1, channels=3, head_size=2, kernel_size=3, dilations=(1, 2)),
    dict(input_size=3, condition_size=1, channels=2, head_size=1, dilations=(1, 4), head_bias=True),
]


def test_wavenet_student_identical_to_teacher_gives_the_teacher_row(tmp_path):
    torch.manual_seed(0)
    teacher = WaveNet(TINY_WAVENET, head_scale=0.5, sample_rate=SAMPLE_RATE)
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn_like(p))
    table = report_script.antialias_report(
        teacher,
        copy.deepcopy(teacher),
        SAMPLE_RATE,
        tmp_path,
        tones_per_level=2,
        levels_dbfs=[-6.0],
        tone_duration_s=0.4,
        tone_discard_s=0.1,
        audio=[],
        progress=False,
    )
    assert list(table) == ["teacher", "teacher_2x", "student"]
    assert table["student"] == table["teacher"]
    assert table["teacher_2x"]["nmr_s_db"] != pytest.approx(table["teacher"]["nmr_s_db"])
    assert not any(k.startswith("audio") for k in table["teacher"])
    assert (tmp_path / "spectrum_2394Hz.png").exists()


def test_bad_arguments(tmp_path):
    model = _lstm(0)
    run = report_script.antialias_report
    with pytest.raises(ValueError, match="oversampling"):
        run(model, model, SAMPLE_RATE, tmp_path, oversampling=1)
    with pytest.raises(ValueError, match="teacher"):
        run("teacher.json", model, SAMPLE_RATE, tmp_path)
    with pytest.raises(ValueError, match="spectrum_f0_hz"):
        run(model, model, SAMPLE_RATE, tmp_path, spectrum_f0_hz=30000.0)
    with pytest.raises(ValueError, match="sample_rate"):
        run(model, model, float("nan"), tmp_path)
    with pytest.raises(ValueError, match="input_size"):
        conditioned = LSTMAmp(hidden_size=2, input_size=2)
        run(conditioned, conditioned, SAMPLE_RATE, tmp_path)
    with pytest.raises(SystemExit):
        report_script.main(["--student", "s.json", "--out", str(tmp_path)])

"""A user's mistake, through every command: one line naming the culprit, exit 2, nothing written.

Each bad-input class (a missing, unreadable, empty, NaN or too short audio file; an unknown
option or config key; a value out of range; a missing, empty, random or truncated checkpoint)
goes through each command it applies to (see :mod:`diffx._errors` for the convention). Every
case runs in ``tmp_path`` with the outputs and logs pointed into it, and checks that:

* the exit status is 2 (returned, or ``SystemExit(2)`` from a parse error);
* stderr holds one ``diffx <command>: error: ...`` line, which names the culprit, and no
  traceback (Lightning's own start-up lines, e.g. "Seed set to 0", may come before it);
* no file or folder was created (no run folder, event file, config.yaml or output).

The commands run in-process (``diffx.commands.main.main``); two cases run the console entry
point in a subprocess to prove the real exit status. Nothing trains: every case is refused
before a run.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from diffx.commands.main import main
from diffx.io.audio import demo_audio_files
from diffx.tasks.runs import summarize_parser_error
from tests.conftest import movable_config_text

ROOT = Path(__file__).resolve().parents[1]
PHASE_CONFIG = ROOT / "configs" / "phase_alignment" / "quickstart.yaml"

AUDIO_CLASSES = ("missing", "unreadable", "empty", "nan", "short")
CKPT_CLASSES = ("missing_ckpt", "random_ckpt", "empty_ckpt", "truncated_ckpt")


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    """One file per bad-input class, in a folder of their own (not the case's tmp_path)."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    rng = np.random.default_rng(0)
    files = {
        "missing": folder / "missing.wav",
        "unreadable": folder / "random_bytes.wav",
        "empty": folder / "empty.wav",
        "nan": folder / "nan.wav",
        "short": folder / "one_sample.wav",
        "missing_ckpt": folder / "missing.ckpt",
        "random_ckpt": folder / "random.ckpt",
        "empty_ckpt": folder / "empty.ckpt",
        "truncated_ckpt": folder / "truncated.ckpt",
    }
    files["unreadable"].write_bytes(rng.bytes(4096))
    sf.write(files["empty"], np.zeros(0), 44100, subtype="FLOAT")
    sf.write(files["nan"], np.full(22050, np.nan), 44100, subtype="FLOAT")
    sf.write(files["short"], np.full(1, 0.5), 44100, subtype="FLOAT")
    files["random_ckpt"].write_bytes(rng.bytes(4096))
    files["empty_ckpt"].write_bytes(b"")
    whole = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, whole)
    files["truncated_ckpt"].write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    return files


@pytest.fixture(scope="module")
def postfilter_pt(tmp_path_factory) -> Path:
    """A small (untrained) WORLD post-filter, so ``postfilter apply`` gets as far as its input."""
    from diffx.tasks.runs import save_postfilter
    from tests.test_postfilter_cli import WORLD, _world_postfilter

    path = tmp_path_factory.mktemp("postfilter") / "mgc.pt"
    return save_postfilter(_world_postfilter("mgc", 0), WORLD, path)


def run(argv: list[str]) -> int:
    """``diffx.commands.main.main(argv)``'s exit status, whether returned or raised by a parser."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def files_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def assert_refused(argv, culprit, tmp_path, capsys):
    """Exit 2, one error line naming ``culprit``, no traceback, nothing new in ``tmp_path``."""
    before = files_under(tmp_path)
    code = run(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, (code, err)
    assert "Traceback" not in err + captured.out
    lines = [line for line in err.splitlines() if line.startswith("diffx ")]
    assert len(lines) == 1 and "error: " in lines[0], err
    assert str(culprit) in lines[0], (culprit, lines[0])
    assert files_under(tmp_path) == before, files_under(tmp_path) - before
    return lines[0]


# -- the cases: command x bad-input class ---------------------------------------------------------


def _training(command):
    def make(kind, bad, tmp, extra):
        base = [command, f"--config={PHASE_CONFIG}",
                f"--trainer.logger.init_args.save_dir={tmp / 'logs'}",
                "--trainer.enable_progress_bar=false"]  # fmt: skip
        if kind in AUDIO_CLASSES:
            return base + [f"--data.init_args.dry={bad[kind]}"], bad[kind]
        if kind in CKPT_CLASSES:
            return base + [f"--ckpt_path={bad[kind]}"], bad[kind]
        if kind == "bad_key":
            return base + ["--model.init_args.learning_rat=0.1"], "learning_rat"
        if kind == "bad_key_in_yaml":
            config = tmp.parent / f"{tmp.name}_config.yaml"  # beside tmp_path, not in it
            config.write_text(movable_config_text(PHASE_CONFIG).replace("n_second:", "n_secnd:"))
            return [command, f"--config={config}",
                    f"--trainer.logger.init_args.save_dir={tmp / 'logs'}"], "n_secnd"  # fmt: skip
        if kind == "bad_value":
            return base + ["--trainer.max_steps=-5"], "max_steps"
        if kind == "bad_value_data":
            return base + ["--data.init_args.steps_per_epoch=0"], "steps_per_epoch"
        if kind == "bad_type":
            return base + ["--data.init_args.crop_samples=many"], "crop_samples"
        if kind == "last_without_checkpoint":
            return base + ["--ckpt_path=last"], "--ckpt_path last"
        raise KeyError(kind)

    return make


def _align(kind, bad, tmp, extra):
    good = str(demo_audio_files()["guitar_clean"])
    base = ["align", "--wet", good, "--out", str(tmp / "aligned.wav")]
    if kind in AUDIO_CLASSES:
        return base + ["--dry", str(bad[kind])], bad[kind]
    if kind == "bad_key":
        return base + ["--dry", good, "--sectoins", "2"], "--sectoins"
    if kind == "bad_value":
        return base + ["--dry", good, "--max-delay-ms", "-1"], "--max-delay-ms"
    if kind == "bad_output":
        return ["align", "--dry", good, "--wet", good, "--out", str(tmp / "a.xyz")], "a.xyz"
    raise KeyError(kind)


def _stylize(kind, bad, tmp, extra):
    files = demo_audio_files()
    unused = tmp.parent / "never_read.ckpt"  # the audio is refused before the checkpoint
    base = ["stylize", "--reference", str(files["violin"]), "--out", str(tmp / "o.wav")]
    if kind in AUDIO_CLASSES:
        return base + ["--input", str(bad[kind]), "--ckpt", str(unused)], bad[kind]
    if kind in CKPT_CLASSES:
        return base + ["--input", str(files["bass"]), "--ckpt", str(bad[kind])], bad[kind]
    if kind == "bad_key":
        return base + ["--input", str(files["bass"]), "--ckpt", str(unused), "--refrence", "x"], (
            "--refrence"
        )
    if kind == "bad_output":
        return ["stylize", "--reference", str(files["violin"]), "--input", str(files["bass"]),
                "--ckpt", str(unused), "--out", str(tmp / "o.mp9")], "o.mp9"  # fmt: skip
    raise KeyError(kind)


def _timbre(kind, bad, tmp, extra):
    voice = str(demo_audio_files()["voice"])
    unused = tmp.parent / "never_read.ckpt"
    base = ["timbre", "--out", str(tmp / "o.wav"), "--plot", str(tmp / "o.png")]
    if kind in AUDIO_CLASSES:
        return base + ["--input", str(bad[kind]), "--ckpt", str(unused)], bad[kind]
    if kind in CKPT_CLASSES:
        return base + ["--input", voice, "--ckpt", str(bad[kind])], bad[kind]
    if kind == "bad_key":
        return base + ["--input", voice, "--ckpt", str(unused), "--pich", "1"], "--pich"
    if kind == "bad_value":
        return base + ["--input", voice, "--ckpt", str(unused), "--loudness-shift", "nan"], (
            "--loudness-shift"
        )
    raise KeyError(kind)


def _postfilter_apply(kind, bad, tmp, extra):
    base = ["postfilter", "apply", "--out", str(tmp / "o.wav")]
    good = str(demo_audio_files()["violin"])
    if kind in AUDIO_CLASSES:
        return base + ["--input", str(bad[kind]), "--postfilter", str(extra)], bad[kind]
    if kind in CKPT_CLASSES:
        return base + ["--input", good, "--postfilter", str(bad[kind])], bad[kind]
    if kind == "bad_key":
        return base + ["--input", good, "--postfiltre", str(extra)], "--postfiltre"
    if kind == "bad_value":
        return base + ["--input", good, "--postfilter", str(extra), "--strength", "-1"], (
            "--strength"
        )
    raise KeyError(kind)


def _postfilter_merge(kind, bad, tmp, extra):
    if kind in CKPT_CLASSES:
        return ["postfilter", "merge", str(extra), str(bad[kind]), "--out",
                str(tmp / "merged.pt")], bad[kind]  # fmt: skip
    if kind == "bad_key":
        return ["postfilter", "merge", str(extra), str(extra), "--out", str(tmp / "m.pt"),
                "--overwrite"], "--overwrite"  # fmt: skip
    raise KeyError(kind)


def _postfilter_pairs(kind, bad, tmp, extra):
    out = str(tmp / "pairs")
    if kind in AUDIO_CLASSES:
        # One predicted file and its natural namesake (a good recording) in two folders.
        folder = tmp.parent / f"{tmp.name}_audio"
        for side in ("predicted", "natural"):
            (folder / side).mkdir(parents=True, exist_ok=True)
        name = "train_01.wav"
        natural = folder / "natural" / name
        sf.write(natural, np.full(8000, 0.1), 16000)
        predicted = folder / "predicted" / name
        if kind == "missing":
            nowhere = folder / "nowhere"
            return ["postfilter", "pairs", "--predicted", str(nowhere),
                    "--natural", str(folder / "natural"), "--out", out], nowhere  # fmt: skip
        predicted.write_bytes(bad[kind].read_bytes())
        culprit = "train_01" if kind == "short" else predicted
        return ["postfilter", "pairs", "--predicted", str(folder / "predicted"),
                "--natural", str(folder / "natural"), "--out", out], culprit  # fmt: skip
    if kind in CKPT_CLASSES:
        return ["postfilter", "pairs", "--timbre-ckpt", str(bad[kind]), "--out", out], bad[kind]
    if kind == "bad_value":
        return ["postfilter", "pairs", "--split", "training", "--out", out], "--split"
    raise KeyError(kind)


def _postfilter_gv(kind, bad, tmp, extra):
    out = str(tmp / "gv.npz")
    if kind == "missing":
        return ["postfilter", "gv", "--natural", str(bad[kind]), "--out", out], bad[kind]
    if kind == "bad_key":
        return ["postfilter", "gv", "--natural", str(tmp.parent), "--out", out, "--strenght",
                "1"], "--strenght"  # fmt: skip
    if kind == "bad_value":
        return ["postfilter", "gv", "--natural", str(tmp.parent), "--out", out,
                "--strength", "-2"], "--strength"  # fmt: skip
    raise KeyError(kind)


def _demo(kind, bad, tmp, extra):
    out = str(tmp / "demo")
    if kind == "bad_key":
        return ["demo", "--out", out, "--secs", "1"], "--secs"
    if kind == "bad_value":
        return ["demo", "--out", out, "--seconds", "-1"], "--seconds"
    if kind == "short":  # shorter than the shortest demo clip
        return ["demo", "--out", out, "--seconds", "0.001"], "--seconds"
    if kind == "bad_output":
        return ["demo", "--out", str(bad["nan"])], bad["nan"]
    raise KeyError(kind)


COMMANDS = {
    "fit": (_training("fit"), AUDIO_CLASSES + CKPT_CLASSES + (
        "bad_key", "bad_key_in_yaml", "bad_value", "bad_value_data", "bad_type")),
    "validate": (_training("validate"), AUDIO_CLASSES + CKPT_CLASSES + (
        "bad_key", "bad_value", "last_without_checkpoint")),
    "test": (_training("test"), AUDIO_CLASSES + CKPT_CLASSES + ("bad_key", "bad_value_data")),
    "align": (_align, AUDIO_CLASSES + ("bad_key", "bad_value", "bad_output")),
    "stylize": (_stylize, AUDIO_CLASSES + CKPT_CLASSES + ("bad_key", "bad_output")),
    "timbre": (_timbre, AUDIO_CLASSES + CKPT_CLASSES + ("bad_key", "bad_value")),
    "postfilter_apply": (
        _postfilter_apply, AUDIO_CLASSES + CKPT_CLASSES + ("bad_key", "bad_value")),
    "postfilter_merge": (_postfilter_merge, CKPT_CLASSES + ("bad_key",)),
    "postfilter_pairs": (_postfilter_pairs, AUDIO_CLASSES + CKPT_CLASSES + ("bad_value",)),
    "postfilter_gv": (_postfilter_gv, ("missing", "bad_key", "bad_value")),
    "demo": (_demo, ("short", "bad_key", "bad_value", "bad_output")),
}  # fmt: skip
CASES = [(command, kind) for command, (_, kinds) in COMMANDS.items() for kind in kinds]


@pytest.mark.parametrize("command, kind", CASES, ids=[f"{c}-{k}" for c, k in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    command, kind, bad, postfilter_pt, tmp_path, capsys, monkeypatch
):
    # Relative defaults (Lightning's lightning_logs/, outputs/) would land in tmp_path too.
    monkeypatch.chdir(tmp_path)
    argv, culprit = COMMANDS[command][0](kind, bad, tmp_path, postfilter_pt)
    assert_refused(argv, culprit, tmp_path, capsys)


# -- the data modules' own checks (fit, validate, test and predict share them) ------------------

DATA_CONFIGS = {
    "AudioPairDataModule": ("effect_modeling/quickstart_lstm.yaml", "inputs", True),
    "StyleTransferDataModule": ("style_transfer/quickstart.yaml", "sources", True),
    "TimbreDataModule": ("timbre_transfer/quickstart.yaml", "audio", True),
    "PhaseAlignmentDataModule": ("phase_alignment/quickstart.yaml", "dry", False),
}


@pytest.mark.parametrize("kind", ["nan", "short"])
@pytest.mark.parametrize("module", DATA_CONFIGS)
def test_every_data_module_checks_its_files_before_the_run(
    module, kind, bad, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    config, arg, is_list = DATA_CONFIGS[module]
    value = f"[{bad[kind]}]" if is_list else str(bad[kind])
    argv = ["validate", f"--config={ROOT / 'configs' / config}",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
            f"--data.init_args.{arg}={value}"]  # fmt: skip
    line = assert_refused(argv, bad[kind], tmp_path, capsys)
    assert f"diffx validate: error: data ({module}): {arg}: " in line


def test_a_missing_postfilter_data_dir_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["validate", f"--config={ROOT / 'configs' / 'postfilter' / 'quickstart.yaml'}",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
            f"--data.init_args.data_dir={tmp_path.parent / 'no_pairs'}"]  # fmt: skip
    assert_refused(argv, "no_pairs", tmp_path, capsys)


# -- the real exit status, from a shell ------------------------------------------------------------


def test_the_console_script_exits_2_without_a_traceback(bad, tmp_path):
    # From a shell, LightningCLI reads sys.argv itself: another path through diffx.commands.main.
    args = ["fit", f"--config={PHASE_CONFIG}",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
            f"--data.init_args.dry={bad['nan']}"]  # fmt: skip
    culprit = bad["nan"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "diffx.commands", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("diffx ")]
    assert len(errors) == 1 and str(culprit) in errors[0], done.stderr
    assert not list(tmp_path.iterdir())


# -- pieces --------------------------------------------------------------------------------------


def test_ckpt_path_last_without_a_checkpoint_is_one_line_for_fit(tmp_path, capsys, monkeypatch):
    """``fit --ckpt_path last`` on a new run is not a mistake (set and forget): it says so in
    one line and trains from step 0 (one step here)."""
    monkeypatch.chdir(tmp_path)
    code = run(["fit", f"--config={PHASE_CONFIG}", "--ckpt_path=last",
                f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
                "--trainer.max_steps=1", "--trainer.limit_val_batches=0",
                "--trainer.enable_progress_bar=false", "--data.init_args.steps_per_epoch=1",
                "--data.init_args.crop_samples=2048", "--data.init_args.batch_size=1",
                "--model.init_args.init=network"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0
    assert "diffx fit: no last checkpoint under" in err and "starts from step 0" in err
    assert 'ckpt_path="last") is set' not in err  # Lightning's two-line warning is not repeated


@pytest.mark.parametrize("subcommand", ["fit", "validate"])
def test_a_damaged_last_checkpoint_is_named_for_ckpt_path_last(
    subcommand, bad, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    last = tmp_path / "logs" / "quickstart" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(bad["truncated_ckpt"].read_bytes())
    line = assert_refused(
        [subcommand, f"--config={PHASE_CONFIG}", "--ckpt_path=last",
         f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
         "--trainer.enable_progress_bar=false"],  # fmt: skip
        last,
        tmp_path,
        capsys,
    )
    assert "--ckpt_path last" in line


def test_jsonargparse_reports_are_summarized_to_one_line():
    nested = """Parser key "data":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'pytorch_lightning.core.datamodule.LightningDataModule'>, <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'diffx.data.PhaseAlignmentDataModule':
        Parser key "effect":
          Does not validate against any of the Union subtypes
          Subtypes: [<class 'torch.nn.modules.module.Module'>, <class 'NoneType'>]
          Errors:
            - Problem with given class_path 'diffx.effects.ParametricEQ':
                Option 'drive' is not accepted
            - Expected a <class 'NoneType'>
          Given value type: <class 'jsonargparse._util.NestedArg'>
          Given value: NestedArg(key='drive', val='3')
    - Expected a <class 'NoneType'>"""
    assert summarize_parser_error(nested) == (
        "data.init_args.effect (diffx.effects.ParametricEQ): Option 'drive' is not accepted"
    )
    typed = 'Parser key "trainer.max_steps":\n  Expected a <class \'int\'>. Got value: abc'
    assert summarize_parser_error(typed) == (
        "trainer.max_steps: Expected a <class 'int'>. Got value: abc"
    )
    assert summarize_parser_error("unrecognized arguments: --x=1") == (
        "unrecognized arguments: --x=1"
    )


def test_a_checkpoint_check_passes_real_checkpoints(tmp_path):
    from diffx._errors import check_checkpoint

    path = tmp_path / "real.ckpt"
    torch.save({"state_dict": {}}, path)
    assert check_checkpoint(path) == path
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "not a checkpoint")
    with pytest.raises(ValueError, match="other.zip is a zip archive but not a PyTorch"):
        check_checkpoint(tmp_path / "other.zip")

"""Kill and resume: a run SIGKILLed at any moment, even inside a checkpoint write, resumes from
its last complete checkpoint to the weights, metrics and exported model of the uninterrupted
run, bit for bit (one thread), and leaves no temp file.

The run is the effect-modeling quickstart made tiny: an 8-unit LSTM, 2-frame TBPTT segments
(two optimizer steps per batch), 7 batches per epoch, a validation every 4 batches (8 steps)
and ``last.ckpt`` every 6 steps, 60 steps in all. The chain of kills covers a resume from a
checkpoint saved at the end of an epoch (step 42), from one saved after a validation in the
middle of an epoch (step 48), and a kill while ``last.ckpt`` was being written (step 54).
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs" / "effect_modeling" / "quickstart_lstm.yaml"
MAX_STEPS = 60


def _command(run_dir: Path, *extra: str) -> list[str]:
    metrics = {
        "class_path": "tests.tasks.probe.MetricProbe",
        "init_args": {"path": str(run_dir / "metrics.jsonl")},
    }
    return [
        sys.executable,
        "-m",
        "diffx.commands",
        "fit",
        f"--config={QUICKSTART}",
        f"--trainer.logger.init_args.save_dir={run_dir}",
        f"--trainer.max_steps={MAX_STEPS}",
        "--trainer.val_check_interval=4",
        "--trainer.log_every_n_steps=4",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.callbacks.init_args.every_n_train_steps=6",
        f"--trainer.callbacks+={json.dumps(metrics)}",
        "--model.init_args.model.init_args.hidden_size=8",
        "--model.init_args.frame_samples=512",
        "--data.init_args.inputs=[guitar_harmonics]",
        # a quick stand-in device: what is learnt does not matter here, only the bookkeeping
        "--data.init_args.effect=torch.nn.Tanh",
        "--data.init_args.segment_samples=2024",  # 1000 warm-up + 2 frames of 512
        "--data.init_args.hop_samples=2024",
        "--data.init_args.batch_size=8",
        *extra,
    ]


def _kill(step: int, where: str) -> str:
    killer = {"class_path": "tests.tasks.probe.KillAt", "init_args": {"step": step, "where": where}}
    return f"--trainer.callbacks+={json.dumps(killer)}"


def _run(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        _command(run_dir, *extra),
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _checkpoints(run_dir: Path) -> Path:
    return run_dir / "quickstart_lstm" / "checkpoints"


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _validations(run_dir: Path) -> dict[int, float]:
    """``{global step: val/loss}`` of every validation the run (or its pieces) logged."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return {r["step"]: r["val/loss"] for r in records}


def _best(checkpoint: dict) -> tuple[str, float]:
    (state,) = [v for k, v in checkpoint["callbacks"].items() if k.startswith("ModelCheckpoint")]
    return Path(state["best_model_path"]).name, float(state["best_model_score"])


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_run(tmp_path):
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    whole.mkdir()
    pieces.mkdir()
    done = _run(whole)
    assert done.returncode == 0, done.stderr[-3000:]

    # Killed right after step 44: the newest checkpoint is step 42's, the end of epoch 3.
    killed = _run(pieces, _kill(44, "step"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert _load(_checkpoints(pieces) / "last.ckpt")["global_step"] == 42
    # Resumed, and killed while writing step 54's last.ckpt: the temp file is left behind,
    # last.ckpt is still step 48's (written after that step's validation).
    killed = _run(pieces, "--ckpt_path=last", _kill(54, "write"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [p.name for p in _checkpoints(pieces).glob(".*.tmp-*")], "no write was interrupted"
    assert _load(_checkpoints(pieces) / "last.ckpt")["global_step"] == 48
    resumed = _run(pieces, "--ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    # The same files (no temp file, no orphan or versioned checkpoint), the same weights.
    names = sorted(p.name for p in _checkpoints(whole).iterdir())
    assert sorted(p.name for p in _checkpoints(pieces).iterdir()) == names
    final = [_load(_checkpoints(run) / "last.ckpt") for run in (whole, pieces)]
    assert final[0]["global_step"] == final[1]["global_step"] == MAX_STEPS
    for key, value in final[0]["state_dict"].items():
        assert torch.equal(value, final[1]["state_dict"][key]), key

    # Every validation gave the same score; a resumed run does not repeat the validation
    # that came before its checkpoint, so the pieces' records together are the whole run's.
    history = _validations(whole)
    assert sorted(history) == list(range(8, MAX_STEPS + 1, 8))
    assert _validations(pieces) == history

    # The best checkpoint is the one whose own validation scored best, with that score, and
    # the exported model is that checkpoint's.
    best_step = min(history, key=history.get)
    for checkpoint in final:
        assert _best(checkpoint) == (f"best-step={best_step}.ckpt", history[best_step])
    best = _load(_checkpoints(whole) / f"best-step={best_step}.ckpt")
    assert best["global_step"] == best_step
    exported = [(run / "quickstart_lstm" / "model.json").read_bytes() for run in (whole, pieces)]
    assert exported[0] == exported[1]
    assert f"(best-step={best_step}.ckpt)" in resumed.stdout

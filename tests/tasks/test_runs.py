"""Whole training runs in subprocesses: resume after SIGKILL, and DDP on two CPU processes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import movable_config_text

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs" / "effect_modeling" / "quickstart_lstm.yaml"


def _command(save_dir: Path, config: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "diffx.commands",
        "fit",
        f"--config={config}",
        "--trainer.accelerator=cpu",
        f"--trainer.logger.init_args.save_dir={save_dir}",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        "--data.init_args.inputs=[guitar_em9]",
        "--data.init_args.batch_size=4",
        # a quick stand-in device: what is learnt does not matter here, only the bookkeeping
        "--data.init_args.effect=torch.nn.Tanh",
        *extra,
    ]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    return env


def _step(checkpoint: Path) -> int:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"]


@pytest.mark.slow
def test_fit_resumes_after_sigkill(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        movable_config_text(QUICKSTART).replace(
            "every_n_train_steps: 100", "every_n_train_steps: 8"
        )
    )
    last = tmp_path / "logs" / "quickstart_lstm" / "checkpoints" / "last.ckpt"
    first = subprocess.Popen(
        _command(tmp_path / "logs", config, "--trainer.max_steps=4000"),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    killed_at = None
    try:
        while time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.5)
            if last.is_file():
                try:
                    step = _step(last)
                except Exception:  # caught mid-write: try again
                    continue
                if step >= 16:
                    first.send_signal(signal.SIGKILL)
                    killed_at = step
                    break
    finally:
        if first.poll() is None:
            first.kill()
        first.wait()
    assert killed_at is not None, "the first run never wrote a checkpoint at step >= 16"
    assert first.returncode == -signal.SIGKILL
    killed_at = _step(last)  # the newest checkpoint on disk when the process died
    assert 16 <= killed_at < 4000
    target = killed_at + 32
    resumed = subprocess.run(
        _command(tmp_path / "logs", config, f"--trainer.max_steps={target}", "--ckpt_path=last"),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored all states from the checkpoint" in resumed.stderr + resumed.stdout
    # the resumed run stops at the new limit, counting the steps done before the kill
    assert _step(last) == target


# DDP: tests/tasks/test_ddp.py (disjoint shards, equal weights, exact validation).

"""DDP on two CPU processes: disjoint training shards, identical weights on both ranks, the
weights of one process trained with the same global batch, and validation metrics that are
exact over the held-out set (no item padded in twice)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs" / "effect_modeling" / "quickstart_lstm.yaml"


def _command(subcommand: str, run_dir: Path, *extra: str) -> list[str]:
    metrics = {
        "class_path": "tests.tasks.probe.MetricProbe",
        "init_args": {"path": str(run_dir / f"{subcommand}.jsonl")},
    }
    return [
        sys.executable,
        "-m",
        "diffx.commands",
        subcommand,
        f"--config={QUICKSTART}",
        f"--trainer.logger.init_args.save_dir={run_dir}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.callbacks+={json.dumps(metrics)}",
        "--model.init_args.model.init_args.hidden_size=8",
        "--model.init_args.frame_samples=512",
        "--data.init_args.inputs=[guitar_em9]",
        # a quick stand-in device: what is learnt does not matter here, only the bookkeeping
        "--data.init_args.effect=torch.nn.Tanh",
        "--data.init_args.segment_samples=2024",  # 1000 warm-up + 2 frames of 512
        "--data.init_args.hop_samples=2024",
        # three validation chunks: two processes get two and one (DistributedSampler would
        # pad them to two and two, counting the first chunk twice)
        "--data.init_args.val_segment_samples=30000",
        *extra,
    ]


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_ddp_two_cpu_processes_agree_and_validate_exactly(tmp_path):
    probe = {
        "class_path": "tests.tasks.probe.ShardProbe",
        "init_args": {"out_dir": str(tmp_path / "probe")},
    }
    fit = _run(
        _command(
            "fit",
            tmp_path,
            "--trainer.strategy=ddp",
            "--trainer.devices=2",
            "--trainer.max_steps=8",  # 4 batches of 2 TBPTT steps, then one validation
            "--trainer.val_check_interval=4",
            "--data.init_args.batch_size=4",  # per process: a global batch of 8
            f"--trainer.callbacks+={json.dumps(probe)}",
        ),
        tmp_path,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    ranks = [json.loads((tmp_path / "probe" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    seen = [set(r["indices"]) for r in ranks]
    assert len(seen[0]) == len(seen[1]) == 16 and not seen[0] & seen[1], seen
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert (tmp_path / "quickstart_lstm" / "model.json").is_file()

    # One process with the global batch of 8 sees the same items per step (the two shards
    # of a step are the even and odd places of the same 8) and ends with the same weights, up
    # to the order of the float32 gradient sums.
    single = tmp_path / "single"
    single.mkdir()
    probe["init_args"]["out_dir"] = str(single / "probe")
    alone_fit = _run(
        _command(
            "fit",
            single,
            "--trainer.max_steps=8",
            "--trainer.val_check_interval=4",
            "--data.init_args.batch_size=8",
            f"--trainer.callbacks+={json.dumps(probe)}",
        ),
        single,
    )
    assert alone_fit.returncode == 0, alone_fit.stderr[-3000:]
    one = json.loads((single / "probe" / "rank0.json").read_text())
    assert set(one["indices"]) == seen[0] | seen[1]
    for a, b in zip(one["weights"], ranks[0]["weights"], strict=True):
        assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6), (a, b)

    # The same weights validated in one process: the same metrics, up to the order of the
    # float32 sums (the processes' partial sums are added last).
    last = tmp_path / "quickstart_lstm" / "checkpoints" / "last.ckpt"
    validate = _run(_command("validate", tmp_path, f"--ckpt_path={last}"), tmp_path)
    assert validate.returncode == 0, validate.stderr[-3000:]
    (in_fit,) = [json.loads(line) for line in (tmp_path / "fit.jsonl").read_text().splitlines()]
    (alone,) = [json.loads(line) for line in (tmp_path / "validate.jsonl").read_text().splitlines()]
    assert in_fit["step"] == 8
    keys = sorted(k for k in alone if k.startswith("val/"))
    assert {"val/loss", "val/mrstft", "val/esr"} <= set(keys)
    for key in keys:
        assert math.isclose(in_fit[key], alone[key], rel_tol=1e-6), (key, in_fit, alone)

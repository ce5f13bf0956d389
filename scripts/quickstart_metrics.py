"""Shortened runs of every quickstart, their logged metrics collected, and two such runs compared.

A refactoring that claims to leave behaviour unchanged is checked with this: run it on the
code before and after (same seed, one thread), and compare the two JSON files; every value
logged to TensorBoard (training, validation, test) must be identical.

    python scripts/quickstart_metrics.py run --out before.json      # in the old checkout
    python scripts/quickstart_metrics.py run --out after.json       # in the new one
    python scripts/quickstart_metrics.py compare before.json after.json

The runs are the quickstart configs with fewer steps (about 5 minutes in all on one core);
they write into a temporary folder. Threads are pinned to one, so the sums are in one order.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]

RUNS: dict[str, list[list[str]]] = {
    "style_transfer": [
        ["fit", "--config", "configs/style_transfer/quickstart.yaml", "--trainer.max_steps", "40",
         "--trainer.val_check_interval", "20"],
        ["test", "--config", "configs/style_transfer/quickstart.yaml", "--ckpt_path",
         "outputs/style_transfer/quickstart/checkpoints/last.ckpt",
         "--data.init_args.test_examples", "32"],
    ],
    "effect_modeling": [
        ["fit", "--config", "configs/effect_modeling/quickstart_lstm.yaml", "--trainer.max_steps",
         "40", "--trainer.val_check_interval", "5"],
    ],
    "antialias": [  # fine-tunes the effect model above: run after it
        ["fit", "--config", "configs/antialias/quickstart_lstm.yaml", "--trainer.max_steps", "20",
         "--trainer.val_check_interval", "2"],
    ],
    "phase_alignment": [
        ["fit", "--config", "configs/phase_alignment/quickstart.yaml", "--trainer.max_steps",
         "200"],
    ],
    "timbre_transfer": [
        ["fit", "--config", "configs/timbre_transfer/quickstart.yaml", "--trainer.max_steps", "20",
         "--data.init_args.steps_per_epoch", "10"],
        ["test", "--config", "configs/timbre_transfer/quickstart.yaml", "--ckpt_path",
         "outputs/timbre_transfer/quickstart/checkpoints/last.ckpt"],
    ],
    "postfilter": [
        ["fit", "--config", "configs/postfilter/quickstart.yaml", "--trainer.max_steps", "20",
         "--trainer.check_val_every_n_epoch", "1"],
        ["test", "--config", "configs/postfilter/quickstart.yaml", "--ckpt_path",
         "outputs/postfilter/quickstart/checkpoints/last.ckpt"],
    ],
}  # fmt: skip
"""Task -> the ``diffx`` commands of its shortened quickstart, in order."""


def logged_scalars(folder: Path) -> dict[str, list[list[float]]]:
    """``{"<run folder>:<tag>": [[step, value], ...]}`` from every TensorBoard event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[list[float]]] = {}
    for events in sorted(folder.rglob("events.out.tfevents*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        run = events.parent.relative_to(folder)
        for tag in accumulator.Tags()["scalars"]:
            series = scalars.setdefault(f"{run}:{tag}", [])
            series += [[event.step, event.value] for event in accumulator.Scalars(tag)]
    return scalars


def run(tasks: list[str], out: Path) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "configs").symlink_to(ROOT / "configs")
        commands = [command for task in tasks for command in RUNS[task]]
        for command in tqdm(commands, desc="quickstarts", unit="run"):
            done = subprocess.run(
                [sys.executable, "-m", "diffx.commands", *command,
                 "--trainer.enable_progress_bar", "false"],
                cwd=work, env=env, capture_output=True, text=True,
            )  # fmt: skip
            if done.returncode:
                print(done.stderr[-3000:], file=sys.stderr)
                print(f"failed: diffx {' '.join(command)}", file=sys.stderr)
                return 1
        scalars = logged_scalars(Path(work) / "outputs")
    out.write_text(json.dumps(scalars, indent=0, sort_keys=True))
    values = sum(len(series) for series in scalars.values())
    print(f"wrote {len(scalars)} logged series ({values} values) to {out}")
    return 0


def compare(before: Path, after: Path) -> int:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    differ = sorted(key for key in set(a) | set(b) if a.get(key) != b.get(key))
    values = sum(len(series) for series in a.values())
    for key in differ:
        print(f"differs: {key}: {a.get(key)} -> {b.get(key)}")
    print(f"{len(a)} and {len(b)} logged series ({values} values before); {len(differ)} differ")
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    runner = commands.add_parser("run", help="run the shortened quickstarts, write the metrics")
    runner.add_argument("--out", type=Path, required=True, help="JSON file to write")
    runner.add_argument("--tasks", nargs="+", choices=list(RUNS), default=list(RUNS))
    comparer = commands.add_parser("compare", help="compare two metrics files")
    comparer.add_argument("before", type=Path)
    comparer.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        return run(args.tasks, args.out)
    return compare(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())

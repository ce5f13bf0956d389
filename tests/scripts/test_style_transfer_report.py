"""scripts/style_transfer_report.py on a two-step checkpoint and an untrained proxy.

Oracles: the "no processing" row is the input scored against the target by
``style_metrics`` directly; a proxy's ESR is recomputed from the effect and the proxy.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from diffx.analysis.style_transfer import style_metrics
from diffx.commands.train import build_cli
from diffx.effects.proxy import NeuralProxy, save_proxy
from diffx.tasks.runs import load_style_run
from tests.test_cli import quick_overrides

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "style_transfer_report.py"


def load_script():
    spec = importlib.util.spec_from_file_location("style_transfer_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_rows_match_direct_metrics(tmp_path, capsys):
    config = ROOT / "configs" / "style_transfer" / "quickstart.yaml"
    cli = build_cli(["fit", f"--config={config}", *quick_overrides(config, tmp_path, {})])
    ckpt = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    model, datamodule = load_style_run(ckpt)
    proxy = NeuralProxy.for_effect(model.chain.effects[1], n_blocks=2, channels=4, kernel_size=3)
    proxy_path = save_proxy(proxy, tmp_path / "compressor.pt")
    out = tmp_path / "report.md"
    script = load_script()
    args = ["--model", f"quick={ckpt}", "--proxy", f"compressor={proxy_path}", "--out", str(out)]
    assert script.main(args) == 0
    lines = out.read_text().splitlines()
    rows = {line.split("|")[2].strip(): line for line in lines if line.startswith("| quick")}
    assert set(rows) == {"no processing", "rule-based match", "quick (autodiff)"}

    datamodule.setup("test")
    batch = datamodule.fixed["test"][0]  # the quick config's test set is one batch of two
    direct = style_metrics(batch["input"], batch["target"], model.sample_rate)
    cells = [c.strip() for c in rows["no processing"].split("|")[3:-1]]
    assert float(cells[0]) == pytest.approx(float(direct["mrstft"].mean()), abs=1e-3)
    assert float(cells[1]) == pytest.approx(float(direct["lufs_error_lu"].mean()), abs=1e-3)

    proxy_row = next(line for line in lines if line.startswith("| compressor"))
    generator = torch.Generator().manual_seed(0)
    params = torch.rand(batch["input"].shape[0], proxy.parameter_size(), generator=generator)
    with torch.no_grad():
        real = model.chain.effects[1](batch["input"], params)
        fake = proxy.eval()(batch["input"], params)
    esr = float((fake - real).double().square().sum() / real.double().square().sum())
    assert float(proxy_row.split("|")[3]) == pytest.approx(esr, rel=1e-3, abs=1e-4)

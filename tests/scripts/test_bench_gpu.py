"""benchmarks/bench_gpu.py without a GPU: the one-line refusal, and its CPU smoke run end to end.

The script is loaded in this process (as the other script tests do), so the smoke run costs
only its own work, not a second start of torch and Lightning.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_gpu.py"
OPS = ("peq", "compressor", "biquad", "allpass")


def load_script():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_refuses_in_one_line(monkeypatch, capsys):
    script = load_script()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert script.main([]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no CUDA device" in err and "--device cpu --small" in err
    with pytest.raises(SystemExit) as exit_info:  # CPU timings are bench_core.py's job
        script.main(["--device", "cpu"])
    assert exit_info.value.code == 2


def test_cpu_smoke_run_writes_its_own_section(tmp_path, capsys):
    out = tmp_path / "RESULTS.md"
    out.write_text("<!-- begin core -->\nkept\n<!-- end core -->\n")
    script = load_script()
    assert script.main(["--device", "cpu", "--small", "--out", str(out)]) == 0
    text = out.read_text()
    # The CPU run never writes the GPU section, and says what it is.
    assert "<!-- begin gpu -->" not in text and "<!-- begin gpu-smoke -->" in text
    assert "kept" in text and "CPU smoke run (--small; not GPU numbers)" in text
    for op in OPS:
        # | diffx | cpu | fwd | fwd+bwd | ratio | peak | error | output | notes |
        pattern = rf"## {op}:.*?\n\| diffx \| cpu \| ([^|]+) \| ([^|]+) \|.*?\| (\w+) \|[^|\n]*\|\n"
        row = re.search(pattern, text, re.S)
        assert row, f"no diffx row for {op}"
        fwd, bwd, output = row.groups()
        assert float(fwd) > 0 and float(bwd) > 0 and output == "ok", (op, row.group(0))
    assert "error:" not in text
    step = re.search(r"\| ms per step \| steps/s \| peak MiB \|\n\|[-:|]+\|\n\| ([\d.]+) \|", text)
    assert step and float(step.group(1)) > 0

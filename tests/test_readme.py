"""The README is a front page whose examples work: its two commands come first, and its Python
example runs as written (the gradient it prints reaches every parameter)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", README.read_text(), flags=re.S | re.M)


def test_the_readme_starts_with_its_two_commands():
    text = README.read_text()
    assert text.startswith("```bash\n")
    commands = blocks("bash")[0].strip().splitlines()
    assert len(commands) == 2
    assert "diffx fit --config configs/style_transfer/quickstart.yaml" in commands[0]
    assert "pytest" in commands[1]


def test_the_python_example_runs_and_its_gradients_are_right(capsys):
    namespace: dict = {}
    exec(compile(blocks("python")[0], "README.md", "exec"), namespace)
    chain, params = namespace["chain"], namespace["params"]
    grad = dict(zip(chain.param_names, params.grad[0].tolist()))
    assert all(torch.isfinite(torch.tensor(list(grad.values()))))
    for name, value in grad.items():
        if name.startswith("parametriceq.") and not name.endswith("gain_db"):
            # At 0 dB gain (the middle of the range) a band is the identity whatever its
            # frequency and Q, so those gradients vanish (analytically; here to rounding).
            assert abs(value) < 1e-9, (name, value)
        else:
            assert value != 0.0, f"{name} gets no gradient"
    assert capsys.readouterr().out.strip()

"""The notebooks: every one runs top to bottom, every task has one, and each is self-explaining.

Run times are reported by ``scripts/run_notebooks.py`` (the budget is 3 minutes per notebook,
run as CI runs them: one thread, beside another test worker on a 2-core CPU), not asserted
here.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _run_notebooks_script():
    """scripts/run_notebooks.py as a module: the tests run each notebook as it does."""
    spec = importlib.util.spec_from_file_location(
        "run_notebooks", ROOT / "scripts" / "run_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cells(path: Path, kind: str) -> list[str]:
    notebook = json.loads(path.read_text())
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == kind]


def _identifiers(path: Path) -> set[str]:
    """Every name and attribute the notebook's code cells mention (IPython magics skipped)."""
    names = set()
    for source in _cells(path, "code"):
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.alias):
                names.add(node.name.split(".")[-1])
    return names


def task_classes() -> list[str]:
    """The concrete tasks of ``diffx.tasks``: its LightningModules that no other one extends."""
    import pytorch_lightning as pl

    import diffx.tasks

    exported = [getattr(diffx.tasks, name) for name in diffx.tasks.__all__]
    modules = [c for c in exported if inspect.isclass(c) and issubclass(c, pl.LightningModule)]
    bases = {base for cls in modules for base in cls.__mro__[1:]}
    return sorted(cls.__name__ for cls in modules if cls not in bases)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    # One thread per kernel: under `pytest -n 2` each kernel shares the 2 cores with the other
    # worker, where two-thread torch ops wait at every barrier (docs/speed.md, "Threads").
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")
    pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    notebook, _ = _run_notebooks_script().execute(path, timeout_s=600)
    errors = [
        output for cell in notebook.cells if cell.cell_type == "code"
        for output in cell.get("outputs", []) if output.get("output_type") == "error"
    ]  # fmt: skip
    assert not errors


def test_the_task_list_is_found():
    # guards the discovery itself: the tasks the README names must all be found
    assert {"StyleTransfer", "ProxyTraining", "EffectModeling", "AntiAliasFineTuning",
            "PhaseAlignment", "TimbreTransfer", "GANPostFilter"} <= set(task_classes())  # fmt: skip
    assert "AudioTask" not in task_classes()


@pytest.mark.parametrize("task", task_classes())
def test_every_task_has_a_notebook_that_uses_it(task):
    users = [p.name for p in NOTEBOOKS if task in _identifiers(p)]
    assert users, f"no notebook in notebooks/ uses diffx.tasks.{task}"


def test_there_are_the_core_and_losses_tours():
    assert {"core_tour", "losses"} <= {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_says_what_it_shows_how_long_and_how_to_use_own_audio(path):
    first = json.loads(path.read_text())["cells"][0]
    assert first["cell_type"] == "markdown"
    text = "".join(first["source"])
    assert text.startswith("# "), "the first cell starts with the notebook's title"
    assert "**Run time:**" in text and "**Your own audio:**" in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_with_its_outputs(path):
    """Readers on GitHub see figures without running anything: every code cell was executed,
    in order, and the notebook holds at least one figure."""
    notebook = json.loads(path.read_text())
    counts = [c.get("execution_count") for c in notebook["cells"] if c["cell_type"] == "code"]
    assert None not in counts, "run scripts/run_notebooks.py to store the outputs"
    assert counts == sorted(counts), "cells were run out of order"
    outputs = [o for c in notebook["cells"] for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert not [o for o in outputs if o.get("output_type") == "error"]


def test_readme_lists_every_notebook():
    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in NOTEBOOKS if f"notebooks/{p.name}" not in readme]
    assert not missing, f"README.md does not list {missing}"

"""diffx imports and trains its other tasks without the optional `world` extra (pyworld and
pysptk), and says what to install when acoustic features are asked for."""

import subprocess
import sys

BLOCK_WORLD = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pyworld", "pysptk"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
"""


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_WORLD + code], capture_output=True, text=True, timeout=300
    )


def test_diffx_imports_without_pyworld():
    result = run(
        "import diffx, diffx.commands.main, diffx.commands.postfilter, diffx.data, diffx.tasks\n"
        "import diffx.analysis, diffx.tasks.runs\n"
        "from diffx.tasks import GANPostFilter, StyleTransfer\n"
        "GANPostFilter()\n"
        "print('ok')"
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_world_features_without_pyworld_name_the_extra():
    result = run(
        "import numpy as np\n"
        "from diffx.analysis import WorldSettings, world_analysis\n"
        "world_analysis(np.zeros(1600), WorldSettings(16000, alpha=0.41))\n"
    )
    assert result.returncode != 0
    assert "pip install 'diffx[world]'" in result.stderr

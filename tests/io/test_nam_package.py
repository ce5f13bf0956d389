"""Our WaveNet against the `neural-amp-modeler` package itself, on the same `.nam` files.

The oracle is NAM's own PyTorch model built by ``nam.models.init_from_nam`` from the file we
wrote (or NAM's own fixture). The package is heavy (librosa, transformers, sounddevice) and
pins pytorch-lightning, so it is not a dev dependency; this module is skipped without it.
To run it: ``pip install --no-deps neural-amp-modeler wavio librosa`` in a scratch target.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffx.io import load_model, save_model
from diffx.nn import WaveNet

nam_models = pytest.importorskip("nam.models", reason="neural-amp-modeler is not installed")

FIXTURES = Path(__file__).parent / "fixtures"


def _as_current_nam_layout(data: dict) -> dict:
    """Our files use the 0.5 layer keys every NAM plug-in reads (``head_size``, ``head_bias``);
    NAM 0.13's ``init_from_nam`` reads only the newer ``head`` object. Same weights, renamed."""
    for layer in data["config"]["layers"]:
        if "head_size" in layer:
            out_channels, bias = layer.pop("head_size"), layer.pop("head_bias")
            layer["head"] = {"out_channels": out_channels, "kernel_size": 1, "bias": bias}
    return data


def _nam_output(path: Path, x: torch.Tensor) -> torch.Tensor:
    """NAM's output for ``x`` ``(batch, 1, samples)``, zero history before it (``pad_start``)."""
    theirs = nam_models.init_from_nam(_as_current_nam_layout(json.loads(path.read_text())))
    theirs.eval()
    with torch.no_grad():
        return theirs(x[:, 0], pad_start=True)[:, None]


@pytest.mark.parametrize("name", ["nam_wavenet_standard.nam", "nam_wavenet_minimal.nam"])
def test_nam_fixtures_match_the_package(name):
    x = torch.randn(2, 1, 3000, generator=torch.Generator().manual_seed(1)) * 0.5
    with torch.no_grad():
        ours = load_model(FIXTURES / name)(x)
    torch.testing.assert_close(ours, _nam_output(FIXTURES / name, x), atol=1e-5, rtol=1e-5)


def test_random_standard_wavenet_we_write_plays_the_same_in_nam(tmp_path):
    # Random weights large enough to drive every tanh into saturation, so a wrong weight
    # order, dilation or head would show; the identity fixture alone would not catch them.
    torch.manual_seed(0)
    ours = WaveNet(sample_rate=48000)
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0.0, 0.3)
    path = save_model(ours, tmp_path / "random.nam")
    x = torch.randn(1, 1, 6000, generator=torch.Generator().manual_seed(2)) * 0.5
    with torch.no_grad():
        expected = ours(x)
    assert expected.std() > 0.05  # a non-trivial response to compare
    torch.testing.assert_close(_nam_output(path, x), expected, atol=1e-4, rtol=1e-4)
    assert json.loads(path.read_text())["sample_rate"] == 48000

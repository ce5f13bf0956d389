"""Shared test fixtures and skip markers (defined once, used everywhere)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from diffx.io import save_model
from diffx.nn import LayerArrayConfig, LSTMAmp, WaveNet

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
requires_pedalboard = pytest.mark.skipif(
    importlib.util.find_spec("pedalboard") is None, reason="needs pedalboard"
)

DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request) -> torch.dtype:
    return request.param


def pytest_configure(config):
    # Tests run in parallel workers (pytest -n 2) on small tensors: one intra-op thread per
    # worker avoids oversubscribing the cores, which slows tiny ops by an order of magnitude.
    torch.set_num_threads(1)
    try:
        import numba

        numba.set_num_threads(1)
    except (ImportError, ValueError):
        pass


def movable_config_text(config: Path) -> str:
    """The text of an experiment config with the files it includes (its trainer preset, chain
    and effect files, named relative to its folder: configs/README.md) made absolute, so that a
    test can write a changed copy of it into another folder."""

    def absolute(match: re.Match) -> str:
        return match.group(1) + str((config.parent / match.group(2)).resolve())

    return re.sub(r"((?::|-)[ \t]+)(\.\.?/[^\s#]+\.yaml)", absolute, config.read_text())


# Tiny teacher models written to disk, for the task and CLI tests.
@pytest.fixture
def lstm_teacher_path(tmp_path):
    """A small LSTM with large weights: strongly nonlinear, so it aliases."""
    torch.manual_seed(0)
    model = LSTMAmp(hidden_size=8, sample_rate=44100)
    with torch.no_grad():
        model.rec.weight_ih_l0.mul_(0).add_(torch.randn_like(model.rec.weight_ih_l0) * 6.0)
        model.lin.weight.mul_(3.0)
    path = tmp_path / "teacher.json"
    save_model(model, path)
    return path


def tiny_wavenet(sample_rate=44100) -> WaveNet:
    layers = [
        LayerArrayConfig(
            input_size=1,
            condition_size=1,
            head_size=1,
            channels=4,
            kernel_size=3,
            dilations=(1, 2, 4),
            activation="Tanh",
            gated=False,
            head_bias=True,
        )
    ]
    torch.manual_seed(1)
    return WaveNet(layers, head_scale=1.0, sample_rate=sample_rate)


@pytest.fixture
def wavenet_teacher_path(tmp_path):
    path = tmp_path / "teacher.nam"
    save_model(tiny_wavenet(), path)
    return path


def shared_postfilter_cache(tmp_path_factory) -> Path:
    """One cache of analysed post-filter pairs for the whole run, shared by pytest-xdist's
    workers (their base folders share a parent); building it is atomic."""
    return tmp_path_factory.getbasetemp().parent / "postfilter_pairs"


@pytest.fixture(scope="session")
def postfilter_pairs(tmp_path_factory) -> Path:
    """The shipped ``violin_ddsp`` pairs, WORLD-analysed once per test run."""
    from diffx.data.postfilter import shipped_pairs

    return shipped_pairs("violin_ddsp", shared_postfilter_cache(tmp_path_factory), progress=False)

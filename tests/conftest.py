"""Shared test fixtures and skip markers (defined once, used everywhere)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

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

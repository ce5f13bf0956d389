"""The DiodeClipper module: the functional op behind a config-friendly constructor, and its
default setting a high-gain pedal."""

import math

import numpy as np
import pytest
import torch
from jsonargparse import ArgumentParser
from torch import nn

from diffx.effects.circuits import DiodeClipper
from diffx.functional.circuits import diode_clipper
from diffx.io.audio import load_demo

SR = 44100


def test_module_is_the_functional_op():
    settings = {"drive_db": 18.0, "cutoff_hz": 5000.0, "oversampling": 4, "output_gain_db": 3.0}
    x = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, (2, 2, 500)))
    y = DiodeClipper(SR, **settings)(x)
    assert torch.equal(y, diode_clipper(x, SR, **settings))


def test_shapes_dtypes_channels_and_no_gradient():
    clipper = DiodeClipper(SR)
    assert list(clipper.parameters()) == []
    x = torch.from_numpy(np.random.default_rng(1).uniform(-0.5, 0.5, (3, 2, 400)))
    for dtype in (torch.float32, torch.float64):
        y = clipper(x.to(dtype))
        assert y.shape == x.shape and y.dtype == dtype
    y = clipper(x)
    # each (example, channel) is its own signal
    torch.testing.assert_close(y[2:, 1:], clipper(x[2:, 1:]), rtol=0, atol=0)
    assert torch.equal(clipper(torch.zeros(2, 1, 100)), torch.zeros(2, 1, 100))
    assert not clipper(x.requires_grad_()).requires_grad


def _thd(y, f0, start, n):
    """Total harmonic distortion of a steady-state tone completing whole periods in n samples
    (a rectangular window then puts every harmonic in one bin)."""
    magnitude = np.abs(np.fft.rfft(y[start : start + n]))
    step = round(n * f0 / SR)
    harmonics = magnitude[step::step]
    return math.sqrt(np.sum(harmonics[1:] ** 2)) / harmonics[0]


def test_default_is_a_high_gain_pedal():
    """By default a 1 kHz tone at -12 dBFS (a 4 V source after the 24 dB drive, eight times
    the diodes' ~0.5 V knee) comes out with THD above 10 %; 24 dB less drive leaves it
    nearly clean (0.25 V source, THD below 1 %)."""
    x = torch.tensor(10 ** (-12 / 20) * np.sin(2 * np.pi * 1000 * np.arange(SR // 5) / SR))
    x = x[None, None]
    # 1 kHz completes 40 periods in 1764 samples; start after 50 ms of settling
    assert _thd(DiodeClipper(SR)(x)[0, 0].numpy(), 1000.0, 2205, 1764) > 0.1
    assert _thd(DiodeClipper(SR, drive_db=0.0)(x)[0, 0].numpy(), 1000.0, 2205, 1764) < 0.01


def test_default_clips_guitar_hard():
    """On the demo guitar (peaks near -4 dBFS) a linear device would follow a 20 dB input
    drop with a 20 dB output drop; the default clipper's output falls by less than 10 dB, its
    level pinned by the diodes, and it never exceeds 1 V."""
    guitar, rate = load_demo("guitar_em9")
    assert rate == SR
    x = guitar[None, :, :SR].double()
    clipper = DiodeClipper(SR)
    loud, quiet = clipper(x), clipper(x / 10)
    assert 20 * math.log10(float(loud.norm() / quiet.norm())) < 10.0
    assert float(loud.abs().max()) < 1.0


def test_built_from_a_config_like_the_yaml_ones():
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--effect", type=nn.Module)
    config = {
        "effect": {
            "class_path": "diffx.effects.circuits.DiodeClipper",
            "init_args": {"sample_rate": SR, "drive_db": 24.0, "oversampling": 8},
        }
    }
    effect = parser.instantiate(parser.parse_object(config)).effect
    assert isinstance(effect, DiodeClipper)
    assert effect.sample_rate == SR and effect.oversampling == 8
    assert "drive_db=24" in repr(effect)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"sample_rate": -1.0}, "sample_rate"),
        ({"oversampling": 0}, "oversampling"),
        ({"cutoff_hz": 0.0}, "cutoff_hz"),
        ({"drive_db": float("nan")}, "drive_db"),
        ({"output_gain_db": "loud"}, "output_gain_db"),
    ],
)
def test_bad_settings_fail_at_construction(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DiodeClipper(**{"sample_rate": SR, **kwargs})


def test_bad_audio_is_named():
    clipper = DiodeClipper(SR)
    with pytest.raises(ValueError, match="x"):
        clipper(torch.zeros(1, 100))  # (batch, channels, samples) expected
    with pytest.raises(ValueError, match="x"):
        clipper(torch.full((1, 1, 10), float("nan")))

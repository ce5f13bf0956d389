"""Network building blocks: neural amp models (LSTM, NAM WaveNet), the BiasNet that
parameterizes allpass cascades for phase alignment, and running them at a
higher sample rate (the delay-line method for RNNs, doubled dilations for WaveNets)."""

from diffx.nn.biasnet import BiasNet, SineMLP
from diffx.nn.ddsp import DDSPDecoder
from diffx.nn.gru import GRU
from diffx.nn.lstm import UNIT_TYPES, LSTMAmp
from diffx.nn.oversample import DelayLineRNN, Oversampled, adapt_to_rate, dilate_wavenet
from diffx.nn.postfilter import (
    Conv2dDiscriminator,
    Conv2dPostFilter,
    GVPostFilter,
    MultiStreamPostFilter,
)
from diffx.nn.style_transfer import Controller, SpectralEncoder, TCNEncoder
from diffx.nn.tcn import TCN
from diffx.nn.wavenet import LayerArrayConfig, WaveNet, standard_config

__all__ = [
    "Conv2dDiscriminator",
    "Conv2dPostFilter",
    "GVPostFilter",
    "MultiStreamPostFilter",
    "BiasNet",
    "Controller",
    "DDSPDecoder",
    "GRU",
    "SineMLP",
    "SpectralEncoder",
    "TCN",
    "TCNEncoder",
    "UNIT_TYPES",
    "DelayLineRNN",
    "Oversampled",
    "LSTMAmp",
    "LayerArrayConfig",
    "WaveNet",
    "adapt_to_rate",
    "dilate_wavenet",
    "standard_config",
]

"""Network building blocks: neural amp models (LSTM, NAM WaveNet)."""

from diffx.nn.lstm import UNIT_TYPES, LSTMAmp
from diffx.nn.wavenet import LayerArrayConfig, WaveNet, standard_config

__all__ = ["UNIT_TYPES", "LSTMAmp", "LayerArrayConfig", "WaveNet", "standard_config"]

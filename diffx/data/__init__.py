"""LightningDataModules and datasets: audio pairs for effect modeling, tones for anti-aliasing,
self-supervised style-transfer examples, phase-alignment pairs, instrument recordings with
DDSP features for timbre transfer."""

from diffx.data.pairs import AudioPairDataModule, SegmentDataset
from diffx.data.phase_alignment import PhaseAlignmentDataModule
from diffx.data.postfilter import PostFilterDataModule
from diffx.data.sampling import EpochSampler, EvalSampler, ResumableDataModule
from diffx.data.sources import GUITAR_AND_BASS, expand_sources, load_sources, normalize_peak
from diffx.data.style_transfer import CropPairs, StyleTransferDataModule
from diffx.data.timbre_transfer import TimbreDataModule, shipped_instruments
from diffx.data.tones import ToneDataModule

__all__ = [
    "PostFilterDataModule",
    "GUITAR_AND_BASS",
    "AudioPairDataModule",
    "PhaseAlignmentDataModule",
    "ResumableDataModule",
    "CropPairs",
    "EpochSampler",
    "EvalSampler",
    "SegmentDataset",
    "StyleTransferDataModule",
    "TimbreDataModule",
    "ToneDataModule",
    "expand_sources",
    "load_sources",
    "normalize_peak",
    "shipped_instruments",
]

"""LightningDataModules and datasets: audio pairs for effect modeling, tones for anti-aliasing."""

from diffx.data.alignment import PhaseAlignmentDataModule
from diffx.data.pairs import AudioPairDataModule, SegmentDataset
from diffx.data.sources import GUITAR_AND_BASS, expand_sources, load_sources, normalize_peak
from diffx.data.tones import ToneDataModule

__all__ = [
    "GUITAR_AND_BASS",
    "AudioPairDataModule",
    "PhaseAlignmentDataModule",
    "SegmentDataset",
    "ToneDataModule",
    "expand_sources",
    "load_sources",
    "normalize_peak",
]

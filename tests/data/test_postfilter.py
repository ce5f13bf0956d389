"""Feature pairs: the NNSVS layout, scalers, WORLD pair making and the data module."""

import json

import numpy as np
import pytest
import torch

from diffx.analysis.acoustic import WorldSettings
from diffx.data.postfilter import (
    FeatureScaler,
    PostFilterDataModule,
    load_pairs,
    make_pairs,
    read_features,
    shipped_pairs,
)
from diffx.functional.postfilter import StreamLayout

LAYOUT = StreamLayout(("mgc", "lf0", "vuv", "bap"), (6, 1, 1, 1))


def write_pairs(root, splits=("train", "valid", "test"), n=3, frames=120, seed=0, names=None):
    """A pairs folder of random features (natural = predicted + detail)."""
    rng = np.random.default_rng(seed)
    (root).mkdir(parents=True, exist_ok=True)
    (root / "streams.json").write_text(json.dumps({"streams": LAYOUT.to_dict()}))
    for split in splits:
        folder = root / (names or {}).get(split, split)
        for sub in ("in_postfilter", "out_postfilter"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            nat = rng.normal(size=(frames + 10 * i, LAYOUT.dims)).astype(np.float32)
            nat[:, 7] = rng.random(nat.shape[0]) > 0.3
            pred = nat.copy()
            pred[:, :6] *= 0.5
            np.save(folder / "in_postfilter" / f"utt{i}-feats.npy", pred)
            np.save(folder / "out_postfilter" / f"utt{i}-feats.npy", nat)
    return root


def test_scaler_matches_numpy_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    utterances = [rng.normal(loc=3, scale=2, size=(50 + i, 4)) for i in range(3)]
    scaler = FeatureScaler.fit(utterances)
    pooled = np.concatenate(utterances)
    np.testing.assert_allclose(scaler.mean, pooled.mean(0))
    np.testing.assert_allclose(scaler.variance, pooled.var(0))
    z = scaler.transform(pooled)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-5)
    np.testing.assert_allclose(scaler.inverse(z), pooled, atol=1e-4)
    scaler.save(tmp_path / "scaler.npz")
    np.testing.assert_allclose(
        FeatureScaler.load(tmp_path / "scaler.npz").variance, scaler.variance
    )


def test_pairs_load_with_diffx_or_nnsvs_split_names(tmp_path):
    nnsvs = {"train": "train_no_dev", "valid": "dev", "test": "eval"}
    for root, names in ((tmp_path / "a", None), (tmp_path / "b", nnsvs)):
        write_pairs(root, names=names)
        dm = PostFilterDataModule(str(root), segment_frames=64, batch_size=4)
        dm.setup("fit")
        assert sorted(dm.pairs) == ["test", "train", "valid"]
        assert dm.layout == LAYOUT and dm.world is None
        batch = next(iter(dm.train_dataloader()))
        assert batch["predicted"].shape == (4, 64, 9) and batch["mask"].all()
        val = next(iter(dm.val_dataloader()))
        assert val["predicted"].shape == (1, 120, 9) and val["name"] == ["utt0-feats"]
        train_nat = np.concatenate([p.natural for p in dm.pairs["train"]])
        np.testing.assert_allclose(dm.scaler.mean, train_nat.mean(0), rtol=1e-6, atol=1e-7)


def test_short_utterances_are_padded_with_a_mask(tmp_path):
    write_pairs(tmp_path, splits=("train",), n=1, frames=40)
    dm = PostFilterDataModule(str(tmp_path), segment_frames=64, batch_size=2)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["mask"].sum(1).tolist() == [40, 40]
    assert torch.all(batch["natural"][:, 40:] == 0)


def test_bad_pairs_are_named(tmp_path):
    root = write_pairs(tmp_path / "p", splits=("train",))
    folder = root / "train"
    np.save(folder / "in_postfilter" / "extra-feats.npy", np.zeros((5, 9), np.float32))
    with pytest.raises(FileNotFoundError, match="extra-feats.npy"):
        load_pairs(folder, 9)
    np.save(folder / "out_postfilter" / "extra-feats.npy", np.zeros((50, 9), np.float32))
    with pytest.raises(ValueError, match="time-aligned"):
        load_pairs(folder, 9)
    bad = np.zeros((5, 9), np.float32)
    bad[2, 3] = np.nan
    np.save(folder / "out_postfilter" / "extra-feats.npy", bad)
    with pytest.raises(ValueError, match="NaN"):
        load_pairs(folder, 9)
    (folder / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="junk.npy"):
        read_features(folder / "junk.npy")
    with pytest.raises(ValueError, match="needs 10"):
        read_features(folder / "in_postfilter" / "utt0-feats.npy", 10)
    with pytest.raises(FileNotFoundError, match="neither a folder"):
        PostFilterDataModule("no/such/place").setup()
    other = write_pairs(tmp_path / "q", splits=("train",))
    with pytest.raises(ValueError, match="differ"):
        PostFilterDataModule(str(other), streams={"mgc": 5}).setup()


def test_make_pairs_writes_aligned_world_features(tmp_path):
    sample_rate = 16000
    t = np.arange(sample_rate // 2) / sample_rate
    natural = 0.3 * np.sign(np.sin(2 * np.pi * 220 * t))  # a buzzy tone
    predicted = 0.3 * np.sin(2 * np.pi * 220 * t)[:-100]  # its smooth stand-in, a bit short
    settings = WorldSettings(sample_rate, f0_floor_hz=100, f0_ceil_hz=1000)
    root = make_pairs({"train": [("tone", predicted, natural)]}, tmp_path, settings, progress=False)
    layout = StreamLayout(("mgc", "lf0", "vuv", "bap"), (60, 1, 1, 1))
    pairs = load_pairs(root / "train", layout.dims)
    assert pairs[0].predicted.shape == pairs[0].natural.shape
    assert pairs[0].natural.shape[0] == (sample_rate // 2 - 100) // 80 + 1
    voiced = pairs[0].natural[20:-20, 61] > 0.5
    assert voiced.all()
    np.testing.assert_allclose(np.exp(pairs[0].natural[20:-20, 60]), 220, rtol=0.01)
    # the square wave's odd harmonics make its high mel-cepstra richer than the sine's
    assert (
        np.abs(pairs[0].natural[20:-20, 10:60]).mean()
        > np.abs(pairs[0].predicted[20:-20, 10:60]).mean()
    )
    stored = json.loads((root / "streams.json").read_text())
    assert stored["streams"] == layout.to_dict() and stored["world"]["sample_rate"] == sample_rate


def test_shipped_pairs_are_over_smoothed(postfilter_pairs):
    from diffx.analysis.acoustic import gv_ratio_db

    dm = PostFilterDataModule(str(postfilter_pairs))
    dm.setup()
    assert {k: len(v) for k, v in dm.pairs.items()} == {"train": 8, "valid": 2, "test": 2}
    assert dm.world.sample_rate == 16000 and dm.layout.sizes == (60, 1, 1, 1)
    pairs = dm.pairs["test"]
    masks = [p.natural[:, 61] > 0.5 for p in pairs]
    ratio = gv_ratio_db(
        [p.predicted[:, 2:60] for p in pairs], [p.natural[:, 2:60] for p in pairs], masks
    )
    assert ratio.mean() < -3.0  # DDSP resynthesis: several dB below the recordings' GV
    assert shipped_pairs("violin_ddsp", postfilter_pairs.parent) == postfilter_pairs
    with pytest.raises(ValueError, match="unknown shipped"):
        shipped_pairs("cello")

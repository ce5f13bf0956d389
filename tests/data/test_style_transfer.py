"""StyleTransferDataModule: splits, normalization and example making against direct oracles."""

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
import torch

from diffx.data import StyleTransferDataModule
from diffx.data.style_transfer import CropPairs, normalize_crops
from diffx.effects import Compressor, EffectChain, Gain, ParametricEQ

SR = 16000


def ramp_file(tmp_path, seconds=10.0, name="ramp.wav"):
    """A recording whose sample values tell their position: value = time / length."""
    n = int(seconds * SR)
    path = tmp_path / name
    sf.write(path, (np.arange(n) / n * 0.9 + 0.05).astype(np.float32), SR, subtype="FLOAT")
    return path, n


def small_module(sources, **kwargs):
    defaults = dict(
        sample_rate=SR,
        sources=[str(s) for s in sources],
        crop_samples=8000,
        train_examples=8,
        val_examples=6,
        test_examples=6,
        batch_size=3,
    )
    defaults.update(kwargs)
    return StyleTransferDataModule(**defaults)


def test_splits_keep_held_out_audio_out_of_training(tmp_path):
    path, n = ramp_file(tmp_path)
    chain = EffectChain([Gain(SR)])
    dm = small_module([path], chain=chain, normalization=None, process_input=False)
    dm.setup("fit")
    # Clean crops carry their position in their values (the ramp).
    train = [dm.train_set[i]["input_clean"] for i in range(20)]
    assert max(float(c.max()) for c in train) <= 0.05 + 0.9 * 0.6 + 1e-6
    for split, lo, hi in (("val", 0.6, 0.75), ("test", 0.75, 1.0)):
        for batch in dm.fixed[split]:
            clean = batch["clean"]
            assert float(clean.min()) >= 0.05 + 0.9 * lo - 1e-6
            assert float(clean.max()) <= 0.05 + 0.9 * hi + 1e-6


def test_examples_match_the_chain_called_directly():
    dm = StyleTransferDataModule(
        sample_rate=SR, sources=["guitar_em9"], crop_samples=8000, val_examples=4,
        test_examples=4, train_examples=4, batch_size=4, chain=EffectChain(
            [ParametricEQ(SR), Compressor(SR)]),
    )  # fmt: skip
    dm.setup("fit")
    raw = next(iter(dm.train_dataloader()))
    batch = dm.on_after_batch_transfer(raw, 0)
    chain = dm.chain
    clean = batch["clean"]
    torch.testing.assert_close(batch["input"], chain(clean, raw["input_params"]))
    torch.testing.assert_close(batch["target"], chain(clean, raw["reference_params"]))
    reference_clean = normalize_crops(raw["reference_clean"], SR, "loudness", -23.0)
    torch.testing.assert_close(batch["reference"], chain(reference_clean, raw["reference_params"]))
    torch.testing.assert_close(batch["params"], raw["reference_params"])
    # The two crops come from different places (a random start each).
    assert not torch.equal(raw["input_clean"], raw["reference_clean"])


def test_process_input_false_leaves_the_input_clean():
    dm = small_module(["guitar_em9"], process_input=False, crop_samples=8000)
    dm.setup("fit")
    batch = dm.fixed["val"][0]
    torch.testing.assert_close(batch["input"], batch["clean"])


def test_loudness_normalization_agrees_with_pyloudnorm():
    from diffx.io.audio import load_demo

    audio, _ = load_demo("violin", sample_rate=SR)
    crops = torch.stack([audio[:, i * 12000 : i * 12000 + 16000] for i in range(3)]).double()
    crops = crops * torch.tensor([0.05, 0.5, 1.0], dtype=torch.float64)[:, None, None]
    levelled = normalize_crops(crops, SR, "loudness", -23.0)
    meter = pyloudnorm.Meter(SR)
    for crop in levelled:
        assert meter.integrated_loudness(crop[0].numpy()) == pytest.approx(-23.0, abs=0.3)


def test_peak_normalization_and_silence():
    crops = torch.randn(3, 1, 8000, dtype=torch.float64)
    crops[1] = 0.0
    levelled = normalize_crops(crops, SR, "peak", -6.0)
    peaks = levelled.abs().amax(dim=(1, 2))
    assert float(peaks[0]) == pytest.approx(10 ** (-6 / 20))
    assert float(peaks[1]) == 0.0  # silence stays silent, no NaN
    assert torch.isfinite(normalize_crops(crops, SR, "loudness", -23.0)).all()


def test_fixed_sets_are_reproducible_and_distinct():
    a = small_module(["guitar_em9"], crop_samples=8000)
    b = small_module(["guitar_em9"], crop_samples=8000)
    a.setup("fit")
    b.setup("fit")
    torch.testing.assert_close(a.fixed["test"][0]["target"], b.fixed["test"][0]["target"])
    assert a.fixed["val"][0]["params"].shape == a.fixed["test"][0]["params"].shape
    assert not torch.equal(a.fixed["val"][0]["params"], a.fixed["test"][0]["params"])


def test_near_silent_crops_are_avoided(tmp_path):
    n = 4 * SR
    audio = np.zeros(n, dtype=np.float32)
    audio[: n // 4] = 0.3 * np.sin(np.arange(n // 4) * 0.05)  # sound only in the first second
    path = tmp_path / "gap.wav"
    sf.write(path, audio, SR)
    pairs = CropPairs([("gap", torch.from_numpy(audio)[None])], 2000, 2, 50,
                      torch.Generator().manual_seed(0))  # fmt: skip
    rms = [float(pairs[i]["input_clean"].square().mean().sqrt()) for i in range(50)]
    # A random start would land in silence 3 times out of 4; the retries make it rare.
    assert np.mean(np.array(rms) > 1e-3) > 0.8


def test_bad_settings_name_the_culprit(tmp_path):
    path, _ = ramp_file(tmp_path, seconds=1.0)
    with pytest.raises(ValueError, match="crop_samples"):
        small_module([path], crop_samples=12000).setup("fit")
    with pytest.raises(ValueError, match="normalization"):
        small_module([path], normalization="rms")
    with pytest.raises(ValueError, match="chain runs at sample_rate"):
        small_module([path], chain=EffectChain([Gain(44100)]))
    with pytest.raises(ValueError, match="train_fraction"):
        small_module([path], train_fraction=0.9, val_fraction=0.2)
    with pytest.raises(ValueError, match="400 ms"):
        small_module([path], crop_samples=4000)
    with pytest.raises(ValueError, match="neither a demo clip"):
        small_module([tmp_path / "missing.wav"]).setup("fit")

"""`diffx postfilter`: pairs, gv, merge, apply, and their errors."""

import numpy as np
import soundfile as sf
import torch

from diffx.analysis.acoustic import WorldSettings, world_analysis
from diffx.commands.main import main
from diffx.functional.postfilter import StreamLayout
from diffx.nn import Conv2dPostFilter, GVPostFilter, MultiStreamPostFilter
from diffx.tasks.postfilter import enhance_features
from diffx.tasks.runs import load_postfilter, save_postfilter
from tests.data.test_postfilter import LAYOUT, write_pairs

WORLD_LAYOUT = StreamLayout(("mgc", "lf0", "vuv", "bap"), (60, 1, 1, 1))
WORLD = WorldSettings(16000, f0_floor_hz=100, f0_ceil_hz=1000)


def _tone(seconds=0.5, f0=220.0, sample_rate=16000):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sign(np.sin(2 * np.pi * f0 * t))).astype(np.float32)


def _world_postfilter(stream, seed):
    torch.manual_seed(seed)
    offset = 2 if stream == "mgc" else 0
    size = WORLD_LAYOUT.sizes[WORLD_LAYOUT.names.index(stream)] - offset
    generator = Conv2dPostFilter(size, 2, (3, 1))
    torch.nn.init.normal_(generator.conv4.weight, std=0.1)  # not the identity it starts as
    return MultiStreamPostFilter(
        WORLD_LAYOUT,
        {stream: generator},
        {stream: offset},
        torch.zeros(WORLD_LAYOUT.dims),
        torch.ones(WORLD_LAYOUT.dims),
    )


def test_gv_then_apply_on_features(tmp_path, capsys):
    root = write_pairs(tmp_path / "pairs", splits=("train",))
    assert (
        main(
            [
                "postfilter",
                "gv",
                "--natural",
                str(root / "train" / "out_postfilter"),
                "--out",
                str(tmp_path / "gv.npz"),
                "--stream",
                "mgc:1",
            ]
        )
        == 0
    )
    gv = GVPostFilter.load(tmp_path / "gv.npz")
    assert gv.streams == {"mgc": 1} and gv.layout == LAYOUT
    src = root / "train" / "in_postfilter" / "utt0-feats.npy"
    out = tmp_path / "out.npy"
    assert (
        main(
            [
                "postfilter",
                "apply",
                "--input",
                str(src),
                "--out",
                str(out),
                "--gv",
                str(tmp_path / "gv.npz"),
                "--strength",
                "0.5",
            ]
        )
        == 0
    )
    expected = GVPostFilter.load(tmp_path / "gv.npz", strength=0.5)(torch.from_numpy(np.load(src)))
    np.testing.assert_allclose(np.load(out), expected.numpy(), rtol=1e-6)
    assert not out.with_suffix(".wav").exists()  # not WORLD features: nothing to synthesize


def test_merge_then_apply_on_audio(tmp_path):
    mgc = save_postfilter(_world_postfilter("mgc", 0), WORLD, tmp_path / "mgc.pt")
    bap = save_postfilter(_world_postfilter("bap", 1), WORLD, tmp_path / "bap.pt")
    merged = tmp_path / "merged.pt"
    assert main(["postfilter", "merge", str(mgc), str(bap), "--out", str(merged)]) == 0
    model, world = load_postfilter(merged)
    assert sorted(model.filters) == ["bap", "mgc"] and world == WORLD
    audio = _tone()
    sf.write(tmp_path / "in.wav", audio, 16000)
    out = tmp_path / "out.wav"
    assert (
        main(
            [
                "postfilter",
                "apply",
                "--input",
                str(tmp_path / "in.wav"),
                "--out",
                str(out),
                "--postfilter",
                str(merged),
            ]
        )
        == 0
    )
    written, rate = sf.read(out)
    assert rate == 16000 and abs(len(written) - len(audio)) <= 80
    # the written audio is the WORLD synthesis of the post-filtered analysis
    features = WORLD_LAYOUT.join(world_analysis(audio, WORLD))
    enhanced = enhance_features(features, model, seed=0)
    assert not np.allclose(enhanced, features)
    np.testing.assert_array_equal(enhanced[:, 60:62], features[:, 60:62])  # lf0, vuv untouched


def test_pairs_from_audio_folders(tmp_path):
    for name, fn in (("pred", np.sin), ("nat", lambda x: np.sign(np.sin(x)))):
        (tmp_path / name).mkdir()
        t = np.arange(8000) / 16000
        sf.write(tmp_path / name / "a.wav", 0.3 * fn(2 * np.pi * 220 * t), 16000)
    out = tmp_path / "pairs"
    assert (
        main(
            [
                "postfilter",
                "pairs",
                "--predicted",
                str(tmp_path / "pred"),
                "--natural",
                str(tmp_path / "nat"),
                "--split",
                "valid",
                "--out",
                str(out),
                "--f0-floor-hz",
                "100",
            ]
        )
        == 0
    )
    pred = np.load(out / "valid" / "in_postfilter" / "a-feats.npy")
    assert pred.shape == (101, 63) and (out / "streams.json").is_file()


def test_errors_name_the_culprit(tmp_path, capsys):
    assert (
        main(
            [
                "postfilter",
                "apply",
                "--input",
                "missing.wav",
                "--out",
                "x.wav",
                "--gv",
                "missing.npz",
            ]
        )
        == 2
    )
    assert "missing.npz" in capsys.readouterr().err
    assert main(["postfilter", "apply", "--input", "a.wav", "--out", "x.wav"]) == 2
    assert "--postfilter, --gv" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert (
        main(
            [
                "postfilter",
                "merge",
                str(tmp_path / "junk.pt"),
                str(tmp_path / "junk.pt"),
                "--out",
                str(tmp_path / "m.pt"),
            ]
        )
        == 2
    )
    assert "junk.pt" in capsys.readouterr().err
    mgc = save_postfilter(_world_postfilter("mgc", 0), WORLD, tmp_path / "mgc.pt")
    assert main(["postfilter", "merge", str(mgc), str(mgc), "--out", str(tmp_path / "m.pt")]) == 2
    assert "more than one" in capsys.readouterr().err
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(1600, np.nan, np.float32), 16000, subtype="FLOAT")
    assert (
        main(
            [
                "postfilter",
                "apply",
                "--input",
                str(nan),
                "--out",
                str(tmp_path / "o.wav"),
                "--postfilter",
                str(mgc),
            ]
        )
        == 2
    )
    assert "NaN" in capsys.readouterr().err

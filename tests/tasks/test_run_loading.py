"""diffx.tasks.runs: a task built from its config as `diffx fit` builds it, and refusals that
name the config and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffx.tasks import EffectModeling, StyleTransfer
from diffx.tasks.runs import build_from_config, load_run
from tests.conftest import movable_config_text

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "effect_modeling" / "quickstart_lstm.yaml"


def copied(tmp_path: Path, replace: tuple[str, str] | None = None) -> Path:
    text = movable_config_text(CONFIG)
    if replace is not None:
        assert replace[0] in text
        text = text.replace(*replace)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_a_config_builds_its_task_and_data_with_the_links(tmp_path):
    model, data = build_from_config(CONFIG, ["--data.init_args.sample_rate", "48000"])
    assert isinstance(model, EffectModeling)
    assert model.sample_rate == data.sample_rate == data.effect.sample_rate == 48000
    assert not list(CONFIG.parent.glob(".diffx-*")), "the temporary copy was left behind"


@pytest.mark.parametrize(
    "replace, named",
    [
        (("hidden_size: 40", "hidden_sise: 40"), "hidden_sise"),
        (("hidden_size: 40", "hidden_size: -4"), "hidden_size must be an integer >= 1"),
        (("hidden_size: 40", "hidden_size: forty"), "model.init_args.model.init_args.hidden_size"),
    ],
)
def test_a_refused_config_is_one_value_error_naming_it(tmp_path, replace, named):
    path = copied(tmp_path, replace)
    with pytest.raises(ValueError) as error:
        build_from_config(path)
    message = str(error.value)
    assert str(path) in message and named in message and "\n" not in message


def test_a_missing_or_foreign_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        build_from_config(tmp_path / "none.yaml")
    (tmp_path / "other.yaml").write_text("just: a mapping\n")
    with pytest.raises(ValueError, match="not a diffx training config"):
        build_from_config(tmp_path / "other.yaml")


def test_a_config_in_a_folder_that_cannot_be_written_still_builds(tmp_path, monkeypatch):
    # The copy without the subcommand's keys goes beside the config (so that its relative
    # includes resolve); where that folder refuses a file, it goes to the temporary folder.
    import tempfile

    path = copied(tmp_path)  # includes made absolute: found from anywhere
    real = tempfile.NamedTemporaryFile

    def refusing(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == tmp_path:
            raise PermissionError(f"[Errno 13] Permission denied: {dir}")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refusing)
    model, _ = build_from_config(path)
    assert isinstance(model, EffectModeling)


def test_a_run_of_another_task_is_refused_by_name(tmp_path):
    import torch

    model, _ = build_from_config(CONFIG)
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    with pytest.raises(ValueError, match="configures EffectModeling, not a StyleTransfer"):
        load_run(ckpt, CONFIG, StyleTransfer)
    loaded, _ = load_run(ckpt, CONFIG, EffectModeling)
    assert not loaded.training

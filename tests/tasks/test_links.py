"""The declared data-to-model links (diffx.tasks.links): each task built from a config gets
what its data module provides, and nothing it does not take reaches its hyperparameters."""

from pathlib import Path

import pytest

from diffx.tasks.links import HANDED_OVER
from diffx.tasks.runs import build_from_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_style_transfer_gets_the_data_modules_own_chain():
    model, data = build_from_config(CONFIGS / "style_transfer" / "quickstart.yaml")
    assert model.data_chain is data.chain  # the instance, not a second one built from YAML
    assert model.sample_rate == data.sample_rate
    # the data's chain is no part of the model: not in its weights or hyperparameters
    assert not any(key.startswith("data_chain") for key in model.state_dict())
    assert "data_chain" not in model.hparams


def test_a_task_without_the_target_gets_nothing():
    # ProxyTraining trains on style-transfer data but takes no chain from it.
    model, data = build_from_config(CONFIGS / "style_transfer" / "proxy_eq.yaml")
    assert type(model).__name__ == "ProxyTraining" and data.chain is not None
    assert not set(HANDED_OVER) & set(model.hparams)


@pytest.mark.parametrize(
    "config, argument",
    [
        ("timbre_transfer/quickstart.yaml", "training_statistics"),
        ("postfilter/quickstart.yaml", "training_statistics"),
        ("phase_alignment/quickstart.yaml", "measurement"),
    ],
)
def test_values_known_after_setup_come_as_the_data_modules_method(config, argument):
    model, data = build_from_config(CONFIGS / config)
    provider = getattr(model, argument)
    # bound to this data module; nothing is computed until the task calls it
    assert provider.__self__ is data and provider.__name__ == argument.rsplit("_", 1)[-1]
    assert argument not in model.hparams


def test_tasks_built_in_python_keep_their_settings_as_hyperparameters():
    from diffx.tasks import TimbreTransfer

    model = TimbreTransfer(hidden_size=16, gru_size=16, n_harmonics=8, n_noise_bands=9,
                           reverb_seconds=0.0, training_statistics=dict)  # fmt: skip
    assert model.hparams["hidden_size"] == 16 and "training_statistics" not in model.hparams

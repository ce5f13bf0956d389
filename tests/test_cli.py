"""The diffx console script: every committed config trains a few steps, links, errors."""

import contextlib
import io
from pathlib import Path

import pytest
import torch
import yaml

from diffx.commands.main import main
from diffx.commands.train import build_cli
from diffx.io import load_model
from diffx.losses.time_domain import esr
from diffx.nn import LSTMAmp, WaveNet
from tests.conftest import movable_config_text, shared_postfilter_cache

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("presets", "chains", "effects")
"""The folders of configs/ that hold pieces the experiment files include, not experiments."""
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*/*.yaml") if p.parent.name not in SHARED)
PIECES = sorted(p for folder in SHARED for p in (ROOT / "configs" / folder).glob("*.yaml"))


def test_configs_exist_for_each_task():
    tasks = {path.parent.name for path in CONFIGS}
    assert {
        "effect_modeling", "antialias", "phase_alignment", "style_transfer", "timbre_transfer"
    } <= tasks
    for task in tasks:
        names = {p.stem for p in CONFIGS if p.parent.name == task}
        assert any(n.startswith("quickstart") for n in names), task
        assert any(n.startswith("full") for n in names), task


def resolved_config(config: Path) -> dict:
    """A config as ``diffx fit --print_config`` shows it: the included files loaded, every
    default filled in."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as done:
        build_cli(["fit", f"--config={config}", "--print_config"])
    assert done.value.code in (None, 0)
    return yaml.safe_load(printed.getvalue())


def tiny_proxies(config: Path, folder: Path) -> list[str]:
    """Untrained small proxy files for the effects of a style-transfer config's chain."""
    from jsonargparse import ArgumentParser

    from diffx.effects import EffectChain
    from diffx.effects.proxy import NeuralProxy, save_proxy

    parser = ArgumentParser()
    parser.add_argument("--chain", type=EffectChain)
    spec = {"chain": resolved_config(config)["model"]["init_args"]["chain"]}
    chain = parser.instantiate_classes(parser.parse_object(spec)).chain
    paths = []
    for name, effect in zip(chain.names, chain.effects):
        proxy = NeuralProxy.for_effect(effect, n_blocks=2, channels=4, kernel_size=3)
        paths.append(str(save_proxy(proxy, folder / f"{name}.pt")))
    return paths


def quick_overrides(
    config: Path, tmp_path: Path, teachers: dict[str, Path], feature_cache: Path | None = None
) -> list[str]:
    """Command-line overrides that shrink a config to a few CPU steps in ``tmp_path``
    (``feature_cache``: where timbre-transfer features are cached, default in ``tmp_path``)."""
    feature_cache = feature_cache or tmp_path / "features"
    spec = yaml.safe_load(config.read_text())
    if any("Pedalboard" in p.read_text() for p in (config, *included_files(config))):
        pytest.importorskip("pedalboard")
    args = [
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
        "--trainer.limit_val_batches=1",
        "--trainer.val_check_interval=1",
        "--trainer.check_val_every_n_epoch=null",
        "--trainer.enable_progress_bar=false",
    ]
    data = spec["data"]["class_path"]
    if data.endswith("AudioPairDataModule"):
        args += [
            "--trainer.max_steps=4",
            "--data.init_args.inputs=[guitar_harmonics]",
            "--data.init_args.batch_size=2",
            "--data.init_args.num_workers=0",
        ]
    elif data.endswith("StyleTransferDataModule"):
        args += [
            "--trainer.max_steps=2",
            "--data.init_args.sources=[guitar_em9]",
            "--data.init_args.crop_samples=12000",
            "--data.init_args.train_examples=4",
            "--data.init_args.val_examples=2",
            "--data.init_args.test_examples=2",
            "--data.init_args.batch_size=2",
            "--data.init_args.num_workers=0",
        ]
        init = spec["model"]["init_args"]
        if spec["model"]["class_path"].endswith("ProxyTraining"):
            args += ["--model.init_args.channels=4", "--model.init_args.n_blocks=2"]
        if init.get("proxies"):
            args.append(f"--model.init_args.proxies={tiny_proxies(config, tmp_path)}")
    elif data.endswith("TimbreDataModule"):
        args += [
            "--trainer.max_steps=2",
            "--data.init_args.steps_per_epoch=2",
            "--data.init_args.clip_seconds=0.5",
            "--data.init_args.batch_size=2",
            "--data.init_args.crepe_model=tiny",
            f"--data.init_args.cache_dir={feature_cache}",
            "--model.init_args.hidden_size=16",
            "--model.init_args.gru_size=16",
            "--model.init_args.reverb_seconds=0.1",
        ]
    elif data.endswith("PostFilterDataModule"):
        trained = spec["model"]["init_args"]["train_streams"]
        tiny = "{" + ", ".join(f"{s}: {{channels: 4, disc_channels: 4}}" for s in trained) + "}"
        args += [
            "--trainer.max_steps=4",  # two optimizer steps per batch
            "--data.init_args.segment_frames=128",
            "--data.init_args.batch_size=2",
            "--data.init_args.segments_per_epoch=4",
            f"--data.init_args.cache_dir={feature_cache}",
            f"--model.init_args.settings={tiny}",
        ]
    elif data.endswith("PhaseAlignmentDataModule"):
        args += [
            "--trainer.max_steps=4",
            "--data.init_args.steps_per_epoch=2",
            "--data.init_args.crop_samples=2048",
            "--data.init_args.batch_size=2",
            "--data.init_args.probe_seconds=1.0",
        ]
    else:
        kind = "nam" if spec["model"]["init_args"]["teacher"].endswith(".nam") else "json"
        args += [
            "--trainer.max_steps=2",
            f"--model.init_args.teacher={teachers[kind]}",
            "--model.init_args.val_midi_step=22",
            "--data.init_args.duration_s=0.3",
            "--data.init_args.num_tones=4",
            "--data.init_args.batch_size=2",
            "--data.init_args.val_audio=[voice2]",
        ]
    return args


@pytest.fixture
def teachers(lstm_teacher_path, wavenet_teacher_path):
    return {"json": lstm_teacher_path, "nam": wavenet_teacher_path}


@pytest.mark.parametrize("config", CONFIGS, ids=[f"{p.parent.name}/{p.stem}" for p in CONFIGS])
def test_every_config_trains_a_few_steps(config, tmp_path, teachers, tmp_path_factory):
    # One feature cache for the whole session: the timbre configs share their phrases.
    cache = tmp_path_factory.getbasetemp() / "timbre_features"
    if "postfilter" in config.parts:
        cache = shared_postfilter_cache(tmp_path_factory)
    overrides = quick_overrides(config, tmp_path, teachers, cache)
    cli = build_cli(["fit", f"--config={config}", *overrides])
    assert cli.trainer.global_step == cli.trainer.max_steps
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])
    run_dir = Path(cli.trainer.log_dir)
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "config.yaml").is_file()
    assert list(run_dir.glob("events.out.tfevents.*"))
    exported = [
        p
        for p in run_dir.iterdir()
        # streams.json describes the post-filter's features; it is not a model
        if p.suffix in (".json", ".nam", ".pt") and p.stem not in ("config", "streams")
    ]
    task = yaml.safe_load(config.read_text())["model"]["class_path"].rsplit(".", 1)[-1]
    # Every task exports its product, except style and timbre transfer, whose product is the
    # checkpoint (`diffx stylize --ckpt`, `diffx timbre --ckpt`).
    product_is_checkpoint = task in ("StyleTransfer", "TimbreTransfer")
    assert len(exported) == (0 if product_is_checkpoint else 1), exported


def strings(value) -> list[str]:
    """Every string in a loaded YAML document."""
    if isinstance(value, dict):
        return [s for item in value.values() for s in strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return [value] if isinstance(value, str) else []


def included_files(config: Path) -> set[Path]:
    """The files a config includes by relative path (its trainer preset, chain and effect
    files), and the files those include in turn."""
    found: set[Path] = set()
    pending = [config]
    while pending:
        current = pending.pop()
        for value in strings(yaml.safe_load(current.read_text())):
            path = (current.parent / value).resolve()
            if value.endswith(".yaml") and path.is_file() and path not in found:
                found.add(path)
                pending.append(path)
    return found


def test_every_shared_piece_is_included_by_an_experiment():
    assert PIECES, "configs/presets, chains, effects: see configs/README.md"
    used = set().union(*(included_files(config) for config in CONFIGS))
    unused = [str(p.relative_to(ROOT)) for p in PIECES if p.resolve() not in used]
    assert not unused, f"included by no experiment config: {unused}"


@pytest.mark.parametrize("config", CONFIGS, ids=[f"{p.parent.name}/{p.stem}" for p in CONFIGS])
def test_every_config_resolves(config):
    spec = yaml.safe_load(config.read_text())
    if "config" in spec:
        # After the preset, trainer keys are dotted (trainer.max_steps): a nested `trainer:`
        # mapping would replace the preset's whole section, logger and checkpoints included.
        assert "trainer" not in spec, "write trainer keys after `config:` as trainer.<key>"
    resolved = resolved_config(config)
    # every included file was loaded, none was taken for a value
    assert not [s for s in strings(resolved) if s.endswith(".yaml")]
    trainer = resolved["trainer"]
    # the conventions of configs/presets: outputs/<task>/<experiment>, one fixed folder, a
    # checkpoint to resume from; quickstarts on the CPU
    logger = trainer["logger"]["init_args"]
    folder = (f"outputs/{config.parent.name}", config.stem, "")
    assert (logger["save_dir"], logger["name"], logger["version"]) == folder
    checkpoints = [c for c in trainer["callbacks"] if c["class_path"].endswith("ModelCheckpoint")]
    assert len(checkpoints) == 1 and checkpoints[0]["init_args"]["save_last"]
    assert trainer["devices"] == 1 and resolved["seed_everything"] == 0
    if config.stem.startswith("quickstart"):
        assert trainer["accelerator"] == "cpu"


def test_validate_uses_the_checkpoint(tmp_path, teachers):
    config = ROOT / "configs" / "effect_modeling" / "quickstart_lstm.yaml"
    args = [f"--config={config}", *quick_overrides(config, tmp_path, teachers)]
    fit = build_cli(["fit", *args])
    run_dir = Path(fit.trainer.log_dir)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    # a fresh task (new random weights) validated on the checkpoint must score what the
    # trained weights score, computed here independently from the exported model
    validate = build_cli(["validate", *args, f"--ckpt_path={checkpoint}", "--seed_everything=123"])
    exported = load_model(run_dir / "model.json")
    batch = next(iter(validate.datamodule.val_dataloader()))
    with torch.no_grad():
        pred = exported(batch["input"])
    skip = 1000  # the task's warm-up: metrics leave out the settling start
    expected = esr(pred[..., skip:], batch["target"][..., skip:]).mean()
    torch.testing.assert_close(
        validate.trainer.callback_metrics["val/esr"], expected, rtol=1e-4, atol=1e-7
    )


@pytest.mark.parametrize(
    "task, config, inner",
    [
        ("effect_modeling", "quickstart_lstm", ["model.model", "datamodule.effect"]),
        ("phase_alignment", "quickstart", ["model.cascade", "datamodule.effect"]),
        ("style_transfer", "quickstart", ["model.encoder"]),
    ],
)
def test_sample_rate_is_linked_from_data_to_model(tmp_path, teachers, task, config, inner):
    # One value on the command line reaches the task and every network or effect built
    # inside the task and the data (a chain's effects give their own: one at 48 kHz here).
    chain = (
        '{"class_path": "diffx.effects.EffectChain", "init_args": {"names": ["eq"], "effects": '
        '[{"class_path": "diffx.effects.ParametricEQ", "init_args": {"sample_rate": 48000}}]}}'
    )
    chains = [f"--{where}.init_args.chain={chain}" for where in ("model", "data")]
    cli = build_cli(
        [
            f"--config={ROOT / 'configs' / task / config}.yaml",
            "--data.init_args.sample_rate=48000",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            *(chains if task == "style_transfer" else []),
        ],
        run=False,
    )
    assert cli.datamodule.sample_rate == 48000
    assert cli.model.sample_rate == 48000
    for path in inner:
        owner, name = path.split(".")
        assert getattr(getattr(cli, owner), name).sample_rate == 48000, path


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_an_experiment_writes_its_sample_rate_once(config):
    # The data's; the task and what is built inside either are linked to it.
    rates = [line for line in config.read_text().splitlines()
             if line.split("#")[0].strip().startswith("sample_rate:")]  # fmt: skip
    assert len(rates) <= 1, rates


def test_unknown_config_key_is_named(tmp_path, capsys):
    config = ROOT / "configs" / "effect_modeling" / "quickstart_lstm.yaml"
    with pytest.raises(SystemExit):
        build_cli(["fit", f"--config={config}", "--model.init_args.learning_rat=0.1"])
    assert "learning_rat" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(movable_config_text(config).replace("dc_weight:", "dc_wieght:"))
    with pytest.raises(SystemExit):
        build_cli(["fit", f"--config={bad}"])
    assert "dc_wieght" in capsys.readouterr().err


def test_help_lists_every_command_once(capsys):
    # Every front-end module of diffx.commands is reachable and listed with one line of help.
    import diffx.commands
    from diffx.commands.main import COMMANDS

    folder = Path(diffx.commands.__file__).parent
    front_ends = {p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")} - {"main"}
    assert front_ends == {module for module, _ in COMMANDS.values()}
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (_, summary) in COMMANDS.items():
        lines = [line for line in out.splitlines() if line.split()[:1] == [name]]
        assert len(lines) == 1 and summary in lines[0], (name, lines)
    for name in COMMANDS:  # each command's own --help works and exits 0
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0
        capsys.readouterr()


def test_unknown_command_is_one_line(capsys):
    assert main(["train"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown command 'train'" in err


def test_model_types_export_in_their_formats():
    from diffx.tasks.base import model_suffix

    assert model_suffix(LSTMAmp(hidden_size=2)) == ".json"
    assert model_suffix(WaveNet()) == ".nam"

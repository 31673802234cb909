"""One configuration per model: each setting defined once, with one default; the training
configuration nests fusion's own settings; old flat names, files and checkpoint records still work."""
from __future__ import annotations

import dataclasses
import json

import pytest

from fusion.config import DEFAULT_DIMS, FusionConfig, FusionSettings, HeadSettings, ModelSettings, TargetConfig
from multimodal_interest.run import Run
from multimodal_interest.training import TrainConfig, build_model
from multimodal_interest.training.config import apply_overrides
from multimodal_interest.training.record import RECORD_FILE, check_resumable, trained_with
from synthetic import synthetic_task

# What the trained default model of BENCHMARKS.md is built with (TrainConfig's values before
# the model settings moved to fusion/): changing one changes the published results.
TRAINED_DEFAULTS = {"kind": "linear", "dim": None, "n_layers": 1, "n_heads": 4, "max_len": 50, "dropout": 0.1,
                    "modality_dropout": 0.1, "n_experts": 1, "pooling": "mean", "adapter": "linear",
                    "item_bias": True, "temperature": 0.05, "learn_temperature": True}

# A run's config.json as the version before this one wrote it: every setting flat.
OLD_FLAT = {"dim": 32, "n_layers": 2, "n_heads": 2, "max_len": 8, "dropout": 0.0, "modality_dropout": 0.1,
            "n_experts": 1, "pooling": "attention", "item_ids": True, "id_min_users": 2, "adapter": "mlp",
            "item_bias": True, "temperature": 0.05, "learn_temperature": False, "within_weight": 0.5,
            "num_negatives": None, "history_dropout": 0.0, "trainable": "all", "epochs": 3,
            "min_epoch_steps": 1, "batch_size": 64, "lr": 0.005, "weight_decay": 0.01, "grad_accum": 1,
            "mixed_precision": "no", "seed": 7, "patience": 3, "eval_batch_size": 512,
            "checkpoint_every": 0, "log_with": None}


@pytest.fixture(scope="module")
def world():
    return synthetic_task(n_users=200)


def test_each_setting_is_defined_once():
    """No field is declared in two of the configuration classes (a redeclared one would
    carry a second default), and no name is both a model setting and a training one."""
    classes = [FusionSettings, HeadSettings, FusionConfig, TargetConfig, ModelSettings, TrainConfig]
    where: dict[str, list[str]] = {}
    for cls in classes:
        for name in cls.__dict__.get("__annotations__", {}):
            where.setdefault(name, []).append(cls.__name__)
    assert {n: c for n, c in where.items() if len(c) > 1} == {}
    model = {f.name for f in dataclasses.fields(ModelSettings)}
    assert model == {f.name for f in dataclasses.fields(FusionSettings)} | {f.name for f in dataclasses.fields(HeadSettings)}
    assert model.isdisjoint(f.name for f in dataclasses.fields(TrainConfig))
    assert len(TrainConfig().flat()) == len(dataclasses.fields(TrainConfig)) - 1 + len(model)


def test_the_trained_model_gets_the_one_default_of_each_setting(world):
    task, features = world
    model = build_model(task, features, TrainConfig())
    fusion, direct = model.fusion.config, FusionConfig(features.dims, task.platforms)
    for f in dataclasses.fields(FusionSettings):
        if f.name == "dim":  # None: the kind's width (the closed-form fit may keep fewer directions)
            assert fusion.dim == direct.dim == DEFAULT_DIMS["linear"] and TRAINED_DEFAULTS["dim"] is None
            continue
        assert getattr(fusion, f.name) == getattr(direct, f.name) == TRAINED_DEFAULTS[f.name], f.name
    for p in task.platforms:
        head, direct = model.config.targets[p], TargetConfig(task.n_items[p])
        for f in dataclasses.fields(HeadSettings):
            assert getattr(head, f.name) == getattr(direct, f.name) == TRAINED_DEFAULTS[f.name], f.name
    assert ModelSettings().to_dict() == TRAINED_DEFAULTS
    assert type(model.fusion).__name__ == "LinearFusion"


def test_model_settings_reach_the_model(world):
    task, features = world
    config = TrainConfig(model=ModelSettings(dim=32, n_heads=2, n_layers=2, pooling="attention",
                                             temperature=0.1, learn_temperature=False))
    model = build_model(task, features, config)
    assert (model.fusion.config.dim, model.fusion.config.n_layers, model.fusion.config.pooling) == (32, 2, "attention")
    assert all(t.temperature == 0.1 and not t.learn_temperature for t in model.config.targets.values())


def test_old_flat_names_and_nested_names_are_the_same_setting():
    flat = ["dim=32", "n_heads=2", "n_layers=2", "pooling=attention", "temperature=1e-2", "lr=3e-4"]
    nested = ["model.dim=32", "model.n_heads=2", "model.n_layers=2", "model.pooling=attention",
              "model.temperature=1e-2", "lr=3e-4"]
    want = TrainConfig(model=ModelSettings(dim=32, n_heads=2, n_layers=2, pooling="attention", temperature=0.01),
                       lr=3e-4)
    assert TrainConfig.from_dict(apply_overrides({}, flat), "--set") == want
    assert TrainConfig.from_dict(apply_overrides({}, nested), "--set") == want
    assert TrainConfig(dim=32, n_heads=2, n_layers=2, pooling="attention", temperature=0.01, lr=3e-4) == want
    assert dataclasses.replace(TrainConfig(dim=32, n_heads=2), n_layers=2).model.n_layers == 2


def test_an_override_replaces_the_files_setting_whatever_its_spelling(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("model:\n  dim: 64\n  n_heads: 2\nlr: 1e-3\n")
    assert TrainConfig.from_file(path, ["dim=32"]).model.dim == 32
    assert TrainConfig.from_file(path, ["model.dim=16"]).model.dim == 16
    path.write_text("dim: 64\nn_heads: 2\n")  # an old flat file
    assert TrainConfig.from_file(path, ["model.dim=32"]) == TrainConfig(dim=32, n_heads=2)


def test_an_unknown_name_is_an_error_naming_the_closest():
    with pytest.raises(ValueError, match=r"--set: unknown setting\(s\) n_layer; did you mean model.n_layers\?"):
        TrainConfig.from_dict(apply_overrides({}, ["n_layer=2"]), "--set")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) model.poolin; did you mean model.pooling\?"):
        TrainConfig.from_dict(apply_overrides({}, ["model.poolin=mean"]), "--set")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) model.lr; did you mean lr\?"):
        TrainConfig.from_dict(apply_overrides({}, ["model.lr=0.1"]), "--set")
    with pytest.raises(TypeError, match=r"unknown setting\(s\) temprature; did you mean model.temperature\?"):
        TrainConfig(temprature=0.1)
    with pytest.raises(ValueError, match=r"config.yaml: model setting dim is given twice \(dim and model.dim\)"):
        TrainConfig.from_dict({"dim": 32, "model": {"dim": 64}}, "config.yaml")
    with pytest.raises(ValueError, match=r"--set: pooling must be one of"):
        TrainConfig.from_dict(apply_overrides({}, ["pooling=max"]), "--set")
    with pytest.raises(ValueError, match=r"FusionConfig: unknown key\(s\) n_layer; .*did you mean n_layers\?"):
        FusionConfig.from_dict({"modalities": {"text": 4}, "platforms": ["a"], "n_layer": 2})


def test_save_and_load_round_trip(tmp_path):
    config = TrainConfig(model=ModelSettings(dim=64, n_layers=3, pooling="attention", adapter="mlp"),
                         item_ids=True, lr=3e-4, num_negatives=100, log_with="tensorboard")
    config.save(tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"]["n_layers"] == 3 and "n_layers" not in saved
    assert TrainConfig.from_file(tmp_path / "config.json") == config
    assert TrainConfig.from_dict(config.flat()) == config


def test_a_run_folder_written_with_flat_settings_still_reads(tmp_path):
    run = Run(tmp_path / "run")
    run.folder.mkdir()
    run.config_file.write_text(json.dumps(OLD_FLAT, indent=2))
    config = run.config(TrainConfig)  # saved before the linear model: a transformer's
    assert config.model == ModelSettings(kind="transformer", dim=32, n_layers=2, n_heads=2, max_len=8,
                                         dropout=0.0, pooling="attention", adapter="mlp", learn_temperature=False)
    assert (config.item_ids, config.id_min_users, config.lr, config.seed) == (True, 2, 0.005, 7)
    # settings added since take their defaults
    assert config.flat() == {**OLD_FLAT, "kind": "transformer", "exact_rows": 6_000, "landmarks": 8192}


def test_a_checkpoint_recorded_with_flat_settings_resumes(world, tmp_path):
    """A checkpoint's trained_with.json from the version before holds the settings flat; the
    same training now agrees with it, and a different one is refused naming the setting."""
    task, features = world
    config = TrainConfig.from_dict({**OLD_FLAT, "kind": "transformer"})  # the default was
    old = trained_with(task, features, config)
    old["config"] = {k: v for k, v in OLD_FLAT.items()
                     if k not in ("epochs", "patience", "checkpoint_every", "eval_batch_size", "log_with")}
    ckpt = tmp_path / "checkpoints" / "step-1"
    ckpt.mkdir(parents=True)
    (ckpt / RECORD_FILE).write_text(json.dumps(old))
    check_resumable(ckpt, trained_with(task, features, dataclasses.replace(config, epochs=9)))
    with pytest.raises(ValueError, match=r"n_layers 2 \(now 1\)"):
        check_resumable(ckpt, trained_with(task, features, dataclasses.replace(config, n_layers=1)))


def test_the_linear_width_is_any_positive_number_the_transformers_a_multiple_of_its_heads():
    assert FusionSettings(dim=99).dim == 99  # the closed-form fit's rank, whatever it comes to
    with pytest.raises(ValueError, match=r"dim \(99\) must be a multiple of n_heads \(4\)"):
        FusionSettings(kind="transformer", dim=99)
    with pytest.raises(ValueError, match=r"dim \(0\) and n_heads \(4\) must be >= 1"):
        FusionSettings(dim=0)

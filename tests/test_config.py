"""Training configuration: every typed option wins (with or without --recipe, under --resume
it applies or is refused), with_overrides, the TOML file and the precedence of the layers.

All of it builds configurations without training; the real runs are in test_cli_train.py.
"""

from __future__ import annotations

import dataclasses
import sys

import pytest

from cnnlab.cli import build_parser
from cnnlab.cli.train import resolve
from cnnlab.data.transforms import Augment
from cnnlab.errors import CnnlabError
from cnnlab.runs import directory as runs
from cnnlab.runs.config_file import augment_text, read_config, to_toml
from cnnlab.train.config import (
    RECIPES,
    REFUSE,
    Hyperparams,
    RunConfig,
    Runtime,
    TrainConfig,
    all_settings,
    get,
    resume_config,
    with_overrides,
)

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def parse(*argv: str):
    return build_parser("train").parse_args(["train", *argv])


def resolved(*argv: str) -> RunConfig:
    return resolve(parse(*argv))[0]


# (typed option, setting, the value it must give). Values equal to the built-in default on
# purpose where a recipe differs (batch 128, momentum 0, no Nesterov, ...): the old bug
# treated an option equal to its parser default as not typed.
CASES = [
    (["--data", "fashion-mnist"], "data", "fashion-mnist"),
    (["--model", "mnist-cnn"], "model", "mnist-cnn"),
    (["--train-size", "300"], "train_size", 300),
    (["--val-size", "0"], "val_size", 0),
    (["--val-size", "500"], "val_size", 500),
    (["--normalize", "none"], "normalize", "none"),
    (["--init", "torch"], "init", "torch"),
    (["--init", "model"], "init", "model"),
    (["--epochs", "10"], "epochs", 10),
    (["--batch-size", "128"], "batch_size", 128),
    (["--steps-per-epoch", "7"], "steps_per_epoch", 7),
    (["--optimizer", "adam"], "optimizer", "adam"),
    (["--lr", "0.001"], "lr", 0.001),
    (["--momentum", "0"], "momentum", 0),
    (["--momentum", "0.8"], "momentum", 0.8),
    (["--nesterov"], "nesterov", True),
    (["--no-nesterov"], "nesterov", False),
    (["--decay", "0"], "decay", 0),
    (["--decay", "1e-6"], "decay", 1e-6),
    (["--weight-decay", "0"], "weight_decay", 0),
    (["--betas", "0.9", "0.999"], "betas", (0.9, 0.999)),
    (["--schedule", "constant"], "schedule", "constant"),
    (["--step-epochs", "3"], "step_epochs", 3),
    (["--gamma", "0.5"], "gamma", 0.5),
    (["--warmup", "0.25"], "warmup", 0.25),
    (["--label-smoothing", "0"], "label_smoothing", 0),
    (["--augment", "none"], "augment", Augment()),
    (["--augment", "shift=0.1,flip-h"], "augment", Augment(shift=0.1, flip_h=True)),
    (["--seed", "0"], "seed", 0),
    (["--early-stopping", "2"], "early_stopping", 2),
    (["--monitor", "val_accuracy"], "monitor", "val_accuracy"),
    (["--monitor", "val_loss"], "monitor", "val_loss"),
    (["--restore-best"], "restore_best", True),
    (["--eval-flip"], "eval_flip", True),
    (["--no-eval-flip"], "eval_flip", False),
    (["--eval-shift"], "eval_shift", True),
    (["--device", "cpu"], "device", "cpu"),
    (["--precision", "auto"], "precision", "auto"),
    (["--no-cuda-graphs"], "cuda_graphs", False),
    (["--cuda-graphs"], "cuda_graphs", True),
    (["--compile"], "compile", True),
    (["--fast", "off"], "fast", "off"),
    (["--fast", "auto"], "fast", "auto"),
    (["--eval-batch-size", "1024"], "eval_batch_size", 1024),
    (["--quiet"], "verbose", 0),
    (["--verbose"], "verbose", 2),
    (["--freeze-epochs", "0"], "freeze_epochs", 0),
    (["--freeze-epochs", "2"], "freeze_epochs", 2),
    (["--body-lr-mult", "0.1"], "body_lr_mult", 0.1),
    (["--no-pretrained"], "pretrained", False),
    (["--weights", "w.pth"], "weights", "w.pth"),
    (["--image-size", "64"], "image_size", 64),
    (["--stream"], "stream", True),
    (["--max-memory", "2.5"], "max_memory", 2.5),
    (["--skip-bad"], "skip_bad", True),
    (["--workers", "3"], "workers", 3),
]


def test_the_cases_cover_every_setting():
    assert {name for _, name, _ in CASES} == set(all_settings())


@pytest.mark.parametrize("recipe", [None, "mnist-fast", "cifar-fast"])
@pytest.mark.parametrize("argv,name,value", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_every_typed_option_wins(recipe, argv, name, value):
    cfg = resolved(*(["--recipe", recipe] if recipe else []), *argv)
    assert get(cfg, name) == value and type(get(cfg, name)) is type(value)
    base = RECIPES[recipe] if recipe else RunConfig()
    for other in all_settings():  # and nothing else moves
        if other != name:
            assert get(cfg, other) == get(base, other), other


def test_untyped_options_keep_the_recipe():
    assert resolved("--recipe", "cifar-fast") == RECIPES["cifar-fast"]
    assert resolved() == RunConfig()


@pytest.mark.parametrize("recipe,argv,lr", [
    (None, ["--lr", "0.1", "--batch-size", "256", "--lr-scale-batch", "128"], 0.2),
    (None, ["--optimizer", "sgd", "--batch-size", "64", "--lr-scale-batch", "128"], 0.005),  # sgd's default 0.01
    ("mnist-fast", ["--lr-scale-batch", "128"], 0.03),  # the recipe's lr 0.015 at its batch 256
    ("mnist-fast", ["--batch-size", "512", "--lr-scale-batch", "256"], 0.03),
])
def test_lr_scale_batch_scales_the_resolved_lr(recipe, argv, lr):
    cfg = resolved(*(["--recipe", recipe] if recipe else []), *argv)
    assert cfg.train.lr == pytest.approx(lr)


# --------------------------------------------------------------------------- --resume


@pytest.fixture
def saved_run(tmp_path):
    """A run directory as train_run leaves it (config.json), from the cifar-fast recipe."""
    cfg = RECIPES["cifar-fast"]
    runs.create_run(tmp_path / "run", {**cfg.to_dict(), "input_shape": [32, 32, 3], "num_classes": 10})
    return tmp_path / "run", cfg


@pytest.mark.parametrize("argv,name,value", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_resume_applies_or_refuses_each_option(saved_run, argv, name, value):
    path, saved = saved_run
    refused = all_settings()[name].metadata["resume"] == REFUSE
    if refused and value != get(saved, name):
        with pytest.raises(CnnlabError, match=f"cannot change {name} of a run being resumed"):
            resolve(parse("--resume", str(path), *argv))
        return
    cfg, changes = resolve(parse("--resume", str(path), *argv))
    assert get(cfg, name) == value and changes[name] == value
    assert all(get(cfg, o) == get(saved, o) for o in all_settings() if o != name)


def test_refused_on_resume_are_what_decided_the_finished_epochs():
    refused = {n for n, f in all_settings().items() if f.metadata["resume"] == REFUSE}
    assert refused == {"data", "model", "train_size", "val_size", "normalize", "init", "seed", "optimizer",
                       "pretrained", "weights", "image_size", "skip_bad"}


@pytest.mark.parametrize("argv", [["--recipe", "mnist-fast"], ["--out", "x"], ["--overwrite"]])
def test_new_run_options_are_refused_with_resume(saved_run, argv):
    with pytest.raises(CnnlabError, match=f"{argv[0]} cannot be used with --resume"):
        resolve(parse("--resume", str(saved_run[0]), *argv))


def test_resume_config_names_the_setting_and_both_values():
    with pytest.raises(CnnlabError) as info:
        resume_config(RECIPES["mnist-fast"], model="intro-cnn")
    assert str(info.value) == ("cannot change model of a run being resumed: its finished epochs used 'mnist-fast', "
                               "not 'intro-cnn'; start a new run instead")


# --------------------------------------------------------------------------- the dataclasses


def test_hyperparams_and_runtime_split_train_config():
    h, r = {f.name for f in dataclasses.fields(Hyperparams)}, {f.name for f in dataclasses.fields(Runtime)}
    assert not h & r and h | r == {f.name for f in dataclasses.fields(TrainConfig)}
    assert r == {"device", "precision", "fast", "cuda_graphs", "compile", "eval_batch_size", "verbose"}
    cfg = RECIPES["cifar-fast"].train
    assert TrainConfig.of(cfg.hyperparams, cfg.runtime) == cfg
    assert TrainConfig(epochs=6).epochs == 6  # the README's spelling


@pytest.mark.parametrize("field,value,message", [
    ("batch_size", "128", "batch_size must be an integer, got '128'"),
    ("batch_size", True, "batch_size must be an integer, got True"),
    ("lr", "fast", "lr must be a number, got 'fast'"),
    ("nesterov", 1, "nesterov must be true or false, got 1"),
    ("betas", [0.9], "betas must be a list of 2 numbers, got [0.9]"),
    ("augment", "zoom=2", "bad augmentation 'zoom=2'"),
    ("optimizer", "adamm", "optimizer must be one of adam, adamw, sgd, adadelta, muon, got 'adamm'"),
    ("bogus", 1, "unknown setting 'bogus'; known settings: "),
])
def test_with_overrides_checks_names_and_types(field, value, message):
    with pytest.raises(CnnlabError, match=message.replace("[", r"\[").replace("]", r"\]")):
        with_overrides(RunConfig(), **{field: value})


def test_with_overrides_routes_train_fields_and_keeps_the_original():
    cfg = with_overrides(RunConfig(), model="intro-cnn", lr=0.5, betas=[0.8, 0.9], augment="crop=2")
    assert (cfg.model, cfg.train.lr, cfg.train.betas, cfg.train.augment) == ("intro-cnn", 0.5, (0.8, 0.9), Augment(crop=2))
    assert RunConfig().train.lr is None
    assert with_overrides(TrainConfig(), epochs=3) == TrainConfig(epochs=3)


def test_the_run_directory_modules_old_paths_still_import_with_a_note():
    import importlib

    from cnnlab.runs import directory

    sys.modules.pop("cnnlab.train.runs", None)
    with pytest.warns(FutureWarning, match="cnnlab.train.runs moved to cnnlab.runs.directory"):
        old = importlib.import_module("cnnlab.train.runs")
    assert old.load_run is directory.load_run
    with pytest.warns(FutureWarning, match="cnnlab.runs.load_run moved to cnnlab.runs.directory.load_run"):
        from cnnlab.runs import load_run  # 0.1's flat module cnnlab.runs
    assert load_run is directory.load_run


# --------------------------------------------------------------------------- TOML


@pytest.mark.parametrize("cfg", [RunConfig(), *RECIPES.values(),
                                 with_overrides(RunConfig(), lr=1e-6, train_size=100, val_size=0.1, early_stopping=0,
                                                augment="shift=0.1,crop=3,flip-v,rotation=12.5", data="folder:a \"b\"/é")],
                         ids=["default", *RECIPES, "odd"])
def test_toml_round_trips(tmp_path, cfg):
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg, header="a header"), encoding="utf-8")
    assert with_overrides(RunConfig(), **read_config(path)) == cfg


def test_toml_text_is_what_tomllib_reads():
    text = to_toml(RECIPES["mnist-fast"])
    doc = tomllib.loads(text)
    assert doc["run"] == {"data": "mnist", "model": "mnist-fast", "val_size": 0, "normalize": "none", "init": "model",
                          "pretrained": False, "stream": False, "skip_bad": False, "workers": 2}
    assert doc["hyperparams"]["betas"] == [0.7, 0.9] and doc["hyperparams"]["lr"] == 0.015
    assert "lr" not in tomllib.loads(to_toml(RunConfig()))["hyperparams"]  # unset: a comment
    assert "# lr: unset" in to_toml(RunConfig())
    assert doc["runtime"] == {"device": "auto", "precision": "auto", "fast": "auto", "cuda_graphs": True,
                              "compile": False, "eval_batch_size": 1024, "verbose": 1}


def test_augment_text_round_trips():
    for aug in (Augment(), Augment(crop=2), Augment(shift=0.125, flip_h=True, flip_v=True, rotation=10.0)):
        assert Augment.parse(augment_text(aug)) == aug
    assert augment_text(Augment(flip_h=True, crop=2)) == "crop=2,flip-h"


@pytest.mark.parametrize("text,message", [
    ("[hyperparams]\nlrr = 0.1\n",
     "c.toml: unknown key hyperparams.lrr; allowed in [hyperparams]: epochs, batch_size, steps_per_epoch,"),
    ("[run]\nepochs = 3\n", "c.toml: unknown key run.epochs (it belongs in [hyperparams]); allowed in [run]: data, model,"),
    ("[hyperparams]\nbatch_size = \"64\"\n", "c.toml: hyperparams.batch_size must be an integer, got '64'"),
    ("[runtime]\ncompile = 1\n", "c.toml: runtime.compile must be true or false, got 1"),
    ("[hyperparams]\noptimizer = \"adamm\"\n",
     "c.toml: optimizer must be one of adam, adamw, sgd, adadelta, muon, got 'adamm'"),
    ("[train]\nepochs = 3\n", "c.toml: unknown section [train]; allowed sections: [run], [hyperparams], [runtime]"),
    ("epochs = 3\n", "c.toml: key 'epochs' is outside a section (it belongs in [hyperparams]); sections: [run],"),
    ("[run\n", "c.toml is not valid TOML"),
])
def test_bad_config_file_is_one_line_naming_the_key(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(CnnlabError) as info:
        read_config("c.toml")
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_precedence_defaults_recipe_file_command_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[hyperparams]\nbatch_size = 64\nlr = 0.05\nseed = 3\n[runtime]\nverbose = 2\n")
    cfg = resolved("--recipe", "mnist-fast", "--config", str(path), "--lr", "0.5", "--quiet")
    assert cfg.train.epochs == 1 and cfg.model == "mnist-fast"  # recipe over defaults
    assert cfg.train.batch_size == 64 and cfg.train.seed == 3  # file over recipe and defaults
    assert cfg.train.lr == 0.5 and cfg.train.verbose == 0  # command line over file
    assert cfg.train.eval_batch_size == 1024 and cfg.val_size == 0  # defaults where no layer speaks
    assert resolved("--config", str(path)).model == "mnist-cnn"  # the file alone: defaults below it


def test_print_config_under_resume_shows_the_saved_run_with_the_change(saved_run, capsys):
    from cnnlab.cli import main

    path, saved = saved_run
    assert main(["train", "--resume", str(path), "--epochs", "12", "--print-config"]) == 0
    doc = tomllib.loads(capsys.readouterr().out)
    assert doc["run"]["model"] == "cifar-fast" and doc["hyperparams"]["epochs"] == 12
    assert doc["hyperparams"]["lr"] == saved.train.lr and doc["hyperparams"]["nesterov"] is True


def test_a_new_monitor_on_resume_rescores_the_finished_epochs():
    import math

    from cnnlab.train.history import History, rescore

    history = History([{"epoch": 1, "loss": 0.9, "val_accuracy": 0.70}, {"epoch": 2, "loss": 0.5, "val_accuracy": 0.80},
                       {"epoch": 3, "loss": 0.4, "val_accuracy": 0.75}])
    best = {"value": math.inf, "epoch": 0, "wait": 0}
    rescore(history, TrainConfig(monitor="val_accuracy"), best)
    assert best == {"value": -0.80, "epoch": 2, "wait": 1}
    rescore(history, TrainConfig(monitor="loss"), best)
    assert best == {"value": 0.4, "epoch": 3, "wait": 0}


def test_a_config_file_under_resume_is_checked_like_typed_options(saved_run, tmp_path):
    path, saved = saved_run
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text("[hyperparams]\nepochs = 12\nseed = 0\n")  # seed as saved: allowed
    bad.write_text("[run]\nmodel = \"mnist-cnn\"\n")
    cfg, changes = resolve(parse("--resume", str(path), "--config", str(good), "--lr", "0.1"))
    assert (cfg.train.epochs, cfg.train.lr, cfg.model) == (12, 0.1, saved.model)
    assert changes == {"epochs": 12, "seed": 0, "lr": 0.1}
    with pytest.raises(CnnlabError, match="cannot change model of a run being resumed"):
        resolve(parse("--resume", str(path), "--config", str(bad)))


def test_a_batch_size_derived_from_steps_stays_derived_through_print_config(tmp_path, capsys):
    from cnnlab.cli import main

    assert main(["train", "--steps-per-epoch", "4", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "# batch_size: ceil(N / steps_per_epoch)" in text
    (tmp_path / "c.toml").write_text(text)
    cfg, changes = resolve(parse("--config", str(tmp_path / "c.toml")))
    assert "batch_size" not in changes and changes["steps_per_epoch"] == 4  # so the run derives it again
    assert main(["train", "--steps-per-epoch", "4", "--batch-size", "32", "--print-config"]) == 0
    assert "batch_size = 32" in capsys.readouterr().out

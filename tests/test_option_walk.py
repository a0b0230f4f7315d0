"""Every numeric option of every subcommand refuses NaN, infinity, negatives and (for counts) 0.

The walk finds the options itself (argparse's actions), so an option added later is
checked too; the values are refused at parse time with exit status 2 and an error naming
the option, before any data is loaded or any file written.
"""

from __future__ import annotations

import argparse

import pytest

from cnnlab.cli import COMMANDS, build_parser, main


def _numeric_options():
    found = []

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*prefix, name])
            elif (action.option_strings and action.choices is None and action.type is not None
                  and action.type.__name__ in ("int", "float", "number")):
                found.append((prefix, action.option_strings[0], action.type.bounds, action.nargs))

    for command in sorted(COMMANDS):
        parser = build_parser(command)
        walk(parser, [])
    return sorted({(tuple(p), o, b, n if isinstance(n, int) else 1) for p, o, b, n in found}, key=str)


OPTIONS = _numeric_options()
BAD = ["nan", "inf", "-inf", "-1", "-0.5"]


def test_the_walk_finds_the_options_of_every_command():
    commands = {p[0] for p, *_ in OPTIONS}
    assert {"train", "evaluate", "data", "features", "explain", "summary", "filter"} <= commands
    assert len(OPTIONS) > 40


@pytest.mark.parametrize("prefix, option, bounds, nargs", OPTIONS, ids=[" ".join([*p, o]) for p, o, _, _ in OPTIONS])
def test_bad_numbers_are_refused_in_one_error_line(prefix, option, bounds, nargs, capsys):
    # Every numeric option carries its range (cnnlab.bounds.Bounds): from a setting's metadata,
    # from options.bounded, or the default for counts and sizes (an int >= 1, a number > 0).
    values = BAD + ([] if bounds.ok(0) else ["0"]) + ([str(bounds.high + 1)] if bounds.high is not None else [])
    for value in values:
        argv = [*prefix, option, *([value] * nargs)]
        with pytest.raises(SystemExit) as info:
            build_parser(prefix[0]).parse_args(argv)
        assert info.value.code == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(errors) == 1 and f"argument {option}" in errors[0], (argv, errors)


@pytest.mark.parametrize("device", ["mps", "meta", "cuda:7", "xpu", "cpu:x"])
def test_devices_this_machine_or_cnnlab_cannot_use_are_one_line_errors(device, tmp_path, capsys):
    code = main(["train", "--data", "digits", "--model", "conv4k3,flatten", "--epochs", "1", "--device", device,
                 "--out", str(tmp_path / "r"), "--quiet", "--no-report"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "device" in err and "Traceback" not in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, needle", [
    (["--seed", str(2**32)], "seed"),
    (["--lr", "1e400"], "finite"),
    (["--betas", "0.9", "1.5"], "betas"),
    (["--val-size", "-3"], "val-size"),
])
def test_out_of_range_settings(argv, needle, capsys):
    try:
        code = main(["train", "--data", "digits", *argv, "--print-config"])
    except SystemExit as exc:  # refused by the parser
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err, err


def test_a_spec_too_big_for_this_machine_is_refused_with_the_estimate(tmp_path, capsys):
    huge = "conv8,flatten,dense2000000000,dense10"  # 598 G parameters: 2.2 TiB of float32 weights
    code = main(["train", "--data", "digits", "--model", huge, "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert "598,000,000,090 parameters: about 2,227.7 GiB" in err and "available" in err
    assert not (tmp_path / "r").exists()


def test_the_estimate_is_the_weights_bytes(monkeypatch):
    import cnnlab.models as models
    from cnnlab.errors import CnnlabError

    spec = "conv4k3,flatten,dense10"  # (4*9 + 4) + (4*6*6*10 + 10) = 1,490 parameters = 5,960 bytes
    monkeypatch.setattr(models, "available_memory", lambda: 5_960)
    assert models.count_params(models.build(spec, input_shape=(8, 8, 1))) == 1_490  # fits exactly
    monkeypatch.setattr(models, "available_memory", lambda: 5_959)
    with pytest.raises(CnnlabError, match="has 1,490 parameters"):
        models.build(spec, input_shape=(8, 8, 1))


# --------------------------------------------------------------------------- one edit per option


@pytest.fixture
def mixup_setting(monkeypatch):
    """A new hyperparameter added the way docs/ARCHITECTURE.md says: one field with its metadata."""
    import dataclasses

    from cnnlab.runs import config_file
    from cnnlab.train import config

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Hyperparams(config.Hyperparams):
        mixup: float = config.setting(0.0, "mixup's alpha, in [0, 1)", low=0, below=1)

    methods = {k: v for k, v in vars(config.TrainConfig).items()
               if k in ("__post_init__", "hyperparams", "runtime", "of", "to_dict", "from_dict")}
    train_config = dataclasses.dataclass(frozen=True, kw_only=True)(
        type("TrainConfig", (config.Runtime, Hyperparams), {**methods, "__module__": config.__name__}))

    # (make_dataclass: the annotation must be the class itself, not a name in this module)
    RunConfig = dataclasses.make_dataclass(  # noqa: N806 - it stands in for the class of that name
        "RunConfig", [("train", train_config, config.setting(factory=train_config, flag=False))],
        bases=(config.RunConfig,), frozen=True, kw_only=True, namespace={"__module__": config.__name__})

    for module in (config, config_file):
        for name, value in (("Hyperparams", Hyperparams), ("TrainConfig", train_config), ("RunConfig", RunConfig)):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, value)
    # The file's sections name the classes (a real field is added to the class itself).
    monkeypatch.setitem(config_file.SECTIONS, "hyperparams", Hyperparams)
    monkeypatch.setitem(config_file.SECTIONS, "run", RunConfig)
    return config


def test_a_field_added_once_reaches_the_flag_the_file_the_range_check_and_print_config(mixup_setting, tmp_path,
                                                                                       capsys):
    from cnnlab.errors import CnnlabError

    assert main(["train", "--data", "digits", "--mixup", "0.25", "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "mixup = 0.25" in printed.split("[hyperparams]", 1)[1]  # the TOML key, in its section
    config = tmp_path / "run.toml"
    config.write_text(printed)
    assert main(["train", "--config", str(config), "--print-config"]) == 0
    assert capsys.readouterr().out == printed  # the file reads back to the same configuration
    with pytest.raises(SystemExit):
        build_parser("train").parse_args(["train", "--mixup", "1.5"])
    assert "argument --mixup: must be in [0, 1), got '1.5'" in capsys.readouterr().err
    config.write_text(printed.replace("mixup = 0.25", "mixup = 2.0"))
    assert main(["train", "--config", str(config), "--print-config"]) == 2
    assert "mixup must be in [0, 1), got 2.0" in capsys.readouterr().err
    with pytest.raises(CnnlabError, match=r"mixup must be in \[0, 1\), got -0.5"):
        mixup_setting.TrainConfig(mixup=-0.5)
    assert mixup_setting.TrainConfig(mixup=0.5).hyperparams.mixup == 0.5

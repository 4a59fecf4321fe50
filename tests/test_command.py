"""Tests for edge/common/command.py: the one command harness and the `cifar-edge MODE` umbrella."""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from edge.common import command
from edge.common.configuration import option
from edge.common.errors import UserError

REPOSITORY = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class ToyConfig:
    """A command's options, as every command keeps them."""

    names: list = option([], "names to greet")
    greeting: str = option("hello", "what to say")
    shout: bool = option(False, "upper case")
    mood: Literal["calm", "loud"] = option("calm", "how")
    json: bool = option(False, "the result as JSON")
    keep: str | None = option(None, "write the result here as JSON")


class ToyError(UserError):
    """The toy's bad input."""


def toy_run(config: ToyConfig) -> dict:
    if "nobody" in config.names:
        raise ToyError("nobody: not a name")
    if "crash" in config.names:
        raise RuntimeError("a bug keeps its traceback")
    if "stop" in config.names:
        raise KeyboardInterrupt
    text = " ".join(f"{config.greeting} {name}" for name in config.names)
    return {"text": text.upper() if config.shout else text, "mood": config.mood}


TOY = command.Command(
    name="toy",
    prog="python toy.py",
    description="Greet.",
    config_class=ToyConfig,
    run=toy_run,
    render=lambda config, result: result["text"],
    json_output="json",
    json_file="keep",
    exit_status=lambda config, result: 1 if result["mood"] == "loud" else 0,
    positional=(command.Positional("names", "NAME", "names"),),
    presets={"loud": {"mood": "loud", "shout": True}},
    handlers=((KeyboardInterrupt, lambda error, config: 130),),
)


def test_runs_renders_and_returns_the_command_s_status(capsys):
    assert command.execute(TOY, ["ada", "--greeting", "hi"]) == 0
    assert capsys.readouterr().out == "hi ada\n"
    assert command.execute(TOY, ["ada", "--preset", "loud"]) == 1  # the preset's mood, the command's status
    assert capsys.readouterr().out == "HELLO ADA\n"


def test_defaults_then_preset_then_file_then_flags(tmp_path, capsys):
    settings = tmp_path / "toy.json"
    settings.write_text(json.dumps({"greeting": "hey", "shout": False}))
    config = command.parse_config(TOY, ["ada", "--preset", "loud", "--config", str(settings), "--greeting", "yo"])
    assert (config.names, config.mood, config.shout, config.greeting) == (["ada"], "loud", False, "yo")


def test_a_user_error_is_one_line_on_stderr_and_exit_2(capsys):
    assert command.execute(TOY, ["nobody"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: nobody: not a name\n" and captured.out == ""
    assert command.execute(dataclasses.replace(TOY, error_prefix="toy"), ["nobody"]) == 2
    assert capsys.readouterr().err == "toy: error: nobody: not a name\n"


def test_bad_flags_and_files_end_with_argparse_s_usage_error(tmp_path, capsys):
    for arguments, message in (
        (["ada", "--mood", "sad"], "invalid choice"),
        (["ada", "--config", str(tmp_path / "missing.json")], "cannot read config file"),
        ([], "the following arguments are required"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            command.execute(TOY, arguments)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"greting": "hi"}))
    with pytest.raises(SystemExit):
        command.execute(TOY, ["ada", "--config", str(unknown)])
    assert "unknown option 'greting'" in capsys.readouterr().err


def test_required_fields_are_named():
    needs_keep = dataclasses.replace(TOY, required=("keep",))
    with pytest.raises(SystemExit) as exit_info:
        command.parse_config(needs_keep, ["ada"])
    assert exit_info.value.code == 2


def test_json_on_stdout_and_json_into_a_file(tmp_path, capsys):
    assert command.execute(TOY, ["ada", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"text": "hello ada", "mood": "calm"}
    kept = tmp_path / "kept.json"
    assert command.execute(TOY, ["ada", "--keep", str(kept)]) == 0
    assert capsys.readouterr().out == f"hello ada\nwrote {kept}\n"
    assert json.loads(kept.read_text()) == {"text": "hello ada", "mood": "calm"}


def test_the_command_s_handlers_and_bugs(capsys):
    assert command.execute(TOY, ["stop"]) == 130
    with pytest.raises(RuntimeError, match="keeps its traceback"):
        command.execute(TOY, ["crash"])


def test_tensorflow_is_quieted_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    command.quiet_tensorflow()
    import os

    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == command.QUIET_TENSORFLOW_LOG_LEVEL
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    command.quiet_tensorflow()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


# -- every command goes through the harness ------------------------------------------------------


@pytest.mark.parametrize("mode", sorted(command.COMMANDS))
def test_every_mode_registers_its_command_and_main_is_the_harness(mode):
    module = importlib.import_module(command.COMMANDS[mode])
    assert isinstance(module.COMMAND, command.Command) and module.COMMAND.name == mode
    assert dataclasses.is_dataclass(module.COMMAND.config_class)
    assert module.main.command is module.COMMAND  # main = command.entry_point(COMMAND)
    parser = command.build_parser(module.COMMAND)  # every flag of the config, and --config on each
    assert "--config" in parser.format_help()


def test_every_benchmark_goes_through_the_harness(load_benchmark):
    for path in sorted((REPOSITORY / "benchmarks").glob("*.py")):
        benchmark = load_benchmark(path.stem)
        assert benchmark.main.command is benchmark.COMMAND, path.name


def test_the_umbrella_dispatches_and_refuses_in_one_line(tmp_path, capsys):
    assert command.umbrella([]) == 2
    assert "usage: cifar-edge {train," in capsys.readouterr().out
    assert command.umbrella(["--help"]) == 0
    assert command.umbrella(["fly"]) == 2
    assert "unknown mode 'fly'" in capsys.readouterr().err
    # A mode's own errors keep the harness's rule; its usage names the umbrella.
    missing = tmp_path / "none.tflite"
    assert command.umbrella(["classify", str(tmp_path / "x.png"), "--model", str(missing)]) == 2
    assert "model file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        command.umbrella(["classify", "--help"])
    assert exit_info.value.code == 0
    assert "usage: cifar-edge classify" in capsys.readouterr().out


def test_a_mode_whose_side_is_not_installed_names_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(command.COMMANDS, "train", "train.no_such_module_here")
    assert command.umbrella(["train"]) == 2
    assert (
        'cifar-edge: error: cifar-edge train needs the training side: pip install -e ".[train]"'
        in capsys.readouterr().err
    )


def test_the_umbrella_runs_as_a_module():
    completed = subprocess.run(
        [sys.executable, "-m", "edge.common.command", "camera", "--help"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "usage: cifar-edge camera" in completed.stdout and "--source" in completed.stdout

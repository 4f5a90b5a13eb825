"""The `medcl` command: help everywhere, one-line errors without tracebacks."""

from __future__ import annotations

import pytest

from medcl.cli.main import build_parser, main

COMMANDS = [
    "synth",
    "ingest",
    "split",
    "pretrain",
    "augment-preview",
    "finetune",
    "evaluate",
    "embed",
    "predict",
    "efficiency",
    "demo",
    "dashboard",
    "import-labels",
    "export",
]


def test_every_command_is_registered():
    """Exactly these: a new command must be added here, so that its help is tested too."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(COMMANDS) == sorted(sub.choices)


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: medcl" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["split", "nope.csv", "--out", "x.csv"],
            "medcl split: error: nope.csv: manifest not found",
        ),
        (["pretrain", "optim.lr=-1"], "medcl pretrain: error: optim.lr: must be in (0, 10)"),
        (
            ["pretrain", "method.nmae=moco"],
            "unknown config key 'method.nmae' (did you mean 'name'?)",
        ),
        (["ingest", "missing_dir", "--out", "m.csv"], "medcl ingest: error: missing_dir: no such"),
        (["evaluate", "no_model", "--manifest", "m.csv"], "not a medcl model folder"),
    ],
)
def test_user_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1

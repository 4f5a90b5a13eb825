"""Bad input to every command is one line naming the file or field, exit status 2; ``--debug``
shows the traceback; Ctrl-C ends with status 130 (the commands not covered in test_main.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import medcl.cli.data
from medcl.cli.main import main
from tests.evaluate.test_model_io import _parts, _write_folder_as_before


@pytest.fixture
def model_dir(tmp_path):
    """A small valid model folder (random weights)."""
    _write_folder_as_before(tmp_path / "model", *_parts(False))
    return tmp_path / "model"


def _one_line_error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["synth", "--out", "o", "--patients", "0"], "patients must be an integer >= 1, got 0"),
        (["synth", "--out", "o", "--size", "3"], "size must be an integer >= 16, got 3"),
        (["augment-preview", "nope.csv", "--out", "x.png"], "nope.csv: manifest not found"),
        (["finetune"], "data.manifest: required"),
        (["finetune", "data.manifest=nope.csv"], "nope.csv: manifest not found"),
        (
            ["finetune", "data.manifest=m.csv", "finetune.mode=bogus"],
            "finetune.mode: expected one of",
        ),
        (["finetune", "finetune.lr=-1"], "finetune.lr: must be in (0, 10)"),
        (["embed", "nomodel", "--manifest", "m.csv", "--out", "e.parquet"], "nomodel: not a medcl"),
        (["predict", "nomodel", "src", "--out", "p.csv"], "nomodel: not a medcl model folder"),
        (["efficiency"], "data.manifest: required"),
        (["efficiency", "data.manifest=nope.csv"], "nope.csv: manifest not found"),
        (["efficiency", "data.manifest=m.csv", "--workers", "0"], "--workers: at least 1"),
        (["efficiency", "data.manifest=m.csv", "--shard", "9/2"], "--shard: K/N with 0 ≤ K < N"),
        (["efficiency", "data.manifest=m.csv", "--shard", "1/2", "--collect"], "--shard: not"),
    ],
)
def test_bad_input_is_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _one_line_error(argv, capsys)
    assert err.startswith(f"medcl {argv[0]}: error: ") and message in err


def test_bad_input_with_a_real_model_and_manifest(model_dir, tiny_manifest, capsys, tmp_path):
    src = tmp_path / "no_such_folder"
    err = _one_line_error(["predict", str(model_dir), str(src), "--out", "p.csv"], capsys)
    assert f"{src}: no such file or folder" in err
    missing = tmp_path / "missing.csv"
    argv = ["embed", str(model_dir), "--manifest", str(missing), "--out", "e.parquet"]
    assert f"{missing}: manifest not found" in _one_line_error(argv, capsys)
    png = str(tmp_path / "g.png")
    argv = ["augment-preview", str(tiny_manifest), "--out", png, "--views", "0"]
    assert "views" in _one_line_error(argv, capsys)
    argv = ["augment-preview", str(tiny_manifest), "--out", png, "--option", "nosuch=1"]
    assert "nosuch" in _one_line_error(argv, capsys)


def test_demo_refuses_an_unusable_run_folder_before_work(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    err = _one_line_error(["demo", "--quick", "--out", str(blocker / "run")], capsys)
    assert f"{blocker / 'run'}: cannot create the run folder" in err
    assert not list(tmp_path.glob("**/*.dcm"))  # nothing generated


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--seed", "abc"])
    assert exit_.value.code == 2
    assert "argument --seed: invalid int value" in capsys.readouterr().err


def test_ctrl_c_exits_130(monkeypatch, tmp_path, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(medcl.cli.data, "_split", interrupted)
    assert main(["split", "m.csv", "--out", str(tmp_path / "s.csv")]) == 130
    assert capsys.readouterr().err.strip() == "medcl split: interrupted"


def test_exit_status_and_debug_traceback_in_a_real_process(tmp_path):
    """The installed entry point: status 2 and one line; with --debug the traceback."""
    env = {k: v for k, v in os.environ.items() if k != "MEDCL_DEBUG"}
    argv = [sys.executable, "-m", "medcl.cli.main", "split", "nope.csv", "--out", "x.csv"]
    plain = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert plain.returncode == 2
    assert plain.stderr.strip() == "medcl split: error: nope.csv: manifest not found"
    debug = subprocess.run(
        [*argv[:3], "--debug", *argv[3:]], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "ManifestError: nope.csv: manifest not found" in debug.stderr

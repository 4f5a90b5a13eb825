"""``medcl dashboard``: the Streamlit command line and its one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from medcl.cli import dashboard as dashboard_cli
from medcl.cli.main import main


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run_summary.json").write_text('{"kind": "medcl-run"}')
    return tmp_path / "run"


def test_app_is_found_next_to_the_package() -> None:
    app = dashboard_cli.app_path()
    assert app.is_file() and app.parts[-2:] == ("apps", "dashboard.py")


def test_runs_streamlit_with_host_port_and_run_dir(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(dashboard_cli.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert (
        main(["dashboard", str(run_dir), "--no-browser", "--port", "9123", "--host", "0.0.0.0"])
        == 0
    )
    (cmd,) = calls
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert cmd[4] == str(dashboard_cli.app_path())
    for flag, value in [
        ("--server.address", "0.0.0.0"),
        ("--server.port", "9123"),
        ("--server.headless", "true"),
        ("--browser.gatherUsageStats", "false"),
    ]:
        assert cmd[cmd.index(flag) + 1] == value
    assert cmd[-2:] == ["--", str(run_dir.resolve())]
    assert "localhost:9123" in capsys.readouterr().out


def test_defaults_and_no_run_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(dashboard_cli.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert main(["dashboard", "--no-browser"]) == 0
    cmd = calls[0]
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8501"
    assert "--" not in cmd


def test_one_line_errors(
    run_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["dashboard", str(tmp_path), "--no-browser"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a run folder" in err and len(err.splitlines()) == 1
    monkeypatch.setattr(dashboard_cli, "app_path", lambda: tmp_path / "apps" / "dashboard.py")
    assert main(["dashboard", str(run_dir), "--no-browser"]) == 2
    err = capsys.readouterr().err.strip()
    assert "dashboard app not found" in err and len(err.splitlines()) == 1

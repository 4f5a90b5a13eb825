"""``medcl dashboard``: the Streamlit command line, its one-line errors, and a real Streamlit child
that stops with its parent (signal forwarded; parent killed)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
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
    monkeypatch.setattr(dashboard_cli, "serve", lambda cmd, _start=None: calls.append(cmd) or 0)
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
    monkeypatch.setattr(dashboard_cli, "serve", lambda cmd, _start=None: calls.append(cmd) or 0)
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (an exited child nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _children(pid: int) -> list[int]:
    kids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                kids.append(int(p.name))
    return kids


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PDEATHSIG is Linux")
@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["sigterm", "sigint", "sigkill"]
)
def test_streamlit_child_does_not_outlive_the_parent(run_dir: Path, tmp_path: Path, sig) -> None:
    port = _free_port()
    log = (tmp_path / "dashboard.log").open("wb")
    cmd = [sys.executable, "-c", "import sys; from medcl.cli.main import main; sys.exit(main())"]
    parent = subprocess.Popen(
        [*cmd, "dashboard", str(run_dir), "--no-browser", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    child: list[int] = []
    try:
        assert _wait_for(lambda: _healthy(port), 120), (tmp_path / "dashboard.log").read_text()
        child = _children(parent.pid)
        assert len(child) == 1 and _port_open(port)
        parent.send_signal(sig)
        parent.wait(timeout=20)
        assert _wait_for(lambda: not _port_open(port) and not _running(child[0]), 20), (
            f"after {sig.name} of the parent the Streamlit child still runs or serves port {port}"
        )
        if sig != signal.SIGKILL:
            assert parent.returncode == 0  # forwarded: Streamlit stopped cleanly, then medcl
    finally:
        for pid in [*child, parent.pid]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        parent.wait(timeout=20)
        log.close()

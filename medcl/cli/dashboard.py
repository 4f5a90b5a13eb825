"""``medcl dashboard``: the Streamlit review app for a run folder; ``medcl import-labels``: the
annotation sheet the app exports, filled in, back into a manifest for the next run.

Process hygiene: Streamlit runs as a child process that never outlives ``medcl dashboard``.

- SIGINT, SIGTERM (and SIGHUP) sent to ``medcl dashboard`` are forwarded to the child, which is
  then waited for (killed after :data:`STOP_GRACE_S` seconds if it has not stopped).
- On Linux the child is started with ``PR_SET_PDEATHSIG`` (``prctl`` through ctypes, in
  ``preexec_fn``): the kernel sends it SIGTERM as soon as its parent dies, however it dies
  (SIGKILL, a crash, the OOM killer). Chosen over a watchdog in the child that polls
  ``os.getppid()`` because the child is Streamlit's own process, where no medcl code runs to poll;
  a watchdog would need a wrapper process, which itself could be killed, and would react only
  at its polling interval. Elsewhere (macOS, Windows) there is no such call: signals are still
  forwarded, and only a parent killed without a chance to forward can leave the child running.
- On POSIX the child gets its own process group, so a Ctrl+C in the terminal reaches only the
  parent, which forwards it once (to the whole group, Streamlit's own children included).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from medcl.errors import MedclError

APP_RELATIVE = Path("apps") / "dashboard.py"
STOP_GRACE_S = 10.0
"""Seconds the child has to stop after a forwarded signal before it is killed."""
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``dashboard`` and ``import-labels``."""
    p = sub.add_parser(
        "dashboard",
        help="review a run in the browser (embedding, errors, Grad-CAM, what to label next)",
        description="Start the Streamlit review app for RUN_DIR (a folder with run_summary.json, "
        "e.g. from `medcl demo`). Without RUN_DIR the app uses $MEDCL_RUN_DIR, then offers the "
        "run folders under ./runs.",
    )
    p.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR", help="run folder")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    p.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    p.set_defaults(handler=_dashboard)

    q = sub.add_parser(
        "import-labels",
        help="fill a manifest's labels from an annotated sheet (the dashboard's 'Label next')",
        description="Write a new manifest whose `label` is filled for the image ids of LABELS_CSV "
        "(columns image_id, label; blank labels are skipped). Unknown classes, unknown image ids "
        "and val/test image ids are refused.",
    )
    q.add_argument("manifest", type=Path, help="manifest the sheet was made from")
    q.add_argument("labels_csv", type=Path, help="annotated sheet")
    q.add_argument("--out", type=Path, required=True, help="new manifest (CSV)")
    q.set_defaults(handler=_import_labels)


def app_path() -> Path:
    """``apps/dashboard.py`` of the source tree (``medcl/`` and ``apps/`` are siblings)."""
    import medcl

    return Path(medcl.__file__).resolve().parent.parent / APP_RELATIVE


def streamlit_command(app: Path, run_dir: Path | None, host: str, port: int) -> list[str]:
    """The ``python -m streamlit run`` command line that serves the app."""
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    if run_dir is not None:
        cmd += ["--", str(run_dir)]
    return cmd


def _open_browser_when_ready(url: str, timeout: float = 60.0) -> None:
    import webbrowser

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "_stcore/health", timeout=2) as r:
                if r.status == 200:
                    webbrowser.open(url)
                    return
        except OSError:
            time.sleep(0.5)


def _dashboard(args: argparse.Namespace) -> int:
    app = app_path()
    if not app.is_file():
        raise MedclError(
            f"{app}: dashboard app not found (it ships with the source tree; run "
            "medcl from a clone of the repository)"
        )
    run_dir = None
    if args.run_dir is not None:
        run_dir = args.run_dir.expanduser().resolve()
        if not (run_dir / "run_summary.json").is_file():
            raise MedclError(
                f"{args.run_dir}: not a run folder (no run_summary.json; make one "
                "with `medcl demo`)"
            )
    shown_host = "localhost" if args.host in ("127.0.0.1", "0.0.0.0") else args.host
    url = f"http://{shown_host}:{args.port}/"
    print(
        f"medcl dashboard: {run_dir or 'choose a run in the app'} at {url} (Ctrl+C stops)",
        flush=True,
    )
    cmd = streamlit_command(app, run_dir, args.host, args.port)
    on_start = None
    if not args.no_browser:
        # started after the fork: preexec_fn is only safe while the parent has one thread
        def on_start() -> None:
            threading.Thread(target=_open_browser_when_ready, args=(url,), daemon=True).start()

    return serve(cmd, on_start)


def _child_setup() -> Callable[[], None] | None:
    """The ``preexec_fn`` of the child: own process group; on Linux, die with the parent."""
    if os.name != "posix":
        return None
    prctl = None
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
        except (OSError, AttributeError):
            prctl = None
    parent = os.getpid()

    def setup() -> None:
        os.setpgid(0, 0)
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            if os.getppid() != parent:  # the parent died before the request took effect
                os.kill(os.getpid(), signal.SIGTERM)

    return setup


def _signal_child(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to the child's process group (POSIX) or to the child."""
    try:
        if os.name == "posix":
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except (ProcessLookupError, PermissionError, OSError):
        pass  # already gone


def serve(cmd: list[str], on_start: Callable[[], None] | None = None) -> int:
    """Run ``cmd`` as a child that stops with this process; returns its exit status.

    SIGINT, SIGTERM and SIGHUP received meanwhile are forwarded to the child, which is then
    waited for (and killed after :data:`STOP_GRACE_S` s). The previous handlers are restored.

    Args:
        cmd: The command line (the Streamlit server).
        on_start: Called once the child has started.

    Returns:
        The child's exit status (``128 + n`` when it ended by signal ``n``).

    Raises:
        MedclError: If the command cannot be started.
    """
    try:
        proc = subprocess.Popen(cmd, preexec_fn=_child_setup())
    except (FileNotFoundError, PermissionError) as exc:
        raise MedclError(f"cannot start streamlit ({exc})") from exc
    received: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        _signal_child(proc, signum)

    names = ("SIGINT", "SIGTERM", "SIGHUP")
    sigs = [getattr(signal, n) for n in names if hasattr(signal, n)]
    previous = {s: signal.signal(s, forward) for s in sigs}
    try:
        if on_start is not None:
            on_start()
        deadline = None
        while True:
            try:
                rc = proc.wait(timeout=0.2)  # a handler cannot interrupt a blocking wait
                break
            except subprocess.TimeoutExpired:
                if received and deadline is None:
                    deadline = time.monotonic() + STOP_GRACE_S
                if deadline is not None and time.monotonic() > deadline:
                    _signal_child(proc, getattr(signal, "SIGKILL", signal.SIGTERM))
                    rc = proc.wait()
                    break
    finally:
        if proc.poll() is None:  # an exception in this process: do not leave the child behind
            _signal_child(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for s, h in previous.items():
            signal.signal(s, h)
    return 128 - rc if rc < 0 else rc


def _import_labels(args: argparse.Namespace) -> int:
    from medcl.app.labelling import import_labels

    r = import_labels(args.manifest, args.labels_csv, args.out)
    print(
        f"{r.path}: {r.added} image(s) newly labelled, {r.unchanged} unchanged, "
        f"{r.blank} blank row(s) skipped"
    )
    return 0

"""``medcl dashboard``: the Streamlit review app for a run folder; ``medcl import-labels``: the
annotation sheet the app exports, filled in, back into a manifest for the next run."""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from medcl.errors import MedclError

APP_RELATIVE = Path("apps") / "dashboard.py"


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
    if not args.no_browser:
        threading.Thread(target=_open_browser_when_ready, args=(url,), daemon=True).start()
    try:
        return subprocess.call(streamlit_command(app, run_dir, args.host, args.port))
    except FileNotFoundError as exc:
        raise MedclError(f"cannot start streamlit ({exc})") from exc


def _import_labels(args: argparse.Namespace) -> int:
    from medcl.app.labelling import import_labels

    r = import_labels(args.manifest, args.labels_csv, args.out)
    print(
        f"{r.path}: {r.added} image(s) newly labelled, {r.unchanged} unchanged, "
        f"{r.blank} blank row(s) skipped"
    )
    return 0

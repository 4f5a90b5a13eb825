"""medcl review dashboard: look at a run in the browser.

Start it with ``medcl dashboard RUN_DIR`` or ``streamlit run apps/dashboard.py -- RUN_DIR``.
Without an argument it uses ``$MEDCL_RUN_DIR``, then offers the run folders under ``./runs``.

Pages (sidebar; each can be opened directly with ``?page=<key>``), one module each in
:mod:`medcl.app.pages`:

- ``overview`` — configuration, data, test metrics with intervals, label efficiency;
- ``embedding`` — interactive 2-D embedding (box/lasso selection shows the images);
- ``case`` — one image: prediction, probabilities, Grad-CAM, nearest neighbours;
- ``errors`` — confusion matrix, per-class metrics, reliability diagram, cases to review;
- ``augment`` — the augmented views the model was trained with;
- ``label`` — which unlabelled images to label next, as a CSV sheet for annotation.

Only files inside the run folder and the manifest it names are read; only pseudonymous keys
(``image_id``, ``patient_key``) are shown. The pages are Streamlit layout and caching; what they
compute and the text they show come from plain, tested functions in :mod:`medcl.app`. This file
chooses the run and the page.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

from medcl.app.pages import DEFAULT_PAGE, PAGES, RENDER, load_context, page_from_query
from medcl.app.run import find_runs, open_run, run_dir_argument
from medcl.errors import MedclError

APP_TITLE = "medcl review"


def choose_run() -> Path | None:
    """The run folder: the argument, ``$MEDCL_RUN_DIR``, or a choice among ``./runs``."""
    arg = run_dir_argument(sys.argv, __file__)
    if arg:
        return Path(arg)
    runs = find_runs("runs")
    if not runs:
        st.title(APP_TITLE)
        st.warning(
            "No run folder given and none found under ./runs. Start the app with "
            "`medcl dashboard RUN_DIR` (make a run with `medcl demo`), or set "
            "MEDCL_RUN_DIR."
        )
        return None
    return st.sidebar.selectbox("Run", runs, format_func=lambda p: str(p), key="run_choice")


def main() -> None:
    """Lay out the app for the chosen run and page."""
    st.set_page_config(page_title=APP_TITLE, layout="wide")
    run_dir = choose_run()
    if run_dir is None:
        return
    try:
        run = open_run(run_dir)
    except MedclError as exc:
        st.title(APP_TITLE)
        st.error(str(exc))
        return
    ctx = load_context(run)
    with st.sidebar:
        st.title(APP_TITLE)
        st.caption(f"run **{run.name}**")
        if "page" not in st.session_state:  # first run of this session: the URL decides
            st.session_state["page"] = page_from_query(st.query_params.get("page", ""))
        page = st.radio("Page", list(PAGES), format_func=PAGES.get, key="page")
        if st.query_params.get("page") != page:
            st.query_params["page"] = page
        st.caption("Only pseudonymous keys (image_id, patient_key) are shown.")
    try:
        RENDER[page or DEFAULT_PAGE](ctx)
    except MedclError as exc:
        st.error(str(exc))
    except Exception as exc:  # noqa: BLE001 - a page failure is shown, not a stack trace
        st.error(f"{PAGES.get(page, page)} failed: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()

"""CPD Explorer dashboard: `streamlit run app.py`.

Opens on QM9 (1,000 molecules, seed 0) with the ANI-2x AEV, which needs no weights and takes seconds; heavier
models are computed when selected, with progress, and cached on disk. Every page draws tables from
`cpd_core.study.analysis` through the helpers in `dashboard/`; the sidebar choices persist across pages and live in
the URL (a shared link reopens the view).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from streamlit.runtime.scriptrunner import get_script_run_ctx  # noqa: E402

from dashboard import sidebar, url_state  # noqa: E402

# Each file is named as its url_path: a server's first run finds the requested page among pages/*.py by file name
# (Streamlit's legacy pages folder) before app.py's st.navigation takes over.
PAGES = [
    st.Page("pages/disentanglement.py", title="Disentanglement", icon=":material/bar_chart:",
            url_path="disentanglement"),
    st.Page("pages/layers.py", title="Layers", icon=":material/stacked_line_chart:", url_path="layers"),
    st.Page("pages/routing.py", title="Irrep routing", icon=":material/grid_on:", url_path="routing"),
    st.Page("pages/probes.py", title="Probes", icon=":material/compare_arrows:", url_path="probes"),
    st.Page("pages/sample_efficiency.py", title="Sample efficiency", icon=":material/trending_up:",
            url_path="sample_efficiency"),
    st.Page("pages/embedding.py", title="Embedding map", icon=":material/bubble_chart:", url_path="embedding"),
    st.Page("pages/similarity.py", title="Layer similarity", icon=":material/grid_view:", url_path="similarity"),
    st.Page("pages/atoms.py", title="Node level", icon=":material/hub:", url_path="atoms"),
    st.Page("pages/data.py", title="Data and models", icon=":material/database:", url_path="data"),
]


def open_first_page() -> None:
    """The root URL opens the first page with the same query string.

    Streamlit serves its default page only at "/", so a listed page that is the default has no deep link of its
    own (/disentanglement would say "Page not found"); this hidden page takes the root instead.
    """
    st.switch_page(PAGES[0], query_params={key: st.query_params.get_all(key) for key in st.query_params})


HOME = st.Page(open_first_page, title="CPD Explorer", url_path="home", default=True, visibility="hidden")



def main() -> None:
    st.set_page_config(page_title="CPD Explorer", page_icon=":material/scatter_plot:", layout="wide")
    nav = st.navigation([HOME, *PAGES])
    if nav is HOME:
        nav.run()  # switches page before the sidebar is drawn; never returns
    token = url_state.IN_APP.set(True)
    try:
        sidebar.sidebar()
        nav.run()
    finally:
        url_state.IN_APP.reset(token)
        url_state.sync_query_params()


# Streamlit runs this file as __main__; a process started with multiprocessing's "spawn" re-imports __main__ too
# (after an AppTest run in the same process that is this file), and must not draw a page there.
if get_script_run_ctx() is not None:
    main()

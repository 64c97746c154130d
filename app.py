"""CPD Explorer dashboard: `streamlit run app.py`.

Opens on QM9 (1,000 molecules, seed 0) with the ANI-2x AEV, which needs no weights and takes seconds; heavier
models are computed when selected, with progress, and cached on disk. Every page draws tables from
`cpd_core.analysis`; the sidebar choices persist across pages and live in the URL (a shared link reopens the view).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from pages import common  # noqa: E402

PAGES = [
    st.Page("pages/disentanglement.py", title="Disentanglement", icon=":material/bar_chart:",
            url_path="disentanglement", default=True),
    st.Page("pages/layers.py", title="Layers", icon=":material/stacked_line_chart:", url_path="layers"),
    st.Page("pages/routing.py", title="Irrep routing", icon=":material/grid_on:", url_path="routing"),
    st.Page("pages/probes.py", title="Probes", icon=":material/compare_arrows:", url_path="probes"),
    st.Page("pages/sample_efficiency.py", title="Sample efficiency", icon=":material/trending_up:",
            url_path="sample_efficiency"),
    st.Page("pages/embedding.py", title="Embedding map", icon=":material/bubble_chart:", url_path="embedding"),
    st.Page("pages/data_models.py", title="Data and models", icon=":material/database:", url_path="data"),
]

st.set_page_config(page_title="CPD Explorer", page_icon=":material/scatter_plot:", layout="wide")
nav = st.navigation(PAGES)
token = common.IN_APP.set(True)
try:
    common.sidebar()
    nav.run()
finally:
    common.IN_APP.reset(token)
    common.sync_query_params()
